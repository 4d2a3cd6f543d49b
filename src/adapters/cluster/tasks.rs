//! The tasks that drive one node's delivery, whatever the broker: the
//! subscription owner, the publisher, the gap filler, the resync and the
//! liveness probe (docs/cluster.md, sections 3 and 4).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::bus::Publish;
use super::envelope::{self, Header};
use super::fault::{self, Faults};
use super::lock;
use super::node::{Node, Outgoing, Queues, SubCommand};

/// Publishes sent in one call to the bus.
const PUBLISH_BATCH: usize = 256;
/// How long a probe may take to come back.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// How often a failed resubscription is tried again.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(500);

/// Starts every task of `node`, to run until aborted.
pub(super) fn spawn(node: &Arc<Node>, queues: Queues) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![];
    if let Faults::DeafAfter(after) = node.settings.faults {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            warn!("test fault: the node ignores what the bus hands in from now on");
            node.deaf.store(true, Ordering::Release);
        }));
    }
    tasks.extend([
        tokio::spawn(run_subscriptions(node.clone(), queues.subs)),
        tokio::spawn(run_publisher(node.clone(), queues.outgoing)),
        tokio::spawn(run_filler(node.clone())),
        tokio::spawn(run_resync(node.clone())),
        tokio::spawn(run_probe(node.clone())),
        tokio::spawn(run_revocation_sweep(node.clone())),
    ]);
    tasks
}

/// Owns the set of channels this node wants, applying subscribe and
/// unsubscribe requests in the order they were made (a user leaving and
/// coming back must end subscribed).
async fn run_subscriptions(node: Arc<Node>, mut commands: mpsc::UnboundedReceiver<SubCommand>) {
    let mut desired: HashSet<String> =
        HashSet::from([node.node_channel(), node.revocation_channel()]);
    let mut batch = Vec::new();
    while commands.recv_many(&mut batch, 1024).await > 0 {
        let mut batch_iter = batch.drain(..).peekable();
        while let Some(command) = batch_iter.next() {
            match command {
                SubCommand::Subscribe(channel, reply) => {
                    // Consecutive subscribes go in one call.
                    let mut group = vec![(channel, reply)];
                    while let Some(SubCommand::Subscribe(..)) = batch_iter.peek() {
                        if let Some(SubCommand::Subscribe(c, r)) = batch_iter.next() {
                            group.push((c, r));
                        }
                    }
                    let channels: Vec<&str> = group.iter().map(|(c, _)| c.as_str()).collect();
                    let ok = node.bus.subscribe(&channels).await.is_ok();
                    for (channel, reply) in group {
                        if ok {
                            desired.insert(channel);
                        }
                        let _ = reply.send(ok);
                    }
                }
                SubCommand::Unsubscribe(channel) => {
                    desired.remove(&channel);
                    // Best effort: an extra subscription only costs traffic
                    // that the node ignores (no local user).
                    let _ = node.bus.unsubscribe(&channel).await;
                }
                SubCommand::Recover(reason) => recover(&node, &desired, reason).await,
                SubCommand::Rebuild => {
                    match node.bus.reconnect().await {
                        Ok(()) => node.deaf.store(false, Ordering::Release),
                        Err(e) => {
                            warn!(error = %e, "cannot replace the bus's receiving connection")
                        }
                    }
                    recover(&node, &desired, "probe").await;
                }
            }
        }
    }
}

/// Subscribes the whole desired set again (a broker may restore only some
/// of it by itself) until the bus answers, then resyncs from the store:
/// whatever was published meanwhile is gone.
async fn recover(node: &Arc<Node>, desired: &HashSet<String>, reason: &'static str) {
    let channels: Vec<&str> = desired.iter().map(String::as_str).collect();
    while node.bus.subscribe(&channels).await.is_err() {
        tokio::time::sleep(RESUBSCRIBE_EVERY).await;
    }
    info!(reason, channels = channels.len(), "subscriptions restored");
    node.metrics.cluster.redis_connected.set(1);
    node.touch_push();
    node.request_resync(reason);
    // Revocations published while the bus was away are gone too.
    let reloading = node.clone();
    tokio::spawn(async move { reloading.reload_revocations(reason).await });
}

/// Checks the open connections' device sessions against the database every
/// `revocation_sweep`: a node whose bus is away still closes what ended.
async fn run_revocation_sweep(node: Arc<Node>) {
    let mut every = tokio::time::interval(node.settings.revocation_sweep);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        node.reload_revocations("sweep").await;
    }
}

/// Sends queued publishes in order, many per call.
async fn run_publisher(node: Arc<Node>, mut queue: mpsc::Receiver<Outgoing>) {
    let faults = node.settings.faults;
    let mut messages = 0u64;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut publishes = Vec::with_capacity(PUBLISH_BATCH);
    let mut failing = false;
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut flushed = Vec::new();
        for out in batch.drain(..) {
            let (publish, message) = match out {
                Outgoing::Publish(publish, message) => (publish, message),
                Outgoing::Flush(done) => {
                    flushed.push(done);
                    continue;
                }
            };
            if message && faults != Faults::None {
                messages += 1;
                match faults.verdict(messages) {
                    fault::Verdict::Pass => {}
                    fault::Verdict::Drop => continue,
                    fault::Verdict::Delay(hold) => {
                        let bus = node.bus.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(hold).await;
                            let _ = bus.publish(std::slice::from_ref(&publish)).await;
                        });
                        continue;
                    }
                }
            }
            publishes.push(publish);
        }
        if !publishes.is_empty() {
            send_batch(&node, &publishes, &mut failing).await;
            publishes.clear();
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Sends one batch of publishes; counts what went and what was lost.
async fn send_batch(node: &Node, batch: &[Publish], failing: &mut bool) {
    let count = batch.len() as u64;
    match node.bus.publish(batch).await {
        Ok(()) => {
            node.metrics.cluster.published.inc_by(count);
            if std::mem::take(failing) {
                info!("publishing to the bus again");
            }
        }
        Err(_) => {
            node.metrics.cluster.publish_dropped.inc_by(count);
            if !std::mem::replace(failing, true) {
                warn!("cannot publish to the bus; events to other nodes are being dropped");
            }
        }
    }
}

/// Fills gaps whose reorder window has passed.
async fn run_filler(node: Arc<Node>) {
    loop {
        let next = node.tracker().next_deadline();
        match next {
            Some(at) if at > Instant::now() => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = node.wake_filler.notified() => continue,
                }
            }
            Some(_) => {}
            None => {
                node.wake_filler.notified().await;
                continue;
            }
        }
        let fills = node.tracker().due(Instant::now());
        for fill in fills {
            node.fill(fill).await;
        }
    }
}

/// Resyncs every `resync_every` (spread by a random fifth either way, so
/// nodes started together do not query together), and when asked.
async fn run_resync(node: Arc<Node>) {
    loop {
        let every = node.settings.resync_every;
        let spread = rand::thread_rng().gen_range(0.8..1.2);
        let reason = tokio::select! {
            () = tokio::time::sleep(every.mul_f64(spread)) => "periodic",
            () = node.wake_resync.notified() => {
                lock(&node.resync_wanted).take().unwrap_or("periodic")
            }
        };
        node.resync(reason).await;
    }
}

/// Catches a subscription that looks alive and delivers nothing: after
/// `probe_after` without a payload, publish to this node's own channel and
/// expect it back.
async fn run_probe(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let probe = Publish {
        channels: vec![node.node_channel()],
        payload: envelope::encode(&Header::probe(&node.incarnation), "{}"),
    };
    loop {
        tick.tick().await;
        if node.idle() < node.settings.probe_after {
            continue;
        }
        let before = node.probes_back.load(Ordering::Acquire);
        // The broker away altogether is the reconnect path's business.
        if node
            .bus
            .publish(std::slice::from_ref(&probe))
            .await
            .is_err()
        {
            continue;
        }
        let deadline = Instant::now() + PROBE_WAIT;
        while node.probes_back.load(Ordering::Acquire) == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if node.probes_back.load(Ordering::Acquire) == before {
            node.metrics.cluster.probe_failures.inc();
            warn!("the bus's receiving connection delivers nothing; replacing it");
            let _ = node.subs.send(SubCommand::Rebuild);
        }
        node.touch_push();
    }
}
