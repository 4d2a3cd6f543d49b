//! The session's reads: what wakes the loop once the writes are done, the
//! runs of text frames read together, and every other frame.

use std::ops::ControlFlow;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use hyper_tungstenite::tungstenite::error::ProtocolError;
use hyper_tungstenite::tungstenite::{Error as WsError, Message as Frame};
use tokio::time::Instant;
use tracing::debug;

use super::{Loop, Session, Wake};
use crate::adapters::ws::registry::{
    GOING_AWAY, INVALID_DATA, PROTOCOL_ERROR, READ_PAUSE_BYTES, TOO_LARGE,
};
use crate::adapters::ws::socket::WsStream;

/// Most text frames already received that are read and answered as one
/// run: a client with many requests in flight gets its sends committed
/// together and its replies in one write.
const MAX_RUN: usize = 32;

/// How long a session still reads requests at shutdown before its 1001.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(200);

impl Session<'_> {
    /// What wakes the loop, in order: the answer in flight (replies keep
    /// request order, and the client waits for its answer), a broken
    /// socket, a close, a frame held back, the alarm, and then the next
    /// frames, unless the replies already waiting are too many.
    pub(super) fn poll_read(
        &self,
        st: &mut Loop<'_>,
        ws: &mut WsStream,
        cx: &mut Context<'_>,
    ) -> Poll<Wake> {
        if let Some(answer) = st.answering.as_mut() {
            return answer.as_mut().poll(cx).map(Wake::Answered);
        }
        if st.broken {
            return Poll::Ready(Wake::Broken);
        }
        // At shutdown, requests the client sent before the close are still
        // read and answered, for a short while: the last message someone
        // sent is acknowledged or refused, never left unanswered. (Bytes
        // already in the socket may not be readable yet: the reactor has to
        // see them first.)
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
        // Replies (and events) piling up for a client that does not read
        // them: read nothing more from it until they drain. The socket's
        // readiness, or its stall sweep, wakes the session.
        if self.handle().pending_bytes() > READ_PAUSE_BYTES {
            return Poll::Pending;
        }
        read_run(st, ws, cx)
    }

    /// Handles a frame other than a run of texts, or the end of the stream;
    /// `Break` when the session is over.
    pub(super) fn on_frame<'s>(
        &'s self,
        st: &mut Loop<'s>,
        frame: Option<Result<Frame, WsError>>,
    ) -> ControlFlow<()> {
        let Some(frame) = frame else {
            return ControlFlow::Break(());
        };
        st.unanswered_pings = 0;
        match frame {
            Ok(Frame::Text(text)) => self.answer(st, vec![text]),
            Ok(Frame::Binary(_)) => {
                let reply = self.refuse(None, "binary frames are not supported");
                self.handle().push(Frame::Text(reply));
            }
            // Pongs only prove liveness; pings are answered by tungstenite;
            // a close is answered and then the stream ends.
            Ok(_) => {}
            Err(WsError::Capacity(_)) => self.handle().close(TOO_LARGE),
            Err(WsError::Utf8(_)) => self.handle().close(INVALID_DATA),
            // The peer hung up without a close handshake: nobody is left to
            // tell.
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                return ControlFlow::Break(());
            }
            Err(WsError::Protocol(e)) => {
                debug!(session = %self.caller().session, error = %e, "protocol error");
                self.handle().close(PROTOCOL_ERROR);
            }
            Err(e) => {
                debug!(session = %self.caller().session, error = %e, "read failed");
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// The text frames that have arrived, up to [`MAX_RUN`]; a frame of
/// another kind after them is held for the next wake-up, and one before
/// any is returned on its own.
fn read_run(st: &mut Loop<'_>, ws: &mut WsStream, cx: &mut Context<'_>) -> Poll<Wake> {
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
}
