//! Messages: the body rules, the stored message, and history paging.

use super::file::Attachment;
use super::ids::{ConversationId, MessageId, UserId};
use super::page::{InvalidLimit, PageLimit};
use super::time::Timestamp;
use super::user::{User, Username};

/// Most characters (Unicode scalar values) a message body may have.
pub const MAX_BODY_CHARS: usize = 4000;
/// Most characters a client message id may have.
pub const MAX_CLIENT_MSG_ID_CHARS: usize = 128;
/// History page size when the client names none.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// Largest history page; larger requests are clamped to it.
pub const MAX_HISTORY_LIMIT: u32 = 200;

/// A message body: 1 to 4000 characters, not only white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBody {
    /// Empty, or longer than [`MAX_BODY_CHARS`].
    #[error("body must be 1 to 4000 characters")]
    Length,
    /// Nothing but white space.
    #[error("body must not be only white space")]
    Blank,
}

impl MessageBody {
    /// Validates a body. Length counts characters, not bytes, so that every
    /// script gets the same allowance.
    ///
    /// # Errors
    /// [`InvalidBody`] naming the rule that failed.
    pub fn parse(raw: &str) -> Result<Self, InvalidBody> {
        // A byte count below the limit needs no character count.
        let too_long = raw.len() > MAX_BODY_CHARS && raw.chars().count() > MAX_BODY_CHARS;
        if raw.is_empty() || too_long {
            return Err(InvalidBody::Length);
        }
        if raw.chars().all(char::is_whitespace) {
            return Err(InvalidBody::Blank);
        }
        Ok(Self(raw.to_owned()))
    }

    /// Validates the body of a message that carries files: as [`Self::parse`],
    /// but it may be empty (a photo needs no caption).
    ///
    /// # Errors
    /// [`InvalidBody`] naming the rule that failed.
    pub fn caption(raw: &str) -> Result<Self, InvalidBody> {
        if raw.is_empty() {
            return Ok(Self(String::new()));
        }
        Self::parse(raw)
    }

    /// The body text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The body text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The client's own id for a send, which makes retries idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMsgId(String);

/// Why a client message id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clientMsgId must be 1 to 128 characters")]
pub struct InvalidClientMsgId;

impl ClientMsgId {
    /// Validates a client message id: 1 to 128 characters.
    ///
    /// # Errors
    /// [`InvalidClientMsgId`] when empty or too long.
    pub fn parse(raw: &str) -> Result<Self, InvalidClientMsgId> {
        let n = raw.chars().count();
        if (1..=MAX_CLIENT_MSG_ID_CHARS).contains(&n) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidClientMsgId)
        }
    }

    /// The id as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored message, as every member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message's id.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Its place in the conversation: 1, 2, 3, ... dense, never reused.
    pub seq: u64,
    /// Who sent it.
    pub sender_id: UserId,
    /// The sender's username at read time.
    pub sender: Username,
    /// The text; empty once deleted.
    pub body: String,
    /// The sender's idempotency key, if one was given.
    pub client_msg_id: Option<ClientMsgId>,
    /// When it was stored.
    pub created_at: Timestamp,
    /// When it was last edited, if ever.
    pub edited_at: Option<Timestamp>,
    /// Whether it was deleted (it keeps its seq).
    pub deleted: bool,
    /// The files it carries, in the order sent; none once deleted.
    pub attachments: Vec<Attachment>,
}

/// A message about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Where it goes.
    pub conversation_id: ConversationId,
    /// Who sends it.
    pub sender: User,
    /// What it says.
    pub body: MessageBody,
    /// The sender's idempotency key.
    pub client_msg_id: Option<ClientMsgId>,
    /// When the core accepted it.
    pub created_at: Timestamp,
    /// The files it carries, each uploaded by the sender.
    pub attachments: Vec<Attachment>,
}

/// What the store did with a [`NewMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored with the next seq; `members` are everyone in the conversation.
    Stored {
        /// The stored message.
        message: Message,
        /// The conversation's members at the time of the commit.
        members: Vec<UserId>,
    },
    /// The same sender already sent this clientMsgId here: nothing stored.
    Duplicate(Message),
}

/// A change to a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageChange {
    /// New text, and when it was edited.
    Edit {
        /// The new body.
        body: MessageBody,
        /// When.
        at: Timestamp,
    },
    /// Empties the body, drops the attachments (and the files'
    /// references from it) and marks the message deleted; it keeps its seq.
    Delete,
}

/// A window of a conversation's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages with a seq below this one.
    pub before_seq: Option<u64>,
    /// Only messages with a seq above this one; then the page starts just
    /// after it, otherwise it ends at the newest message.
    pub after_seq: Option<u64>,
    /// How many messages at most.
    pub limit: u32,
}

impl HistoryQuery {
    /// Builds a query, applying the default page size and clamping to the largest.
    ///
    /// # Errors
    /// A limit of 0 is refused: a client asking for nothing has a bug.
    pub fn new(
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: Option<u64>,
    ) -> Result<Self, InvalidLimit> {
        let max = MAX_HISTORY_LIMIT as usize;
        let limit = PageLimit::parse(limit)?.within(DEFAULT_HISTORY_LIMIT as usize, max);
        Ok(Self {
            before_seq,
            after_seq,
            limit: limit as u32,
        })
    }
}

/// One page of history, oldest message first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    /// The messages, in seq order.
    pub messages: Vec<Message>,
    /// More messages exist beyond the page in the direction of travel.
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_of_4000_characters_is_accepted_even_when_multibyte() {
        assert!(MessageBody::parse(&"x".repeat(4000)).is_ok());
        assert!(MessageBody::parse(&"é".repeat(4000)).is_ok());
        assert!(MessageBody::parse(&"😀".repeat(4000)).is_ok());
    }

    #[test]
    fn a_body_of_4001_characters_is_rejected() {
        assert_eq!(
            MessageBody::parse(&"x".repeat(4001)),
            Err(InvalidBody::Length)
        );
        assert_eq!(
            MessageBody::parse(&"😀".repeat(4001)),
            Err(InvalidBody::Length)
        );
    }

    #[test]
    fn an_empty_body_is_rejected() {
        assert_eq!(MessageBody::parse(""), Err(InvalidBody::Length));
    }

    #[test]
    fn a_caption_may_be_empty_but_not_blank_or_too_long() {
        assert_eq!(MessageBody::caption("").unwrap().as_str(), "");
        assert_eq!(MessageBody::caption("look").unwrap().as_str(), "look");
        assert_eq!(MessageBody::caption(" "), Err(InvalidBody::Blank));
        assert_eq!(
            MessageBody::caption(&"x".repeat(4001)),
            Err(InvalidBody::Length)
        );
    }

    #[test]
    fn a_whitespace_only_body_is_rejected() {
        for raw in [" ", "   \t\n", "\u{3000}\u{a0}"] {
            assert_eq!(MessageBody::parse(raw), Err(InvalidBody::Blank), "{raw:?}");
        }
    }

    #[test]
    fn a_body_with_surrounding_whitespace_is_kept_as_sent() {
        assert_eq!(MessageBody::parse("  hi \n").unwrap().as_str(), "  hi \n");
    }

    #[test]
    fn a_client_msg_id_must_be_1_to_128_characters() {
        assert!(ClientMsgId::parse("a").is_ok());
        assert!(ClientMsgId::parse(&"a".repeat(128)).is_ok());
        assert_eq!(ClientMsgId::parse(""), Err(InvalidClientMsgId));
        assert_eq!(
            ClientMsgId::parse(&"a".repeat(129)),
            Err(InvalidClientMsgId)
        );
    }

    #[test]
    fn history_limit_defaults_to_50_and_clamps_to_200() {
        assert_eq!(HistoryQuery::new(None, None, None).unwrap().limit, 50);
        assert_eq!(HistoryQuery::new(None, None, Some(7)).unwrap().limit, 7);
        assert_eq!(
            HistoryQuery::new(None, None, Some(5000)).unwrap().limit,
            200
        );
        assert_eq!(HistoryQuery::new(None, None, Some(0)), Err(InvalidLimit));
    }
}
