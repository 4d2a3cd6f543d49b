//! The `PresenceRegistry` adapter for one process: the domain's
//! [`PresenceBook`] behind a mutex. A cluster swaps this for a shared one.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::error::PortError;
use crate::domain::ports::{OpenSessionError, PresenceRegistry};
use crate::domain::presence::{ActiveStatus, LiveStatus, PresenceBook};
use crate::domain::{SessionId, Timestamp, User, UserId};

/// Presence held in this process's memory.
#[derive(Debug, Default)]
pub struct InMemoryPresence {
    // Held for a few hash-map operations only, never across an await.
    book: Mutex<PresenceBook>,
}

impl InMemoryPresence {
    fn lock(&self) -> std::sync::MutexGuard<'_, PresenceBook> {
        // A panic while holding the lock cannot leave the book half-changed
        // in a way that matters more than losing presence, so carry on.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PresenceRegistry for InMemoryPresence {
    async fn open(
        &self,
        user: &User,
        session: &SessionId,
        now: Timestamp,
        limit: usize,
    ) -> Result<bool, OpenSessionError> {
        Ok(self.lock().open(user, session.clone(), now, limit)?)
    }

    async fn close(&self, user: &UserId, session: &SessionId) -> Result<bool, PortError> {
        Ok(self.lock().close(user, session))
    }

    async fn set_status(
        &self,
        user: &UserId,
        status: ActiveStatus,
        now: Timestamp,
    ) -> Result<Option<(LiveStatus, bool)>, PortError> {
        Ok(self.lock().set_status(user, status, now))
    }

    async fn touch(&self, user: &UserId, now: Timestamp) -> Result<(), PortError> {
        self.lock().touch(user, now);
        Ok(())
    }

    async fn live(&self, users: &[UserId]) -> Result<HashMap<UserId, LiveStatus>, PortError> {
        let book = self.lock();
        Ok(users
            .iter()
            .filter_map(|u| book.get(u).map(|l| (u.clone(), l)))
            .collect())
    }

    async fn online_users(&self, limit: usize) -> Result<Vec<User>, PortError> {
        Ok(self.lock().online_users(limit))
    }
}
