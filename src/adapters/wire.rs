//! The wire format: JSON shapes of the contract's objects, frames and
//! requests, and their conversion to and from domain types. Both inbound
//! adapters (HTTP and WebSocket) speak through this module only.

use hyper_tungstenite::tungstenite::Utf8Bytes;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::adapters::failure::ChatError;
use crate::domain::conversation::MAX_ROOM_NAME_CHARS;
use crate::domain::event::MemberAction;
use crate::domain::message::HistoryQuery;
use crate::domain::page::PageLimit;
use crate::domain::service::{Draft, MAX_PRESENCE_IDS, Recipient};
use crate::domain::{
    ActiveStatus, ClientMsgId, ConversationId, ConversationKind, ConversationSummary, Event,
    Message, MessageBody, MessageId, Presence, RoomName, Status, Timestamp, User, UserId,
    Visibility,
};

/// Longest request id a client may send.
pub const MAX_REQUEST_ID_CHARS: usize = 64;
/// Longest id (user, conversation, message) accepted in a request; real ids
/// are far shorter, so anything longer cannot name anything.
const MAX_ID_CHARS: usize = 128;

/// RFC 3339, UTC, milliseconds: `2026-11-27T20:07:33.123Z`.
pub fn rfc3339(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(t.millis())
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------- objects

/// `user`: `{id, username}`.
#[derive(Debug, Serialize)]
pub struct UserDto<'a> {
    id: &'a str,
    username: &'a str,
}

impl<'a> From<&'a User> for UserDto<'a> {
    fn from(u: &'a User) -> Self {
        Self {
            id: u.id.as_str(),
            username: u.username.as_str(),
        }
    }
}

/// `message`, as in the contract's section 2.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageDto<'a> {
    id: &'a str,
    conversation_id: &'a str,
    seq: u64,
    sender_id: &'a str,
    sender: &'a str,
    body: &'a str,
    client_msg_id: Option<&'a str>,
    created_at: String,
    edited_at: Option<String>,
    deleted: bool,
}

impl<'a> From<&'a Message> for MessageDto<'a> {
    fn from(m: &'a Message) -> Self {
        Self {
            id: m.id.as_str(),
            conversation_id: m.conversation_id.as_str(),
            seq: m.seq,
            sender_id: m.sender_id.as_str(),
            sender: m.sender.as_str(),
            body: if m.deleted { "" } else { &m.body },
            client_msg_id: m.client_msg_id.as_ref().map(ClientMsgId::as_str),
            created_at: rfc3339(m.created_at),
            edited_at: m.edited_at.map(rfc3339),
            deleted: m.deleted,
        }
    }
}

/// `conversation`, as one member sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationDto<'a> {
    id: &'a str,
    kind: &'static str,
    name: Option<&'a str>,
    visibility: Option<&'static str>,
    members: Vec<UserDto<'a>>,
    member_count: u64,
    last_seq: u64,
    last_read_seq: u64,
    unread: u64,
    last_message: Option<MessageDto<'a>>,
}

impl<'a> From<&'a ConversationSummary> for ConversationDto<'a> {
    fn from(s: &'a ConversationSummary) -> Self {
        let (kind, name, visibility) = match &s.conversation.kind {
            ConversationKind::Direct => ("direct", None, None),
            ConversationKind::Room { name, visibility } => (
                "room",
                Some(name.as_str()),
                Some(match visibility {
                    Visibility::Public => "public",
                    Visibility::Private => "private",
                }),
            ),
        };
        Self {
            id: s.conversation.id.as_str(),
            kind,
            name,
            visibility,
            members: s.members.iter().map(UserDto::from).collect(),
            member_count: s.member_count,
            last_seq: s.conversation.last_seq,
            last_read_seq: s.last_read_seq,
            unread: s.unread(),
            last_message: s.last_message.as_ref().map(MessageDto::from),
        }
    }
}

/// `presence`: `{userId, username, status, lastSeen}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDto<'a> {
    user_id: &'a str,
    username: &'a str,
    status: &'static str,
    last_seen: Option<String>,
}

impl<'a> From<&'a Presence> for PresenceDto<'a> {
    fn from(p: &'a Presence) -> Self {
        Self {
            user_id: p.user.id.as_str(),
            username: p.user.username.as_str(),
            status: match p.status {
                Status::Online => "online",
                Status::Away => "away",
                Status::Offline => "offline",
            },
            last_seen: p.last_seen.map(rfc3339),
        }
    }
}

// ---------------------------------------------------------------- frames

#[derive(Serialize)]
struct Frame<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Option<&'a str>>,
    content: T,
}

/// Room for a typical message frame (about 350 bytes) from the start:
/// `serde_json::to_string` starts at 128 and grew twice for every event.
const FRAME_CAPACITY: usize = 512;

fn to_text<T: Serialize>(frame: &Frame<'_, T>) -> Utf8Bytes {
    let mut text = Vec::with_capacity(FRAME_CAPACITY);
    // Serializing our own structs into a Vec cannot fail, and serde_json
    // writes UTF-8.
    serde_json::to_writer(&mut text, frame).expect("wire DTOs serialize");
    String::from_utf8(text).expect("JSON is UTF-8").into()
}

/// The most bytes of items one reply lists: `getHistory`, `listRooms` and
/// `getConversations` list fewer items, with `hasMore`, rather than more.
/// Far above any one item (a message of 4,000 escaped control characters
/// is 24 KB, a conversation with 100 members and such a last message under
/// 40 KB), so a reply always has room for its first.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Items serialized in turn until they would pass `budget` bytes, the first
/// always; and whether any was left out for it.
pub fn fit<T: Serialize>(
    items: impl ExactSizeIterator<Item = T>,
    budget: usize,
) -> (Vec<Box<RawValue>>, bool) {
    let total = items.len();
    let mut kept: Vec<Box<RawValue>> = Vec::with_capacity(total);
    let mut used = 0;
    for item in items {
        // Our own DTOs always serialize.
        let raw = serde_json::value::to_raw_value(&item).expect("wire DTOs serialize");
        // One comma between items.
        used += raw.get().len() + 1;
        if used > budget && !kept.is_empty() {
            break;
        }
        kept.push(raw);
    }
    let cut = kept.len() < total;
    (kept, cut)
}

/// As many of `list` as one reply holds ([`fit`]); whether more follow,
/// here or (`more`) beyond `list`; and the cursor to the next page: the id
/// of the last one listed.
pub fn conversation_page(
    list: &[ConversationSummary],
    more: bool,
) -> (Vec<Box<RawValue>>, bool, Option<&str>) {
    let (listed, cut) = fit(list.iter().map(ConversationDto::from), MAX_REPLY_BYTES);
    let has_more = more || cut;
    let next_cursor = has_more.then(|| list[listed.len() - 1].conversation.id.as_str());
    (listed, has_more, next_cursor)
}

/// `getHistory`'s ack content.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryContent {
    /// Oldest first.
    pub messages: Vec<Box<RawValue>>,
    /// More exist beyond this page, in the direction it was read.
    pub has_more: bool,
}

/// `listRooms`' ack content.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomsContent<'a> {
    /// By name.
    pub rooms: Vec<Box<RawValue>>,
    /// More rooms match: ask again with `cursor: nextCursor`.
    pub has_more: bool,
    /// What to pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<&'a str>,
}

/// `getConversations`' ack content.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationsContent<'a> {
    /// Most recently active first.
    pub conversations: Vec<Box<RawValue>>,
    /// More follow: ask again with `cursor: nextCursor`.
    pub has_more: bool,
    /// What to pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<&'a str>,
}

/// An `ack` frame answering request `id`.
pub fn ack<T: Serialize>(id: Option<&str>, content: T) -> Utf8Bytes {
    to_text(&Frame {
        kind: "ack",
        id: Some(id),
        content,
    })
}

/// The `{code, message}` of an error, as HTTP bodies and WebSocket errors carry it.
#[derive(Debug, Serialize)]
pub struct ErrorDto<'a> {
    /// One of the contract's codes.
    pub code: &'static str,
    /// A human-readable explanation, never internal detail.
    pub message: &'a str,
}

/// An `error` frame answering request `id` (null when it had none or it was unreadable).
pub fn error(id: Option<&str>, code: &'static str, message: &str) -> Utf8Bytes {
    to_text(&Frame {
        kind: "error",
        id: Some(id),
        content: ErrorDto { code, message },
    })
}

/// An event frame (no id).
pub fn event_frame<T: Serialize>(kind: &str, content: T) -> Utf8Bytes {
    to_text(&Frame {
        kind,
        id: None,
        content,
    })
}

/// `{message}`: the content of `message` and `messageUpdated` events and of send acks.
#[derive(Serialize)]
pub struct MessageContent<'a> {
    /// The message.
    pub message: MessageDto<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptContent<'a> {
    conversation_id: &'a str,
    user_id: &'a str,
    seq: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TypingContent<'a> {
    conversation_id: &'a str,
    user_id: &'a str,
    active: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MemberContent<'a> {
    conversation_id: &'a str,
    user: UserDto<'a>,
    action: &'static str,
}

#[derive(Serialize)]
struct PresenceContent<'a> {
    presence: PresenceDto<'a>,
}

/// Serializes an event once; the bytes are shared by all its recipients.
pub fn encode_event(event: &Event) -> Utf8Bytes {
    match event {
        Event::Message(m) => event_frame("message", MessageContent { message: m.into() }),
        Event::MessageUpdated(m) => {
            event_frame("messageUpdated", MessageContent { message: m.into() })
        }
        Event::Receipt {
            conversation_id,
            user_id,
            seq,
        } => event_frame(
            "receipt",
            ReceiptContent {
                conversation_id: conversation_id.as_str(),
                user_id: user_id.as_str(),
                seq: *seq,
            },
        ),
        Event::Typing {
            conversation_id,
            user_id,
            active,
        } => event_frame(
            "typing",
            TypingContent {
                conversation_id: conversation_id.as_str(),
                user_id: user_id.as_str(),
                active: *active,
            },
        ),
        Event::Member {
            conversation_id,
            user,
            action,
        } => event_frame(
            "member",
            MemberContent {
                conversation_id: conversation_id.as_str(),
                user: user.into(),
                action: match action {
                    MemberAction::Joined => "joined",
                    MemberAction::Left => "left",
                    MemberAction::Invited => "invited",
                },
            },
        ),
        Event::Presence(p) => event_frame("presence", PresenceContent { presence: p.into() }),
    }
}

// ---------------------------------------------------------------- errors

/// The contract's code for a use-case error, and the text a client may see.
pub fn error_code(e: &ChatError) -> (&'static str, String) {
    let code = match e {
        ChatError::BadRequest(_) => "bad_request",
        ChatError::Unauthorized(_) => "unauthorized",
        ChatError::Forbidden(_) => "forbidden",
        ChatError::NotFound(_) => "not_found",
        ChatError::Conflict(_) => "conflict",
        ChatError::RateLimited(_) => "rate_limited",
        ChatError::Internal(_) => "internal",
    };
    // Display of Internal is a fixed "internal error": the cause stays in logs.
    (code, e.to_string())
}

// ---------------------------------------------------------------- requests

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
fn parse_any(text: &str) -> Result<(Option<String>, Inbound), BadFrame> {
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
fn parse_send(text: &str) -> Option<(Option<String>, Inbound)> {
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
    };
    Some((id, Inbound::Send(draft)))
}

impl Inbound {
    fn parse(kind: &str, c: &Map<String, Value>) -> Result<Self, String> {
        let f = Fields(c);
        let to = match kind {
            "sendPrivateMessage" => Recipient::User(UserId::new(f.id("to")?)),
            "sendMessage" => Recipient::Conversation(f.conversation()?),
            _ => return Request::parse(kind, c).map(Self::Other),
        };
        Ok(Self::Send(Draft {
            to,
            body: f.body()?,
            client_msg_id: f.client_msg_id()?,
        }))
    }
}

impl Request {
    fn parse(kind: &str, c: &Map<String, Value>) -> Result<Self, String> {
        let f = Fields(c);
        Ok(match kind {
            "getHistory" => Self::GetHistory {
                conversation_id: f.conversation()?,
                query: HistoryQuery::new(
                    f.opt_uint("beforeSeq")?,
                    f.opt_uint("afterSeq")?,
                    f.opt_uint("limit")?,
                )
                .map_err(|e| e.to_string())?,
            },
            "getConversations" => Self::GetConversations {
                cursor: f.opt_id("cursor")?.map(ConversationId::new),
            },
            "markRead" => Self::MarkRead {
                conversation_id: f.conversation()?,
                seq: f.opt_uint("seq")?.ok_or("seq is required")?,
            },
            "typing" => Self::Typing {
                conversation_id: f.conversation()?,
                active: match c.get("active") {
                    Some(Value::Bool(b)) => *b,
                    _ => return Err("active is required and must be a boolean".into()),
                },
            },
            "getConnectedUsers" => Self::GetConnectedUsers { limit: f.limit()? },
            "getPresence" => Self::GetPresence {
                user_ids: f.id_list("userIds")?,
            },
            "setStatus" => Self::SetStatus {
                status: match c.get("status").and_then(Value::as_str) {
                    Some("online") => ActiveStatus::Online,
                    Some("away") => ActiveStatus::Away,
                    _ => return Err(r#"status must be "online" or "away""#.into()),
                },
            },
            "ping" => Self::Ping,
            "createRoom" => Self::CreateRoom {
                name: match c.get("name") {
                    Some(Value::String(s)) => RoomName::parse(s).map_err(|e| e.to_string())?,
                    _ => return Err("name is required and must be a string".into()),
                },
                // Required: the contract marks no `?` on it.
                visibility: match c.get("visibility") {
                    Some(v) if v == "public" => Visibility::Public,
                    Some(v) if v == "private" => Visibility::Private,
                    _ => {
                        return Err(
                            r#"visibility is required and must be "public" or "private""#.into(),
                        );
                    }
                },
            },
            "joinRoom" => Self::JoinRoom {
                conversation_id: f.conversation()?,
            },
            "inviteToRoom" => Self::InviteToRoom {
                conversation_id: f.conversation()?,
                user_id: UserId::new(f.id("userId")?),
            },
            "leaveRoom" => Self::LeaveRoom {
                conversation_id: f.conversation()?,
            },
            "listRooms" => Self::ListRooms {
                cursor: f.opt_id("cursor")?.map(ConversationId::new),
                prefix: match c.get("prefix") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) if s.chars().count() <= MAX_ROOM_NAME_CHARS => s.clone(),
                    Some(_) => {
                        return Err("prefix must be a string of at most 64 characters".into());
                    }
                },
                limit: f.limit()?,
            },
            "editMessage" => Self::EditMessage {
                conversation_id: f.conversation()?,
                message_id: MessageId::new(f.id("messageId")?),
                body: f.body()?,
            },
            "deleteMessage" => Self::DeleteMessage {
                conversation_id: f.conversation()?,
                message_id: MessageId::new(f.id("messageId")?),
            },
            "blockUser" => Self::BlockUser {
                user_id: UserId::new(f.id("userId")?),
            },
            "unblockUser" => Self::UnblockUser {
                user_id: UserId::new(f.id("userId")?),
            },
            "getBlocked" => Self::GetBlocked,
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(format!("unknown type {shown:?}"));
            }
        })
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

    fn conversation(&self) -> Result<ConversationId, String> {
        self.id("conversationId").map(ConversationId::new)
    }

    fn body(&self) -> Result<MessageBody, String> {
        match self.0.get("body") {
            Some(Value::String(s)) => MessageBody::parse(s).map_err(|e| e.to_string()),
            _ => Err("body is required and must be a string".into()),
        }
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

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Option<String>, Inbound), BadFrame> {
        parse_frame(text)
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(
            rfc3339(Timestamp::from_millis(1_795_810_053_123)),
            "2026-11-27T20:07:33.123Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_millis(0)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn a_well_formed_send_is_read_with_its_id() {
        let (id, req) = parse(
            r#"{"type":"sendPrivateMessage","id":"r1","content":{"to":"u2","body":"hi","clientMsgId":"c1"}}"#,
        )
        .unwrap();
        assert_eq!(id.as_deref(), Some("r1"));
        assert_eq!(
            req,
            Inbound::Send(Draft {
                to: Recipient::User(UserId::new("u2")),
                body: MessageBody::parse("hi").unwrap(),
                client_msg_id: Some(ClientMsgId::parse("c1").unwrap()),
            })
        );
    }

    /// Sends are read by a fast path first; whatever it takes, the general
    /// path reads the same, and whatever it cannot take (every error case
    /// here) is left to the general path and its error.
    #[test]
    fn the_fast_path_for_sends_agrees_with_the_general_one() {
        let long_id = "x".repeat(65);
        let long_to = "u".repeat(129);
        let long_body = "b".repeat(4001);
        let taken = [
            r#"{"type":"sendMessage","id":"r1","content":{"conversationId":"c1","body":"hi","clientMsgId":"k1"}}"#.to_owned(),
            r#"{"content":{"body":"h\u00e9 \"q\"","to":"u2"},"type":"sendPrivateMessage"}"#.to_owned(),
            r#"{"type":"sendMessage","id":null,"content":{"conversationId":"c1","body":"x","clientMsgId":null,"to":"u9"}}"#.to_owned(),
            r#"{"type":"sendPrivateMessage","id":"\u0072\u0031","content":{"to":"u\u0032","body":"hi"}}"#.to_owned(),
        ];
        let left = [
            r#"{"type":"sendMessage","content":{"body":"hi"}}"#.to_owned(),
            r#"{"type":"sendPrivateMessage","content":{"conversationId":"c1","body":"hi"}}"#.to_owned(),
            r#"{"type":"sendMessage","content":{"conversationId":"","body":"hi"}}"#.to_owned(),
            r#"{"type":"sendMessage","content":{"conversationId":7,"body":"hi"}}"#.to_owned(),
            r#"{"type":"sendMessage","content":{"conversationId":"c1","body":""}}"#.to_owned(),
            r#"{"type":"sendMessage","content":{"conversationId":"c1","body":5}}"#.to_owned(),
            r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"hi","clientMsgId":""}}"#.to_owned(),
            r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"hi","clientMsgId":3}}"#.to_owned(),
            r#"{"type":"sendMessage","id":5,"content":{"conversationId":"c1","body":"hi"}}"#.to_owned(),
            r#"{"type":"sendMessage","id":"a","id":"b","content":{"conversationId":"c1","body":"hi"}}"#.to_owned(),
            r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"a","body":"b"}}"#.to_owned(),
            r#"{"type":"sendMessage","content":null}"#.to_owned(),
            r#"{"type":"sendMessage"}"#.to_owned(),
            r#"{"type":"ping","content":{"conversationId":"c1","body":"hi"}}"#.to_owned(),
            r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"hi"}} x"#.to_owned(),
            r#"{"type":"sendMessage","extra":1e400,"content":{"conversationId":"c1","body":"hi"}}"#.to_owned(),
            r#"{"type":"sendMessage","content":{"conversationId":"c1","body":"hi","more":"\udc00"}}"#.to_owned(),
            format!(r#"{{"type":"sendMessage","id":"{long_id}","content":{{"conversationId":"c1","body":"hi"}}}}"#),
            format!(r#"{{"type":"sendPrivateMessage","content":{{"to":"{long_to}","body":"hi"}}}}"#),
            format!(r#"{{"type":"sendMessage","content":{{"conversationId":"c1","body":"{long_body}"}}}}"#),
        ];
        for text in &taken {
            let fast = parse_send(text).unwrap_or_else(|| panic!("not taken: {text}"));
            assert_eq!(Ok(fast), parse_any(text), "{text}");
        }
        for text in &left {
            assert_eq!(parse_send(text), None, "{text}");
            assert_eq!(parse(text), parse_any(text), "{text}");
        }
        // The duplicate key goes the general way, which keeps the last one.
        let (id, _) = parse(&left[9]).unwrap();
        assert_eq!(id.as_deref(), Some("b"));
    }

    #[test]
    fn content_and_id_may_be_left_out() {
        assert_eq!(
            parse(r#"{"type":"ping"}"#).unwrap(),
            (None, Inbound::Other(Request::Ping))
        );
        assert_eq!(
            parse(r#"{"type":"ping","id":null,"content":null}"#).unwrap(),
            (None, Inbound::Other(Request::Ping))
        );
    }

    #[test]
    fn frames_that_are_not_json_objects_are_bad_requests_without_id() {
        for text in ["not json", "[1,2]", "42", "\"s\"", "null", ""] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.id, None, "{text}");
        }
    }

    #[test]
    fn a_frame_with_a_lone_surrogate_escape_is_refused_with_its_id() {
        for text in [
            r#"{"id":"r1","type":"sendPrivateMessage","content":{"to":"u","body":"\ud800"}}"#,
            r#"{"type":"ping","content":{"x":["\udfff"]},"id":"r1"}"#,
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.id.as_deref(), Some("r1"), "{text}");
            assert!(e.message.contains("not valid JSON"), "{}", e.message);
        }
        // No id to give back when the id itself holds the escape.
        assert_eq!(
            parse(r#"{"id":"\ud800","type":"ping"}"#).unwrap_err().id,
            None
        );
    }

    #[test]
    fn an_unknown_type_is_answered_with_the_request_id() {
        let e = parse(r#"{"type":"fly","id":"r9"}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("r9"));
        assert!(e.message.contains("unknown type"), "{}", e.message);
    }

    #[test]
    fn a_missing_type_or_non_object_content_is_a_bad_request() {
        assert!(parse(r#"{"id":"a"}"#).unwrap_err().message.contains("type"));
        assert!(parse(r#"{"type":7}"#).unwrap_err().message.contains("type"));
        let e = parse(r#"{"type":"ping","id":"a","content":[1]}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("a"));
        assert!(e.message.contains("content"));
    }

    #[test]
    fn an_id_longer_than_64_characters_or_not_a_string_is_refused() {
        let long = "x".repeat(65);
        let e = parse(&format!(r#"{{"type":"ping","id":"{long}"}}"#)).unwrap_err();
        assert_eq!(e.id, None);
        assert!(parse(r#"{"type":"ping","id":5}"#).is_err());
        let ok = "x".repeat(64);
        assert!(parse(&format!(r#"{{"type":"ping","id":"{ok}"}}"#)).is_ok());
    }

    #[test]
    fn missing_or_mistyped_fields_name_the_field() {
        let cases = [
            (
                r#"{"type":"sendPrivateMessage","content":{"body":"hi"}}"#,
                "to",
            ),
            (
                r#"{"type":"sendPrivateMessage","content":{"to":5,"body":"hi"}}"#,
                "to",
            ),
            (
                r#"{"type":"sendPrivateMessage","content":{"to":"u"}}"#,
                "body",
            ),
            (
                r#"{"type":"sendMessage","content":{"conversationId":"c","body":7}}"#,
                "body",
            ),
            (
                r#"{"type":"sendMessage","content":{"body":"x"}}"#,
                "conversationId",
            ),
            (
                r#"{"type":"sendMessage","content":{"conversationId":"c","body":"x","clientMsgId":1}}"#,
                "clientMsgId",
            ),
            (
                r#"{"type":"getHistory","content":{"conversationId":"c","limit":-1}}"#,
                "limit",
            ),
            (
                r#"{"type":"getHistory","content":{"conversationId":"c","beforeSeq":1.5}}"#,
                "beforeSeq",
            ),
            (
                r#"{"type":"getHistory","content":{"conversationId":"c","afterSeq":"3"}}"#,
                "afterSeq",
            ),
            (
                r#"{"type":"markRead","content":{"conversationId":"c"}}"#,
                "seq",
            ),
            (
                r#"{"type":"typing","content":{"conversationId":"c","active":"yes"}}"#,
                "active",
            ),
            (
                r#"{"type":"getPresence","content":{"userIds":"u1"}}"#,
                "userIds",
            ),
            (
                r#"{"type":"getPresence","content":{"userIds":[1]}}"#,
                "userIds",
            ),
            (
                r#"{"type":"setStatus","content":{"status":"offline"}}"#,
                "status",
            ),
            (
                r#"{"type":"getConnectedUsers","content":{"limit":"a"}}"#,
                "limit",
            ),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(field), "{text}: {}", e.message);
        }
    }

    #[test]
    fn body_rules_are_applied_at_the_edge() {
        let long = "x".repeat(4001);
        let e = parse(&format!(
            r#"{{"type":"sendPrivateMessage","content":{{"to":"u","body":"{long}"}}}}"#
        ))
        .unwrap_err();
        assert!(e.message.contains("4000"));
        let e = parse(r#"{"type":"sendPrivateMessage","content":{"to":"u","body":"  \n "}}"#)
            .unwrap_err();
        assert!(e.message.contains("white space"));
    }

    #[test]
    fn a_history_limit_of_zero_is_refused_and_a_large_one_clamped() {
        assert!(
            parse(r#"{"type":"getHistory","content":{"conversationId":"c","limit":0}}"#).is_err()
        );
        let (_, req) =
            parse(r#"{"type":"getHistory","content":{"conversationId":"c","limit":1000}}"#)
                .unwrap();
        let Inbound::Other(Request::GetHistory { query, .. }) = req else {
            panic!()
        };
        assert_eq!(query.limit, 200);
    }

    #[test]
    fn block_requests_are_read_and_need_a_user_id() {
        let (id, req) =
            parse(r#"{"type":"blockUser","id":"b1","content":{"userId":"u"}}"#).unwrap();
        assert_eq!(id.as_deref(), Some("b1"));
        assert_eq!(
            req,
            Inbound::Other(Request::BlockUser {
                user_id: UserId::new("u")
            })
        );
        let (_, req) = parse(r#"{"type":"unblockUser","content":{"userId":"u"}}"#).unwrap();
        assert_eq!(
            req,
            Inbound::Other(Request::UnblockUser {
                user_id: UserId::new("u")
            })
        );
        let (_, req) = parse(r#"{"type":"getBlocked"}"#).unwrap();
        assert_eq!(req, Inbound::Other(Request::GetBlocked));
        for text in [
            r#"{"type":"blockUser","content":{}}"#,
            r#"{"type":"blockUser","content":{"userId":""}}"#,
            r#"{"type":"unblockUser","content":{"userId":7}}"#,
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains("userId"), "{text}: {}", e.message);
        }
    }

    #[test]
    fn room_requests_are_read_and_checked() {
        let (_, req) =
            parse(r#"{"type":"createRoom","content":{"name":"  Lobby ","visibility":"public"}}"#)
                .unwrap();
        assert_eq!(
            req,
            Inbound::Other(Request::CreateRoom {
                name: RoomName::parse("Lobby").unwrap(),
                visibility: Visibility::Public
            })
        );
        let (_, req) =
            parse(r#"{"type":"createRoom","content":{"name":"x","visibility":"private"}}"#)
                .unwrap();
        assert!(matches!(
            req,
            Inbound::Other(Request::CreateRoom {
                visibility: Visibility::Private,
                ..
            })
        ));
        let cases = [
            (r#"{"type":"createRoom","content":{}}"#, "name"),
            (r#"{"type":"createRoom","content":{"name":"   "}}"#, "name"),
            (
                r#"{"type":"createRoom","content":{"name":"x","visibility":"secret"}}"#,
                "visibility",
            ),
            (
                r#"{"type":"createRoom","content":{"name":"x"}}"#,
                "visibility",
            ),
            (
                r#"{"type":"createRoom","content":{"name":"x","visibility":null}}"#,
                "visibility",
            ),
            (r#"{"type":"joinRoom","content":{}}"#, "conversationId"),
            (
                r#"{"type":"inviteToRoom","content":{"conversationId":"c"}}"#,
                "userId",
            ),
            (
                r#"{"type":"leaveRoom","content":{"conversationId":3}}"#,
                "conversationId",
            ),
            (r#"{"type":"listRooms","content":{"prefix":5}}"#, "prefix"),
            (r#"{"type":"listRooms","content":{"limit":-2}}"#, "limit"),
            (
                r#"{"type":"editMessage","content":{"conversationId":"c","body":"x"}}"#,
                "messageId",
            ),
            (
                r#"{"type":"editMessage","content":{"conversationId":"c","messageId":"m"}}"#,
                "body",
            ),
            (
                r#"{"type":"deleteMessage","content":{"messageId":"m"}}"#,
                "conversationId",
            ),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(field), "{text}: {}", e.message);
        }
    }

    #[test]
    fn more_than_1000_presence_ids_are_refused() {
        let ids: Vec<String> = (0..1001).map(|i| format!("\"u{i}\"")).collect();
        let text = format!(
            r#"{{"type":"getPresence","content":{{"userIds":[{}]}}}}"#,
            ids.join(",")
        );
        assert!(parse(&text).is_err());
    }

    #[test]
    fn an_ack_echoes_the_id_or_null_and_events_carry_none() {
        let a = ack(Some("r1"), serde_json::json!({}));
        assert_eq!(a.as_str(), r#"{"type":"ack","id":"r1","content":{}}"#);
        let e = error(None, "bad_request", "x");
        assert_eq!(
            e.as_str(),
            r#"{"type":"error","id":null,"content":{"code":"bad_request","message":"x"}}"#
        );
        let ev = event_frame("typing", serde_json::json!({"a":1}));
        assert_eq!(ev.as_str(), r#"{"type":"typing","content":{"a":1}}"#);
    }

    #[test]
    fn a_deleted_message_has_an_empty_body_on_the_wire() {
        let m = Message {
            id: crate::domain::MessageId::new("m"),
            conversation_id: ConversationId::new("c"),
            seq: 3,
            sender_id: UserId::new("u"),
            sender: crate::domain::Username::parse("ann").unwrap(),
            body: "secret".into(),
            client_msg_id: None,
            created_at: Timestamp::from_millis(0),
            edited_at: None,
            deleted: true,
        };
        let v: Value =
            serde_json::from_str(encode_event(&Event::MessageUpdated(m)).as_str()).unwrap();
        assert_eq!(v["type"], "messageUpdated");
        assert_eq!(v["content"]["message"]["body"], "");
        assert_eq!(v["content"]["message"]["deleted"], true);
        assert_eq!(v["content"]["message"]["seq"], 3);
        assert_eq!(v["content"]["message"]["clientMsgId"], Value::Null);
        assert_eq!(v["content"]["message"]["editedAt"], Value::Null);
    }
}
