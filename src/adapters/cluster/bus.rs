//! The message bus port: what cluster delivery needs of a broker. A bus
//! carries opaque payloads on named channels between the nodes, at most
//! once: it may lose what is published while a connection is down, and
//! delivery repairs that from the store (docs/cluster.md, section 4). The
//! Redis bus is [`super::redis::RedisBus`]; another broker is one more
//! implementation of [`Bus`] (and of [`super::presence::SharedPresence`]).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use crate::domain::error::PortError;

/// One payload for several channels: a broker that can should copy it to
/// them itself, so that a room of many members costs one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Where it goes.
    pub channels: Vec<String>,
    /// What goes.
    pub payload: Vec<u8>,
}

/// Where a bus hands what it receives. Called from the bus's listening
/// task, one call at a time, in the order the broker delivered.
pub trait Inbox: Send + Sync {
    /// A payload published to `channel`, one this node subscribed to.
    fn received(&self, channel: &str, payload: &[u8]);

    /// The receiving connection was lost: what is published until the
    /// subscriptions are restored is gone, and so may be the subscriptions.
    fn disconnected(&self);
}

/// A publish/subscribe broker shared by the nodes of a cluster.
///
/// Every method may be called from several tasks at once; each is bounded
/// in time by the implementation (a broker that is away fails a call, it
/// does not hang it).
#[async_trait]
pub trait Bus: Send + Sync {
    /// Starts handing every payload received, and every loss of the
    /// receiving connection, to `inbox`, until the returned task is aborted.
    /// Called once, before the first subscription.
    fn listen(&self, inbox: Arc<dyn Inbox>) -> JoinHandle<()>;

    /// Subscribes to every one of `channels` (again, after a reconnection:
    /// it MUST be harmless for a channel already subscribed). `Ok` only
    /// once the broker confirmed, so that whatever is published from then
    /// on reaches the inbox.
    ///
    /// # Errors
    /// When the broker did not confirm in time.
    async fn subscribe(&self, channels: &[&str]) -> Result<(), PortError>;

    /// Stops receiving `channel`. A failure only costs traffic that the
    /// node ignores.
    ///
    /// # Errors
    /// When the broker did not confirm in time.
    async fn unsubscribe(&self, channel: &str) -> Result<(), PortError>;

    /// Publishes each of `batch` to its channels, in order: payloads that
    /// one node publishes to one channel MUST arrive in the order of its
    /// calls. At most once; the liveness probe goes through it too.
    ///
    /// # Errors
    /// When the broker did not take the batch in time (some of it may have
    /// been sent).
    async fn publish(&self, batch: &[Publish]) -> Result<(), PortError>;

    /// Replaces the receiving connection, which looks alive but delivers
    /// nothing (the probe found it so). The caller subscribes every
    /// channel again afterwards.
    ///
    /// # Errors
    /// When no new connection could be made; the old one is kept then.
    async fn reconnect(&self) -> Result<(), PortError>;
}
