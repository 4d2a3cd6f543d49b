//! What the diesel adapters share besides their queries (`queries.rs`):
//! error translation, the caches of immutable rows, and the row shapes with
//! their mapping into domain types. Nothing here depends on the backend.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

use anyhow::anyhow;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::{messages, users};
use crate::domain::error::PortError;
use crate::domain::message::AppendOutcome;
use crate::domain::ports::{AppendError, CreateUserError};
use crate::domain::{
    Attachment, ClientMsgId, Conversation, ConversationId, ConversationKind, FileId, Message,
    MessageId, Timestamp, User, UserId, Username, Visibility,
};

// ---------------------------------------------------------------- errors

impl From<DieselError> for PortError {
    fn from(e: DieselError) -> Self {
        PortError(e.into())
    }
}

impl From<DieselError> for CreateUserError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Self::Duplicate,
            other => Self::Unknown(other.into()),
        }
    }
}

impl From<DieselError> for AppendError {
    fn from(e: DieselError) -> Self {
        Self::Unknown(e.into())
    }
}

// ---------------------------------------------------------------- caches

/// Entries a cache holds before it starts over; bounds its memory.
pub(super) const CACHE_LIMIT: usize = 100_000;

pub(super) fn cached<V: Clone>(cache: &RwLock<HashMap<String, V>>, key: &str) -> Option<V> {
    cache
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
}

/// A cached user, made around the cache's own copy of its id, which the
/// user's sessions and presence entry then share.
pub(super) fn cached_user(cache: &RwLock<HashMap<UserId, Username>>, id: &str) -> Option<User> {
    let map = cache.read().unwrap_or_else(|e| e.into_inner());
    let (id, username) = map.get_key_value(id)?;
    Some(User {
        id: id.clone(),
        username: username.clone(),
    })
}

pub(super) fn remember<K: Hash + Eq, V>(cache: &RwLock<HashMap<K, V>>, key: K, value: V) {
    let mut map = cache.write().unwrap_or_else(|e| e.into_inner());
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
    map.insert(key, value);
}

// ---------------------------------------------------------------- rows

pub(super) type MessageRow = (
    String,         // id
    String,         // conversation_id
    i64,            // seq
    String,         // sender_id
    String,         // sender's username
    String,         // body
    Option<String>, // client_msg_id
    i64,            // created_at
    Option<i64>,    // edited_at
    bool,           // deleted
    Option<String>, // attachments, as JSON
);

/// The columns of a [`MessageRow`]: a message joined to its sender.
pub(super) type MessageColumns = (
    messages::id,
    messages::conversation_id,
    messages::seq,
    messages::sender_id,
    users::username,
    messages::body,
    messages::client_msg_id,
    messages::created_at,
    messages::edited_at,
    messages::deleted,
    messages::attachments,
);

pub(super) fn stored_username(raw: String) -> anyhow::Result<Username> {
    Username::parse(&raw).map_err(|_| anyhow!("a stored username breaks the username rules"))
}

/// A user from its `(id, username)` columns.
pub(super) fn user_from_row((id, name): (String, String)) -> anyhow::Result<User> {
    Ok(User {
        id: UserId::new(id),
        username: stored_username(name)?,
    })
}

pub(super) fn seq(raw: i64) -> u64 {
    u64::try_from(raw).unwrap_or_default()
}

pub(super) fn to_db_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(super) fn message_from_row(r: MessageRow) -> anyhow::Result<Message> {
    let (id, conversation_id, s, sender_id, sender, body, cmid, created, edited, deleted, files) =
        r;
    Ok(Message {
        id: MessageId::new(id),
        conversation_id: ConversationId::new(conversation_id),
        seq: seq(s),
        sender_id: UserId::new(sender_id),
        sender: stored_username(sender)?,
        body: if deleted { String::new() } else { body },
        client_msg_id: cmid.map(|c| ClientMsgId::parse(&c)).transpose()?,
        created_at: Timestamp::from_millis(created),
        edited_at: edited.map(Timestamp::from_millis),
        deleted,
        attachments: attachments_from_column(files)?,
    })
}

/// An attachment as the `attachments` column keeps it, in a JSON array.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAttachment {
    id: String,
    name: String,
    size: u64,
    #[serde(rename = "type")]
    content_type: String,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    height: Option<u32>,
    #[serde(default)]
    thumbnail: bool,
}

/// The `attachments` column of a message carrying `files`: NULL for none,
/// as most messages are.
pub(super) fn attachments_column(files: &[Attachment]) -> Option<String> {
    if files.is_empty() {
        return None;
    }
    let stored: Vec<StoredAttachment> = files
        .iter()
        .map(|a| StoredAttachment {
            id: a.id.as_str().to_owned(),
            name: a.name.clone(),
            size: a.size,
            content_type: a.content_type.clone(),
            sha256: a.sha256.clone(),
            width: a.width,
            height: a.height,
            thumbnail: a.thumbnail,
        })
        .collect();
    Some(serde_json::to_string(&stored).expect("plain data serializes"))
}

/// The attachments an `attachments` column holds.
pub(super) fn attachments_from_column(raw: Option<String>) -> anyhow::Result<Vec<Attachment>> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let stored: Vec<StoredAttachment> = serde_json::from_str(&raw)?;
    Ok(stored
        .into_iter()
        .map(|a| Attachment {
            id: FileId::new(a.id),
            name: a.name,
            size: a.size,
            content_type: a.content_type,
            sha256: a.sha256,
            width: a.width,
            height: a.height,
            thumbnail: a.thumbnail,
        })
        .collect())
}

/// How a room's visibility is stored.
pub(super) fn visibility_column(visibility: Visibility) -> &'static str {
    match visibility {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

pub(super) type ConversationRow = (String, String, Option<String>, Option<String>, i64);

macro_rules! conversation_columns {
    () => {
        (
            conversations::id,
            conversations::kind,
            conversations::name,
            conversations::visibility,
            conversations::last_seq,
        )
    };
}
pub(super) use conversation_columns;

pub(super) fn conversation_from_row(r: ConversationRow) -> anyhow::Result<Conversation> {
    let (id, kind, name, visibility, last_seq) = r;
    let kind = match kind.as_str() {
        "direct" => ConversationKind::Direct,
        "room" => ConversationKind::Room {
            name: name.unwrap_or_default(),
            visibility: match visibility.as_deref() {
                Some("private") => Visibility::Private,
                _ => Visibility::Public,
            },
        },
        other => return Err(anyhow!("unknown conversation kind {other:?}")),
    };
    Ok(Conversation {
        id: ConversationId::new(id),
        kind,
        last_seq: seq(last_seq),
    })
}

/// A conversation row, its member count, and the viewer's read marker
/// (`None` when the viewer is not a member).
pub(super) type SummaryRow = (ConversationRow, i64, Option<i64>);

/// The columns of a [`SummaryRow`], from conversations joined to the
/// viewer's membership.
macro_rules! summary_columns {
    () => {
        (
            conversation_columns!(),
            conversations::member_count,
            members::last_read_seq.nullable(),
        )
    };
}
pub(super) use summary_columns;

// ---------------------------------------------------------------- batches

/// The results of a batch of `n` appends of which none was committed:
/// each fails alike, with the reason the batch failed.
pub(super) fn all_failed(n: usize, why: &AppendError) -> Vec<Result<AppendOutcome, AppendError>> {
    let why = why.to_string();
    (0..n)
        .map(|_| Err(AppendError::Unknown(PortError(anyhow!("{why}")))))
        .collect()
}
