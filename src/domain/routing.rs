//! Routing rules: which sessions receive which event.
//!
//! The core names users, not sockets: a [`Delivery`] says "every session of
//! these users, except this one", and the transport finds the sessions,
//! wherever they live.

use super::ids::{SessionId, UserId};

/// The audience of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Every session of each of these users receives the event ...
    pub users: Vec<UserId>,
    /// ... except this one, which already has the answer in its ack.
    pub except: Option<SessionId>,
}

impl Delivery {
    /// True when nobody would receive anything.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// `message`, `messageUpdated`, `receipt` and `member`: every session of
/// every member (for `member`, the one who left too), the actor's other
/// sessions included, except the session that acted (it gets the ack, and
/// the event after it where it must hear of it).
pub fn to_members_but_actor_session(members: Vec<UserId>, actor: &SessionId) -> Delivery {
    Delivery {
        users: members,
        except: Some(actor.clone()),
    }
}

/// `typing`: the sessions of the other members; the typist's own devices
/// already know.
pub fn to_other_members(mut members: Vec<UserId>, actor: &UserId) -> Delivery {
    members.retain(|m| m != actor);
    Delivery {
        users: members,
        except: None,
    }
}

/// `presence`: the sessions of users who share a conversation with the user
/// whose status changed, not that user's own sessions, nor those of the
/// users the subject blocks (`blocked`): to them the subject stays offline.
pub fn to_contacts(mut contacts: Vec<UserId>, subject: &UserId, blocked: &[UserId]) -> Delivery {
    contacts.retain(|c| c != subject && !blocked.contains(c));
    contacts.sort();
    contacts.dedup();
    Delivery {
        users: contacts,
        except: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<UserId> {
        names.iter().map(|n| UserId::new(*n)).collect()
    }

    #[test]
    fn a_message_reaches_every_member_but_not_the_sending_session() {
        let d = to_members_but_actor_session(ids(&["ann", "bob"]), &SessionId::new("ann-1"));
        assert_eq!(
            d.users,
            ids(&["ann", "bob"]),
            "ann's other sessions are included"
        );
        assert_eq!(d.except, Some(SessionId::new("ann-1")));
    }

    #[test]
    fn typing_reaches_only_the_other_members() {
        let d = to_other_members(ids(&["ann", "bob", "cid"]), &UserId::new("bob"));
        assert_eq!(d.users, ids(&["ann", "cid"]));
        assert_eq!(d.except, None);
    }

    #[test]
    fn typing_to_oneself_reaches_nobody() {
        assert!(to_other_members(ids(&["ann"]), &UserId::new("ann")).is_empty());
    }

    #[test]
    fn presence_reaches_contacts_once_each_and_never_the_subject() {
        let d = to_contacts(ids(&["bob", "ann", "bob", "cid"]), &UserId::new("ann"), &[]);
        assert_eq!(d.users, ids(&["bob", "cid"]));
        assert_eq!(d.except, None);
    }

    #[test]
    fn presence_never_reaches_the_users_the_subject_blocks() {
        let d = to_contacts(
            ids(&["bob", "cid", "bob", "dan"]),
            &UserId::new("ann"),
            &ids(&["bob", "eve"]),
        );
        assert_eq!(d.users, ids(&["cid", "dan"]));
    }
}
