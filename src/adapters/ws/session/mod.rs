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

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant as StdInstant};

use futures::{SinkExt, StreamExt};
use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hyper::body::Bytes;
use hyper_tungstenite::tungstenite::error::ProtocolError;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use hyper_tungstenite::tungstenite::{Error as WsError, Message as Frame, Utf8Bytes};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::alarms::Alarms;
use super::registry::{
    DROP, GOING_AWAY, INVALID_DATA, Mailbox, NORMAL, Outbound, PROTOCOL_ERROR, READ_PAUSE_BYTES,
    SLOW_CONSUMER, SessionHandle, SessionRegistry, TOKEN_EXPIRED, TOO_LARGE, cost,
};
use super::socket::{Upgrade, WsStream};
use crate::adapters::cluster::Cluster;
use crate::adapters::metrics::{CloseLabel, Metrics};
use crate::adapters::wire::{
    self, ConversationDto, ConversationsContent, HistoryContent, Inbound, MAX_REPLY_BYTES,
    MessageContent, MessageDto, PresenceDto, Request, RoomsContent, UserDto,
};
use crate::domain::service::{Caller, ChatService, Draft};
use crate::domain::{ChatError, ConversationSummary, Event, Message, Timestamp};

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
    pub service: Arc<ChatService>,
    /// Where this session registers to receive events.
    pub registry: Arc<SessionRegistry>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: WsSettings,
    /// Cancelled when the server shuts down; no session starts after that.
    pub shutdown: CancellationToken,
    /// This node's cluster membership, in cluster mode.
    pub cluster: Option<Arc<Cluster>>,
    /// Every session's heartbeat, expiry and drain timer.
    pub alarms: Arc<Alarms>,
}

/// A session accepted at the handshake, waiting for its upgrade to finish.
pub struct PendingSession {
    /// Who, on which session id.
    pub caller: Caller,
    /// When its token expires.
    pub expires_at: Timestamp,
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
/// a timer in each session.
pub fn run(
    env: Arc<SessionEnv>,
    websocket: Upgrade,
    pending: PendingSession,
) -> impl Future<Output = ()> + Send {
    let websocket = Box::pin(websocket);
    async move {
        connect(&env, websocket, &pending).await;
        let caller = &pending.caller;
        env.registry
            .unregister(&caller.user.id, pending.handle.id());
        if let Some(cluster) = &env.cluster {
            cluster.detach(&caller.user.id);
        }
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

/// Writes the text frames queued before the upgrade (the welcome, and any
/// event since) straight to the socket, and leaves the rest to `out`.
///
/// tungstenite keeps its write buffer's capacity for the session's life,
/// and the welcome alone grows it to 224 bytes; written past it, a session
/// that never gets anything else (most of them) never has that buffer.
/// tungstenite's buffer is empty at this point, so nothing goes out of order.
async fn write_first(ws: &mut WsStream, mailbox: &Mailbox, out: &mut Outgoing) -> io::Result<()> {
    let mut frames = mailbox.take();
    let mut bytes = Vec::new();
    let (mut written, mut counted) = (0, 0);
    while let Some(frame @ Frame::Text(text)) = frames.front() {
        counted += cost(frame);
        RawFrame::message(Bytes::from(text.clone()), OpCode::Data(Data::Text), true)
            .format(&mut bytes)
            .map_err(io::Error::other)?;
        frames.pop_front();
        written += 1;
    }
    out.batch = frames;
    ws.get_mut().write_all(&bytes).await?;
    mailbox.sent(written, counted);
    mailbox.progressed();
    Ok(())
}

/// A request's reply, and the event its own session gets right after it.
type Answer = (Utf8Bytes, Option<Event>);

/// Requests being answered, as one run.
type Answering<'a> = Pin<Box<dyn Future<Output = Vec<Answer>> + Send + 'a>>;

/// Most text frames already received that are read and answered as one
/// run: a client with many requests in flight gets its sends committed
/// together and its replies in one write.
const MAX_RUN: usize = 32;

/// How long a session still reads requests at shutdown before its 1001.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(200);

/// What the session loop wakes up for.
enum Wake {
    /// Text frames that had arrived, in order.
    Texts(Vec<Utf8Bytes>),
    /// Any other frame, or the end of the stream.
    Frame(Option<Result<Frame, WsError>>),
    Answered(Vec<Answer>),
    Timer,
    /// A close was requested and no request is in flight.
    Close,
    /// The socket cannot be written and no request is in flight.
    Broken,
}

/// Frames on their way from the mailbox into the socket.
#[derive(Default)]
struct Outgoing {
    /// Taken out of the mailbox, not yet handed to the socket.
    batch: VecDeque<Frame>,
    /// Handed to the socket since its last flush.
    unflushed: bool,
    /// A flush completed since this was last cleared: a write went out.
    flushed: bool,
}

impl Outgoing {
    /// Hands every queued frame to the socket and flushes once they are
    /// all in: one write for a burst of events rather than one per event.
    /// Ready when the mailbox is empty and all of it written; pending while
    /// the socket is full (then the mailbox fills up, and a client that
    /// stopped reading is closed as a slow consumer).
    fn poll_send(
        &mut self,
        ws: &mut WsStream,
        mailbox: &Mailbox,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WsError>> {
        loop {
            if self.unflushed {
                ready!(ws.poll_flush_unpin(cx))?;
                self.unflushed = false;
                self.flushed = true;
            }
            if self.batch.is_empty() {
                self.batch = mailbox.take();
                if self.batch.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            while !self.batch.is_empty() {
                ready!(ws.poll_ready_unpin(cx))?;
                let frame = self.batch.pop_front().expect("not empty");
                mailbox.sent(1, cost(&frame));
                ws.start_send_unpin(frame)?;
                self.unflushed = true;
            }
        }
    }
}

/// Writes a session may make in a burst before pacing starts.
const PACE_BURST: u32 = 4;
/// Time between writes once the burst is spent. A session receiving events
/// faster than this gets them several to a write: each write to a socket
/// costs the server far more than the bytes in it.
const PACE_INTERVAL: Duration = Duration::from_millis(25);

/// Paces a session's writes (a GCRA: the time at which the budget is
/// whole again, moved forward by each write). Replies are never held back;
/// only events, while a session receives them faster than one write per
/// interval.
struct Pace {
    /// When the next write would be on time were the burst all spent.
    due: Instant,
}

impl Pace {
    fn new(now: Instant) -> Self {
        Self { due: now }
    }

    /// The earliest moment the next write may go out.
    fn next_write(&self) -> Instant {
        self.due
            .checked_sub(PACE_INTERVAL * (PACE_BURST - 1))
            .unwrap_or(self.due)
    }

    /// Counts a write made at `now`. Replies write whatever the pace, so
    /// the budget can run out but never into debt: events wait at most one
    /// interval after the last write.
    fn spend(&mut self, now: Instant) {
        self.due = (self.due.max(now) + PACE_INTERVAL).min(now + PACE_INTERVAL * PACE_BURST);
    }
}

/// What the session loop keeps between wake-ups.
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
    /// Set at shutdown: reading on until SHUTDOWN_DRAIN has passed.
    draining: bool,
}

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
                    let writing =
                        !matches!(self.handle().reason(), Some((SLOW_CONSUMER | DROP, _)));
                    if writing && !st.broken {
                        let now = Instant::now();
                        let at = st.pace.next_write();
                        let wait = if st.urgent || now >= at || self.handle().crowded() {
                            // Unpaced before the queue is taken: a frame pushed
                            // from now on wakes the session, one pushed before
                            // is in what `poll_send` takes.
                            self.handle().set_paced(false);
                            let sent = out.poll_send(ws, self.handle(), cx);
                            if ws.take_wrote() {
                                self.handle().progressed();
                            }
                            if let Poll::Ready(Err(e)) = &sent {
                                self.write_failed(e);
                                st.broken = true;
                            }
                            let wrote = std::mem::take(&mut out.flushed);
                            if wrote {
                                st.pace.spend(now);
                                st.urgent = false;
                            }
                            // A write that spent the budget: the next one waits
                            // for the pace whatever comes, so the session waits
                            // for it from now on, and the frames pushed meanwhile
                            // need not wake it. A busy session is then woken once
                            // a write, by its timer, rather than twice (by the
                            // first frame after a write, to start waiting, and
                            // by the timer); once idle, the timer finds nothing
                            // to write, and the session waits unpaced again.
                            let next = st.pace.next_write();
                            (wrote && sent.is_ready() && !st.broken && next > now).then_some(next)
                        } else {
                            Some(at)
                        };
                        match wait {
                            Some(at) => {
                                let paced = st
                                    .pace_timer
                                    .get_or_insert_with(|| Box::pin(sleep_until(at)));
                                self.handle().set_paced(true);
                                if paced.deadline() != at {
                                    paced.as_mut().reset(at);
                                }
                                if paced.as_mut().poll(cx).is_ready() {
                                    // Due already: poll again, and write.
                                    cx.waker().wake_by_ref();
                                }
                            }
                            None => st.pace_timer = None,
                        }
                    }
                    // The answer is awaited before anything else is read: replies
                    // keep request order, and the client waits for its answer.
                    if let Some(answer) = st.answering.as_mut() {
                        return answer.as_mut().poll(cx).map(Wake::Answered);
                    }
                    if st.broken {
                        return Poll::Ready(Wake::Broken);
                    }
                    // At shutdown, requests the client sent before the close
                    // are still read and answered, for a short while: the last
                    // message someone sent is acknowledged or refused, never
                    // left unanswered. (Bytes already in the socket may not be
                    // readable yet: the reactor has to see them first.)
                    let going_away = match self.handle().reason() {
                        Some((GOING_AWAY, _)) => true,
                        Some(_) => return Poll::Ready(Wake::Close),
                        None => false,
                    };
                    if going_away && !st.draining {
                        st.draining = true;
                        self.set_alarm(Instant::now() + SHUTDOWN_DRAIN);
                    }
                    if let Some(frame) = st.held.take() {
                        return Poll::Ready(Wake::Frame(*frame));
                    }
                    if self.handle().take_alarm() {
                        return Poll::Ready(if st.draining {
                            Wake::Close
                        } else {
                            Wake::Timer
                        });
                    }
                    // Replies (and events) piling up for a client that does
                    // not read them: read nothing more from it until they
                    // drain. The socket's readiness, or its stall sweep,
                    // wakes the session.
                    if self.handle().pending_bytes() > READ_PAUSE_BYTES {
                        return Poll::Pending;
                    }
                    let mut texts = Vec::new();
                    while texts.len() < MAX_RUN {
                        match ws.poll_next_unpin(cx) {
                            Poll::Ready(Some(Ok(Frame::Text(text)))) => texts.push(text),
                            Poll::Ready(other) if texts.is_empty() => {
                                return Poll::Ready(Wake::Frame(other));
                            }
                            Poll::Ready(other) => {
                                st.held = Some(Box::new(other));
                                break;
                            }
                            Poll::Pending if texts.is_empty() => return Poll::Pending,
                            Poll::Pending => break,
                        }
                    }
                    Poll::Ready(Wake::Texts(texts))
                })
                .await;
                match wake {
                    Wake::Answered(answers) => {
                        state.answering = None;
                        state.urgent = true;
                        for (reply, then) in answers {
                            self.handle().push(Frame::Text(reply));
                            if let Some(event) = then {
                                self.handle().push(Frame::Text(wire::encode_event(&event)));
                            }
                        }
                    }
                    Wake::Texts(texts) => {
                        state.unanswered_pings = 0;
                        // Boxed: it is large, and in flight only now and then.
                        state.answering = Some(Box::pin(self.answer_all(texts)));
                    }
                    Wake::Close | Wake::Broken => return,
                    Wake::Timer => {
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
                    Wake::Frame(frame) => {
                        let Some(frame) = frame else { return };
                        state.unanswered_pings = 0;
                        match frame {
                            Ok(Frame::Text(text)) => {
                                state.answering = Some(Box::pin(self.answer_all(vec![text])));
                            }
                            Ok(Frame::Binary(_)) => {
                                let reply = self.refuse(None, "binary frames are not supported");
                                self.handle().push(Frame::Text(reply));
                            }
                            // Pongs only prove liveness; pings are answered by
                            // tungstenite; a close is answered and then the stream ends.
                            Ok(_) => {}
                            Err(WsError::Capacity(_)) => self.handle().close(TOO_LARGE),
                            Err(WsError::Utf8(_)) => self.handle().close(INVALID_DATA),
                            // The peer hung up without a close handshake:
                            // nobody is left to tell.
                            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                                return;
                            }
                            Err(WsError::Protocol(e)) => {
                                debug!(session = %self.caller().session, error = %e, "protocol error");
                                self.handle().close(PROTOCOL_ERROR);
                            }
                            Err(e) => {
                                debug!(session = %self.caller().session, error = %e, "read failed");
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Wakes the session loop at `at` with [`Wake::Timer`] (or, draining,
    /// [`Wake::Close`]), in place of the alarm it had.
    fn set_alarm(&self, at: Instant) {
        self.env.alarms.set(&self.pending.handle, at);
    }

    /// When the token that opened the session expires, on the timer's clock
    /// from `now`; `None` once it has. Worked out when needed rather than
    /// kept: the session task holds what it keeps for its whole life.
    fn expiry(&self, now: Instant) -> Option<Instant> {
        let left_ms = self.pending.expires_at.millis() - self.env.service.now().millis();
        (left_ms > 0).then(|| now + Duration::from_millis(left_ms as u64))
    }

    /// The next heartbeat from `now`, or the token's expiry if sooner.
    fn next_wake(&self, now: Instant, expiry: Option<Instant>) -> Instant {
        let ping = now + self.env.settings.heartbeat;
        expiry.map_or(now, |expiry| ping.min(expiry))
    }

    /// Ends the connection: what is still queued goes out first (unless the
    /// session is closed for not reading it), then the close frame, then a
    /// moment for the peer's reply, for a clean close handshake.
    async fn close(&self, ws: &mut WsStream, out: &mut Outgoing) {
        let (code, reason) = self.handle().reason().unwrap_or((NORMAL, ""));
        if code == DROP {
            return;
        }
        let _ = tokio::time::timeout(self.env.settings.close_timeout, async {
            if code != SLOW_CONSUMER {
                poll_fn(|cx| out.poll_send(ws, self.handle(), cx)).await?;
            }
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            ws.send(Frame::Close(Some(frame))).await
        })
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while ws.next().await.is_some() {}
        })
        .await;
    }

    /// Counts a write that failed, and logs it: at debug when the peer
    /// went away (the common end of a session), at warn otherwise, since
    /// then a reply or event was lost for a reason of the server's own.
    fn write_failed(&self, e: &WsError) {
        self.env.metrics.write_failures.inc();
        let session = &self.caller().session;
        match e {
            WsError::Io(io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                ) =>
            {
                debug!(%session, error = %e, "write failed: the peer went away");
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                debug!(%session, error = %e, "write failed: closed");
            }
            _ => warn!(%session, error = %e, "write failed"),
        }
    }

    fn refuse(&self, id: Option<&str>, message: &str) -> Utf8Bytes {
        self.env.metrics.error("bad_request");
        wire::error(id, "bad_request", message)
    }

    /// Answers a run of text frames: exactly one ack or error each, in
    /// order, each with the event this session gets right after that ack,
    /// if any. Consecutive sends go to the core together; any other request
    /// waits for the sends before it, so it sees them done.
    async fn answer_all(&self, texts: Vec<Utf8Bytes>) -> Vec<Answer> {
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(texts.len());
        let mut sends: Vec<(usize, Option<String>, Draft)> = Vec::new();
        let mut touched = false;
        for text in texts {
            let at = answers.len();
            answers.push(None);
            let (id, inbound) = match self.admit(&text) {
                Ok(admitted) => admitted,
                Err(refusal) => {
                    answers[at] = Some((refusal, None));
                    continue;
                }
            };
            if !std::mem::replace(&mut touched, true)
                && let Err(e) = self.env.service.touch(self.caller()).await
            {
                debug!(error = ?e, "presence not refreshed");
            }
            match inbound {
                Inbound::Send(draft) => sends.push((at, id, draft)),
                Inbound::Other(request) => {
                    self.send_all(&mut sends, &mut answers).await;
                    let id = id.as_deref();
                    answers[at] = Some(match self.dispatch(id, request).await {
                        Ok(answer) => answer,
                        Err(e) => (self.failed(id, &e), None),
                    });
                }
            }
        }
        self.send_all(&mut sends, &mut answers).await;
        answers
            .into_iter()
            .map(|answer| answer.expect("every request is answered"))
            .collect()
    }

    /// Counts, rate-limits and parses one frame; the refusal to send back
    /// when it cannot be served.
    fn admit(&self, text: &str) -> Result<(Option<String>, Inbound), Utf8Bytes> {
        self.env.metrics.requests.inc();
        let allowed = self.limiter.check().is_ok();
        let (id, inbound) =
            wire::parse_frame(text).map_err(|bad| self.refuse(bad.id.as_deref(), &bad.message))?;
        if !allowed {
            self.env.metrics.error("rate_limited");
            let id = id.as_deref();
            return Err(wire::error(
                id,
                "rate_limited",
                "too many requests; slow down",
            ));
        }
        Ok((id, inbound))
    }

    /// Sends the queued messages in one call to the core and fills in
    /// their answers.
    async fn send_all(
        &self,
        sends: &mut Vec<(usize, Option<String>, Draft)>,
        answers: &mut [Option<Answer>],
    ) {
        if sends.is_empty() {
            return;
        }
        let (asked, drafts): (Vec<_>, Vec<_>) = sends
            .drain(..)
            .map(|(at, id, draft)| ((at, id), draft))
            .unzip();
        let results = self.env.service.send_all(self.caller(), drafts).await;
        for ((at, id), result) in asked.into_iter().zip(results) {
            let id = id.as_deref();
            answers[at] = Some(match result {
                Ok(message) => (self.sent(id, &message), None),
                Err(e) => (self.failed(id, &e), None),
            });
        }
    }

    /// The error reply for a request the core refused.
    fn failed(&self, id: Option<&str>, e: &ChatError) -> Utf8Bytes {
        let (code, message) = wire::error_code(e);
        if let ChatError::Internal(cause) = e {
            error!(session = %self.caller().session, error = ?cause, "request failed");
        }
        self.env.metrics.error(code);
        wire::error(id, code, &message)
    }

    async fn dispatch(&self, id: Option<&str>, request: Request) -> Result<Answer, ChatError> {
        let service = &self.env.service;
        let caller = self.caller();
        // Set by the requests whose own session hears of them after the ack.
        let mut then = None;
        let conversation_ack = |summary: &ConversationSummary| {
            wire::ack(
                id,
                json!({ "conversation": ConversationDto::from(summary) }),
            )
        };
        let ack = match request {
            Request::EditMessage {
                conversation_id,
                message_id,
                body,
            } => {
                let m = service
                    .edit_message(caller, &conversation_id, &message_id, body)
                    .await?;
                message_ack(id, &m)
            }
            Request::DeleteMessage {
                conversation_id,
                message_id,
            } => {
                let m = service
                    .delete_message(caller, &conversation_id, &message_id)
                    .await?;
                message_ack(id, &m)
            }
            Request::GetHistory {
                conversation_id,
                query,
            } => {
                // A page cut short keeps the messages next to where it was
                // asked from: the newest when it reads back from the end or
                // `beforeSeq`, the oldest when it reads on from `afterSeq`,
                // so that paging on from it misses nothing.
                let backwards = query.after_seq.is_none();
                let page = service.history(caller, &conversation_id, query).await?;
                let dtos = page.messages.iter().map(MessageDto::from);
                let (messages, cut) = if backwards {
                    let (mut newest, cut) = wire::fit(dtos.rev(), MAX_REPLY_BYTES);
                    newest.reverse();
                    (newest, cut)
                } else {
                    wire::fit(dtos, MAX_REPLY_BYTES)
                };
                wire::ack(
                    id,
                    HistoryContent {
                        messages,
                        has_more: page.has_more || cut,
                    },
                )
            }
            Request::GetConversations { cursor } => {
                let list = service.conversations(caller).await?;
                // The page after the cursor's conversation in the list as it
                // stands now; from the start when the caller is no longer in
                // it. Activity only moves a conversation to the front, so a
                // walk misses none that was there when it began (one that
                // became active meanwhile was announced by its event).
                let start = cursor.map_or(0, |after| {
                    list.iter()
                        .position(|s| s.conversation.id == after)
                        .map_or(0, |at| at + 1)
                });
                let (conversations, has_more, next_cursor) =
                    wire::conversation_page(&list[start..], false);
                wire::ack(
                    id,
                    ConversationsContent {
                        conversations,
                        has_more,
                        next_cursor,
                    },
                )
            }
            Request::MarkRead {
                conversation_id,
                seq,
            } => {
                let seq = service.mark_read(caller, &conversation_id, seq).await?;
                wire::ack(
                    id,
                    json!({ "conversationId": conversation_id.as_str(), "seq": seq }),
                )
            }
            Request::Typing {
                conversation_id,
                active,
            } => {
                service.typing(caller, &conversation_id, active).await?;
                wire::ack(id, json!({}))
            }
            Request::CreateRoom { name, visibility } => {
                conversation_ack(&service.create_room(caller, name, visibility).await?)
            }
            Request::JoinRoom { conversation_id } => {
                let answer = service.join_room(caller, &conversation_id).await?;
                then = answer.then;
                conversation_ack(&answer.value)
            }
            Request::InviteToRoom {
                conversation_id,
                user_id,
            } => {
                let answer = service
                    .invite_to_room(caller, &conversation_id, &user_id)
                    .await?;
                then = answer.then;
                conversation_ack(&answer.value)
            }
            Request::LeaveRoom { conversation_id } => {
                then = service.leave_room(caller, &conversation_id).await?.then;
                wire::ack(id, json!({}))
            }
            Request::ListRooms {
                prefix,
                cursor,
                limit,
            } => {
                let page = service
                    .list_rooms(caller, &prefix, cursor.as_ref(), limit)
                    .await?;
                let (rooms, has_more, next_cursor) =
                    wire::conversation_page(&page.rooms, page.has_more);
                wire::ack(
                    id,
                    RoomsContent {
                        rooms,
                        has_more,
                        next_cursor,
                    },
                )
            }
            Request::GetConnectedUsers { limit } => {
                let users = service.connected_users(caller, limit).await?;
                let users: Vec<UserDto> = users.iter().map(Into::into).collect();
                wire::ack(id, json!({ "users": users }))
            }
            Request::GetPresence { user_ids } => {
                let list = service.presence_of(caller, user_ids).await?;
                let presence: Vec<PresenceDto> = list.iter().map(Into::into).collect();
                wire::ack(id, json!({ "presence": presence }))
            }
            Request::SetStatus { status } => {
                let p = service.set_status(caller, status).await?;
                wire::ack(id, json!({ "presence": PresenceDto::from(&p) }))
            }
            Request::Ping => {
                let now = wire::rfc3339(service.now());
                wire::ack(id, json!({ "serverTime": now }))
            }
            Request::BlockUser { user_id } => {
                service.block_user(caller, &user_id).await?;
                wire::ack(id, json!({}))
            }
            Request::UnblockUser { user_id } => {
                service.unblock_user(caller, &user_id).await?;
                wire::ack(id, json!({}))
            }
            Request::GetBlocked => {
                let users = service.blocked_users(caller).await?;
                let users: Vec<UserDto> = users.iter().map(Into::into).collect();
                wire::ack(id, json!({ "users": users }))
            }
        };
        Ok((ack, then))
    }

    fn sent(&self, id: Option<&str>, message: &Message) -> Utf8Bytes {
        self.env.metrics.messages_acked.inc();
        message_ack(id, message)
    }
}

/// `{message}`: the ack of sends, edits and deletes.
fn message_ack(id: Option<&str>, message: &Message) -> Utf8Bytes {
    wire::ack(
        id,
        MessageContent {
            message: message.into(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_writes_goes_at_once_then_one_per_interval() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        for _ in 0..PACE_BURST {
            assert!(pace.next_write() <= t0);
            pace.spend(t0);
        }
        assert_eq!(pace.next_write(), t0 + PACE_INTERVAL);
        pace.spend(t0 + PACE_INTERVAL);
        assert_eq!(pace.next_write(), t0 + PACE_INTERVAL * 2);
        // Quiet for long enough, the whole burst is back.
        let later = t0 + PACE_INTERVAL * (PACE_BURST + 2);
        assert!(pace.next_write() <= later);
        pace.spend(later);
        assert!(pace.next_write() <= later);
    }

    #[test]
    fn writes_beyond_the_budget_hold_events_back_one_interval_at_most() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        // Replies write whatever the pace: a hundred of them at once.
        for _ in 0..100 {
            pace.spend(t0);
        }
        assert_eq!(pace.next_write(), t0 + PACE_INTERVAL);
    }
}
