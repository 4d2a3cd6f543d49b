//! Blocking: what a user who blocks another closes to them and hides from
//! them, as pure functions of facts the stores supply.
//!
//! A block is one-way. The blocked user may no longer write to the blocker
//! in their direct conversation nor invite them into a room, and sees the
//! blocker offline and never seen, everywhere presence shows. Rooms they
//! share stay open to both: a room is everyone's, not the blocker's.

use super::ids::UserId;
use super::presence::{Presence, Status};

/// A user asked to block or unblock themself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("you cannot block or unblock yourself")]
pub struct SelfBlock;

/// Checks that `blocker` may block (or unblock) `target`.
///
/// # Errors
/// [`SelfBlock`] when they are the same user.
pub fn may_block(blocker: &UserId, target: &UserId) -> Result<(), SelfBlock> {
    if blocker == target {
        Err(SelfBlock)
    } else {
        Ok(())
    }
}

/// Whether a sender may post in a conversation: in a direct conversation,
/// not when its other member blocks them (`blocked_by_a_member`); in a
/// room, always.
pub fn may_send(direct: bool, blocked_by_a_member: bool) -> bool {
    !(direct && blocked_by_a_member)
}

/// Whether `inviter` may invite `invitee`, given the users who block the
/// inviter: not someone who blocks them.
pub fn may_invite(invitee: &UserId, blockers_of_inviter: &[UserId]) -> bool {
    !blockers_of_inviter.contains(invitee)
}

/// Whether `subject` shows as connected to a viewer whom `blockers_of_viewer`
/// block: a blocker never does.
pub fn shown_online(subject: &UserId, online: bool, blockers_of_viewer: &[UserId]) -> bool {
    online && !blockers_of_viewer.contains(subject)
}

/// A presence as one viewer may see it: a user who blocks the viewer is
/// offline and never seen; the `lastSeen` of a user the viewer shares no
/// conversation with (`shares_conversation`) is hidden, their status not.
pub fn as_seen(presence: Presence, blocks_viewer: bool, shares_conversation: bool) -> Presence {
    if blocks_viewer {
        Presence {
            status: Status::Offline,
            last_seen: None,
            ..presence
        }
    } else if !shares_conversation {
        Presence {
            last_seen: None,
            ..presence
        }
    } else {
        presence
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;
    use crate::domain::user::{User, Username};

    fn id(name: &str) -> UserId {
        UserId::new(name)
    }

    fn ann(status: Status) -> Presence {
        Presence {
            user: User {
                id: id("ann"),
                username: Username::parse("ann").unwrap(),
            },
            status,
            last_seen: Some(Timestamp::from_millis(5)),
        }
    }

    #[test]
    fn nobody_blocks_themself() {
        assert_eq!(may_block(&id("ann"), &id("ann")), Err(SelfBlock));
        assert_eq!(may_block(&id("ann"), &id("bob")), Ok(()));
    }

    #[test]
    fn a_block_closes_the_direct_conversation_but_no_room() {
        assert!(!may_send(true, true));
        assert!(may_send(true, false));
        assert!(may_send(false, true), "rooms stay open");
        assert!(may_send(false, false));
    }

    #[test]
    fn a_blocked_user_cannot_invite_their_blocker_but_anyone_else() {
        let blockers = [id("bob")];
        assert!(!may_invite(&id("bob"), &blockers));
        assert!(may_invite(&id("cid"), &blockers));
        assert!(may_invite(&id("bob"), &[]));
    }

    #[test]
    fn a_blocker_never_shows_online_to_the_blocked() {
        let blockers = [id("bob")];
        assert!(!shown_online(&id("bob"), true, &blockers));
        assert!(shown_online(&id("cid"), true, &blockers));
        assert!(!shown_online(&id("cid"), false, &blockers));
    }

    #[test]
    fn a_blocker_is_offline_and_never_seen_whatever_their_status() {
        for status in [Status::Online, Status::Away, Status::Offline] {
            for shares in [true, false] {
                let seen = as_seen(ann(status), true, shares);
                assert_eq!(seen.status, Status::Offline, "{status:?}");
                assert_eq!(seen.last_seen, None, "{status:?}");
            }
        }
    }

    #[test]
    fn a_stranger_shows_their_status_but_not_when_they_were_last_seen() {
        let seen = as_seen(ann(Status::Away), false, false);
        assert_eq!(seen.status, Status::Away);
        assert_eq!(seen.last_seen, None);
    }

    #[test]
    fn a_contact_is_seen_as_they_are() {
        assert_eq!(as_seen(ann(Status::Away), false, true), ann(Status::Away));
    }
}
