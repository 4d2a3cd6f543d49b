//! Frames the server writes: acks, errors and events, each serialized
//! once into the bytes every recipient gets.

use hyper_tungstenite::tungstenite::Utf8Bytes;
use serde::Serialize;

use super::dto::{MessageDto, PresenceDto, UserDto};
use crate::domain::Event;
use crate::domain::event::MemberAction;

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
