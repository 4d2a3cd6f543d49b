//! Who may do what in a conversation: the membership rules, as pure
//! functions of the conversation's kind and the caller's standing.
//!
//! Owners, members and invited users are all members: the contract gives
//! the creator of a room no extra powers. Former members and strangers are
//! both non-members.

use super::blocking;
use super::conversation::{ConversationKind, Visibility};

/// Something a caller asks to do in an existing conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// getHistory.
    ReadHistory,
    /// sendMessage and sendPrivateMessage; `blocked_by_a_member` when a
    /// member of the conversation blocks the sender.
    Send {
        /// A member blocks the sender.
        blocked_by_a_member: bool,
    },
    /// markRead.
    MarkRead,
    /// typing.
    Typing,
    /// editMessage; `own` when the caller sent the message.
    Edit {
        /// The caller is the message's sender.
        own: bool,
    },
    /// deleteMessage; `own` when the caller sent the message.
    Delete {
        /// The caller is the message's sender.
        own: bool,
    },
    /// joinRoom.
    Join,
    /// inviteToRoom.
    Invite,
    /// leaveRoom.
    Leave,
}

/// A permitted action, and whether it changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Go ahead.
    Proceed,
    /// Already done (joining a room one is in): answer, change nothing.
    AlreadyDone,
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Only members may do this.
    NotMember,
    /// A private room is entered only by invitation.
    PrivateRoom,
    /// Joining, inviting and leaving apply to rooms only.
    NotARoom,
    /// Only the sender may edit or delete a message.
    NotSender,
    /// The other user blocks the caller: no direct message, no invitation.
    Blocked,
}

/// Decides whether a caller with the given standing may take `action`.
///
/// # Errors
/// [`Denied`] naming the rule that refuses it.
pub fn authorize(
    kind: &ConversationKind,
    is_member: bool,
    action: Action,
) -> Result<Allowed, Denied> {
    let room = match kind {
        ConversationKind::Room { visibility, .. } => Some(*visibility),
        ConversationKind::Direct => None,
    };
    decide(room, is_member, action)
}

/// The decision on a send, from what a store reads inside the transaction
/// that stores the message (where membership and blocks cannot change
/// under it): [`authorize`] with [`Action::Send`]. A store applies this
/// rule rather than one of its own.
///
/// # Errors
/// [`Denied::NotMember`] or [`Denied::Blocked`].
pub fn authorize_send(
    direct: bool,
    is_member: bool,
    blocked_by_a_member: bool,
) -> Result<(), Denied> {
    // A room's visibility does not bear on a send.
    let room = (!direct).then_some(Visibility::Public);
    decide(
        room,
        is_member,
        Action::Send {
            blocked_by_a_member,
        },
    )
    .map(drop)
}

/// The rules, over a room's visibility (`None` for a direct conversation).
fn decide(room: Option<Visibility>, is_member: bool, action: Action) -> Result<Allowed, Denied> {
    match action {
        Action::Join => match (room, is_member) {
            (None, _) => Err(Denied::NotARoom),
            (Some(_), true) => Ok(Allowed::AlreadyDone),
            (Some(Visibility::Public), false) => Ok(Allowed::Proceed),
            (Some(Visibility::Private), false) => Err(Denied::PrivateRoom),
        },
        _ if !is_member => Err(Denied::NotMember),
        Action::Send {
            blocked_by_a_member,
        } => {
            if blocking::may_send(room.is_none(), blocked_by_a_member) {
                Ok(Allowed::Proceed)
            } else {
                Err(Denied::Blocked)
            }
        }
        Action::Invite | Action::Leave if room.is_none() => Err(Denied::NotARoom),
        Action::Edit { own: false } | Action::Delete { own: false } => Err(Denied::NotSender),
        _ => Ok(Allowed::Proceed),
    }
}

/// Whether a room shows up in `listRooms` for this caller: public rooms for
/// everyone, private rooms for their members only.
pub fn listed(visibility: Visibility, is_member: bool) -> bool {
    match visibility {
        Visibility::Public => true,
        Visibility::Private => is_member,
    }
}

/// [`listed`] as the filter of a query: the visibilities whose rooms are
/// listed for everyone, and those listed for their members only. A store
/// pages `listRooms` in its query, so it filters by this rather than by a
/// rule of its own.
pub fn listing() -> (Vec<Visibility>, Vec<Visibility>) {
    let mut everyone = Vec::new();
    let mut members_only = Vec::new();
    for visibility in Visibility::ALL {
        if listed(visibility, false) {
            everyone.push(visibility);
        } else if listed(visibility, true) {
            members_only.push(visibility);
        }
    }
    (everyone, members_only)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The standings a caller can have in a conversation; the first three
    /// are members.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Role {
        Owner,
        Member,
        Invited,
        FormerMember,
        Stranger,
    }

    pub(crate) const ROLES: [Role; 5] = [
        Role::Owner,
        Role::Member,
        Role::Invited,
        Role::FormerMember,
        Role::Stranger,
    ];

    impl Role {
        /// Whether a caller with this role is a member.
        pub(crate) fn is_member(self) -> bool {
            matches!(self, Role::Owner | Role::Member | Role::Invited)
        }
    }

    fn room(visibility: Visibility) -> ConversationKind {
        ConversationKind::Room {
            name: "r".into(),
            visibility,
        }
    }

    const MEMBER_ONLY: [Action; 6] = [
        Action::ReadHistory,
        Action::Send {
            blocked_by_a_member: false,
        },
        Action::MarkRead,
        Action::Typing,
        Action::Edit { own: true },
        Action::Delete { own: true },
    ];

    #[test]
    fn members_of_any_kind_may_read_send_mark_and_type_and_others_are_forbidden() {
        for kind in [
            room(Visibility::Public),
            room(Visibility::Private),
            ConversationKind::Direct,
        ] {
            for role in ROLES {
                for action in MEMBER_ONLY {
                    let got = authorize(&kind, role.is_member(), action);
                    let want = if role.is_member() {
                        Ok(Allowed::Proceed)
                    } else {
                        Err(Denied::NotMember)
                    };
                    assert_eq!(got, want, "{role:?} {action:?} in {kind:?}");
                }
            }
        }
    }

    #[test]
    fn only_the_sender_edits_or_deletes_even_among_members() {
        for kind in [
            room(Visibility::Public),
            room(Visibility::Private),
            ConversationKind::Direct,
        ] {
            for role in ROLES {
                for action in [Action::Edit { own: false }, Action::Delete { own: false }] {
                    let got = authorize(&kind, role.is_member(), action);
                    let want = if role.is_member() {
                        Denied::NotSender
                    } else {
                        Denied::NotMember
                    };
                    assert_eq!(got, Err(want), "{role:?} {action:?}");
                }
            }
        }
    }

    #[test]
    fn anyone_may_join_a_public_room_and_members_joining_again_change_nothing() {
        for role in ROLES {
            let got = authorize(&room(Visibility::Public), role.is_member(), Action::Join);
            let want = if role.is_member() {
                Allowed::AlreadyDone
            } else {
                Allowed::Proceed
            };
            assert_eq!(got, Ok(want), "{role:?}");
        }
    }

    #[test]
    fn a_private_room_cannot_be_joined_by_former_members_or_strangers() {
        for role in ROLES {
            let got = authorize(&room(Visibility::Private), role.is_member(), Action::Join);
            let want = if role.is_member() {
                Ok(Allowed::AlreadyDone)
            } else {
                Err(Denied::PrivateRoom)
            };
            assert_eq!(got, want, "{role:?}");
        }
    }

    #[test]
    fn only_members_invite_and_leave_rooms() {
        for visibility in [Visibility::Public, Visibility::Private] {
            for role in ROLES {
                for action in [Action::Invite, Action::Leave] {
                    let got = authorize(&room(visibility), role.is_member(), action);
                    let want = if role.is_member() {
                        Ok(Allowed::Proceed)
                    } else {
                        Err(Denied::NotMember)
                    };
                    assert_eq!(got, want, "{role:?} {action:?} {visibility:?}");
                }
            }
        }
    }

    #[test]
    fn nobody_joins_invites_to_or_leaves_a_direct_conversation() {
        for role in ROLES {
            for action in [Action::Join, Action::Invite, Action::Leave] {
                let got = authorize(&ConversationKind::Direct, role.is_member(), action);
                let want = if role.is_member() || action == Action::Join {
                    Denied::NotARoom
                } else {
                    Denied::NotMember
                };
                assert_eq!(got, Err(want), "{role:?} {action:?}");
            }
        }
    }

    #[test]
    fn private_rooms_are_listed_for_their_members_only() {
        for role in ROLES {
            assert!(listed(Visibility::Public, role.is_member()), "{role:?}");
            assert_eq!(
                listed(Visibility::Private, role.is_member()),
                role.is_member(),
                "{role:?}"
            );
        }
    }

    #[test]
    fn the_listing_filter_is_the_listing_rule() {
        let (everyone, members_only) = listing();
        assert_eq!(everyone, [Visibility::Public]);
        assert_eq!(members_only, [Visibility::Private]);
        for visibility in Visibility::ALL {
            assert_eq!(
                everyone.contains(&visibility) || members_only.contains(&visibility),
                listed(visibility, true),
                "{visibility:?}"
            );
        }
    }

    #[test]
    fn a_member_blocking_the_sender_closes_a_direct_conversation_but_no_room() {
        let blocked = Action::Send {
            blocked_by_a_member: true,
        };
        let direct = ConversationKind::Direct;
        assert_eq!(authorize(&direct, true, blocked), Err(Denied::Blocked));
        assert_eq!(authorize(&direct, false, blocked), Err(Denied::NotMember));
        for visibility in [Visibility::Public, Visibility::Private] {
            let got = authorize(&room(visibility), true, blocked);
            assert_eq!(got, Ok(Allowed::Proceed), "{visibility:?}");
        }
    }

    #[test]
    fn a_store_deciding_a_send_decides_as_authorize() {
        for direct in [true, false] {
            for is_member in [true, false] {
                for blocked_by_a_member in [true, false] {
                    let kind = if direct {
                        ConversationKind::Direct
                    } else {
                        room(Visibility::Private)
                    };
                    let send = Action::Send {
                        blocked_by_a_member,
                    };
                    let want = authorize(&kind, is_member, send).map(drop);
                    let got = authorize_send(direct, is_member, blocked_by_a_member);
                    assert_eq!(got, want, "{direct} {is_member} {blocked_by_a_member}");
                }
            }
        }
    }
}
