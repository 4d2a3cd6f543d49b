//! Delivery across two nodes on an in-memory bus: what reaches a session
//! on node B of the messages node A delivers, when the bus loses, repeats
//! or holds back payloads, drops B's connection or goes deaf. Time is
//! paused, so reorder windows and probes take no real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::contract;
use super::fault::Faults;
use super::memory::{Fate, Hub};
use super::*;
use crate::adapters::ws::{Mailbox, Outbound};
use crate::domain::event::Event;
use crate::domain::message::{HistoryPage, Message};
use crate::domain::ports::{MockDeviceStore, MockMessageStore, Transport};
use crate::domain::positions::Position;
use crate::domain::routing::Delivery;
use crate::domain::{ConversationId, DeviceId, MessageId, Timestamp, Username};

const REORDER: Duration = Duration::from_millis(200);

/// One conversation, "c", that everybody is in.
#[derive(Default)]
struct Store {
    messages: Mutex<Vec<Message>>,
}

impl Store {
    fn commit(&self, seq: u64) -> Message {
        let message = Message {
            id: MessageId::new(format!("m{seq}")),
            conversation_id: ConversationId::new("c"),
            seq,
            sender_id: UserId::new("ann"),
            sender: Username::parse("ann").unwrap(),
            body: format!("text {seq}"),
            client_msg_id: None,
            created_at: Timestamp::from_millis(1),
            edited_at: None,
            deleted: false,
            attachments: Vec::new(),
        };
        lock(&self.messages).push(message.clone());
        message
    }

    fn latest(&self) -> u64 {
        lock(&self.messages).last().map_or(0, |m| m.seq)
    }
}

#[async_trait]
impl SeqIndex for Store {
    async fn positions(&self, users: &[UserId]) -> Result<Vec<Position>, PortError> {
        let position = |user: &UserId| Position {
            user: user.clone(),
            conversation: ConversationId::new("c"),
            last_seq: self.latest(),
            last_read_seq: 0,
        };
        Ok(users.iter().map(position).collect())
    }
}

/// History as the store has it; nothing else is asked of it.
fn message_store(store: Arc<Store>) -> Arc<dyn MessageStore> {
    let mut mock = MockMessageStore::new();
    mock.expect_history().returning(move |_, query| {
        let after = query.after_seq.unwrap_or(0);
        let before = query.before_seq.unwrap_or(u64::MAX);
        let messages = lock(&store.messages)
            .iter()
            .filter(|m| m.seq > after && m.seq < before)
            .take(query.limit as usize)
            .cloned()
            .collect();
        Ok(HistoryPage {
            messages,
            has_more: false,
        })
    });
    Arc::new(mock)
}

fn settings(node: &str) -> ClusterSettings {
    ClusterSettings {
        redis_url: String::new(),
        prefix: "t".to_owned(),
        node_id: node.to_owned(),
        presence_ttl: Duration::from_secs(12),
        reorder: REORDER,
        resync_every: Duration::from_secs(3600),
        probe_after: Duration::from_secs(3600),
        revocation_sweep: Duration::from_secs(3600),
        faults: Faults::None,
    }
}

/// Node A sends, node B holds bob's session.
struct Rig {
    hub: Arc<Hub>,
    store: Arc<Store>,
    a: Arc<Cluster>,
    b: Arc<Cluster>,
    b_metrics: Arc<Metrics>,
    bob: SessionHandle,
}

impl Rig {
    async fn new(b_settings: ClusterSettings) -> Self {
        let hub = Hub::new();
        let store = Arc::new(Store::default());
        let a = node(&hub, &store, settings("a"), Arc::default()).await;
        let b_metrics = Arc::new(Metrics::default());
        let b = node(&hub, &store, b_settings, b_metrics.clone()).await;
        let outbound = Arc::new(Outbound::new(1000, 1 << 20, 1 << 24, 5));
        let bob = Mailbox::new(SessionId::new("s-bob"), DeviceId::new("d"), outbound, None);
        b.attach(&UserId::new("bob"), bob.clone()).await.unwrap();
        Self {
            hub,
            store,
            a,
            b,
            b_metrics,
            bob,
        }
    }

    /// Commits message `seq` and delivers it from node A to bob.
    async fn send(&self, seq: u64) {
        let message = self.store.commit(seq);
        let delivery = Delivery {
            users: vec![UserId::new("bob")],
            except: None,
        };
        let transport = self.a.transport();
        transport.deliver(delivery, Event::Message(message)).await;
    }

    /// The seqs of the messages bob's session got since the last look.
    fn seqs(&self) -> Vec<u64> {
        self.bob.take().iter().map(message_seq).collect()
    }

    /// Waits until bob's session got `expected` in all, in that order.
    async fn expect(&self, expected: &[u64]) {
        let mut got = Vec::new();
        for _ in 0..1000 {
            got.extend(self.seqs());
            if got.len() >= expected.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Anything more would be a duplicate.
        tokio::time::sleep(REORDER * 5).await;
        got.extend(self.seqs());
        assert_eq!(got, expected);
    }
}

async fn node(
    hub: &Arc<Hub>,
    store: &Arc<Store>,
    settings: ClusterSettings,
    metrics: Arc<Metrics>,
) -> Arc<Cluster> {
    let incarnation = format!("inc-{}", settings.node_id);
    let broker = hub.broker(&incarnation);
    let registry = Arc::new(SessionRegistry::new(metrics.clone()));
    let messages = message_store(store.clone());
    let index = store.clone();
    let mut devices = MockDeviceStore::new();
    devices
        .expect_ended_among()
        .returning(|_, _| Ok(Vec::new()));
    let devices = Arc::new(devices);
    Cluster::join(
        settings, broker, registry, messages, index, devices, metrics,
    )
    .await
    .unwrap()
}

/// The seq an envelope carries, if any.
fn envelope_seq(payload: &[u8]) -> Option<u64> {
    envelope::decode(payload)?.0.s
}

fn message_seq(frame: &hyper_tungstenite::tungstenite::Message) -> u64 {
    let value: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(value["type"], "message", "{value}");
    value["content"]["message"]["seq"].as_u64().unwrap()
}

#[tokio::test(start_paused = true)]
async fn messages_cross_nodes_once_and_in_order_when_the_bus_repeats_one() {
    let rig = Rig::new(settings("b")).await;
    rig.hub.rule(|_, payload| match envelope_seq(payload) {
        Some(2) => Fate::Twice,
        _ => Fate::Deliver,
    });
    for seq in 1..=3 {
        rig.send(seq).await;
    }
    rig.expect(&[1, 2, 3]).await;
    let cluster = &rig.b_metrics.cluster;
    assert_eq!(cluster.duplicates_dropped.get(), 1);
    assert_eq!(cluster.gap_fills.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_message_held_back_is_waited_for_within_the_reorder_window() {
    let rig = Rig::new(settings("b")).await;
    rig.hub.rule(|_, payload| match envelope_seq(payload) {
        Some(1) => Fate::Hold,
        _ => Fate::Deliver,
    });
    for seq in 1..=3 {
        rig.send(seq).await;
    }
    tokio::time::sleep(REORDER / 4).await;
    assert!(rig.seqs().is_empty(), "2 and 3 wait for 1");
    rig.hub.release();
    rig.expect(&[1, 2, 3]).await;
    assert_eq!(rig.b_metrics.cluster.gap_fills.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_message_is_filled_from_the_store_after_the_window() {
    let rig = Rig::new(settings("b")).await;
    rig.hub.rule(|_, payload| match envelope_seq(payload) {
        Some(2) => Fate::Drop,
        _ => Fate::Deliver,
    });
    for seq in 1..=3 {
        rig.send(seq).await;
    }
    rig.expect(&[1, 2, 3]).await;
    let cluster = &rig.b_metrics.cluster;
    assert_eq!(cluster.gap_fills.get(), 1);
    // One query, up to the highest seq known: the held 3 is read again.
    assert_eq!(cluster.gap_filled_messages.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn after_a_lost_connection_the_node_resubscribes_and_resyncs_from_the_store() {
    let rig = Rig::new(settings("b")).await;
    rig.send(1).await;
    rig.expect(&[1]).await;
    // B's connection drops while the broker is away: 2 is lost, and B
    // cannot subscribe again until the broker is back.
    rig.hub.set_down(true);
    rig.hub.cut(1);
    rig.send(2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rig.seqs().is_empty());
    rig.hub.set_down(false);
    // The last message lost: nothing after it shows the gap but the store.
    rig.expect(&[2]).await;
    rig.send(3).await;
    rig.expect(&[3]).await;
    let cluster = &rig.b_metrics.cluster;
    assert_eq!(cluster.redis_connected.get(), 1);
    assert_eq!(cluster.gap_fills.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_delivers_nothing_is_found_by_the_probe_and_replaced() {
    let mut b_settings = settings("b");
    b_settings.probe_after = Duration::from_secs(1);
    let rig = Rig::new(b_settings).await;
    rig.hub.deafen(1);
    rig.send(1).await;
    rig.expect(&[1]).await;
    assert_eq!(rig.hub.reconnects(1), 1);
    assert_eq!(rig.b_metrics.cluster.probe_failures.get(), 1);
    rig.send(2).await;
    rig.expect(&[2]).await;
}

#[tokio::test(start_paused = true)]
async fn the_last_session_of_a_user_unsubscribes_and_a_new_one_is_seeded_afresh() {
    let rig = Rig::new(settings("b")).await;
    let bob = UserId::new("bob");
    rig.b.detach(&bob, rig.bob.id());
    rig.send(1).await;
    tokio::time::sleep(REORDER * 2).await;
    assert!(rig.seqs().is_empty(), "no session, no event");
    // Back: 1 is history now, 2 an event.
    rig.b.attach(&bob, rig.bob.clone()).await.unwrap();
    rig.send(2).await;
    rig.expect(&[2]).await;
    assert_eq!(rig.b_metrics.cluster.gap_fills.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_memory_bus_keeps_the_bus_contract() {
    let hub = Hub::new();
    let (a, b) = (hub.broker("inc-a").bus, hub.broker("inc-b").bus);
    contract::check(a, b, "t").await;
}
