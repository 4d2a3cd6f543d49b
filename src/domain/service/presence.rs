//! Sessions and presence: opening and closing sessions, who is online,
//! and the statuses users choose.

use std::collections::{HashMap, HashSet};

use super::{CONNECTED_PAGE, Caller, ChatService, MAX_PRESENCE_IDS};
use crate::domain::blocking;
use crate::domain::error::{PortError, PresenceError};
use crate::domain::event::Event;
use crate::domain::ids::UserId;
use crate::domain::page::PageLimit;
use crate::domain::ports::OpenSessionError;
use crate::domain::presence::{ActiveStatus, LiveStatus, Presence, Status};
use crate::domain::routing;
use crate::domain::time::Timestamp;
use crate::domain::user::User;

impl ChatService {
    /// Registers a new session before the WebSocket upgrade, and tells the
    /// user's contacts when it brings the user online.
    ///
    /// # Errors
    /// [`OpenSessionError::TooMany`] when the user is at the session limit.
    pub async fn open_session(&self, caller: &Caller) -> Result<(), OpenSessionError> {
        let limit = self.limits.max_sessions_per_user;
        let came_online = self
            .ports
            .presence
            .open(&caller.user, &caller.session, self.now(), limit)
            .await?;
        if came_online {
            let announced = self
                .announce(&caller.user, Status::Online, Some(self.now()))
                .await;
            if let Err(e) = announced {
                // The caller will not get a session; do not leave one behind.
                let _ = self.close_session(caller).await;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Unregisters a session; when it was the user's last, tells their
    /// contacts they went offline.
    pub async fn close_session(&self, caller: &Caller) -> Result<(), PortError> {
        let now = self.now();
        // Recorded before the registry forgets the session, so that anyone
        // who sees the user offline also sees when they were last here.
        let recorded = self.ports.users.set_last_seen(&caller.user.id, now).await;
        let went_offline = self
            .ports
            .presence
            .close(&caller.user.id, &caller.session)
            .await?;
        if went_offline {
            self.announce(&caller.user, Status::Offline, Some(now))
                .await?;
        }
        recorded
    }

    /// Records that the caller did something, for `lastSeen`.
    pub async fn touch(&self, caller: &Caller) -> Result<(), PortError> {
        self.ports.presence.touch(&caller.user.id, self.now()).await
    }

    async fn announce(
        &self,
        user: &User,
        status: Status,
        last_seen: Option<Timestamp>,
    ) -> Result<(), PortError> {
        let contacts = self.ports.messages.contacts(&user.id).await?;
        let blocked = self.blocked_ids(&user.id).await?;
        let delivery = routing::to_contacts(contacts, &user.id, &blocked);
        if !delivery.is_empty() {
            let presence = Presence {
                user: user.clone(),
                status,
                last_seen,
            };
            self.ports
                .transport
                .deliver(delivery, Event::Presence(presence))
                .await;
        }
        Ok(())
    }

    /// Up to `limit` users who have a session open, as the caller may see
    /// them: without those who block the caller.
    ///
    pub async fn connected_users(
        &self,
        caller: &Caller,
        limit: PageLimit,
    ) -> Result<Vec<User>, PortError> {
        let limit = limit.within(CONNECTED_PAGE.0, CONNECTED_PAGE.1);
        let blockers = self.ports.blocks.blockers_of(&caller.user.id).await?;
        // Asked for as many more as could be left out, so that a full page
        // stays full.
        let mut users = self
            .ports
            .presence
            .online_users(limit.saturating_add(blockers.len()))
            .await?;
        users.retain(|u| blocking::shown_online(&u.id, true, &blockers));
        users.truncate(limit);
        Ok(users)
    }

    /// The presence of each existing user among `ids`, in the order asked,
    /// each once, as the caller may see it ([`blocking::as_seen`]); unknown
    /// ids are skipped.
    ///
    /// # Errors
    /// [`PresenceError::TooManyIds`] for more than [`MAX_PRESENCE_IDS`] ids.
    pub async fn presence_of(
        &self,
        caller: &Caller,
        ids: Vec<UserId>,
    ) -> Result<Vec<Presence>, PresenceError> {
        if ids.len() > MAX_PRESENCE_IDS {
            let max = MAX_PRESENCE_IDS;
            return Err(PresenceError::TooManyIds { max });
        }
        Ok(self.presence_seen_by(&caller.user.id, ids).await?)
    }

    /// The presence of each existing user among `ids` as `viewer` may see it.
    pub(super) async fn presence_seen_by(
        &self,
        viewer: &UserId,
        ids: Vec<UserId>,
    ) -> Result<Vec<Presence>, PortError> {
        let mut ids = ids;
        let mut seen = HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        // Live state first: `close_session` records lastSeen before the
        // registry forgets the session, so whoever is not live here already
        // has their lastSeen stored for the read below. (The other order
        // could read the store just before a close and the registry just
        // after it: offline, and never seen.)
        let live = self.ports.presence.live(&ids).await?;
        let known = self.ports.users.users_last_seen(&ids).await?;
        let mut by_id: HashMap<UserId, (User, Option<Timestamp>)> = known
            .into_iter()
            .map(|(u, seen)| (u.id.clone(), (u, seen)))
            .collect();
        let blockers = self.ports.blocks.blockers_of(viewer).await?;
        let contacts: HashSet<UserId> = self
            .ports
            .messages
            .contacts(viewer)
            .await?
            .into_iter()
            .collect();
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(id))
            .map(|(user, last_seen)| {
                let blocks_viewer = blockers.contains(&user.id);
                let shares = user.id == *viewer || contacts.contains(&user.id);
                let presence = match live.get(&user.id) {
                    Some(l) => Presence {
                        user,
                        status: l.status.into(),
                        last_seen: Some(l.last_active),
                    },
                    None => Presence {
                        user,
                        status: Status::Offline,
                        last_seen,
                    },
                };
                blocking::as_seen(presence, blocks_viewer, shares)
            })
            .collect())
    }

    /// Sets the caller's status; contacts hear of it when it changed.
    pub async fn set_status(
        &self,
        caller: &Caller,
        status: ActiveStatus,
    ) -> Result<Presence, PortError> {
        let now = self.now();
        let (live, changed) = self
            .ports
            .presence
            .set_status(&caller.user.id, status, now)
            .await?
            // The caller's own session is open, so the registry knows them;
            // answer sensibly even if a racing close removed it.
            .unwrap_or((
                LiveStatus {
                    status,
                    last_active: now,
                },
                false,
            ));
        let presence = Presence {
            user: caller.user.clone(),
            status: live.status.into(),
            last_seen: Some(live.last_active),
        };
        if changed {
            self.announce(&caller.user, presence.status, presence.last_seen)
                .await?;
        }
        Ok(presence)
    }
}
