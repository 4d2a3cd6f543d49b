//! What one node publishes to another: a one-line JSON header, a newline,
//! then the event frame exactly as sessions receive it. The receiver hands
//! those bytes on without decoding or re-encoding the event.

use std::borrow::Cow;

use hyper_tungstenite::tungstenite::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, Guarantee};
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

/// What delivery needs to know of an event, with typed ids: built once
/// per event on the node that sends it (ids shared, not copied), and read
/// back from the header on every node that receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The kind.
    pub kind: Kind,
    /// The conversation, for sequenced kinds and `Left`.
    pub conversation: Option<ConversationId>,
    /// The seq the event is ordered by (the message's own).
    pub seq: Option<u64>,
    /// The session that must not receive it.
    pub except: Option<SessionId>,
    /// The user who left, for `Left`.
    pub who: Option<UserId>,
}

impl Route {
    /// The route of `event`, skipping `except`: its kind follows from the
    /// delivery guarantee the domain gives it.
    pub fn of(event: &Event, except: Option<&SessionId>) -> Self {
        let (kind, conversation, seq, who) = match event.guarantee() {
            Guarantee::Sequenced { conversation, seq } => {
                (Kind::Message, Some(conversation.clone()), Some(seq), None)
            }
            Guarantee::AfterMessage { conversation, seq } => {
                (Kind::Updated, Some(conversation.clone()), Some(seq), None)
            }
            Guarantee::EndsOrder {
                conversation,
                member,
            } => (
                Kind::Left,
                Some(conversation.clone()),
                None,
                Some(member.clone()),
            ),
            Guarantee::BestEffort => (Kind::Other, None, None, None),
        };
        Self {
            kind,
            conversation,
            seq,
            except: except.cloned(),
            who,
        }
    }
}

/// The header of an envelope, borrowing its text where it can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// Format version.
    pub v: u8,
    /// The publishing node's incarnation.
    #[serde(borrow)]
    pub inc: Cow<'a, str>,
    /// The session that must not receive it.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub ex: Option<Cow<'a, str>>,
    /// The kind.
    pub k: Kind,
    /// The conversation, for sequenced kinds and `Left`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub c: Option<Cow<'a, str>>,
    /// The seq the event is ordered by (the message's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<u64>,
    /// The user who left, for `Left`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub who: Option<Cow<'a, str>>,
}

impl<'a> Header<'a> {
    /// The header of an event going `route`, published by incarnation `inc`.
    pub fn new(route: &'a Route, inc: &'a str) -> Self {
        let text = |id: Option<&'a str>| id.map(Cow::Borrowed);
        Self {
            v: VERSION,
            inc: Cow::Borrowed(inc),
            ex: text(route.except.as_ref().map(SessionId::as_str)),
            k: route.kind,
            c: text(route.conversation.as_ref().map(ConversationId::as_str)),
            s: route.seq,
            who: text(route.who.as_ref().map(UserId::as_str)),
        }
    }

    /// The probe header of incarnation `inc`.
    pub fn probe(inc: &'a str) -> Self {
        Self {
            v: VERSION,
            inc: Cow::Borrowed(inc),
            ex: None,
            k: Kind::Probe,
            c: None,
            s: None,
            who: None,
        }
    }

    /// The route it carries, typed.
    pub fn route(&self) -> Route {
        Route {
            kind: self.k,
            conversation: self.c.as_deref().map(ConversationId::new),
            seq: self.s,
            except: self.ex.as_deref().map(SessionId::new),
            who: self.who.as_deref().map(UserId::new),
        }
    }
}

/// Header, newline, frame: one publish payload.
pub fn encode(header: &Header<'_>, frame: &str) -> Vec<u8> {
    // A compact serde_json text never holds a raw newline, so the first
    // one ends the header.
    let mut out = serde_json::to_vec(header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(frame.as_bytes());
    out
}

/// Splits a payload into its header and frame; `None` for anything that is
/// not an envelope of this version.
pub fn decode(payload: &[u8]) -> Option<(Header<'_>, Utf8Bytes)> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let header: Header<'_> = serde_json::from_slice(&payload[..split]).ok()?;
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
        let route = Route {
            kind: Kind::Message,
            conversation: Some(ConversationId::new("c1")),
            seq: Some(17),
            except: Some(SessionId::new("s1")),
            who: None,
        };
        let frame = "{\"type\":\"message\",\"content\":{\"text\":\"a\\nb\"}}";
        let header = Header::new(&route, "inc-1");
        let payload = encode(&header, frame);
        let (back, bytes) = decode(&payload).unwrap();
        assert_eq!(back, header);
        assert_eq!(back.inc, "inc-1");
        assert_eq!(bytes.as_str(), frame);
        assert_eq!(back.route(), route);
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
        let route = Route::of(&event, None);
        assert_eq!(
            (route.kind, route.conversation, route.seq),
            (Kind::Other, None, None)
        );
    }
}
