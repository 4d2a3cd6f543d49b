//! Presence shared by every node of a cluster: the port a presence store
//! implements ([`SharedPresence`]; in Redis, [`super::redis::ClusterPresence`])
//! and the tasks that keep it honest (docs/cluster.md, section 5): the
//! heartbeat that keeps this node's sessions alive, the reaper that closes
//! the sessions of nodes that died, and the claim of a restarted node's
//! own leftovers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::domain::error::PortError;
use crate::domain::ports::PresenceRegistry;
use crate::domain::service::{Caller, ChatService};
use crate::domain::{SessionId, User};

/// Expired entries handled per reaper batch.
const REAP_BATCH: usize = 1000;
/// Batches per reaper tick, so that a dead node with many sessions is
/// reaped within the bound without one tick running forever.
const REAP_BATCHES_PER_TICK: usize = 20;
/// How often the reaper runs; the offline event leaves at most this long
/// after the entry expired.
pub(super) const REAP_EVERY: Duration = Duration::from_secs(1);

/// A [`PresenceRegistry`] that every node of a cluster shares, where each
/// session entry lives only as long as its node renews it. Each node is
/// one incarnation (a process's random id) of a stable node id.
#[async_trait]
pub trait SharedPresence: PresenceRegistry {
    /// How often [`Self::refresh`] must run to keep entries alive: a
    /// fraction of their time to live, never zero.
    fn heartbeat_every(&self) -> Duration;

    /// At start: records this incarnation as the node's current one and
    /// returns the sessions the previous incarnation of this node id left
    /// behind, for the caller to close at once through
    /// `ChatService::close_session` (contacts hear offline, lastSeen is
    /// recorded). MUST forget those that a concurrent close removed.
    ///
    /// # Errors
    /// When the store fails or does not answer; to be tried again.
    async fn claim_node(&self) -> Result<Vec<(User, SessionId)>, PortError>;

    /// Heartbeat: renews every session this process opened and has not
    /// closed, putting back entries that went missing (the store restarted,
    /// or another node reaped them during an outage) without the session
    /// limit. MUST NOT put back an entry that a concurrent close removed.
    ///
    /// # Errors
    /// When the store fails or does not answer; part may have been renewed.
    async fn refresh(&self) -> Result<(), PortError>;

    /// Up to `max` sessions anywhere in the cluster whose entry expired, of
    /// users with no live entry left, for the caller to close through
    /// `ChatService::close_session`. Removes nothing: `close` does, exactly
    /// once. Skips this process's own sessions while it still serves them.
    ///
    /// # Errors
    /// When the store fails or does not answer.
    async fn expired(&self, max: usize) -> Result<Vec<(User, SessionId)>, PortError>;

    /// Graceful shutdown, after every session was closed through the
    /// service: removes whatever remains of this incarnation, announcing
    /// nothing.
    ///
    /// # Errors
    /// When the store fails or does not answer.
    async fn leave(&self) -> Result<(), PortError>;

    /// Writes the activity that [`PresenceRegistry::touch`] recorded since
    /// the last flush, for every node to read.
    ///
    /// # Errors
    /// When the store fails or does not answer; what was not written is
    /// kept for the next flush.
    async fn flush_touches(&self) -> Result<(), PortError>;

    /// Counts a reaper close that failed (it is retried next tick).
    fn reap_failed(&self);
}

/// Runs the heartbeat (every ttl/4) and the reaper (every second) until
/// aborted, after claiming the node id and closing the previous
/// incarnation's sessions through the service.
pub fn spawn_tasks(
    presence: Arc<dyn SharedPresence>,
    service: Arc<ChatService>,
    reaped: Counter,
) -> JoinHandle<()> {
    tokio::spawn(run_tasks(presence, reaped, move |caller: Caller| {
        let service = service.clone();
        async move { service.close_session(&caller).await }
    }))
}

/// The loop behind [`spawn_tasks`], with the close left to the caller so
/// that tests can run it without a `ChatService`.
pub(super) async fn run_tasks<P, F, Fut>(presence: Arc<P>, reaped: Counter, mut close: F)
where
    P: SharedPresence + ?Sized,
    F: FnMut(Caller) -> Fut,
    Fut: Future<Output = Result<(), PortError>>,
{
    let mut claimed = claim(&presence, &mut close).await;
    let mut heartbeat = tokio::time::interval(presence.heartbeat_every());
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reaper = tokio::time::interval(REAP_EVERY);
    reaper.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A failed heartbeat is retried every reaper tick rather than a whole
    // heartbeat later, so that after an outage this node re-asserts its
    // sessions before other nodes' reapers close them.
    let mut behind = false;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => behind = !heartbeat_once(&presence).await,
            _ = reaper.tick() => {
                if !claimed {
                    claimed = claim(&presence, &mut close).await;
                }
                if behind {
                    behind = !heartbeat_once(&presence).await;
                }
                if let Err(e) = presence.flush_touches().await {
                    warn!(error = %e, "cannot record activity in the shared presence");
                }
                reap(&presence, &reaped, &mut close).await;
            }
        }
    }
}

async fn heartbeat_once<P: SharedPresence + ?Sized>(presence: &Arc<P>) -> bool {
    match presence.refresh().await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e.0, "presence heartbeat failed");
            false
        }
    }
}

/// Claims the node id and closes what its previous incarnation left; false
/// when the presence store failed, to be tried again.
async fn claim<P, F, Fut>(presence: &Arc<P>, close: &mut F) -> bool
where
    P: SharedPresence + ?Sized,
    F: FnMut(Caller) -> Fut,
    Fut: Future<Output = Result<(), PortError>>,
{
    match presence.claim_node().await {
        Ok(left) => {
            for (user, session) in left {
                if let Err(e) = close(Caller { user, session }).await {
                    // Its entry expires and the reaper closes it later.
                    warn!(error = %e, "closing a session of the previous incarnation failed");
                }
            }
            true
        }
        Err(e) => {
            warn!(error = %e.0, "claiming the node id failed");
            false
        }
    }
}

/// Closes expired entries, batch after batch while batches come back full
/// and make progress. Returns how many closes succeeded.
pub(super) async fn reap<P, F, Fut>(presence: &Arc<P>, reaped: &Counter, close: &mut F) -> usize
where
    P: SharedPresence + ?Sized,
    F: FnMut(Caller) -> Fut,
    Fut: Future<Output = Result<(), PortError>>,
{
    let mut done = 0;
    for _ in 0..REAP_BATCHES_PER_TICK {
        let batch = match presence.expired(REAP_BATCH).await {
            Ok(batch) => batch,
            Err(e) => {
                warn!(error = %e.0, "listing expired presence entries failed");
                break;
            }
        };
        let full = batch.len() == REAP_BATCH;
        let mut progress = false;
        for (user, session) in batch {
            match close(Caller { user, session }).await {
                Ok(()) => {
                    reaped.inc();
                    done += 1;
                    progress = true;
                }
                Err(e) => {
                    presence.reap_failed();
                    warn!(error = %e, "closing an expired session failed");
                }
            }
        }
        if !full || !progress {
            break;
        }
    }
    done
}
