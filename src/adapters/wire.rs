//! The wire format: JSON shapes of the contract's objects, frames and
//! requests, and their conversion to and from domain types. Both inbound
//! adapters (HTTP and WebSocket) speak through this module only.
//!
//! - `requests`: frames in, read into [`Inbound`] (the request table is
//!   there: start from [`Request`] to add a request type);
//! - `frames`: acks, errors and events out;
//! - `dto`: the contract's objects; `paging`: replies that list them;
//! - `errors`: a use-case error's code and text.

mod dto;
mod errors;
mod frames;
mod paging;
mod requests;

pub use dto::{ConversationDto, FileDto, MessageDto, PresenceDto, UserDto};
pub use errors::error_code;
pub use frames::{ErrorDto, MessageContent, ack, encode_event, error, event_frame};
pub use paging::{
    ConversationsContent, HistoryContent, MAX_REPLY_BYTES, RoomsContent, conversation_page, fit,
};
pub use requests::{BadFrame, Inbound, MAX_REQUEST_ID_CHARS, Request, parse_frame};
#[cfg(test)]
use requests::{parse_any, parse_send};

use crate::domain::Timestamp;

/// RFC 3339, UTC, milliseconds: `2026-11-27T20:07:33.123Z`.
pub fn rfc3339(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(t.millis())
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests;
