//! The session's writes: the mailbox drained into the socket, paced so
//! that a busy session gets its events several to a write, and the close.

use std::future::{Future, poll_fn};
use std::io;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper::body::Bytes;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use hyper_tungstenite::tungstenite::{Error as WsError, Message as Frame};
use std::collections::VecDeque;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};

use super::{Loop, Session};
use crate::adapters::ws::registry::{DROP, Mailbox, NORMAL, SLOW_CONSUMER, cost};
use crate::adapters::ws::socket::WsStream;

/// Writes the text frames queued before the upgrade (the welcome, and any
/// event since) straight to the socket, and leaves the rest to `out`.
///
/// tungstenite keeps its write buffer's capacity for the session's life,
/// and the welcome alone grows it to 224 bytes; written past it, a session
/// that never gets anything else (most of them) never has that buffer.
/// tungstenite's buffer is empty at this point, so nothing goes out of order.
pub(super) async fn write_first(
    ws: &mut WsStream,
    mailbox: &Mailbox,
    out: &mut Outgoing,
) -> io::Result<()> {
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

/// Frames on their way from the mailbox into the socket.
#[derive(Default)]
pub(super) struct Outgoing {
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
pub(super) const PACE_BURST: u32 = 4;
/// Time between writes once the burst is spent. A session receiving events
/// faster than this gets them several to a write: each write to a socket
/// costs the server far more than the bytes in it.
pub(super) const PACE_INTERVAL: Duration = Duration::from_millis(25);

/// Paces a session's writes (a GCRA: the time at which the budget is
/// whole again, moved forward by each write). Replies are never held back;
/// only events, while a session receives them faster than one write per
/// interval.
pub(super) struct Pace {
    /// When the next write would be on time were the burst all spent.
    due: Instant,
}

impl Pace {
    /// A pace with its whole burst to spend from `now`.
    pub(super) fn new(now: Instant) -> Self {
        Self { due: now }
    }

    /// The earliest moment the next write may go out.
    pub(super) fn next_write(&self) -> Instant {
        self.due
            .checked_sub(PACE_INTERVAL * (PACE_BURST - 1))
            .unwrap_or(self.due)
    }

    /// Counts a write made at `now`. Replies write whatever the pace, so
    /// the budget can run out but never into debt: events wait at most one
    /// interval after the last write.
    pub(super) fn spend(&mut self, now: Instant) {
        self.due = (self.due.max(now) + PACE_INTERVAL).min(now + PACE_INTERVAL * PACE_BURST);
    }
}

impl Session<'_> {
    /// Writes what the mailbox holds if replies wait, the pace allows or
    /// the mailbox is crowded; else sets the pace timer to wake the
    /// session when it may. Nothing once the socket is broken or the
    /// session is closed for not reading.
    pub(super) fn poll_write(
        &self,
        st: &mut Loop<'_>,
        ws: &mut WsStream,
        out: &mut Outgoing,
        cx: &mut Context<'_>,
    ) {
        let writing = !matches!(self.handle().reason(), Some((SLOW_CONSUMER | DROP, _)));
        if !writing || st.broken {
            return;
        }
        let now = Instant::now();
        let at = st.pace.next_write();
        let wait = if st.urgent || now >= at || self.handle().crowded() {
            self.write_now(st, ws, out, now, cx)
        } else {
            Some(at)
        };
        self.wait_for_pace(st, wait, cx);
    }

    /// Hands the mailbox to the socket; when the next write must then wait
    /// for the pace, the moment it may go.
    fn write_now(
        &self,
        st: &mut Loop<'_>,
        ws: &mut WsStream,
        out: &mut Outgoing,
        now: Instant,
        cx: &mut Context<'_>,
    ) -> Option<Instant> {
        // Unpaced before the queue is taken: a frame pushed from now on
        // wakes the session, one pushed before is in what `poll_send` takes.
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
        // A write that spent the budget: the next one waits for the pace
        // whatever comes, so the session waits for it from now on, and the
        // frames pushed meanwhile need not wake it. A busy session is then
        // woken once a write, by its timer, rather than twice (by the first
        // frame after a write, to start waiting, and by the timer); once
        // idle, the timer finds nothing to write, and the session waits
        // unpaced again.
        let next = st.pace.next_write();
        (wrote && sent.is_ready() && !st.broken && next > now).then_some(next)
    }

    /// Sets the pace timer to wake the session at `wait` (allocating it
    /// only then), or drops it when there is nothing to wait for.
    fn wait_for_pace(&self, st: &mut Loop<'_>, wait: Option<Instant>, cx: &mut Context<'_>) {
        let Some(at) = wait else {
            st.pace_timer = None;
            return;
        };
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

    /// Ends the connection: what is still queued goes out first (unless the
    /// session is closed for not reading it), then the close frame, then a
    /// moment for the peer's reply, for a clean close handshake.
    pub(super) async fn close(&self, ws: &mut WsStream, out: &mut Outgoing) {
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
    pub(super) fn write_failed(&self, e: &WsError) {
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
}
