//! Cluster mode (docs/cluster.md): several nodes on one PostgreSQL and one
//! message broker, one service to every client. Events cross nodes on a
//! [`Bus`], one channel per user; `message` events are made exactly-once
//! and in order by the [`tracker`], and presence is shared through a
//! [`SharedPresence`]. The domain does not know: this is a `Transport`, a
//! `PresenceRegistry` and an [`Attach`], plus the bookkeeping of which users
//! have sessions on this node.
//!
//! Everything here but [`redis`] is broker-neutral: another broker is one
//! module implementing [`Bus`] and [`SharedPresence`], and a [`Broker`]
//! made of them.

pub mod bus;
#[cfg(test)]
mod contract;
pub mod envelope;
pub mod fault;
#[cfg(test)]
mod memory;
mod node;
pub mod presence;
pub mod redis;
mod revocation;
mod tasks;
pub mod tracker;
mod transport;

use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{info, warn};

pub use self::bus::Bus;
pub use self::presence::SharedPresence;
pub use transport::ClusterTransport;

use self::fault::Faults;
use self::node::{LocalUser, Locals, Node, Outgoing, SubCommand};
use super::metrics::Metrics;
use super::ws::registry::SessionHandle;
use super::ws::{Attach, SessionRegistry};
use crate::domain::device::Revocation;
use crate::domain::error::PortError;
use crate::domain::ports::{DeviceStore, MessageStore, PresenceRegistry, Revoker};
use crate::domain::positions::SeqIndex;
use crate::domain::service::ChatService;
use crate::domain::{SessionId, UserId};

/// How long a later session of a user waits for the first one's seed.
const SEED_WAIT: Duration = Duration::from_secs(6);
/// How long leaving waits for the publishes still queued.
const FLUSH_WAIT: Duration = Duration::from_secs(4);

/// What a cluster member needs to know.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `redis://host:port/db`.
    pub redis_url: String,
    /// Prefix of every Redis key and channel.
    pub prefix: String,
    /// This node's stable name.
    pub node_id: String,
    /// How long a session's presence entry lives without a heartbeat.
    pub presence_ttl: Duration,
    /// How long a gap waits for its event before the store fills it.
    pub reorder: Duration,
    /// How often every cursor is compared with the store.
    pub resync_every: Duration,
    /// How long the subscriber may sit idle before it is probed.
    pub probe_after: Duration,
    /// How often open connections' device sessions are checked against
    /// the database (revocations the bus lost).
    pub revocation_sweep: Duration,
    /// Test-only publish faults.
    pub faults: Faults,
}

/// A connected broker: what one module per broker (e.g. [`redis::connect`])
/// hands to [`Cluster::join`].
pub struct Broker {
    /// This process's random id on it (a UUID; it never holds `/`).
    pub incarnation: String,
    /// Its publish/subscribe side.
    pub bus: Arc<dyn Bus>,
    /// Its presence side, under the same incarnation.
    pub presence: Arc<dyn SharedPresence>,
}

/// This node's membership of the cluster.
pub struct Cluster {
    node: Arc<Node>,
    presence: Arc<dyn SharedPresence>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    /// Starts delivery on `broker`: listens, subscribes to this node's own
    /// channel and starts the background tasks. Presence starts with
    /// [`Self::start`], once the service exists.
    ///
    /// # Errors
    /// When the broker does not confirm the node's subscription.
    pub async fn join(
        settings: ClusterSettings,
        broker: Broker,
        registry: Arc<SessionRegistry>,
        store: Arc<dyn MessageStore>,
        index: Arc<dyn SeqIndex>,
        devices: Arc<dyn DeviceStore>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        info!(node = %settings.node_id, incarnation = %broker.incarnation, "cluster member");
        let locals = Locals {
            registry,
            store,
            index,
            devices,
            metrics,
        };
        let (node, queues) = Node::new(settings, broker.incarnation, broker.bus, locals);
        let listening = node.bus.listen(Arc::new(node.clone()));
        let channels = [node.node_channel(), node.revocation_channel()];
        let channels: Vec<&str> = channels.iter().map(String::as_str).collect();
        if node.bus.subscribe(&channels).await.is_err() {
            listening.abort();
            anyhow::bail!("cannot subscribe on the message bus");
        }
        node.metrics.cluster.redis_connected.set(1);
        let mut tasks = tasks::spawn(&node, queues);
        tasks.push(listening);
        Ok(Arc::new(Self {
            node,
            presence: broker.presence,
            tasks: Mutex::new(tasks),
        }))
    }

    /// The `Transport` for the core.
    pub fn transport(&self) -> Arc<ClusterTransport> {
        Arc::new(ClusterTransport::new(self.node.clone()))
    }

    /// The `Revoker` for the core.
    pub fn revoker(self: &Arc<Self>) -> Arc<dyn Revoker> {
        self.clone()
    }

    /// The `PresenceRegistry` for the core.
    pub fn presence(&self) -> Arc<dyn PresenceRegistry> {
        self.presence.clone()
    }

    /// Starts the presence heartbeat and reaper, which close sessions
    /// through the service.
    pub fn start(&self, service: Arc<ChatService>) {
        let reaped = self.node.metrics.cluster.presence_reaped.clone();
        let task = presence::spawn_tasks(self.presence.clone(), service, reaped);
        lock(&self.tasks).push(task);
    }

    /// Graceful shutdown, after every session closed: removes what is left
    /// of this node's presence and stops the background tasks.
    pub async fn leave(&self) {
        // The sessions' last events (their users going offline) are still
        // queued: send them before the publisher stops.
        let (flushed, done) = oneshot::channel();
        if self
            .node
            .outgoing
            .send(Outgoing::Flush(flushed))
            .await
            .is_ok()
        {
            let _ = timeout(FLUSH_WAIT, done).await;
        }
        // The heartbeat stops first, or it could put back what leave removes.
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        if let Err(e) = self.presence.leave().await {
            warn!(error = %e, "could not remove this node's presence");
        }
    }

    /// Records that one of the user's sessions here ended or never
    /// started; the last one unsubscribes.
    fn release(&self, user: &UserId) {
        let mut locals = lock(&self.node.locals);
        let Entry::Occupied(mut local) = locals.entry(user.clone()) else {
            return;
        };
        local.get_mut().sessions -= 1;
        if local.get().sessions == 0 {
            local.remove();
            // Under the same lock as the next attach's `begin`, so a
            // returning user's fresh cursors are never forgotten.
            self.node.tracker().forget(user);
            let channel = self.node.user_channel(user);
            let _ = self.node.subs.send(SubCommand::Unsubscribe(channel));
        }
    }
}

/// Makes a new session's events flow: the first session of a user on this
/// node subscribes to the user's channel and seeds their cursors from the
/// store; then the session is registered, atomically with respect to every
/// emission, so it misses nothing and gets nothing twice.
/// Closes what ended here and tells every other node.
#[async_trait]
impl Revoker for Cluster {
    async fn revoked(&self, what: Revocation) {
        self.node.revoke(&what);
    }
}

#[async_trait]
impl Attach for Cluster {
    async fn attach(&self, user: &UserId, handle: SessionHandle) -> Result<(), PortError> {
        let (mut ready, done) = {
            let mut locals = lock(&self.node.locals);
            match locals.entry(user.clone()) {
                Entry::Occupied(mut local) => {
                    local.get_mut().sessions += 1;
                    (local.get().ready.clone(), None)
                }
                Entry::Vacant(vacant) => {
                    let (done, ready) = watch::channel(None);
                    vacant.insert(LocalUser {
                        sessions: 1,
                        ready: ready.clone(),
                    });
                    (ready, Some(done))
                }
            }
        };
        let ok = if let Some(done) = done {
            let ok = self.node.first_attach(user, handle).await;
            let _ = done.send(Some(ok));
            ok
        } else {
            let seen = timeout(SEED_WAIT, ready.wait_for(Option::is_some)).await;
            let ok = matches!(seen, Ok(Ok(v)) if *v == Some(true));
            if ok {
                self.node.join_cursors(user, handle);
            }
            ok
        };
        if ok {
            Ok(())
        } else {
            self.release(user);
            Err(PortError(anyhow::anyhow!(
                "cannot subscribe the session's user on the message bus"
            )))
        }
    }

    fn detach(&self, user: &UserId, session: &SessionId) {
        self.node.unregister(user, session);
        self.release(user);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data whole at each step.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
