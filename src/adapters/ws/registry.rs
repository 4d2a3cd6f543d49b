//! Sessions of this process, by user, and delivery of events to them.
//!
//! Each session has an outbound queue bounded in frames and in bytes, and
//! all sessions together share a budget of bytes. Delivery never waits: an
//! event that does not fit closes that session with 4008 (slow consumer),
//! so one stalled client cannot slow anybody else, nor run the host out of
//! memory. A session whose socket takes nothing for a few seconds while
//! bytes wait for it is closed the same way ([`SessionRegistry::sweep`]).
//! The client catches up from the store when it reconnects.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::Waker;

use async_trait::async_trait;
use futures::task::AtomicWaker;
use hyper_tungstenite::tungstenite::{Message as Frame, Utf8Bytes};
use smallvec::SmallVec;

use super::super::edge::Slot;
use super::super::metrics::Metrics;
use super::super::wire;
use crate::domain::device::Revocation;
use crate::domain::event::Event;
use crate::domain::ports::Revoker;
use crate::domain::ports::Transport;
use crate::domain::routing::Delivery;
use crate::domain::{DeviceId, SessionId, UserId};

/// Close code: server going away (shutdown).
pub const GOING_AWAY: u16 = 1001;
/// Close code: the peer broke the WebSocket protocol (RFC 6455, 7.4.1).
pub const PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text frame that is not UTF-8 (RFC 6455, 7.4.1).
pub const INVALID_DATA: u16 = 1007;
/// Close code: frame too large.
pub const TOO_LARGE: u16 = 1009;
/// Close code: the session's token expired.
pub const TOKEN_EXPIRED: u16 = 4001;
/// Close code: the connection's device session was ended (logged out,
/// revoked): the client must sign in again rather than refresh.
pub const SESSION_REVOKED: u16 = 4003;
/// Close code: the session could not keep up with its events.
pub const SLOW_CONSUMER: u16 = 4008;
/// Close code: normal closure.
pub const NORMAL: u16 = 1000;
/// Not a wire code: drop the connection without a close frame (dead peer).
pub const DROP: u16 = 0;

/// What [`Mailbox::close`] holds until a close is requested: no `u16` code.
const OPEN: u32 = u32::MAX;

/// What [`Mailbox::alarm`] holds while no alarm is set.
const NO_ALARM: u64 = u64::MAX - 1;
/// What [`Mailbox::alarm`] holds once its alarm rang, until the session sees it.
const RANG: u64 = u64::MAX;

/// [`Mailbox::pending`] counts bytes in its low 48 bits and frames above
/// them: one atomic for both, so a push checks both limits at once and the
/// mailbox stays small.
const BYTE_BITS: u32 = 48;
/// The byte count's bits of [`Mailbox::pending`].
const BYTE_MASK: u64 = (1 << BYTE_BITS) - 1;
/// One frame, as [`Mailbox::pending`] counts it.
const ONE_FRAME: u64 = 1 << BYTE_BITS;
/// The most frames a session's queue may be configured to hold.
pub const MAX_QUEUE_FRAMES: usize = (1 << (64 - BYTE_BITS)) - 1;

/// What a queued frame costs beyond its payload: its slot in the queue and
/// its share of the bookkeeping. Counted so that many small frames are
/// bounded as surely as a few large ones.
const FRAME_OVERHEAD: usize = 64;

/// Bytes waiting for a session beyond which its requests are not read
/// until they drain (its replies cannot pile up), and beyond which it is
/// closed when every session together is over the shared budget.
pub const READ_PAUSE_BYTES: usize = 1 << 20;

/// Bytes waiting for a session beyond which it is written at once,
/// whatever its pace.
const CROWDED_BYTES: usize = 256 << 10;

/// The reason sent in the close frame with `code`.
fn reason_for(code: u16) -> &'static str {
    match code {
        GOING_AWAY => "server going away",
        PROTOCOL_ERROR => "protocol error",
        INVALID_DATA => "invalid UTF-8",
        TOO_LARGE => "frame too large",
        TOKEN_EXPIRED => "token expired",
        SESSION_REVOKED => "session revoked",
        SLOW_CONSUMER => "slow consumer",
        _ => "",
    }
}

/// How much may wait to be written: per session in frames and bytes, and
/// across every session in bytes. One value shared by every mailbox, with
/// the running total.
#[derive(Debug)]
pub struct Outbound {
    /// Frames one session may have waiting.
    frames: usize,
    /// Bytes one session may have waiting.
    session_bytes: usize,
    /// Bytes every session together may have waiting before the sessions
    /// holding more than [`READ_PAUSE_BYTES`] are closed.
    total_bytes: usize,
    /// Sweeps in a row (one a second) that a session may have bytes waiting
    /// and its socket take none before it is closed.
    stall_sweeps: u8,
    /// Bytes waiting across every session. A frame shared by many sessions
    /// (a room's event) counts once for each: what each must still be sent.
    queued: AtomicUsize,
}

impl Outbound {
    /// The limits: frames and bytes per session, bytes in all, and the
    /// seconds (sweeps) a session may make no progress while data waits.
    pub fn new(frames: usize, session_bytes: usize, total_bytes: usize, stall_secs: u8) -> Self {
        Self {
            frames: frames.min(MAX_QUEUE_FRAMES),
            session_bytes,
            total_bytes,
            stall_sweeps: stall_secs.max(1),
            queued: AtomicUsize::new(0),
        }
    }

    /// Bytes waiting to be written across every session.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// What a frame counts for against the outbound limits.
pub fn cost(frame: &Frame) -> usize {
    FRAME_OVERHEAD + frame.len()
}

/// One session's mailbox, shared by the registry (which delivers into it)
/// and the session (which drains it into the socket): the bounded outbound
/// queue and the close switch.
///
/// One allocation per session, and no queue storage while nothing is
/// queued: most sessions are idle, and memory per session decides how many
/// one process holds.
#[derive(Debug)]
pub struct Mailbox {
    id: SessionId,
    /// The device session whose token opened it: the connection closes
    /// with 4003 when that ends.
    device: DeviceId,
    /// The limits, and the running total of every session.
    outbound: Arc<Outbound>,
    queue: Mutex<VecDeque<Frame>>,
    /// Frames and bytes queued and not yet handed to the socket, those the
    /// session took out of `queue` included, packed as [`BYTE_BITS`] says;
    /// counted apart from the lock so a full mailbox is refused without
    /// taking it.
    pending: AtomicU64,
    /// The close code asked for, [`OPEN`] until then. A code rather than
    /// a code and its text: the text follows from the code ([`reason_for`]),
    /// and the 28 bytes saved took the mailbox down to 128 (144 since it
    /// knows its device session).
    close: AtomicU32,
    /// The session task, waiting for frames or a close request.
    waker: AtomicWaker,
    /// Set while the session waits for its write pace: it will look at the
    /// queue by itself, so a frame need not wake it (a wake-up per event
    /// was most of what a busy room's delivery cost).
    paced: AtomicBool,
    /// The socket took bytes since the last sweep.
    progress: AtomicBool,
    /// Sweeps in a row that found bytes waiting and no progress.
    stalls: AtomicU8,
    /// The session's alarm (`super::alarms`): when it is due, in the
    /// alarms' milliseconds, [`RANG`] once rung, or [`NO_ALARM`].
    alarm: AtomicU64,
    /// The connection's place under the per-address cap, given back when
    /// the session ends; none in tests.
    _connection: Option<Arc<Slot>>,
}

/// A handle on one session's [`Mailbox`], as the registry holds it.
pub type SessionHandle = Arc<Mailbox>;

impl Mailbox {
    /// An empty mailbox for `id`, opened by `device`, bounded by
    /// `outbound`, holding the connection's `slot` while the session lasts.
    pub fn new(
        id: SessionId,
        device: DeviceId,
        outbound: Arc<Outbound>,
        connection: Option<Arc<Slot>>,
    ) -> SessionHandle {
        Arc::new(Self {
            id,
            device,
            outbound,
            queue: Mutex::default(),
            pending: AtomicU64::new(0),
            close: AtomicU32::new(OPEN),
            waker: AtomicWaker::new(),
            paced: AtomicBool::new(false),
            progress: AtomicBool::new(false),
            stalls: AtomicU8::new(0),
            alarm: AtomicU64::new(NO_ALARM),
            _connection: connection,
        })
    }

    /// The device session that opened it.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The session.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// Queues a frame without waiting. A frame that does not fit the
    /// session's limits, or that comes while every session together is
    /// over budget and this one holds more than its share, closes the
    /// session with 4008 instead.
    pub fn push(&self, frame: Frame) -> bool {
        let cost = cost(&frame);
        let added = ONE_FRAME | cost as u64;
        let before = self.pending.fetch_add(added, Ordering::AcqRel);
        let frames = (before >> BYTE_BITS) as usize + 1;
        let bytes = (before & BYTE_MASK) as usize + cost;
        let limits = &*self.outbound;
        let total = limits.queued.fetch_add(cost, Ordering::AcqRel) + cost;
        if frames > limits.frames
            || bytes > limits.session_bytes
            || (total > limits.total_bytes && bytes > READ_PAUSE_BYTES)
        {
            self.pending.fetch_sub(added, Ordering::AcqRel);
            limits.queued.fetch_sub(cost, Ordering::AcqRel);
            self.close(SLOW_CONSUMER);
            return false;
        }
        self.lock().push_back(frame);
        if !self.paced.load(Ordering::Acquire) || self.crowded() {
            self.waker.wake();
        }
        true
    }

    /// Half full or more, in frames, or a quarter of [`READ_PAUSE_BYTES`]
    /// waiting: write now, whatever the pace, so that only a client that
    /// does not read is ever closed as a slow consumer.
    pub fn crowded(&self) -> bool {
        let pending = self.pending.load(Ordering::Acquire);
        (pending >> BYTE_BITS) as usize * 2 >= self.outbound.frames
            || (pending & BYTE_MASK) as usize >= CROWDED_BYTES
    }

    /// Bytes waiting to be written to this session.
    pub fn pending_bytes(&self) -> usize {
        (self.pending.load(Ordering::Acquire) & BYTE_MASK) as usize
    }

    /// Whether pushes wake the session: not while it waits for its pace.
    pub fn set_paced(&self, paced: bool) {
        self.paced.store(paced, Ordering::Release);
    }

    /// Has the next push or close request wake `waker`.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Takes every queued frame, leaving no storage behind.
    pub fn take(&self) -> VecDeque<Frame> {
        std::mem::take(&mut *self.lock())
    }

    /// Records that `frames` frames taken out, costing `bytes` ([`cost`]),
    /// went to the socket, making room.
    pub fn sent(&self, frames: usize, bytes: usize) {
        self.pending.fetch_sub(
            ((frames as u64) << BYTE_BITS) | bytes as u64,
            Ordering::AcqRel,
        );
        self.outbound.queued.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Notes that the socket took bytes: the session is making progress.
    pub fn progressed(&self) {
        self.progress.store(true, Ordering::Release);
    }

    /// One sweep: a session with bytes waiting that has made no progress
    /// for the configured number of sweeps in a row is closed with 4008.
    /// Returns whether this sweep closed it.
    fn sweep(&self) -> bool {
        let waiting = self.pending_bytes() != 0;
        if !waiting || self.progress.swap(false, Ordering::AcqRel) {
            self.stalls.store(0, Ordering::Release);
            return false;
        }
        let stalls = self.stalls.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if stalls >= self.outbound.stall_sweeps && self.reason().is_none() {
            self.close(SLOW_CONSUMER);
            return true;
        }
        false
    }

    /// Notes the session's alarm as due at `ms`, in place of any other.
    pub(super) fn set_alarm(&self, ms: u64) {
        self.alarm.store(ms, Ordering::Release);
    }

    /// Rings the alarm due at `ms` and wakes the session, unless the
    /// session has set another since.
    pub(super) fn ring_alarm(&self, ms: u64) {
        let current = self
            .alarm
            .compare_exchange(ms, RANG, Ordering::AcqRel, Ordering::Acquire);
        if current.is_ok() {
            self.waker.wake();
        }
    }

    /// Whether the alarm rang since this was last asked; it is then unset.
    pub fn take_alarm(&self) -> bool {
        self.alarm
            .compare_exchange(RANG, NO_ALARM, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Requests the close with `code`; the first request wins.
    pub fn close(&self, code: u16) {
        let first = self
            .close
            .compare_exchange(OPEN, u32::from(code), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.waker.wake();
        }
    }

    /// The code and reason of the close, once requested.
    pub fn reason(&self) -> Option<(u16, &'static str)> {
        let code = u16::try_from(self.close.load(Ordering::Acquire)).ok()?;
        Some((code, reason_for(code)))
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        // Pushing and taking cannot leave the queue half-changed.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Mailbox {
    /// What was still waiting will never be written: it leaves the total.
    fn drop(&mut self) {
        let left = (*self.pending.get_mut() & BYTE_MASK) as usize;
        self.outbound.queued.fetch_sub(left, Ordering::AcqRel);
    }
}

/// Every session on this process, by user.
pub struct SessionRegistry {
    sessions: RwLock<Sessions>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Sessions {
    /// Most users have one session: it is kept inline, not allocated.
    by_user: HashMap<UserId, SmallVec<[SessionHandle; 1]>>,
    /// Set at shutdown; a session registered after it is closed at once.
    shut_down: bool,
}

impl SessionRegistry {
    /// An empty registry.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            sessions: RwLock::default(),
            metrics,
        }
    }

    /// Adds a session; events for its user reach it from now on.
    pub fn register(&self, user: &UserId, handle: SessionHandle) {
        let mut sessions = self.write();
        if sessions.shut_down {
            handle.close(GOING_AWAY);
        }
        let list = sessions.by_user.entry(user.clone()).or_default();
        if list.is_empty() {
            self.metrics.connected_users.inc();
        }
        list.push(handle);
        self.metrics.sessions.inc();
    }

    /// Removes a session.
    pub fn unregister(&self, user: &UserId, session: &SessionId) {
        let mut sessions = self.write();
        let Some(list) = sessions.by_user.get_mut(user) else {
            return;
        };
        let before = list.len();
        list.retain(|h| h.id() != session);
        if list.len() < before {
            self.metrics.sessions.dec();
        }
        if list.is_empty() {
            sessions.by_user.remove(user);
            self.metrics.connected_users.dec();
        }
    }

    /// Closes every session with 1001, and any registered from now on.
    ///
    /// Through the registry rather than a signal every session waits on:
    /// waiting costs each session memory, and each wake-up a shared lock.
    pub fn shut_down(&self) {
        let mut sessions = self.write();
        sessions.shut_down = true;
        for handle in sessions.by_user.values().flatten() {
            handle.close(GOING_AWAY);
        }
    }

    /// Closes with 4008 every session whose socket took nothing while bytes
    /// waited for it, sweep after sweep; run once a second. Also brings the
    /// outbound gauge up to date. Returns how many it closed.
    pub fn sweep(&self, outbound: &Outbound) -> usize {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        let closed = sessions
            .by_user
            .values()
            .flatten()
            .filter(|handle| handle.sweep())
            .count();
        drop(sessions);
        self.metrics
            .outbound_bytes
            .set(i64::try_from(outbound.queued()).unwrap_or(i64::MAX));
        closed
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Sessions> {
        // Every change to the map is a single insert or remove: a panic
        // elsewhere cannot leave it half-changed.
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl SessionRegistry {
    /// Queues an event frame for every session of each of `users` here but
    /// the excepted one, under one look at the map; returns how many took it.
    pub fn push_to_users(
        &self,
        users: &[UserId],
        frame: &Utf8Bytes,
        except: Option<&SessionId>,
    ) -> u64 {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        let handles = users
            .iter()
            .flat_map(|user| sessions.by_user.get(user).into_iter().flatten());
        let mut queued = 0;
        for handle in handles {
            if except != Some(handle.id()) && handle.push(Frame::Text(frame.clone())) {
                queued += 1;
            }
        }
        self.metrics.events_queued.inc_by(queued);
        queued
    }
}

impl SessionRegistry {
    /// Closes with 4003 this process's connections that `what` ends.
    pub fn revoke(&self, what: &Revocation) {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        let user = what.user();
        for handle in sessions.by_user.get(user).into_iter().flatten() {
            if what.ends(user, handle.device()) {
                handle.close(SESSION_REVOKED);
            }
        }
    }

    /// The device sessions of this process's connections, each once.
    pub fn devices(&self) -> Vec<(UserId, DeviceId)> {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        let mut seen = std::collections::HashSet::new();
        sessions
            .by_user
            .iter()
            .flat_map(|(user, list)| list.iter().map(move |h| (user, h.device())))
            .filter(|(_, device)| seen.insert((*device).clone()))
            .map(|(user, device)| (user.clone(), device.clone()))
            .collect()
    }
}

/// A single process: what ends is closed here, the only place it can be.
#[async_trait]
impl Revoker for SessionRegistry {
    async fn revoked(&self, what: Revocation) {
        self.revoke(&what);
    }
}

#[async_trait]
impl Transport for SessionRegistry {
    async fn deliver(&self, delivery: Delivery, event: Event) {
        // Serialized once; every recipient shares the same bytes.
        let frame = wire::encode_event(&event);
        self.push_to_users(&delivery.users, &frame, delivery.except.as_ref());
    }
}

#[cfg(test)]
pub(super) mod tests;
