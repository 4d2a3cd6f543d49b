//! What one node publishes to another: a one-line JSON header, a newline,
//! then the event frame exactly as sessions receive it. The receiver hands
//! those bytes on without decoding or re-encoding the event.

use hyper_tungstenite::tungstenite::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, MemberAction};
use crate::domain::{ConversationId, SessionId, UserId};

/// The format version; a node drops envelopes of another version.
const VERSION: u8 = 1;

/// What kind of event an envelope carries, as far as delivery cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// `message`: sequenced, exactly once.
    #[serde(rename = "m")]
    Message,
    /// `messageUpdated`: held behind its message.
    #[serde(rename = "u")]
    Updated,
    /// `member` left: the leaver's cursor goes.
    #[serde(rename = "l")]
    Left,
    /// Anything else: best effort.
    #[serde(rename = "o")]
    Other,
    /// The liveness probe, on the node's own channel.
    #[serde(rename = "p")]
    Probe,
}

/// The header of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Format version.
    pub v: u8,
    /// The publishing node's incarnation.
    pub inc: String,
    /// The session that must not receive it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ex: Option<String>,
    /// The kind.
    pub k: Kind,
    /// The conversation, for sequenced kinds and `Left`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<String>,
    /// The seq the event is ordered by (the message's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<u64>,
    /// The user who left, for `Left`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
}

impl Header {
    /// The header for `event`, published by incarnation `inc`.
    pub fn of(event: &Event, inc: &str, except: Option<&SessionId>) -> Self {
        let (k, c, s, who) = match event {
            Event::Message(m) => (
                Kind::Message,
                Some(m.conversation_id.as_str()),
                Some(m.seq),
                None,
            ),
            Event::MessageUpdated(m) => (
                Kind::Updated,
                Some(m.conversation_id.as_str()),
                Some(m.seq),
                None,
            ),
            Event::Member {
                conversation_id,
                user,
                action: MemberAction::Left,
            } => (
                Kind::Left,
                Some(conversation_id.as_str()),
                None,
                Some(user.id.as_str()),
            ),
            _ => (Kind::Other, None, None, None),
        };
        Self {
            v: VERSION,
            inc: inc.to_owned(),
            ex: except.map(|s| s.as_str().to_owned()),
            k,
            c: c.map(str::to_owned),
            s,
            who: who.map(str::to_owned),
        }
    }

    /// The probe header of incarnation `inc`.
    pub fn probe(inc: &str) -> Self {
        Self {
            v: VERSION,
            inc: inc.to_owned(),
            ex: None,
            k: Kind::Probe,
            c: None,
            s: None,
            who: None,
        }
    }

    /// The conversation, typed.
    pub fn conversation(&self) -> Option<ConversationId> {
        self.c.as_deref().map(ConversationId::new)
    }

    /// The excepted session, typed.
    pub fn except(&self) -> Option<SessionId> {
        self.ex.as_deref().map(SessionId::new)
    }

    /// The leaver, typed.
    pub fn who(&self) -> Option<UserId> {
        self.who.as_deref().map(UserId::new)
    }
}

/// Header, newline, frame: one publish payload.
pub fn encode(header: &Header, frame: &str) -> Vec<u8> {
    // A compact serde_json text never holds a raw newline, so the first
    // one ends the header.
    let mut out = serde_json::to_vec(header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(frame.as_bytes());
    out
}

/// Splits a payload into its header and frame; `None` for anything that is
/// not an envelope of this version.
pub fn decode(payload: &[u8]) -> Option<(Header, Utf8Bytes)> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let header: Header = serde_json::from_slice(&payload[..split]).ok()?;
    if header.v != VERSION {
        return None;
    }
    let frame = std::str::from_utf8(&payload[split + 1..]).ok()?;
    Some((header, Utf8Bytes::from(frame.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Presence, Status, User, Username};

    #[test]
    fn a_message_round_trips_with_its_seq_conversation_and_except() {
        let header = Header {
            v: VERSION,
            inc: "inc-1".into(),
            ex: Some("s1".into()),
            k: Kind::Message,
            c: Some("c1".into()),
            s: Some(17),
            who: None,
        };
        let frame = "{\"type\":\"message\",\"content\":{\"text\":\"a\\nb\"}}";
        let (back, bytes) = decode(&encode(&header, frame)).unwrap();
        assert_eq!(back, header);
        assert_eq!(bytes.as_str(), frame);
        assert_eq!(back.conversation(), Some(ConversationId::new("c1")));
        assert_eq!(back.except(), Some(SessionId::new("s1")));
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(decode(b"not json\n{}").is_none());
        assert!(decode(b"{\"v\":1}").is_none(), "no newline");
        let other = encode(&Header::probe("x"), "{}");
        let text = String::from_utf8(other)
            .unwrap()
            .replace("\"v\":1", "\"v\":2");
        assert!(decode(text.as_bytes()).is_none(), "another version");
    }

    #[test]
    fn best_effort_events_are_other() {
        let event = Event::Presence(Presence {
            user: User {
                id: UserId::new("u"),
                username: Username::parse("ann").unwrap(),
            },
            status: Status::Online,
            last_seen: None,
        });
        let header = Header::of(&event, "i", None);
        assert_eq!((header.k, header.c, header.s), (Kind::Other, None, None));
    }
}
