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
