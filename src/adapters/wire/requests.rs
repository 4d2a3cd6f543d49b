//! Requests as clients send them: the envelope, then the content its
//! `type` names, validated into domain types.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::conversation::MAX_ROOM_NAME_CHARS;
use crate::domain::file::MAX_ATTACHMENTS;
use crate::domain::message::HistoryQuery;
use crate::domain::page::PageLimit;
use crate::domain::service::{Draft, MAX_PRESENCE_IDS, Recipient};
use crate::domain::{
    ActiveStatus, ClientMsgId, ConversationId, FileId, MessageBody, MessageId, RoomName, UserId,
    Visibility,
};

/// Longest access token `reauth` reads; real ones are a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 4096;

/// Longest request id a client may send.
pub const MAX_REQUEST_ID_CHARS: usize = 64;
/// Longest id (user, conversation, message) accepted in a request; real ids
/// are far shorter, so anything longer cannot name anything.
const MAX_ID_CHARS: usize = 128;

/// A WebSocket request, validated: every field has its domain type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `sendPrivateMessage` or `sendMessage`: sends that arrive together may
    /// be answered together.
    Send(Draft),
    /// Any other request, answered on its own.
    Other(Request),
}

/// A request other than a send.
///
/// A new request type takes (docs/architecture.md works one through):
/// 1. its row in docs/protocol.md;
/// 2. a variant here, a row in `REQUESTS` (below) reading its content, and a
///    seed in `tests/fuzz/corpus/parse_frame/` (a test asks for one);
/// 3. its use case in `domain::service` (on `ChatService` and the
///    `UseCases` trait, with its error enum in `domain::error` and that
///    enum's `From` in `adapters::failure`; in the store too, if it keeps
///    anything new);
/// 4. its arm in `ws::session::dispatch`, which calls the use case and
///    writes the ack (the compiler asks for this one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `getHistory`.
    GetHistory {
        /// Where.
        conversation_id: ConversationId,
        /// Which page.
        query: HistoryQuery,
    },
    /// `getConversations`.
    GetConversations {
        /// Continue after the page that ended here (a `nextCursor`).
        cursor: Option<ConversationId>,
    },
    /// `markRead`.
    MarkRead {
        /// Where.
        conversation_id: ConversationId,
        /// Up to which seq.
        seq: u64,
    },
    /// `typing`.
    Typing {
        /// Where.
        conversation_id: ConversationId,
        /// Started or stopped.
        active: bool,
    },
    /// `getConnectedUsers`.
    GetConnectedUsers {
        /// Page size.
        limit: PageLimit,
    },
    /// `getPresence`.
    GetPresence {
        /// Whom.
        user_ids: Vec<UserId>,
    },
    /// `setStatus`.
    SetStatus {
        /// The new status.
        status: ActiveStatus,
    },
    /// `ping`.
    Ping,
    /// `reauth`: a fresh access token of the connection's device session.
    Reauth {
        /// The token.
        token: String,
    },
    /// `createRoom`.
    CreateRoom {
        /// Its name.
        name: RoomName,
        /// Public (the default) or private.
        visibility: Visibility,
    },
    /// `joinRoom`.
    JoinRoom {
        /// Which room.
        conversation_id: ConversationId,
    },
    /// `inviteToRoom`.
    InviteToRoom {
        /// Which room.
        conversation_id: ConversationId,
        /// Whom.
        user_id: UserId,
    },
    /// `leaveRoom`.
    LeaveRoom {
        /// Which room.
        conversation_id: ConversationId,
    },
    /// `listRooms`.
    ListRooms {
        /// Name prefix, matched ignoring case.
        prefix: String,
        /// Continue after the page that ended here (a `nextCursor`).
        cursor: Option<ConversationId>,
        /// Page size.
        limit: PageLimit,
    },
    /// `editMessage`.
    EditMessage {
        /// Where.
        conversation_id: ConversationId,
        /// Which message.
        message_id: MessageId,
        /// The new text.
        body: MessageBody,
    },
    /// `deleteMessage`.
    DeleteMessage {
        /// Where.
        conversation_id: ConversationId,
        /// Which message.
        message_id: MessageId,
    },
    /// `blockUser`.
    BlockUser {
        /// Whom.
        user_id: UserId,
    },
    /// `unblockUser`.
    UnblockUser {
        /// Whom.
        user_id: UserId,
    },
    /// `getBlocked`.
    GetBlocked,
}

/// A frame that could not be read as a request, with the id to answer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame {
    /// The request's id, when it could be read.
    pub id: Option<String>,
    /// What was wrong.
    pub message: String,
}

/// Reads one text frame: the envelope, then the request its `type` names.
///
/// # Errors
/// [`BadFrame`] for anything the contract calls a `bad_request`.
pub fn parse_frame(text: &str) -> Result<(Option<String>, Inbound), BadFrame> {
    parse_send(text).map_or_else(|| parse_any(text), Ok)
}

/// Reads any frame through the generic JSON tree, with an error that says
/// what is wrong.
pub(super) fn parse_any(text: &str) -> Result<(Option<String>, Inbound), BadFrame> {
    let bad = |id: Option<String>, message: String| BadFrame { id, message };
    let value: Value = serde_json::from_str(text)
        .map_err(|_| bad(salvaged_id(text), "frame is not valid JSON".into()))?;
    let Value::Object(mut frame) = value else {
        return Err(bad(None, "frame must be a JSON object".into()));
    };
    let id = match frame.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if request_id_fits(&s) => Some(s),
        Some(_) => {
            return Err(bad(
                None,
                format!("id must be a string of at most {MAX_REQUEST_ID_CHARS} characters"),
            ));
        }
    };
    let kind = match frame.get("type") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(bad(id, "type is required and must be a string".into())),
    };
    let content = match frame.get("content") {
        None | Some(Value::Null) => &Map::new(),
        Some(Value::Object(c)) => c,
        Some(_) => return Err(bad(id, "content must be a JSON object".into())),
    };
    match Inbound::parse(kind, content) {
        Ok(request) => Ok((id, request)),
        Err(message) => Err(bad(id, message)),
    }
}

/// The id of a frame that is JSON in shape but that serde_json will not
/// read as a whole, such as one with a lone surrogate escape (`"\ud800"`,
/// which no Rust string can hold) in a string: the answer then carries the
/// id, so the client can tell which request failed. Only the id is decoded;
/// serde_json skips every other value without checking its escapes.
fn salvaged_id(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<Value>,
    }
    match serde_json::from_str::<IdOnly>(text).ok()?.id {
        Some(Value::String(id)) if request_id_fits(&id) => Some(id),
        _ => None,
    }
}

/// A request id within the contract's bound.
fn request_id_fits(id: &str) -> bool {
    id.chars().count() <= MAX_REQUEST_ID_CHARS
}

/// An id (user, conversation, message) that could name something.
fn id_fits(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_CHARS
}

/// A send as most arrive: read straight into its fields, without the
/// generic JSON tree that every other frame goes through (which was most
/// of what reading a send cost). Anything else, and any send this cannot
/// take as it stands (a wrong type, a duplicate key, a value out of
/// bounds), is `None` and goes the general way, which gives the error.
pub(super) fn parse_send(text: &str) -> Option<(Option<String>, Inbound)> {
    // Only the fields of a send: serde skips others without checking them
    // (a number out of range, a lone surrogate), which the general path
    // refuses as invalid JSON, so a frame with others goes that way.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Frame<'a> {
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow, rename = "type")]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        content: Content<'a>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Content<'a> {
        #[serde(borrow, default)]
        to: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        conversation_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        body: Cow<'a, str>,
        #[serde(borrow, default)]
        client_msg_id: Option<Cow<'a, str>>,
    }
    let frame: Frame<'_> = serde_json::from_str(text).ok()?;
    let c = frame.content;
    let to = match &*frame.kind {
        "sendPrivateMessage" => {
            Recipient::User(UserId::new(c.to.filter(|s| id_fits(s))?.into_owned()))
        }
        "sendMessage" => Recipient::Conversation(ConversationId::new(
            c.conversation_id.filter(|s| id_fits(s))?.into_owned(),
        )),
        _ => return None,
    };
    let id = match frame.id {
        Some(id) if !request_id_fits(&id) => return None,
        id => id.map(Cow::into_owned),
    };
    let draft = Draft {
        to,
        body: MessageBody::parse(&c.body).ok()?,
        client_msg_id: c
            .client_msg_id
            .map(|k| ClientMsgId::parse(&k))
            .transpose()
            .ok()?,
        // A send with attachments has a field this path refuses: it takes
        // the general one.
        attachments: Vec::new(),
    };
    Some((id, Inbound::Send(draft)))
}

impl Inbound {
    fn parse(kind: &str, c: &Map<String, Value>) -> Result<Self, String> {
        let f = Fields(c);
        let to = match kind {
            "sendPrivateMessage" => Recipient::User(f.user("to")?),
            "sendMessage" => Recipient::Conversation(f.conversation()?),
            _ => return Request::parse(kind, c).map(Self::Other),
        };
        let attachments = f.attachments()?;
        let body = if attachments.is_empty() {
            f.body()?
        } else {
            f.caption()?
        };
        Ok(Self::Send(Draft {
            to,
            body,
            client_msg_id: f.client_msg_id()?,
            attachments,
        }))
    }
}

/// How the content of one request type is read.
type ReadContent = fn(&Fields<'_>) -> Result<Request, String>;

/// The request table: every request type but the sends, by its `type`,
/// with how its content is read. See [`Request`] for what else a new one
/// takes.
const REQUESTS: &[(&str, ReadContent)] = &[
    ("getHistory", |f| {
        Ok(Request::GetHistory {
            conversation_id: f.conversation()?,
            query: HistoryQuery::new(
                f.opt_uint("beforeSeq")?,
                f.opt_uint("afterSeq")?,
                f.opt_uint("limit")?,
            )
            .map_err(|e| e.to_string())?,
        })
    }),
    ("getConversations", |f| {
        Ok(Request::GetConversations {
            cursor: f.opt_id("cursor")?.map(ConversationId::new),
        })
    }),
    ("markRead", |f| {
        Ok(Request::MarkRead {
            conversation_id: f.conversation()?,
            seq: f.opt_uint("seq")?.ok_or("seq is required")?,
        })
    }),
    ("typing", |f| {
        Ok(Request::Typing {
            conversation_id: f.conversation()?,
            active: match f.0.get("active") {
                Some(Value::Bool(b)) => *b,
                _ => return Err("active is required and must be a boolean".into()),
            },
        })
    }),
    ("getConnectedUsers", |f| {
        Ok(Request::GetConnectedUsers { limit: f.limit()? })
    }),
    ("getPresence", |f| {
        Ok(Request::GetPresence {
            user_ids: f.id_list("userIds")?,
        })
    }),
    ("setStatus", |f| {
        Ok(Request::SetStatus {
            status: match f.0.get("status").and_then(Value::as_str) {
                Some("online") => ActiveStatus::Online,
                Some("away") => ActiveStatus::Away,
                _ => return Err(r#"status must be "online" or "away""#.into()),
            },
        })
    }),
    ("ping", |_| Ok(Request::Ping)),
    ("reauth", |f| {
        Ok(Request::Reauth {
            token: match f.0.get("token") {
                Some(Value::String(t)) if !t.is_empty() && t.len() <= MAX_TOKEN_BYTES => t.clone(),
                Some(Value::String(_)) => {
                    return Err(format!("token must be 1 to {MAX_TOKEN_BYTES} bytes"));
                }
                _ => return Err("token is required and must be a string".into()),
            },
        })
    }),
    ("createRoom", |f| {
        Ok(Request::CreateRoom {
            name: match f.0.get("name") {
                Some(Value::String(s)) => RoomName::parse(s).map_err(|e| e.to_string())?,
                _ => return Err("name is required and must be a string".into()),
            },
            // Required: the contract marks no `?` on it.
            visibility: match f.0.get("visibility") {
                Some(v) if v == "public" => Visibility::Public,
                Some(v) if v == "private" => Visibility::Private,
                _ => {
                    return Err(
                        r#"visibility is required and must be "public" or "private""#.into(),
                    );
                }
            },
        })
    }),
    ("joinRoom", |f| {
        Ok(Request::JoinRoom {
            conversation_id: f.conversation()?,
        })
    }),
    ("inviteToRoom", |f| {
        Ok(Request::InviteToRoom {
            conversation_id: f.conversation()?,
            user_id: f.user("userId")?,
        })
    }),
    ("leaveRoom", |f| {
        Ok(Request::LeaveRoom {
            conversation_id: f.conversation()?,
        })
    }),
    ("listRooms", |f| {
        Ok(Request::ListRooms {
            cursor: f.opt_id("cursor")?.map(ConversationId::new),
            prefix: match f.0.get("prefix") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) if s.chars().count() <= MAX_ROOM_NAME_CHARS => s.clone(),
                Some(_) => {
                    return Err("prefix must be a string of at most 64 characters".into());
                }
            },
            limit: f.limit()?,
        })
    }),
    ("editMessage", |f| {
        Ok(Request::EditMessage {
            conversation_id: f.conversation()?,
            message_id: MessageId::new(f.id("messageId")?),
            body: f.body()?,
        })
    }),
    ("deleteMessage", |f| {
        Ok(Request::DeleteMessage {
            conversation_id: f.conversation()?,
            message_id: MessageId::new(f.id("messageId")?),
        })
    }),
    ("blockUser", |f| {
        Ok(Request::BlockUser {
            user_id: f.user("userId")?,
        })
    }),
    ("unblockUser", |f| {
        Ok(Request::UnblockUser {
            user_id: f.user("userId")?,
        })
    }),
    ("getBlocked", |_| Ok(Request::GetBlocked)),
];

/// Every request type of the contract, by its `type`: the sends (read by
/// [`parse_send`], and by [`Inbound::parse`] when that cannot) and the table.
#[cfg(test)]
pub(super) fn request_types() -> impl Iterator<Item = &'static str> {
    ["sendPrivateMessage", "sendMessage"]
        .into_iter()
        .chain(REQUESTS.iter().map(|(kind, _)| *kind))
}

impl Request {
    fn parse(kind: &str, c: &Map<String, Value>) -> Result<Self, String> {
        let Some((_, read)) = REQUESTS.iter().find(|(known, _)| *known == kind) else {
            let shown: String = kind.chars().take(64).collect();
            return Err(format!("unknown type {shown:?}"));
        };
        read(&Fields(c))
    }
}

/// Typed access to a request's `content`, with messages that name the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn id(&self, name: &str) -> Result<String, String> {
        match self.0.get(name) {
            Some(Value::String(s)) if id_fits(s) => Ok(s.clone()),
            Some(Value::String(s)) if !s.is_empty() => {
                Err(format!("{name} must be at most {MAX_ID_CHARS} characters"))
            }
            _ => Err(format!("{name} is required and must be a non-empty string")),
        }
    }

    /// An optional id: absent or null is `None`.
    fn opt_id(&self, name: &str) -> Result<Option<String>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.id(name).map(Some),
        }
    }

    fn user(&self, name: &str) -> Result<UserId, String> {
        self.id(name).map(UserId::new)
    }

    fn conversation(&self) -> Result<ConversationId, String> {
        self.id("conversationId").map(ConversationId::new)
    }

    fn body(&self) -> Result<MessageBody, String> {
        match self.0.get("body") {
            Some(Value::String(s)) => MessageBody::parse(s).map_err(|e| e.to_string()),
            _ => Err("body is required and must be a string".into()),
        }
    }

    /// The body of a message with attachments: it may be empty.
    fn caption(&self) -> Result<MessageBody, String> {
        match self.0.get("body") {
            None | Some(Value::Null) => Ok(MessageBody::caption("").expect("empty caption")),
            Some(Value::String(s)) => MessageBody::caption(s).map_err(|e| e.to_string()),
            _ => Err("body must be a string".into()),
        }
    }

    /// `attachments`: absent, or up to [`MAX_ATTACHMENTS`] distinct file ids.
    fn attachments(&self) -> Result<Vec<FileId>, String> {
        let err = || {
            format!("attachments must be an array of at most {MAX_ATTACHMENTS} distinct file ids")
        };
        let items = match self.0.get("attachments") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) if items.len() <= MAX_ATTACHMENTS => items,
            Some(_) => return Err(err()),
        };
        let mut ids: Vec<FileId> = Vec::with_capacity(items.len());
        for item in items {
            match item.as_str() {
                Some(id) if id_fits(id) && !ids.iter().any(|f| f.as_str() == id) => {
                    ids.push(FileId::new(id));
                }
                _ => return Err(err()),
            }
        }
        Ok(ids)
    }

    fn client_msg_id(&self) -> Result<Option<ClientMsgId>, String> {
        match self.0.get("clientMsgId") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => ClientMsgId::parse(s).map(Some).map_err(|e| e.to_string()),
            Some(_) => Err("clientMsgId must be a string".into()),
        }
    }

    fn opt_uint(&self, name: &str) -> Result<Option<u64>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("{name} must be a non-negative integer")),
        }
    }

    fn limit(&self) -> Result<PageLimit, String> {
        PageLimit::parse(self.opt_uint("limit")?).map_err(|e| e.to_string())
    }

    fn id_list(&self, name: &str) -> Result<Vec<UserId>, String> {
        let err = || format!("{name} must be an array of at most {MAX_PRESENCE_IDS} user ids");
        let Some(Value::Array(items)) = self.0.get(name) else {
            return Err(err());
        };
        if items.len() > MAX_PRESENCE_IDS {
            return Err(err());
        }
        items
            .iter()
            .map(|v| v.as_str().map(UserId::new).ok_or_else(err))
            .collect()
    }
}
