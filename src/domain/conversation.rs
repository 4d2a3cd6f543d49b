//! Conversations and their members. A direct conversation is a conversation
//! with two members (one when a user writes to themself); a room is one with
//! any number. Both share one model so that history, receipts, typing and
//! unread counts work the same way for each.

use super::ids::{ConversationId, UserId};
use super::message::Message;
use super::user::User;

/// Most members listed in a conversation object; `member_count` stays exact.
pub const MEMBERS_LISTED: usize = 100;

/// Most characters in a room name.
pub const MAX_ROOM_NAME_CHARS: usize = 64;

/// A room's name: 1 to 64 characters once surrounding white space is trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomName(String);

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name must be 1 to 64 characters, not only white space")]
pub struct InvalidRoomName;

impl RoomName {
    /// Validates and trims a room name. Names need not be unique.
    ///
    /// # Errors
    /// [`InvalidRoomName`] when blank or too long.
    pub fn parse(raw: &str) -> Result<Self, InvalidRoomName> {
        let name = raw.trim();
        let n = name.chars().count();
        if (1..=MAX_ROOM_NAME_CHARS).contains(&n) {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidRoomName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The form under which room names are compared ignoring case: lower case,
/// with the Greek final sigma folded into the ordinary one, so that a
/// prefix cut mid-word still matches.
pub fn name_key(name: &str) -> String {
    name.to_lowercase().replace('ς', "σ")
}

/// Who may find and enter a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Anyone may find and join it.
    Public,
    /// Only an invitation from a member lets anyone in.
    Private,
}

impl Visibility {
    /// Every visibility; [`crate::domain::membership::listing`] reads it.
    pub const ALL: [Visibility; 2] = [Visibility::Public, Visibility::Private];
}

/// What kind of conversation it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationKind {
    /// The one conversation between a pair of users.
    Direct,
    /// A named group conversation.
    Room {
        /// Its display name.
        name: String,
        /// Who may find and enter it.
        visibility: Visibility,
    },
}

/// A conversation, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The conversation's id.
    pub id: ConversationId,
    /// Direct or room.
    pub kind: ConversationKind,
    /// The seq of its newest message (0 when it has none).
    pub last_seq: u64,
}

/// One user's place in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The newest seq this member has marked read.
    pub last_read_seq: u64,
}

/// One page of `listRooms`, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomsPage {
    /// The rooms.
    pub rooms: Vec<ConversationSummary>,
    /// More rooms match after the last one.
    pub has_more: bool,
}

/// A conversation as one member sees it in `getConversations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The conversation itself.
    pub conversation: Conversation,
    /// The first [`MEMBERS_LISTED`] members, in join order.
    pub members: Vec<User>,
    /// How many members it has.
    pub member_count: u64,
    /// The viewer's read marker.
    pub last_read_seq: u64,
    /// Its newest message, if any.
    pub last_message: Option<Message>,
}

impl ConversationSummary {
    /// Messages the viewer has not read: `lastSeq - lastReadSeq`.
    pub fn unread(&self) -> u64 {
        self.conversation
            .last_seq
            .saturating_sub(self.last_read_seq)
    }
}

/// The key that makes a direct conversation unique per pair of users,
/// whichever of the two writes first.
pub fn direct_key(a: &UserId, b: &UserId) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{lo}|{hi}")
}

/// Where a read marker lands when a member asks to mark `wanted` as read:
/// never past the newest message, never backwards. `None` when it does not move.
pub fn next_read_marker(current: u64, wanted: u64, last_seq: u64) -> Option<u64> {
    let target = wanted.min(last_seq);
    (target > current).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_name_is_trimmed_and_must_have_1_to_64_characters() {
        assert_eq!(RoomName::parse("  Lobby ").unwrap().as_str(), "Lobby");
        assert!(RoomName::parse(&"é".repeat(64)).is_ok());
        assert_eq!(RoomName::parse(&"x".repeat(65)), Err(InvalidRoomName));
        assert_eq!(RoomName::parse("   "), Err(InvalidRoomName));
        assert_eq!(RoomName::parse(""), Err(InvalidRoomName));
    }

    #[test]
    fn room_names_compare_ignoring_case_even_across_final_sigma() {
        assert_eq!(name_key("Lobby"), name_key("LOBBY"));
        assert!(name_key("ΚΟΣΜΟΣ").starts_with(&name_key("ΚΟΣ")));
        assert!(name_key("Été").starts_with(&name_key("ÉT")));
    }

    #[test]
    fn the_direct_key_is_the_same_whoever_writes_first() {
        let (a, b) = (UserId::new("a"), UserId::new("b"));
        assert_eq!(direct_key(&a, &b), direct_key(&b, &a));
        assert_ne!(direct_key(&a, &a), direct_key(&a, &b));
    }

    #[test]
    fn a_read_marker_moves_forward_only() {
        assert_eq!(next_read_marker(3, 5, 10), Some(5));
        assert_eq!(next_read_marker(5, 3, 10), None);
        assert_eq!(next_read_marker(5, 5, 10), None);
    }

    #[test]
    fn a_read_marker_stops_at_the_newest_message() {
        assert_eq!(next_read_marker(3, 99, 10), Some(10));
        assert_eq!(next_read_marker(10, 99, 10), None);
        assert_eq!(next_read_marker(0, 1, 0), None);
    }

    #[test]
    fn unread_is_last_seq_minus_last_read_seq() {
        let s = ConversationSummary {
            conversation: Conversation {
                id: ConversationId::new("c"),
                kind: ConversationKind::Direct,
                last_seq: 7,
            },
            members: vec![],
            member_count: 2,
            last_read_seq: 4,
            last_message: None,
        };
        assert_eq!(s.unread(), 3);
    }
}
