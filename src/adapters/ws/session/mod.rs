//! One WebSocket session: reads requests, answers each in order, and writes
//! queued frames (answers and events) to the socket.
//!
//! One task per connection drives the socket both ways: it drains the
//! session's [`Mailbox`] into the socket, reads the next requests once the
//! previous ones are answered (so replies keep request order), keeps the
//! heartbeat and the token expiry on one alarm (`super::alarms`, shared by
//! all sessions), and paces its writes.
//! Idle, a session costs that task, its mailbox and the socket's buffers,
//! and most sessions are idle.
//!
//! This file holds the task and its loop; the loop's pieces are `write`
//! (the mailbox into the socket, paced), `read` (frames in, and when not to
//! read them) and `dispatch` (a request to its use case, and the reply).

use std::future::{Future, poll_fn};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant as StdInstant};

use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hyper_tungstenite::tungstenite::{Error as WsError, Message as Frame, Utf8Bytes};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use self::dispatch::{Answer, Answering};
use self::write::{Outgoing, Pace, write_first};
use super::alarms::Alarms;
use super::attach::Attach;
use super::registry::{
    DROP, Mailbox, NORMAL, Outbound, SessionHandle, SessionRegistry, TOKEN_EXPIRED,
};
use super::socket::{Upgrade, WsStream};
use crate::adapters::metrics::{CloseLabel, Metrics};
use crate::domain::Timestamp;
use crate::domain::service::{Caller, UseCases};

mod dispatch;
mod read;
mod write;

#[cfg(test)]
mod tests;

/// How sessions behave; one copy shared by all.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// Interval between server pings.
    pub heartbeat: Duration,
    /// Requests per second allowed per connection, sustained.
    pub rate_per_sec: NonZeroU32,
    /// Requests allowed in a burst.
    pub rate_burst: NonZeroU32,
    /// What may wait to be written, per session and in all.
    pub outbound: Arc<Outbound>,
    /// How long a close handshake may take before the socket is dropped.
    pub close_timeout: Duration,
}

/// What every session needs from the rest of the server.
pub struct SessionEnv {
    /// The use cases.
    pub service: Arc<dyn UseCases>,
    /// This process's sessions.
    pub registry: Arc<SessionRegistry>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: WsSettings,
    /// Cancelled when the server shuts down; no session starts after that.
    pub shutdown: CancellationToken,
    /// Where a session attaches to receive events.
    pub attach: Arc<dyn Attach>,
    /// Every session's heartbeat, expiry and drain timer.
    pub alarms: Arc<Alarms>,
}

/// A session accepted at the handshake, waiting for its upgrade to finish.
pub struct PendingSession {
    /// Who, on which session id.
    pub caller: Caller,
    /// When its token expires, in Unix milliseconds; a `reauth` moves it.
    /// Atomic because the session reads it through a shared reference;
    /// the same 8 bytes as a `Timestamp` in the session task.
    pub expires_at: AtomicI64,
    /// Its registry entry, with the welcome already queued.
    pub handle: SessionHandle,
}

/// Runs a session to its end, then unregisters it.
///
/// The session task lives as long as its session, and most sessions are
/// idle, so its size is most of what a session costs. This is an `async`
/// block rather than an `async fn`, and so is `connect`: an `async fn`
/// keeps each argument twice for its whole life, once as passed and once
/// moved into its body (rust-lang/rust#62958); a block keeps what it
/// captures once. The upgrade is boxed for the same reason: its future is
/// awaited once, and what the block captures stays in it for good.
/// tokio aligns a task's cell to 128 bytes: this one is 768 bytes, for a
/// future of 656 (`size_of_val` where it is spawned, on a release build;
/// `-Zprint-type-sizes` shows the cell; docs/performance.md), with no byte
/// to spare: 8 bytes more kept across the largest await (the first write,
/// `write_first`, beside the stream `socket::WsStream`) would make it 896,
/// 128 bytes more for every session. Hence the shared alarms rather than
/// a timer in each session. A unit test (`tests.rs`) holds the bound.
pub fn run(
    env: Arc<SessionEnv>,
    websocket: Upgrade,
    pending: PendingSession,
) -> impl Future<Output = ()> + Send {
    let websocket = Box::pin(websocket);
    async move {
        connect(&env, websocket, &pending).await;
        let caller = &pending.caller;
        env.attach.detach(&caller.user.id, pending.handle.id());
        // Boxed: a task is as large as the largest future it ever awaits, for
        // its whole life, and this one runs once, at the very end.
        if let Err(e) = Box::pin(env.service.close_session(caller)).await {
            error!(error = ?e, "could not record the end of a session");
        }
    }
}

/// Finishes the upgrade and serves the session until it closes.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice in the session task"
)]
fn connect<'a>(
    env: &'a SessionEnv,
    websocket: Pin<Box<Upgrade>>,
    pending: &'a PendingSession,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        // Bound in its own statement: a value matched on stays in the task
        // across every await of the match, beside the stream moved out of it.
        let mut ws = match websocket.await {
            Ok(ws) => ws,
            Err(e) => return debug!(error = %e, "WebSocket upgrade failed"),
        };
        let caller = &pending.caller;
        info!(user = %caller.user.id, session = %caller.session, "session opened");
        env.metrics.sessions_opened.inc();
        let session = Session {
            env,
            pending,
            limiter: RateLimiter::direct_with_clock(
                Quota::per_second(env.settings.rate_per_sec).allow_burst(env.settings.rate_burst),
                MonotonicClock,
            ),
        };
        let mut out = Outgoing::default();
        if let Err(e) = write_first(&mut ws, session.handle(), &mut out).await {
            session.write_failed(&WsError::Io(e));
            session.handle().close(DROP);
        }
        session.serve(&mut ws, &mut out).await;
        // From here on, the session's own fields rather than locals: each
        // local used after an await takes room in the task for its life.
        if let Some((code, _)) = session.handle().reason() {
            env.metrics
                .sessions_closed
                .get_or_create(&CloseLabel { code })
                .inc();
        }
        // The peer went away, or we asked to close: either way, say goodbye.
        session.handle().close(NORMAL);
        // Boxed: it holds two timers, and runs once, at the end.
        Box::pin(session.close(&mut ws, &mut out)).await;
        info!(
            user = %session.caller().user.id,
            session = %session.caller().session,
            code = session.handle().reason().map_or(NORMAL, |r| r.0),
            "session closed"
        );
    }
}

/// What the session loop wakes up for.
enum Wake {
    /// Text frames that had arrived, in order.
    Texts(Vec<Utf8Bytes>),
    /// Any other frame, or the end of the stream.
    Frame(Option<Result<Frame, WsError>>),
    /// The run in flight is answered.
    Answered(Vec<Answer>),
    /// The alarm rang: a heartbeat or the token's expiry is due.
    Timer,
    /// A close was requested and no request is in flight.
    Close,
    /// The socket cannot be written and no request is in flight.
    Broken,
}

/// What the session loop keeps between wake-ups. One struct rather than
/// one per piece of the loop: each would be padded on its own, and this
/// is kept for the session's life.
struct Loop<'s> {
    /// Pings sent since the client was last heard from.
    unanswered_pings: u8,
    /// Requests being answered, as one run.
    answering: Option<Answering<'s>>,
    /// A frame read behind a run of text frames, handled after that run;
    /// boxed, as it is seldom there and the task holds this slot for life.
    held: Option<Box<Option<Result<Frame, WsError>>>>,
    /// The socket cannot be written.
    broken: bool,
    pace: Pace,
    /// Replies are queued: write now, whatever the pace.
    urgent: bool,
    /// Wakes the session when events wait for the pace; allocated only
    /// then, as most sessions never wait.
    pace_timer: Option<Pin<Box<Sleep>>>,
    /// Set at shutdown: reading on until `read::SHUTDOWN_DRAIN` has passed.
    draining: bool,
}

/// A session being served: what its task keeps for its whole life.
struct Session<'a> {
    env: &'a SessionEnv,
    /// Who, their mailbox, and when their token expires: one reference
    /// rather than one to each, kept in the task for the session's life.
    pending: &'a PendingSession,
    /// On the standard library's clock rather than governor's default
    /// (quanta's, 40 bytes of calibration kept in every session).
    limiter: RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<StdInstant>>,
}

impl Session<'_> {
    fn caller(&self) -> &Caller {
        &self.pending.caller
    }

    fn handle(&self) -> &Mailbox {
        &self.pending.handle
    }

    /// Serves the session until it is asked to close or the peer goes away;
    /// a request in flight is always answered first.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep its arguments twice in the session task"
    )]
    fn serve<'s>(
        &'s self,
        ws: &'s mut WsStream,
        out: &'s mut Outgoing,
    ) -> impl Future<Output = ()> + Send + 's {
        // A block, not an async fn: see `run`. The heartbeat period and the
        // handle are read through `self` where used, not kept in locals.
        async move {
            let now = Instant::now();
            self.set_alarm(self.next_wake(now, self.expiry(now)));
            let mut state = Loop {
                unanswered_pings: 0,
                answering: None,
                held: None,
                broken: false,
                pace: Pace::new(Instant::now()),
                urgent: false,
                pace_timer: None,
                draining: false,
            };
            loop {
                // A `move` closure over references: it holds one pointer to
                // each of these, where a borrowing closure would hold one to
                // each field and variable it uses, for the session's life.
                let (st, ws, out) = (&mut state, &mut *ws, &mut *out);
                let wake = poll_fn(move |cx| {
                    self.handle().register(cx.waker());
                    self.poll_write(st, ws, out, cx);
                    self.poll_read(st, ws, cx)
                })
                .await;
                match wake {
                    Wake::Answered(answers) => {
                        state.answering = None;
                        state.urgent = true;
                        self.queue(answers);
                    }
                    Wake::Texts(texts) => {
                        state.unanswered_pings = 0;
                        self.answer(&mut state, texts);
                    }
                    Wake::Close | Wake::Broken => return,
                    Wake::Timer => self.on_alarm(&mut state),
                    Wake::Frame(frame) => {
                        if self.on_frame(&mut state, frame).is_break() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The alarm rang: closes a session whose token expired or whose
    /// client stopped answering pings, else pings it and sets the next.
    fn on_alarm(&self, state: &mut Loop<'_>) {
        let now = Instant::now();
        let expiry = self.expiry(now);
        if expiry.is_none() {
            self.handle().close(TOKEN_EXPIRED);
        } else if state.unanswered_pings >= 2 {
            debug!(session = %self.caller().session, "two pings unanswered");
            self.handle().close(DROP);
        } else {
            state.unanswered_pings += 1;
            self.handle().push(Frame::Ping(Default::default()));
            self.set_alarm(self.next_wake(now, expiry));
        }
    }

    /// Wakes the session loop at `at` with [`Wake::Timer`] (or, draining,
    /// [`Wake::Close`]), in place of the alarm it had.
    fn set_alarm(&self, at: Instant) {
        self.env.alarms.set(&self.pending.handle, at);
    }

    /// Moves the session's expiry to `to` (a `reauth`), and its alarm
    /// with it.
    fn extend(&self, to: Timestamp) {
        self.pending
            .expires_at
            .store(to.millis(), Ordering::Relaxed);
        let now = Instant::now();
        self.set_alarm(self.next_wake(now, self.expiry(now)));
    }

    /// When the token that opened the session (or the last `reauth`) expires, on the timer's clock
    /// from `now`; `None` once it has. Worked out when needed rather than
    /// kept: the session task holds what it keeps for its whole life.
    fn expiry(&self, now: Instant) -> Option<Instant> {
        let expires_ms = self.pending.expires_at.load(Ordering::Relaxed);
        let left_ms = expires_ms - self.env.service.now().millis();
        (left_ms > 0).then(|| now + Duration::from_millis(left_ms as u64))
    }

    /// The next heartbeat from `now`, or the token's expiry if sooner.
    fn next_wake(&self, now: Instant, expiry: Option<Instant>) -> Instant {
        let ping = now + self.env.settings.heartbeat;
        expiry.map_or(now, |expiry| ping.min(expiry))
    }
}
