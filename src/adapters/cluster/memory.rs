//! The cluster's ports in memory, for unit tests of delivery without a
//! broker: a [`Hub`] that the [`MemoryBus`] of several nodes share, with
//! the knobs to make it do what a real broker does wrong (lose, repeat or
//! hold back a payload, drop a node's connection, deliver nothing on a
//! connection that looks alive, be away), and the single-process presence
//! registry as a [`SharedPresence`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::bus::{Bus, Inbox, Publish};
use super::presence::SharedPresence;
use super::{Broker, lock};
use crate::adapters::presence::InMemoryPresence;
use crate::domain::error::PortError;
use crate::domain::{SessionId, User};

/// What becomes of one payload on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Delivered.
    Deliver,
    /// Lost.
    Drop,
    /// Delivered twice.
    Twice,
    /// Kept until [`Hub::release`].
    Hold,
}

/// Decides the fate of each payload published, by channel and payload.
type Rule = Box<dyn FnMut(&str, &[u8]) -> Fate + Send>;

/// What reaches a node's listening task.
enum Arrival {
    Payload(String, Vec<u8>),
    Lost,
}

/// The broker: every node's subscriptions, and the test's knobs.
#[derive(Default)]
pub struct Hub {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    nodes: Vec<Endpoint>,
    rule: Option<Rule>,
    held: Vec<(String, Vec<u8>)>,
    /// Publishes and subscriptions fail.
    down: bool,
}

struct Endpoint {
    channels: HashSet<String>,
    arrivals: mpsc::UnboundedSender<Arrival>,
    /// Gets nothing until it reconnects.
    deaf: bool,
    reconnects: usize,
}

impl Hub {
    /// A broker with no node.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A new node's connection, as a [`Broker`] with in-memory presence.
    pub fn broker(self: &Arc<Self>, incarnation: &str) -> Broker {
        let (arrivals, incoming) = mpsc::unbounded_channel();
        let mut state = lock(&self.state);
        state.nodes.push(Endpoint {
            channels: HashSet::new(),
            arrivals,
            deaf: false,
            reconnects: 0,
        });
        let bus = MemoryBus {
            hub: self.clone(),
            id: state.nodes.len() - 1,
            incoming: Mutex::new(Some(incoming)),
        };
        Broker {
            incarnation: incarnation.to_owned(),
            bus: Arc::new(bus),
            presence: Arc::new(InMemoryPresence::default()),
        }
    }

    /// Decides, from now on, the fate of every payload on every channel.
    pub fn rule(&self, rule: impl FnMut(&str, &[u8]) -> Fate + Send + 'static) {
        lock(&self.state).rule = Some(Box::new(rule));
    }

    /// Delivers what was held, in the order it was published.
    pub fn release(&self) {
        let mut state = lock(&self.state);
        for (channel, payload) in std::mem::take(&mut state.held) {
            state.deliver(&channel, &payload);
        }
    }

    /// Makes publishing and subscribing fail, or work again.
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    /// Drops node `id`'s connection: its subscriptions go, and it is told.
    pub fn cut(&self, id: usize) {
        let mut state = lock(&self.state);
        let node = &mut state.nodes[id];
        node.channels.clear();
        let _ = node.arrivals.send(Arrival::Lost);
    }

    /// Makes node `id`'s connection deliver nothing until it reconnects,
    /// without telling it.
    pub fn deafen(&self, id: usize) {
        lock(&self.state).nodes[id].deaf = true;
    }

    /// How often node `id` replaced its connection.
    pub fn reconnects(&self, id: usize) -> usize {
        lock(&self.state).nodes[id].reconnects
    }
}

impl State {
    fn deliver(&self, channel: &str, payload: &[u8]) {
        let listening = self.nodes.iter().filter(|n| !n.deaf);
        for node in listening.filter(|n| n.channels.contains(channel)) {
            let arrival = Arrival::Payload(channel.to_owned(), payload.to_vec());
            let _ = node.arrivals.send(arrival);
        }
    }

    fn check(&self) -> Result<(), PortError> {
        if self.down {
            return Err(PortError(anyhow::anyhow!("the hub is down")));
        }
        Ok(())
    }
}

/// One node's connection to a [`Hub`].
pub struct MemoryBus {
    hub: Arc<Hub>,
    id: usize,
    incoming: Mutex<Option<mpsc::UnboundedReceiver<Arrival>>>,
}

#[async_trait]
impl Bus for MemoryBus {
    fn listen(&self, inbox: Arc<dyn Inbox>) -> JoinHandle<()> {
        let incoming = lock(&self.incoming).take();
        tokio::spawn(async move {
            let Some(mut incoming) = incoming else { return };
            while let Some(arrival) = incoming.recv().await {
                match arrival {
                    Arrival::Payload(channel, payload) => inbox.received(&channel, &payload),
                    Arrival::Lost => inbox.disconnected(),
                }
            }
        })
    }

    async fn subscribe(&self, channels: &[&str]) -> Result<(), PortError> {
        let mut state = lock(&self.hub.state);
        state.check()?;
        let node = &mut state.nodes[self.id];
        node.channels
            .extend(channels.iter().map(|c| (*c).to_owned()));
        Ok(())
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), PortError> {
        let mut state = lock(&self.hub.state);
        state.check()?;
        state.nodes[self.id].channels.remove(channel);
        Ok(())
    }

    async fn publish(&self, batch: &[Publish]) -> Result<(), PortError> {
        let mut state = lock(&self.hub.state);
        state.check()?;
        for publish in batch {
            for channel in &publish.channels {
                let payload = &publish.payload;
                let fate = state
                    .rule
                    .as_mut()
                    .map_or(Fate::Deliver, |r| r(channel, payload));
                match fate {
                    Fate::Deliver => state.deliver(channel, payload),
                    Fate::Drop => {}
                    Fate::Twice => {
                        state.deliver(channel, payload);
                        state.deliver(channel, payload);
                    }
                    Fate::Hold => state.held.push((channel.clone(), payload.clone())),
                }
            }
        }
        Ok(())
    }

    async fn reconnect(&self) -> Result<(), PortError> {
        let mut state = lock(&self.hub.state);
        state.check()?;
        let node = &mut state.nodes[self.id];
        node.deaf = false;
        node.reconnects += 1;
        Ok(())
    }
}

/// The single-process registry as a cluster's presence: one node's worth,
/// with nothing to renew, reap or leave.
#[async_trait]
impl SharedPresence for InMemoryPresence {
    fn heartbeat_every(&self) -> Duration {
        Duration::from_secs(3)
    }

    async fn claim_node(&self) -> Result<Vec<(User, SessionId)>, PortError> {
        Ok(Vec::new())
    }

    async fn refresh(&self) -> Result<(), PortError> {
        Ok(())
    }

    async fn expired(&self, _max: usize) -> Result<Vec<(User, SessionId)>, PortError> {
        Ok(Vec::new())
    }

    async fn leave(&self) -> Result<(), PortError> {
        Ok(())
    }

    async fn flush_touches(&self) -> Result<(), PortError> {
        Ok(())
    }

    fn reap_failed(&self) {}
}
