//! Who may do what in a conversation: the membership rules, as pure
//! functions of the conversation's kind and the caller's standing.
//!
//! Owners, members and invited users are all members: the contract gives
//! the creator of a room no extra powers. Former members and strangers are
//! both non-members.

use super::conversation::{ConversationKind, Visibility};

/// Something a caller asks to do in an existing conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// getHistory.
    ReadHistory,
    /// sendMessage.
    Send,
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

/// Why an action is refused; every variant is `forbidden` on the wire.
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

impl Denied {
    /// The explanation a client sees.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotMember => "not a member of this conversation",
            Self::PrivateRoom => "this room is private; ask a member for an invitation",
            Self::NotARoom => "this is a direct conversation, not a room",
            Self::NotSender => "only the sender may change a message",
            Self::Blocked => "this user does not accept this from you",
        }
    }
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
    let room_visibility = match kind {
        ConversationKind::Room { visibility, .. } => Some(*visibility),
        ConversationKind::Direct => None,
    };
    match action {
        Action::Join => match (room_visibility, is_member) {
            (None, _) => Err(Denied::NotARoom),
            (Some(_), true) => Ok(Allowed::AlreadyDone),
            (Some(Visibility::Public), false) => Ok(Allowed::Proceed),
            (Some(Visibility::Private), false) => Err(Denied::PrivateRoom),
        },
        _ if !is_member => Err(Denied::NotMember),
        Action::Invite | Action::Leave if room_visibility.is_none() => Err(Denied::NotARoom),
        Action::Edit { own: false } | Action::Delete { own: false } => Err(Denied::NotSender),
        _ => Ok(Allowed::Proceed),
    }
}

/// Whether a room shows up in `listRooms` for this caller: public rooms for
/// everyone, private rooms for their members only.
pub fn listed(visibility: Visibility, is_member: bool) -> bool {
    visibility == Visibility::Public || is_member
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The roles a caller can have; the first three are members.
    #[derive(Debug, Clone, Copy)]
    enum Role {
        Owner,
        Member,
        Invited,
        FormerMember,
        Stranger,
    }

    const ROLES: [Role; 5] = [
        Role::Owner,
        Role::Member,
        Role::Invited,
        Role::FormerMember,
        Role::Stranger,
    ];

    fn is_member(role: Role) -> bool {
        matches!(role, Role::Owner | Role::Member | Role::Invited)
    }

    fn room(visibility: Visibility) -> ConversationKind {
        ConversationKind::Room {
            name: "r".into(),
            visibility,
        }
    }

    const MEMBER_ONLY: [Action; 6] = [
        Action::ReadHistory,
        Action::Send,
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
                    let got = authorize(&kind, is_member(role), action);
                    let want = if is_member(role) {
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
                    let got = authorize(&kind, is_member(role), action);
                    let want = if is_member(role) {
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
            let got = authorize(&room(Visibility::Public), is_member(role), Action::Join);
            let want = if is_member(role) {
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
            let got = authorize(&room(Visibility::Private), is_member(role), Action::Join);
            let want = if is_member(role) {
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
                    let got = authorize(&room(visibility), is_member(role), action);
                    let want = if is_member(role) {
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
                let got = authorize(&ConversationKind::Direct, is_member(role), action);
                let want = if is_member(role) || action == Action::Join {
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
            assert!(listed(Visibility::Public, is_member(role)), "{role:?}");
            assert_eq!(
                listed(Visibility::Private, is_member(role)),
                is_member(role),
                "{role:?}"
            );
        }
    }
}
