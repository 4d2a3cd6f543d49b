//! One node's delivery, whatever the broker (docs/cluster.md, sections 3
//! and 4): the local path through the [`Tracker`], the publish queue, what
//! the bus hands in, gap fills and resync from the store. The background
//! tasks that drive it are in [`super::tasks`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper_tungstenite::tungstenite::Utf8Bytes;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};
use tracing::warn;

use super::bus::{Bus, Inbox, Publish};
use super::envelope::{self, Header, Kind, Route};
use super::revocation::REVOCATION_SUFFIX;
use super::tracker::{self, Fill, Item, Offered, Tracker};
use super::{ClusterSettings, lock};
use crate::adapters::metrics::Metrics;
use crate::adapters::wire;
use crate::adapters::ws::SessionRegistry;
use crate::adapters::ws::registry::SessionHandle;
use crate::domain::event::Event;
use crate::domain::message::HistoryQuery;
use crate::domain::ports::{Access, DeviceStore, MessageStore};
use crate::domain::positions::SeqIndex;
use crate::domain::{ConversationId, SessionId, UserId};

/// Publishes queued while the broker is slow or away; more are dropped (and
/// counted): messages come back through resync.
const OUTGOING_CAPACITY: usize = 65_536;
/// Users whose positions one resync query reads.
const RESYNC_CHUNK: usize = 500;
/// Messages one gap-fill query reads.
const FILL_PAGE: u32 = 100;
/// How long a user's first session waits for the bus to confirm the
/// subscription to the user's channel.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(4);

/// A user with sessions on this node.
pub(super) struct LocalUser {
    /// How many.
    pub sessions: usize,
    /// `Some(true)` once subscribed and seeded, `Some(false)` if that failed.
    pub ready: watch::Receiver<Option<bool>>,
}

/// What the subscription task is asked to do, in order.
pub(super) enum SubCommand {
    /// Subscribe to a channel, and say whether the bus confirmed.
    Subscribe(String, oneshot::Sender<bool>),
    /// Unsubscribe from a channel.
    Unsubscribe(String),
    /// Subscribe the whole desired set again, then resync for this reason.
    Recover(&'static str),
    /// Replace the receiving connection (a failed probe), then recover.
    Rebuild,
}

/// What the publisher task is given, in order.
pub(super) enum Outgoing {
    /// A payload to publish; `true` for a `message` (test faults pick those).
    Publish(Publish, bool),
    /// Answered once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
}

/// The receiving ends of the node's queues, for its tasks.
pub(super) struct Queues {
    /// Subscription commands.
    pub subs: mpsc::UnboundedReceiver<SubCommand>,
    /// Publishes.
    pub outgoing: mpsc::Receiver<Outgoing>,
}

/// The state one node's delivery shares between its callers and its tasks.
pub(super) struct Node {
    /// How it behaves.
    pub settings: ClusterSettings,
    /// This process's id on the bus.
    pub incarnation: String,
    /// The broker.
    pub bus: Arc<dyn Bus>,
    /// This process's sessions.
    pub(super) registry: Arc<SessionRegistry>,
    store: Arc<dyn MessageStore>,
    index: Arc<dyn SeqIndex>,
    /// Device sessions, for what the bus may have lost of revocations.
    pub(super) devices: Arc<dyn DeviceStore>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    tracker: Mutex<Tracker>,
    /// Users with sessions here.
    pub locals: Mutex<HashMap<UserId, LocalUser>>,
    /// To the subscription task.
    pub subs: mpsc::UnboundedSender<SubCommand>,
    /// To the publisher task.
    pub outgoing: mpsc::Sender<Outgoing>,
    /// Rings the gap filler when a gap opens.
    pub wake_filler: Notify,
    /// Why a resync was asked for, if one was.
    pub resync_wanted: Mutex<Option<&'static str>>,
    /// Rings the resync task when one is asked for.
    pub wake_resync: Notify,
    /// Milliseconds since `started` of the last payload the bus handed in.
    last_push: AtomicU64,
    /// Probes of this incarnation that came back.
    pub probes_back: AtomicU64,
    started: Instant,
    /// Test-only: the node ignores what the bus hands in
    /// (`Faults::DeafAfter`) until its connection is replaced.
    pub deaf: AtomicBool,
}

/// Where a node's sessions and its store are.
pub(super) struct Locals {
    /// This process's sessions.
    pub registry: Arc<SessionRegistry>,
    /// The messages, for gap fills and places in new conversations.
    pub store: Arc<dyn MessageStore>,
    /// Where users stand, for seeds and resync.
    pub index: Arc<dyn SeqIndex>,
    /// Device sessions, to check open connections against.
    pub devices: Arc<dyn DeviceStore>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl Node {
    /// A node with no local user, and the queues its tasks drain.
    pub fn new(
        settings: ClusterSettings,
        incarnation: String,
        bus: Arc<dyn Bus>,
        locals: Locals,
    ) -> (Arc<Self>, Queues) {
        let (subs, subs_rx) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let node = Arc::new(Self {
            tracker: Mutex::new(Tracker::new(settings.reorder)),
            settings,
            incarnation,
            bus,
            registry: locals.registry,
            store: locals.store,
            index: locals.index,
            devices: locals.devices,
            metrics: locals.metrics,
            locals: Mutex::default(),
            subs,
            outgoing,
            wake_filler: Notify::new(),
            resync_wanted: Mutex::default(),
            wake_resync: Notify::new(),
            last_push: AtomicU64::new(0),
            probes_back: AtomicU64::new(0),
            started: Instant::now(),
            deaf: AtomicBool::new(false),
        });
        let queues = Queues {
            subs: subs_rx,
            outgoing: outgoing_rx,
        };
        (node, queues)
    }

    /// Registers a later session of a user whose first one is seeded,
    /// under the tracker's lock, so that it joins the cursors where they
    /// stand: no emission falls between its registration and its first
    /// event.
    pub fn join_cursors(&self, user: &UserId, handle: SessionHandle) {
        let _tracker = self.tracker();
        self.registry.register(user, handle);
    }

    /// Forgets a session that ended.
    pub fn unregister(&self, user: &UserId, session: &SessionId) {
        self.registry.unregister(user, session);
    }

    /// Every local user's cursors, behind the lock that orders emissions.
    pub fn tracker(&self) -> MutexGuard<'_, Tracker> {
        lock(&self.tracker)
    }

    /// The channel of `user`'s events.
    pub fn user_channel(&self, user: &UserId) -> String {
        format!("{}:u:{user}", self.settings.prefix)
    }

    /// This incarnation's own channel, for the probe.
    pub fn node_channel(&self) -> String {
        format!("{}:n:{}", self.settings.prefix, self.incarnation)
    }

    /// Subscribes to the user's channel, then reads where they stand: a
    /// message committed before the read is history, one after it reaches
    /// the channel, so each is given exactly once (docs/cluster.md, 4.1).
    pub async fn first_attach(self: &Arc<Self>, user: &UserId, handle: SessionHandle) -> bool {
        self.tracker().begin(user);
        let (reply, subscribed) = oneshot::channel();
        let _ = self
            .subs
            .send(SubCommand::Subscribe(self.user_channel(user), reply));
        if !matches!(timeout(SUBSCRIBE_WAIT, subscribed).await, Ok(Ok(true))) {
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
    pub fn dispatch(self: &Arc<Self>, users: &[UserId], route: &Route, frame: &Utf8Bytes) {
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
        let node = self.clone();
        tokio::spawn(async move {
            let marker = match node.store.access(&conversation, &user).await {
                Ok(Access::Member(_, membership)) => Some(membership.last_read_seq),
                Ok(_) => None,
                Err(e) => {
                    // The next resync creates the cursor at the read marker.
                    warn!(error = %e, "cannot look up a member's place in a conversation");
                    None
                }
            };
            node.tracker().resolve(
                &user,
                &conversation,
                marker,
                Instant::now(),
                &mut |u, f, e| {
                    node.push(u, f, e);
                },
            );
            node.wake_filler.notify_one();
        });
    }

    /// One envelope from the bus.
    fn arrived(self: &Arc<Self>, channel: &str, payload: &[u8]) {
        // Compared in place: this runs for every payload the node receives.
        if channel.strip_prefix(self.settings.prefix.as_str()) == Some(REVOCATION_SUFFIX) {
            self.revocation_arrived(payload);
            return;
        }
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
    pub fn publish(&self, users: &[UserId], route: &Route, frame: &str) {
        let publish = Publish {
            channels: users.iter().map(|u| self.user_channel(u)).collect(),
            payload: envelope::encode(&Header::new(route, &self.incarnation), frame),
        };
        let message = route.kind == Kind::Message;
        if self
            .outgoing
            .try_send(Outgoing::Publish(publish, message))
            .is_err()
        {
            self.metrics.cluster.publish_dropped.inc();
        }
    }

    /// Asks the resync task for a resync now, for `reason`.
    pub fn request_resync(&self, reason: &'static str) {
        *lock(&self.resync_wanted) = Some(reason);
        self.wake_resync.notify_one();
    }

    /// Compares every local cursor with the store; cursors behind it get
    /// their gap filled after the reorder window.
    pub async fn resync(self: &Arc<Self>, reason: &'static str) {
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
    pub async fn fill(self: &Arc<Self>, fill: Fill) {
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

    /// Notes that the bus handed something in, or was just checked.
    pub fn touch_push(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_push.store(ms, Ordering::Release);
    }

    /// How long the bus has handed nothing in.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_push.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(last)
    }
}

/// The bus hands what it receives to the node.
impl Inbox for Arc<Node> {
    fn received(&self, channel: &str, payload: &[u8]) {
        if self.deaf.load(Ordering::Acquire) {
            return;
        }
        self.touch_push();
        self.arrived(channel, payload);
    }

    fn disconnected(&self) {
        self.metrics.cluster.redis_connected.set(0);
        warn!("lost the bus's receiving connection; reconnecting");
        let _ = self.subs.send(SubCommand::Recover("reconnect"));
    }
}
