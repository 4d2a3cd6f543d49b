//! Cluster mode (docs/cluster.md): several nodes on one PostgreSQL and one
//! Redis, one service to every client. Events cross nodes over Redis
//! pub/sub, one channel per user; `message` events are made exactly-once
//! and in order by the [`tracker`], presence lives in Redis
//! ([`presence`]). The domain does not know: this is a `Transport` and a
//! `PresenceRegistry`, plus the bookkeeping of which users have sessions on
//! this node.

pub mod envelope;
pub mod fault;
pub mod presence;
pub mod tracker;
mod transport;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use hyper_tungstenite::tungstenite::Utf8Bytes;
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tracing::{info, warn};

pub use transport::ClusterTransport;

use self::envelope::{Header, Kind, Route};
use self::fault::Faults;
use self::presence::{ClusterPresence, Keys};
use self::tracker::{Fill, Item, Offered, Tracker};
use super::metrics::Metrics;
use super::wire;
use super::ws::SessionRegistry;
use super::ws::registry::SessionHandle;
use crate::domain::error::PortError;
use crate::domain::event::Event;
use crate::domain::message::HistoryQuery;
use crate::domain::ports::{Access, MessageStore};
use crate::domain::service::ChatService;
use crate::domain::{ConversationId, SessionId, UserId};

/// Longest wait for any one Redis call: an outage must fail a request, not
/// hang it.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Publishes queued while Redis is slow or away; more are dropped (and
/// counted): messages come back through resync.
const OUTGOING_CAPACITY: usize = 65_536;
/// Publishes sent in one round trip.
const PUBLISH_BATCH: usize = 256;
/// Users whose positions one resync query reads.
const RESYNC_CHUNK: usize = 500;
/// Messages one gap-fill query reads.
const FILL_PAGE: u32 = 100;
/// How long a probe may take to come back.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// One payload to every channel named, in one command whatever their number.
const FANOUT: &str =
    "for i = 1, #ARGV - 1 do redis.call('PUBLISH', ARGV[i], ARGV[#ARGV]) end return #ARGV - 1";

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
    /// Test-only publish faults.
    pub faults: Faults,
}

/// Where a user stands in one conversation, as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The member.
    pub user: UserId,
    /// The conversation.
    pub conversation: ConversationId,
    /// Its newest seq.
    pub last_seq: u64,
    /// The member's read marker.
    pub last_read_seq: u64,
}

/// The store's lean answer to "where does each of these users stand", for
/// seeding cursors and resync: one query for many users, where the domain's
/// `conversations_of` builds full summaries one user at a time.
#[async_trait]
pub trait SeqIndex: Send + Sync {
    /// Every conversation each of `users` is in, with its newest seq.
    async fn positions(&self, users: &[UserId]) -> Result<Vec<Position>, PortError>;
}

/// This node's membership of the cluster.
pub struct Cluster {
    shared: Arc<Shared>,
    presence: Arc<ClusterPresence>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A user with sessions on this node.
struct LocalUser {
    sessions: usize,
    /// `Some(true)` once subscribed and seeded, `Some(false)` if that failed.
    ready: watch::Receiver<Option<bool>>,
}

enum SubCommand {
    Subscribe(String, tokio::sync::oneshot::Sender<bool>),
    Unsubscribe(String),
    /// Subscribe the whole desired set again, then resync for this reason.
    Recover(&'static str),
    /// Replace the subscriber connection (a failed probe), then recover.
    Rebuild,
}

enum Outgoing {
    Publish(Publish),
    /// Answered once everything queued before it was sent.
    Flush(tokio::sync::oneshot::Sender<()>),
}

struct Publish {
    channels: Vec<String>,
    payload: Vec<u8>,
    message: bool,
}

struct Shared {
    settings: ClusterSettings,
    incarnation: String,
    registry: Arc<SessionRegistry>,
    store: Arc<dyn MessageStore>,
    index: Arc<dyn SeqIndex>,
    metrics: Arc<Metrics>,
    tracker: Mutex<Tracker>,
    locals: Mutex<HashMap<UserId, LocalUser>>,
    subs: mpsc::UnboundedSender<SubCommand>,
    outgoing: mpsc::Sender<Outgoing>,
    wake_filler: Notify,
    resync_wanted: Mutex<Option<&'static str>>,
    wake_resync: Notify,
    /// Milliseconds since `started` of the last push the subscriber got.
    last_push: AtomicU64,
    probes_back: AtomicU64,
    started: Instant,
    /// Test-only: the subscriber ignores pushes (`Faults::DeafAfter`).
    deaf: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Connects to Redis (two connections: pub/sub and commands), draws
    /// this process's incarnation and starts delivery. Presence starts with
    /// [`Self::start`], once the service exists.
    ///
    /// # Errors
    /// When Redis cannot be reached or the URL is invalid.
    pub async fn connect(
        settings: ClusterSettings,
        registry: Arc<SessionRegistry>,
        store: Arc<dyn MessageStore>,
        index: Arc<dyn SeqIndex>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let client = client(&settings.redis_url)?;
        let commands = timeout(
            REDIS_TIMEOUT * 2,
            client.get_connection_manager_with_config(manager_config()),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .context("cannot connect to Redis")?;
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let subscriber = subscriber(&client, push_tx.clone())
            .await
            .context("cannot connect to Redis for pub/sub")?;
        let incarnation = uuid::Uuid::new_v4().to_string();
        info!(node = %settings.node_id, %incarnation, "cluster member");
        let (subs, subs_rx) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let presence = Arc::new(ClusterPresence::new(
            commands.clone(),
            Keys::new(settings.prefix.clone()),
            settings.node_id.clone(),
            incarnation.clone(),
            settings.presence_ttl,
        ));
        let shared = Arc::new(Shared {
            tracker: Mutex::new(Tracker::new(settings.reorder)),
            settings,
            incarnation,
            registry,
            store,
            index,
            metrics,
            locals: Mutex::default(),
            subs,
            outgoing,
            wake_filler: Notify::new(),
            resync_wanted: Mutex::default(),
            wake_resync: Notify::new(),
            last_push: AtomicU64::new(0),
            probes_back: AtomicU64::new(0),
            started: Instant::now(),
            deaf: std::sync::atomic::AtomicBool::new(false),
        });
        let mut conn = subscriber.clone();
        let node_subscribed = timeout(REDIS_TIMEOUT, conn.subscribe(shared.node_channel())).await;
        if !matches!(node_subscribed, Ok(Ok(()))) {
            anyhow::bail!("cannot subscribe on Redis");
        }
        shared.metrics.cluster.redis_connected.set(1);
        let mut tasks = vec![];
        if let Faults::DeafAfter(after) = shared.settings.faults {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(after).await;
                warn!("test fault: the subscriber ignores every push from now on");
                shared.deaf.store(true, Ordering::Release);
            }));
        }
        tasks.extend([
            tokio::spawn(run_pushes(shared.clone(), push_rx)),
            tokio::spawn(run_subscriptions(
                shared.clone(),
                client,
                push_tx,
                subscriber,
                subs_rx,
            )),
            tokio::spawn(run_publisher(shared.clone(), commands.clone(), outgoing_rx)),
            tokio::spawn(run_filler(shared.clone())),
            tokio::spawn(run_resync(shared.clone())),
            tokio::spawn(run_probe(shared.clone(), commands)),
        ]);
        Ok(Arc::new(Self {
            shared,
            presence,
            tasks: Mutex::new(tasks),
        }))
    }

    /// The `Transport` for the core.
    pub fn transport(&self) -> Arc<ClusterTransport> {
        Arc::new(ClusterTransport::new(self.shared.clone()))
    }

    /// The `PresenceRegistry` for the core.
    pub fn presence(&self) -> Arc<ClusterPresence> {
        self.presence.clone()
    }

    /// Starts the presence heartbeat and reaper, which close sessions
    /// through the service.
    pub fn start(&self, service: Arc<ChatService>) {
        let reaped = self.shared.metrics.cluster.presence_reaped.clone();
        let task = presence::spawn_tasks(self.presence.clone(), service, reaped);
        lock(&self.tasks).push(task);
    }

    /// Makes a new session's events flow: the first session of a user on
    /// this node subscribes to the user's channel and seeds their cursors
    /// from the store; then the session is registered, atomically with
    /// respect to every emission, so it misses nothing and gets nothing twice.
    ///
    /// # Errors
    /// When Redis or the store does not answer in time; nothing is left
    /// registered then.
    pub async fn attach(&self, user: &UserId, handle: SessionHandle) -> Result<(), PortError> {
        let (first, mut ready, done) = {
            let mut locals = lock(&self.shared.locals);
            match locals.get_mut(user) {
                Some(local) => {
                    local.sessions += 1;
                    (false, local.ready.clone(), None)
                }
                None => {
                    let (done, ready) = watch::channel(None);
                    let local = LocalUser {
                        sessions: 1,
                        ready: ready.clone(),
                    };
                    locals.insert(user.clone(), local);
                    (true, ready, Some(done))
                }
            }
        };
        let ok = if first {
            let ok = self.shared.first_attach(user, handle.clone()).await;
            if let Some(done) = done {
                let _ = done.send(Some(ok));
            }
            ok
        } else {
            let seen = timeout(REDIS_TIMEOUT * 3, ready.wait_for(Option::is_some)).await;
            let ok = matches!(seen, Ok(Ok(v)) if *v == Some(true));
            if ok {
                let _tracker = self.shared.tracker();
                self.shared.registry.register(user, handle);
            }
            ok
        };
        if ok {
            Ok(())
        } else {
            self.detach(user);
            Err(PortError(anyhow::anyhow!(
                "cannot subscribe the session's user on Redis"
            )))
        }
    }

    /// Records that one of the user's sessions here ended (after the
    /// registry forgot it); the last one unsubscribes.
    pub fn detach(&self, user: &UserId) {
        let mut locals = lock(&self.shared.locals);
        let Some(local) = locals.get_mut(user) else {
            return;
        };
        local.sessions -= 1;
        if local.sessions == 0 {
            locals.remove(user);
            // Under the same lock as the next attach's `begin`, so a
            // returning user's fresh cursors are never forgotten.
            self.shared.tracker().forget(user);
            let _ = self
                .shared
                .subs
                .send(SubCommand::Unsubscribe(self.shared.user_channel(user)));
        }
    }

    /// Graceful shutdown, after every session closed: removes what is left
    /// of this node's presence and stops the background tasks.
    pub async fn leave(&self) {
        // The sessions' last events (their users going offline) are still
        // queued: send them before the publisher stops.
        let (flushed, done) = tokio::sync::oneshot::channel();
        if self
            .shared
            .outgoing
            .send(Outgoing::Flush(flushed))
            .await
            .is_ok()
        {
            let _ = timeout(REDIS_TIMEOUT * 2, done).await;
        }
        // The heartbeat stops first, or it could put back what leave removes.
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        if let Err(e) = self.presence.leave().await {
            warn!(error = %e, "could not remove this node's presence from Redis");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        lock(&self.tracker)
    }

    fn user_channel(&self, user: &UserId) -> String {
        format!("{}:u:{user}", self.settings.prefix)
    }

    fn node_channel(&self) -> String {
        format!("{}:n:{}", self.settings.prefix, self.incarnation)
    }

    /// Subscribes to the user's channel, then reads where they stand: a
    /// message committed before the read is history, one after it reaches
    /// the channel, so each is given exactly once (docs/cluster.md, 4.1).
    async fn first_attach(self: &Arc<Self>, user: &UserId, handle: SessionHandle) -> bool {
        self.tracker().begin(user);
        let (reply, subscribed) = tokio::sync::oneshot::channel();
        let _ = self
            .subs
            .send(SubCommand::Subscribe(self.user_channel(user), reply));
        if !matches!(timeout(REDIS_TIMEOUT * 2, subscribed).await, Ok(Ok(true))) {
            return false;
        }
        let positions = match self.index.positions(std::slice::from_ref(user)).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read a user's conversations to seed delivery");
                return false;
            }
        };
        let mut tracker = self.tracker();
        self.registry.register(user, handle);
        let seeds = positions.into_iter().map(|p| (p.conversation, p.last_seq));
        let unknown = tracker.seed(user, seeds, Instant::now(), &mut |u, f, e| {
            self.push(u, f, e);
        });
        drop(tracker);
        for conversation in unknown {
            self.resolve_later(user.clone(), conversation);
        }
        true
    }

    fn push(&self, user: &UserId, frame: &Utf8Bytes, except: Option<&SessionId>) {
        self.registry
            .push_to_users(std::slice::from_ref(user), frame, except);
    }

    /// Hands one event to the local sessions of `users`: sequenced kinds
    /// through their cursors, the rest straight to the mailboxes.
    fn dispatch(self: &Arc<Self>, users: &[UserId], route: &Route, frame: &Utf8Bytes) {
        let except = &route.except;
        match route.kind {
            Kind::Message | Kind::Updated => {
                let (Some(conversation), Some(seq)) = (&route.conversation, route.seq) else {
                    return;
                };
                let kind = if route.kind == Kind::Message {
                    tracker::Kind::Message
                } else {
                    tracker::Kind::Updated
                };
                let now = Instant::now();
                let mut unknown = Vec::new();
                let mut tracker = self.tracker();
                for user in users {
                    let item = Item {
                        frame: frame.clone(),
                        except: except.clone(),
                    };
                    let offered =
                        tracker.offer(user, conversation, seq, kind, item, now, &mut |u, f, e| {
                            self.push(u, f, e);
                        });
                    match offered {
                        Offered::Duplicate => {
                            self.metrics.cluster.duplicates_dropped.inc();
                        }
                        Offered::Unknown => unknown.push(user.clone()),
                        Offered::Held => self.wake_filler.notify_one(),
                        _ => {}
                    }
                }
                drop(tracker);
                for user in unknown {
                    self.resolve_later(user, conversation.clone());
                }
            }
            Kind::Left => {
                if let (Some(who), Some(conversation)) = (&route.who, &route.conversation)
                    && users.contains(who)
                {
                    self.tracker().left(who, conversation);
                }
                self.registry.push_to_users(users, frame, except.as_ref());
            }
            Kind::Other => {
                self.registry.push_to_users(users, frame, except.as_ref());
            }
            Kind::Probe => {}
        }
    }

    /// Looks up where a user stands in a conversation first seen after
    /// their seed, then lets its events through.
    fn resolve_later(self: &Arc<Self>, user: UserId, conversation: ConversationId) {
        let shared = self.clone();
        tokio::spawn(async move {
            let marker = match shared.store.access(&conversation, &user).await {
                Ok(Access::Member(_, membership)) => Some(membership.last_read_seq),
                Ok(_) => None,
                Err(e) => {
                    // The next resync creates the cursor at the read marker.
                    warn!(error = %e, "cannot look up a member's place in a conversation");
                    None
                }
            };
            shared.tracker().resolve(
                &user,
                &conversation,
                marker,
                Instant::now(),
                &mut |u, f, e| {
                    shared.push(u, f, e);
                },
            );
            shared.wake_filler.notify_one();
        });
    }

    /// One envelope from the subscriber.
    fn received(self: &Arc<Self>, channel: &str, payload: &[u8]) {
        let Some((header, frame)) = envelope::decode(payload) else {
            warn!("dropped a pub/sub payload that is not an envelope");
            return;
        };
        if header.k == Kind::Probe {
            if header.inc == self.incarnation {
                self.probes_back.fetch_add(1, Ordering::AcqRel);
            }
            return;
        }
        // The local path already gave this node's own events.
        if header.inc == self.incarnation {
            return;
        }
        let Some(user) = channel
            .strip_prefix(self.settings.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(":u:"))
        else {
            return;
        };
        self.metrics.cluster.received.inc();
        self.dispatch(&[UserId::new(user)], &header.route(), &frame);
    }

    /// Queues one event for the other nodes, without waiting.
    fn publish(&self, users: &[UserId], route: &Route, frame: &str) {
        let out = Publish {
            channels: users.iter().map(|u| self.user_channel(u)).collect(),
            payload: envelope::encode(&Header::new(route, &self.incarnation), frame),
            message: route.kind == Kind::Message,
        };
        if self.outgoing.try_send(Outgoing::Publish(out)).is_err() {
            self.metrics.cluster.publish_dropped.inc();
        }
    }

    fn request_resync(&self, reason: &'static str) {
        *lock(&self.resync_wanted) = Some(reason);
        self.wake_resync.notify_one();
    }

    /// Compares every local cursor with the store; cursors behind it get
    /// their gap filled after the reorder window.
    async fn resync(self: &Arc<Self>, reason: &'static str) {
        self.metrics.cluster.resync(reason);
        let users = self.tracker().users();
        for chunk in users.chunks(RESYNC_CHUNK) {
            let positions = match self.index.positions(chunk).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "resync: cannot read positions");
                    return;
                }
            };
            let mut member_of: HashMap<&UserId, HashSet<ConversationId>> =
                chunk.iter().map(|u| (u, HashSet::new())).collect();
            let now = Instant::now();
            let mut tracker = self.tracker();
            for p in &positions {
                if let Some(set) = member_of.get_mut(&p.user) {
                    set.insert(p.conversation.clone());
                }
                tracker.note_latest(&p.user, &p.conversation, p.last_seq, p.last_read_seq, now);
            }
            for (user, set) in &member_of {
                tracker.retain(user, set);
            }
        }
        self.wake_filler.notify_one();
    }

    /// Fetches one gap from the store and gives it to the cursors waiting.
    async fn fill(self: &Arc<Self>, fill: Fill) {
        let mut messages = Vec::new();
        let mut after = fill.after;
        loop {
            let query = HistoryQuery {
                after_seq: Some(after),
                before_seq: Some(fill.upto + 1),
                limit: FILL_PAGE,
            };
            let page = match self.store.history(&fill.conversation, query).await {
                Ok(page) => page,
                Err(e) => {
                    // Due again in a second.
                    warn!(error = %e, "cannot fill a delivery gap from the store");
                    return;
                }
            };
            let more = page.has_more && !page.messages.is_empty();
            for message in page.messages {
                after = message.seq;
                let seq = message.seq;
                let frame = wire::encode_event(&Event::Message(message));
                messages.push((
                    seq,
                    Item {
                        frame,
                        except: None,
                    },
                ));
            }
            if !more {
                break;
            }
        }
        self.metrics.cluster.gap_fills.inc();
        self.metrics
            .cluster
            .gap_filled_messages
            .inc_by(messages.len() as u64);
        self.tracker()
            .fill(&fill, &messages, Instant::now(), &mut |u, f, e| {
                self.push(u, f, e);
            });
    }

    fn touch_push(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_push.store(ms, Ordering::Release);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_push.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(last)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data whole at each step.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client speaking RESP3, which the pub/sub connection needs for pushes
/// and for resubscribing after a reconnect.
fn client(url: &str) -> anyhow::Result<redis::Client> {
    // The crate's message could quote the URL, password included.
    let info = url
        .into_connection_info()
        .map_err(|_| anyhow::anyhow!("redis_url is not a valid Redis URL"))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
        .map_err(|_| anyhow::anyhow!("redis_url is not a valid Redis URL"))
}

/// Reconnects quickly: a node must notice an outage and its end within
/// seconds. Every call has its own timeout; the connection's own is only
/// the longest of them (a presence close may wait in a queue of thousands).
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(6)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(1))
        .set_response_timeout(Some(Duration::from_secs(20)))
        .set_connection_timeout(Some(REDIS_TIMEOUT))
}

/// The pub/sub connection: pushes go to `pushes`, and the crate subscribes
/// again to what it had after reconnecting.
async fn subscriber(
    client: &redis::Client,
    pushes: mpsc::UnboundedSender<PushInfo>,
) -> anyhow::Result<ConnectionManager> {
    let config = manager_config()
        .set_push_sender(pushes)
        .set_automatic_resubscription();
    timeout(
        REDIS_TIMEOUT * 2,
        client.get_connection_manager_with_config(config),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .context("no connection")
}

/// Receives pushes: events, and the crate's word that the connection dropped.
async fn run_pushes(shared: Arc<Shared>, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message => {
                if shared.deaf.load(Ordering::Acquire) {
                    continue;
                }
                shared.touch_push();
                if let Some(msg) = redis::Msg::from_push_info(push) {
                    shared.received(msg.get_channel_name(), msg.get_payload_bytes());
                }
            }
            PushKind::Disconnection => {
                shared.metrics.cluster.redis_connected.set(0);
                warn!("lost the Redis pub/sub connection; reconnecting");
                let _ = shared.subs.send(SubCommand::Recover("reconnect"));
            }
            _ => {}
        }
    }
}

/// Owns the pub/sub connection and the set of channels this node wants,
/// applying subscribe and unsubscribe requests in the order they were made
/// (a user leaving and coming back must end subscribed).
async fn run_subscriptions(
    shared: Arc<Shared>,
    client: redis::Client,
    pushes: mpsc::UnboundedSender<PushInfo>,
    mut conn: ConnectionManager,
    mut commands: mpsc::UnboundedReceiver<SubCommand>,
) {
    let mut desired: HashSet<String> = HashSet::from([shared.node_channel()]);
    let mut batch = Vec::new();
    while commands.recv_many(&mut batch, 1024).await > 0 {
        let mut batch_iter = batch.drain(..).peekable();
        while let Some(command) = batch_iter.next() {
            match command {
                SubCommand::Subscribe(channel, reply) => {
                    // Consecutive subscribes go in one command.
                    let mut group = vec![(channel, reply)];
                    while let Some(SubCommand::Subscribe(..)) = batch_iter.peek() {
                        if let Some(SubCommand::Subscribe(c, r)) = batch_iter.next() {
                            group.push((c, r));
                        }
                    }
                    let channels: Vec<&String> = group.iter().map(|(c, _)| c).collect();
                    let done = timeout(REDIS_TIMEOUT, conn.subscribe(&channels)).await;
                    let ok = matches!(done, Ok(Ok(())));
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
                    let _ = timeout(REDIS_TIMEOUT, conn.unsubscribe(&channel)).await;
                }
                SubCommand::Recover(reason) => {
                    recover(&shared, &mut conn, &desired, reason).await;
                }
                SubCommand::Rebuild => {
                    match subscriber(&client, pushes.clone()).await {
                        Ok(fresh) => {
                            conn = fresh;
                            shared.deaf.store(false, Ordering::Release);
                        }
                        Err(e) => warn!(error = %e, "cannot replace the pub/sub connection"),
                    }
                    recover(&shared, &mut conn, &desired, "probe").await;
                }
            }
        }
    }
}

/// Subscribes the whole desired set again (the crate replays only what the
/// server had confirmed) until Redis answers, then resyncs from the store:
/// whatever was published meanwhile is gone from pub/sub.
async fn recover(
    shared: &Arc<Shared>,
    conn: &mut ConnectionManager,
    desired: &HashSet<String>,
    reason: &'static str,
) {
    let channels: Vec<&String> = desired.iter().collect();
    loop {
        if let Ok(Ok(())) = timeout(REDIS_TIMEOUT, conn.subscribe(&channels)).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    info!(
        reason,
        channels = channels.len(),
        "pub/sub subscriptions restored"
    );
    shared.metrics.cluster.redis_connected.set(1);
    shared.touch_push();
    shared.request_resync(reason);
}

/// Sends queued publishes in order, many per round trip.
async fn run_publisher(
    shared: Arc<Shared>,
    mut conn: ConnectionManager,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    let faults = shared.settings.faults;
    let mut messages = 0u64;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut failing = false;
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let mut count = 0u64;
        let mut flushed = Vec::new();
        for out in batch.drain(..) {
            let out = match out {
                Outgoing::Publish(out) => out,
                Outgoing::Flush(done) => {
                    flushed.push(done);
                    continue;
                }
            };
            if out.message && faults != Faults::None {
                messages += 1;
                match faults.verdict(messages) {
                    fault::Verdict::Pass => {}
                    fault::Verdict::Drop => continue,
                    fault::Verdict::Delay(hold) => {
                        let mut conn = conn.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(hold).await;
                            let mut pipe = redis::pipe();
                            fanout(&mut pipe, &out);
                            let _ = pipe.query_async::<()>(&mut conn).await;
                        });
                        continue;
                    }
                }
            }
            fanout(&mut pipe, &out);
            count += 1;
        }
        if count > 0 {
            send_batch(&shared, &mut conn, &pipe, count, &mut failing).await;
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Sends one pipeline of publishes; counts what went and what was lost.
async fn send_batch(
    shared: &Shared,
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
    count: u64,
    failing: &mut bool,
) {
    match timeout(REDIS_TIMEOUT, pipe.query_async::<()>(conn)).await {
        Ok(Ok(())) => {
            shared.metrics.cluster.published.inc_by(count);
            if std::mem::take(failing) {
                info!("publishing to Redis again");
            }
        }
        _ => {
            shared.metrics.cluster.publish_dropped.inc_by(count);
            if !std::mem::replace(failing, true) {
                warn!("cannot publish to Redis; events to other nodes are being dropped");
            }
        }
    }
}

fn fanout(pipe: &mut redis::Pipeline, out: &Publish) {
    pipe.cmd("EVAL")
        .arg(FANOUT)
        .arg(0)
        .arg(&out.channels)
        .arg(&out.payload)
        .ignore();
}

/// Fills gaps whose reorder window has passed.
async fn run_filler(shared: Arc<Shared>) {
    loop {
        let next = shared.tracker().next_deadline();
        match next {
            Some(at) if at > Instant::now() => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shared.wake_filler.notified() => continue,
                }
            }
            Some(_) => {}
            None => {
                shared.wake_filler.notified().await;
                continue;
            }
        }
        let fills = shared.tracker().due(Instant::now());
        for fill in fills {
            shared.fill(fill).await;
        }
    }
}

/// Resyncs every `resync_every` (spread by a random fifth either way, so
/// nodes started together do not query together), and when asked.
async fn run_resync(shared: Arc<Shared>) {
    loop {
        let every = shared.settings.resync_every;
        let spread = rand::thread_rng().gen_range(0.8..1.2);
        let reason = tokio::select! {
            () = tokio::time::sleep(every.mul_f64(spread)) => "periodic",
            () = shared.wake_resync.notified() => {
                lock(&shared.resync_wanted).take().unwrap_or("periodic")
            }
        };
        shared.resync(reason).await;
    }
}

/// Catches a subscription that looks alive and delivers nothing: after
/// `probe_after` without a push, publish to this node's own channel and
/// expect it back.
async fn run_probe(shared: Arc<Shared>, mut conn: ConnectionManager) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let header = Header::probe(&shared.incarnation);
    let payload = envelope::encode(&header, "{}");
    loop {
        tick.tick().await;
        if shared.idle() < shared.settings.probe_after {
            continue;
        }
        let before = shared.probes_back.load(Ordering::Acquire);
        let sent = timeout(
            REDIS_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(shared.node_channel())
                .arg(&payload)
                .query_async::<i64>(&mut conn),
        )
        .await;
        // Redis away altogether is the reconnect path's business.
        if !matches!(sent, Ok(Ok(_))) {
            continue;
        }
        let deadline = Instant::now() + PROBE_WAIT;
        while shared.probes_back.load(Ordering::Acquire) == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if shared.probes_back.load(Ordering::Acquire) == before {
            shared.metrics.cluster.probe_failures.inc();
            warn!("the pub/sub connection delivers nothing; replacing it");
            let _ = shared.subs.send(SubCommand::Rebuild);
        }
        shared.touch_push();
    }
}
