//! Events: what the server pushes to sessions without being asked.

use super::ids::{ConversationId, UserId};
use super::message::Message;
use super::presence::Presence;
use super::user::User;

/// Why a `member` event was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAction {
    /// The user joined a public room (or created a room).
    Joined,
    /// The user left.
    Left,
    /// A member invited the user.
    Invited,
}

/// An event for one or more sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new message.
    Message(Message),
    /// A message was edited or deleted.
    MessageUpdated(Message),
    /// A member moved their read marker.
    Receipt {
        /// Where.
        conversation_id: ConversationId,
        /// Who read.
        user_id: UserId,
        /// Up to which seq.
        seq: u64,
    },
    /// A member started or stopped typing.
    Typing {
        /// Where.
        conversation_id: ConversationId,
        /// Who types.
        user_id: UserId,
        /// Started (true) or stopped (false).
        active: bool,
    },
    /// Someone joined, left or was invited.
    Member {
        /// Where.
        conversation_id: ConversationId,
        /// Who.
        user: User,
        /// What happened.
        action: MemberAction,
    },
    /// A user's status changed.
    Presence(Presence),
}

/// What an event's recipients may rely on when it crosses the nodes of a
/// cluster over an at-most-once broker (docs/cluster.md, section 6). A
/// fact about each event, decided here with no catch-all, so that a new
/// event cannot go out without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee<'a> {
    /// Exactly once and in seq order within its conversation: a session
    /// given this seq has been given every earlier one committed after it
    /// joined. A loss is repaired from the store.
    Sequenced {
        /// The conversation whose order it takes its place in.
        conversation: &'a ConversationId,
        /// Its own seq.
        seq: u64,
    },
    /// At most once, and never before the message it is about: held
    /// behind that message while it is missing.
    AfterMessage {
        /// The conversation of that message.
        conversation: &'a ConversationId,
        /// That message's seq.
        seq: u64,
    },
    /// Best effort, and the end of `member`'s order in the conversation:
    /// nothing sequenced of it is owed to them any more.
    EndsOrder {
        /// The conversation they left.
        conversation: &'a ConversationId,
        /// Who left.
        member: &'a UserId,
    },
    /// At most once, lost in the broker's loss windows; what it reports
    /// is durable or expires, so a client that reconnects reads it again.
    BestEffort,
}

impl Event {
    /// How this event must be delivered across nodes.
    pub fn guarantee(&self) -> Guarantee<'_> {
        match self {
            Self::Message(m) => Guarantee::Sequenced {
                conversation: &m.conversation_id,
                seq: m.seq,
            },
            Self::MessageUpdated(m) => Guarantee::AfterMessage {
                conversation: &m.conversation_id,
                seq: m.seq,
            },
            Self::Member {
                conversation_id,
                user,
                action,
            } => match action {
                MemberAction::Left => Guarantee::EndsOrder {
                    conversation: conversation_id,
                    member: &user.id,
                },
                MemberAction::Joined | MemberAction::Invited => Guarantee::BestEffort,
            },
            Self::Receipt { .. } | Self::Typing { .. } | Self::Presence(_) => Guarantee::BestEffort,
        }
    }
}

#[cfg(test)]
mod tests;
