//! How an accepted session starts and stops receiving events: one port for
//! the inbound adapters, whether the events come from this process only
//! (the [`SessionRegistry`]) or from a whole cluster, which must subscribe
//! and seed before it registers (docs/cluster.md, section 4.1).

use async_trait::async_trait;

use super::registry::{SessionHandle, SessionRegistry};
use crate::domain::error::PortError;
use crate::domain::{SessionId, UserId};

/// Starts and stops a session's flow of events.
#[async_trait]
pub trait Attach: Send + Sync {
    /// Makes events for `user` reach `handle` from now on, each once and
    /// none that was committed before the call. Called once per session,
    /// after its `welcome` is queued.
    ///
    /// # Errors
    /// When the events cannot be made to flow; nothing is left attached
    /// then, and the session must be refused.
    async fn attach(&self, user: &UserId, handle: SessionHandle) -> Result<(), PortError>;

    /// Stops events reaching the session. Called once per session that
    /// attached, after it ended.
    fn detach(&self, user: &UserId, session: &SessionId);
}

/// A single process: events come from this process only, so registering
/// is all there is to it.
#[async_trait]
impl Attach for SessionRegistry {
    async fn attach(&self, user: &UserId, handle: SessionHandle) -> Result<(), PortError> {
        self.register(user, handle);
        Ok(())
    }

    fn detach(&self, user: &UserId, session: &SessionId) {
        self.unregister(user, session);
    }
}
