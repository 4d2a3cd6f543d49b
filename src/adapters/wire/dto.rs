//! The contract's objects (`user`, `message`, `conversation`, `presence`)
//! as they go on the wire, borrowed from the domain types they show.

use serde::Serialize;

use super::rfc3339;
use crate::domain::{
    Attachment, ClientMsgId, ConversationKind, ConversationSummary, Message, Presence, Status,
    User, Visibility,
};

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
    /// Absent when empty: most messages carry no file, and a client
    /// written from the contract alone sees the contract's shape.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<FileDto<'a>>,
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
            attachments: m.attachments.iter().map(FileDto::from).collect(),
        }
    }
}

/// `file`: a file's metadata, as messages carry it and uploads answer it
/// (docs/files.md).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileDto<'a> {
    id: &'a str,
    name: &'a str,
    size: u64,
    content_type: &'a str,
    sha256: &'a str,
    width: Option<u32>,
    height: Option<u32>,
    thumbnail: bool,
}

impl<'a> From<&'a Attachment> for FileDto<'a> {
    fn from(a: &'a Attachment) -> Self {
        Self {
            id: a.id.as_str(),
            name: &a.name,
            size: a.size,
            content_type: &a.content_type,
            sha256: &a.sha256,
            width: a.width,
            height: a.height,
            thumbnail: a.thumbnail,
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
