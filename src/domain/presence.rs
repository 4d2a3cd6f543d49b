//! Presence: a user is online while at least one of their sessions is open.
//!
//! [`PresenceBook`] is the per-user state machine over sessions. It is plain
//! data; an adapter decides where it lives (in this process's memory today,
//! in a shared store when several processes serve one cluster).

use std::collections::HashMap;

use smallvec::{SmallVec, smallvec};

use super::ids::{SessionId, UserId};
use super::time::Timestamp;
use super::user::{User, Username};

/// The status a user can choose while connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveStatus {
    /// Connected and available.
    Online,
    /// Connected but away.
    Away,
}

/// A user's status as others see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// At least one session, status online.
    Online,
    /// At least one session, status away.
    Away,
    /// No session open.
    Offline,
}

impl From<ActiveStatus> for Status {
    fn from(s: ActiveStatus) -> Self {
        match s {
            ActiveStatus::Online => Status::Online,
            ActiveStatus::Away => Status::Away,
        }
    }
}

/// A user's presence as the contract shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Whose presence.
    pub user: User,
    /// Their status.
    pub status: Status,
    /// Online: their last activity. Offline: when their last session closed.
    /// `None` if they never connected.
    pub last_seen: Option<Timestamp>,
}

/// What the presence registry knows about a connected user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveStatus {
    /// The status they chose.
    pub status: ActiveStatus,
    /// Their last activity.
    pub last_active: Timestamp,
}

/// The session limit was reached; the new session must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("at most {limit} sessions per user")]
pub struct TooManySessions {
    /// The configured limit.
    pub limit: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The name; the id is the entry's key.
    username: Username,
    /// Most users have one session: it is kept inline, not allocated.
    sessions: SmallVec<[SessionId; 1]>,
    live: LiveStatus,
}

/// Every connected user, their sessions and chosen status.
#[derive(Debug, Default)]
pub struct PresenceBook {
    users: HashMap<UserId, Entry>,
}

impl PresenceBook {
    /// Adds a session. Returns true when the user just came online.
    ///
    /// # Errors
    /// [`TooManySessions`] when the user already has `limit` sessions; nothing changes.
    pub fn open(
        &mut self,
        user: &User,
        session: SessionId,
        now: Timestamp,
        limit: usize,
    ) -> Result<bool, TooManySessions> {
        match self.users.get_mut(&user.id) {
            Some(entry) => {
                if entry.sessions.len() >= limit {
                    return Err(TooManySessions { limit });
                }
                entry.sessions.push(session);
                entry.live.last_active = now;
                Ok(false)
            }
            None if limit == 0 => Err(TooManySessions { limit }),
            None => {
                let live = LiveStatus {
                    status: ActiveStatus::Online,
                    last_active: now,
                };
                self.users.insert(
                    user.id.clone(),
                    Entry {
                        username: user.username.clone(),
                        sessions: smallvec![session],
                        live,
                    },
                );
                Ok(true)
            }
        }
    }

    /// Removes a session. Returns true when it was the user's last one, so
    /// that the user just went offline. Unknown sessions change nothing.
    pub fn close(&mut self, user_id: &UserId, session: &SessionId) -> bool {
        let Some(entry) = self.users.get_mut(user_id) else {
            return false;
        };
        let before = entry.sessions.len();
        entry.sessions.retain(|s| s != session);
        if entry.sessions.len() == before || !entry.sessions.is_empty() {
            return false;
        }
        self.users.remove(user_id);
        true
    }

    /// Sets a connected user's chosen status. Returns the new state and
    /// whether the status changed; `None` if the user has no session.
    pub fn set_status(
        &mut self,
        user_id: &UserId,
        status: ActiveStatus,
        now: Timestamp,
    ) -> Option<(LiveStatus, bool)> {
        let entry = self.users.get_mut(user_id)?;
        let changed = entry.live.status != status;
        entry.live = LiveStatus {
            status,
            last_active: now,
        };
        Some((entry.live, changed))
    }

    /// Records activity (a request) for `lastSeen`.
    pub fn touch(&mut self, user_id: &UserId, now: Timestamp) {
        if let Some(entry) = self.users.get_mut(user_id) {
            entry.live.last_active = now;
        }
    }

    /// The live status of a connected user.
    pub fn get(&self, user_id: &UserId) -> Option<LiveStatus> {
        self.users.get(user_id).map(|e| e.live)
    }

    /// How many sessions the user has open.
    pub fn session_count(&self, user_id: &UserId) -> usize {
        self.users.get(user_id).map_or(0, |e| e.sessions.len())
    }

    /// Up to `limit` connected users, in no particular order.
    pub fn online_users(&self, limit: usize) -> Vec<User> {
        self.users
            .iter()
            .take(limit)
            .map(|(id, e)| User {
                id: id.clone(),
                username: e.username.clone(),
            })
            .collect()
    }

    /// How many users are connected.
    pub fn online_count(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> User {
        User {
            id: UserId::new(name),
            username: Username::parse(name).unwrap(),
        }
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn the_first_session_brings_a_user_online() {
        let mut book = PresenceBook::default();
        assert_eq!(
            book.open(&user("ann"), SessionId::new("s1"), t(1), 10),
            Ok(true)
        );
        let live = book.get(&UserId::new("ann")).unwrap();
        assert_eq!(live.status, ActiveStatus::Online);
        assert_eq!(live.last_active, t(1));
    }

    #[test]
    fn a_second_session_does_not_announce_again() {
        let mut book = PresenceBook::default();
        book.open(&user("ann"), SessionId::new("s1"), t(1), 10)
            .unwrap();
        assert_eq!(
            book.open(&user("ann"), SessionId::new("s2"), t(2), 10),
            Ok(false)
        );
        assert_eq!(book.session_count(&UserId::new("ann")), 2);
    }

    #[test]
    fn a_user_stays_online_until_the_last_session_closes() {
        let mut book = PresenceBook::default();
        let ann = user("ann");
        book.open(&ann, SessionId::new("s1"), t(1), 10).unwrap();
        book.open(&ann, SessionId::new("s2"), t(1), 10).unwrap();
        assert!(!book.close(&ann.id, &SessionId::new("s1")));
        assert!(book.get(&ann.id).is_some());
        assert!(book.close(&ann.id, &SessionId::new("s2")));
        assert!(book.get(&ann.id).is_none());
    }

    #[test]
    fn closing_an_unknown_session_changes_nothing() {
        let mut book = PresenceBook::default();
        let ann = user("ann");
        book.open(&ann, SessionId::new("s1"), t(1), 10).unwrap();
        assert!(!book.close(&ann.id, &SessionId::new("nope")));
        assert!(!book.close(&UserId::new("bob"), &SessionId::new("s1")));
        assert_eq!(book.session_count(&ann.id), 1);
    }

    #[test]
    fn one_session_beyond_the_limit_is_refused() {
        let mut book = PresenceBook::default();
        let ann = user("ann");
        for i in 0..3 {
            book.open(&ann, SessionId::new(format!("s{i}")), t(1), 3)
                .unwrap();
        }
        assert_eq!(
            book.open(&ann, SessionId::new("s3"), t(1), 3),
            Err(TooManySessions { limit: 3 })
        );
        assert_eq!(book.session_count(&ann.id), 3);
    }

    #[test]
    fn status_changes_are_reported_once() {
        let mut book = PresenceBook::default();
        let ann = user("ann");
        book.open(&ann, SessionId::new("s1"), t(1), 10).unwrap();
        let (live, changed) = book.set_status(&ann.id, ActiveStatus::Away, t(5)).unwrap();
        assert!(changed);
        assert_eq!(live.status, ActiveStatus::Away);
        let (_, changed) = book.set_status(&ann.id, ActiveStatus::Away, t(6)).unwrap();
        assert!(!changed);
        assert!(
            book.set_status(&UserId::new("bob"), ActiveStatus::Away, t(6))
                .is_none()
        );
    }

    #[test]
    fn coming_back_after_going_offline_resets_status_to_online() {
        let mut book = PresenceBook::default();
        let ann = user("ann");
        book.open(&ann, SessionId::new("s1"), t(1), 10).unwrap();
        book.set_status(&ann.id, ActiveStatus::Away, t(2));
        book.close(&ann.id, &SessionId::new("s1"));
        assert_eq!(book.open(&ann, SessionId::new("s2"), t(3), 10), Ok(true));
        assert_eq!(book.get(&ann.id).unwrap().status, ActiveStatus::Online);
    }

    #[test]
    fn activity_moves_last_active() {
        let mut book = PresenceBook::default();
        let ann = user("ann");
        book.open(&ann, SessionId::new("s1"), t(1), 10).unwrap();
        book.touch(&ann.id, t(9));
        assert_eq!(book.get(&ann.id).unwrap().last_active, t(9));
    }

    #[test]
    fn online_users_lists_each_user_once() {
        let mut book = PresenceBook::default();
        book.open(&user("ann"), SessionId::new("a1"), t(1), 10)
            .unwrap();
        book.open(&user("ann"), SessionId::new("a2"), t(1), 10)
            .unwrap();
        book.open(&user("bob"), SessionId::new("b1"), t(1), 10)
            .unwrap();
        assert_eq!(book.online_users(10).len(), 2);
        assert_eq!(book.online_users(1).len(), 1);
        assert_eq!(book.online_count(), 2);
    }
}
