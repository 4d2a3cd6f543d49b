//! The session's socket: the WebSocket handshake answer, the upgrade to a
//! plain `TcpStream`, reads that take what the socket holds at once, and
//! the WebSocket protocol (tungstenite's) over it.
//!
//! hyper-tungstenite's stream is a `TcpStream` behind hyper's `Upgraded`, a
//! boxed trait object with a buffer of its own; taken back out of it, the
//! session holds the socket directly, one allocation and 8 bytes fewer.
//! Owning the stream type is also what lets reads be larger than
//! tungstenite's read buffer (see [`ReadAhead`]).

use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{Sink, Stream};
use http_body_util::Full;
use hyper::body::{Buf, Bytes};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, header};
use hyper_tungstenite::tungstenite::error::ProtocolError;
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;
use hyper_tungstenite::tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use hyper_tungstenite::tungstenite::{Error as WsError, Message};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes taken from the socket in one read. tungstenite reads at most its
/// read buffer (64 bytes, kept small since every session keeps it for
/// life), so a client that sends a burst of requests would otherwise cost
/// a `recvfrom` per 64 bytes.
const READ_AHEAD: usize = 4096;

thread_local! {
    // Where a read lands before the caller takes its share: one per worker
    // thread, so that an idle session keeps no buffer of its own.
    static SCRATCH: std::cell::RefCell<[u8; READ_AHEAD]> =
        const { std::cell::RefCell::new([0; READ_AHEAD]) };
}

/// Checks a WebSocket upgrade request and answers it: the `101 Switching
/// Protocols` response to send, and the upgrade that completes once it is
/// sent. The same checks as `hyper_tungstenite::upgrade`, whose stream type
/// is fixed to hyper's `Upgraded`.
pub fn upgrade<B>(
    request: &mut Request<B>,
    config: WebSocketConfig,
) -> Result<(Response<Full<Bytes>>, Upgrade), ProtocolError> {
    let key = request
        .headers()
        .get("Sec-WebSocket-Key")
        .ok_or(ProtocolError::MissingSecWebSocketKey)?;
    if request
        .headers()
        .get("Sec-WebSocket-Version")
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(ProtocolError::MissingSecWebSocketVersionHeader);
    }
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()))
        .body(Full::new(Bytes::new()))
        .map_err(|_| ProtocolError::HandshakeIncomplete)?;
    let upgrade = Upgrade {
        on: hyper::upgrade::on(request),
        config: Some(config),
    };
    Ok((response, upgrade))
}

/// The upgrade of a connection whose `101` response is on its way: resolves
/// to the session's WebSocket once hyper hands the connection over.
pub struct Upgrade {
    on: OnUpgrade,
    config: Option<WebSocketConfig>,
}

impl Future for Upgrade {
    type Output = Result<WsStream, UpgradeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let upgraded = ready!(Pin::new(&mut self.on).poll(cx)).map_err(UpgradeError::Hyper)?;
        let parts = upgraded
            .downcast::<TokioIo<TcpStream>>()
            .map_err(|_| UpgradeError::NotTcp)?;
        let io = ReadAhead::new(parts.io.into_inner(), &parts.read_buf);
        Poll::Ready(Ok(WsStream::new(io, Role::Server, self.config.take())))
    }
}

/// Why an upgrade did not give a WebSocket.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The connection closed or failed before the upgrade.
    #[error("the upgrade failed: {0}")]
    Hyper(hyper::Error),
    /// The connection was not the `TcpStream` the server serves HTTP on.
    #[error("the upgraded connection is not a TCP stream")]
    NotTcp,
}

/// A session's WebSocket: tungstenite's protocol state over the socket, as
/// a `Stream` of the messages received and a `Sink` of those to send.
///
/// tokio-tungstenite's `WebSocketStream` does the same through two shared
/// waker proxies, 128 bytes a session and four waker registrations a poll;
/// here each poll hands the socket the caller's own context.
pub struct WsStream {
    io: ReadAhead,
    protocol: WebSocketContext,
    /// No message is left to read: the stream has ended or failed.
    ended: bool,
    /// The last write did not block: another frame may be queued.
    ready: bool,
    /// The close frame is queued; closing now only flushes.
    closing: bool,
    /// The socket took bytes since [`WsStream::take_wrote`] last asked.
    wrote: bool,
}

impl WsStream {
    /// The WebSocket over `io`, past its handshake.
    pub fn new(io: ReadAhead, role: Role, config: Option<WebSocketConfig>) -> Self {
        Self {
            io,
            protocol: WebSocketContext::new(role, config),
            ended: false,
            ready: true,
            closing: false,
            wrote: false,
        }
    }

    /// Whether the socket took any bytes since this was last asked: the
    /// peer is reading, however slowly.
    pub fn take_wrote(&mut self) -> bool {
        std::mem::take(&mut self.wrote)
    }

    /// The socket, for bytes written past the protocol.
    pub fn get_mut(&mut self) -> &mut ReadAhead {
        &mut self.io
    }

    /// Runs `op` on the protocol with the socket as `std::io` sees it:
    /// `WouldBlock` is pending, and `cx` is woken when the socket is ready.
    fn with_io<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut WebSocketContext, &mut PolledIo<'_, '_>) -> Result<R, WsError>,
    ) -> Poll<Result<R, WsError>> {
        let mut io = PolledIo {
            io: &mut self.io,
            cx,
            wrote: false,
        };
        let result = op(&mut self.protocol, &mut io);
        self.wrote |= io.wrote;
        match result {
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            other => Poll::Ready(other),
        }
    }
}

impl Stream for WsStream {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Once it has ended or failed, the stream stays ended.
        if this.ended {
            return Poll::Ready(None);
        }
        match ready!(this.with_io(cx, |ws, io| ws.read(io))) {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Err(e) => {
                this.ended = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

impl Sink<Message> for WsStream {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        if this.ready {
            return Poll::Ready(Ok(()));
        }
        // The last frame is queued but could not all be written: flush first.
        let flushed = ready!(this.with_io(cx, |ws, io| ws.flush(io)));
        this.ready = true;
        Poll::Ready(flushed)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        // No context here: a write that would block leaves the frame queued,
        // and `poll_ready` flushes it with the caller's context.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match this.with_io(&mut cx, |ws, io| ws.write(io, message)) {
            Poll::Pending => {
                this.ready = false;
                Ok(())
            }
            Poll::Ready(written) => {
                this.ready = true;
                written
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        let flushed = ready!(this.with_io(cx, |ws, io| ws.flush(io)));
        this.ready = true;
        // The close handshake's last frame went out: done, not a failure.
        Poll::Ready(match flushed {
            Err(WsError::ConnectionClosed) => Ok(()),
            other => other,
        })
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        this.ready = true;
        let queued = std::mem::replace(&mut this.closing, true);
        let closed = ready!(this.with_io(cx, |ws, io| if queued {
            ws.flush(io)
        } else {
            ws.close(io, None)
        }));
        Poll::Ready(match closed {
            Err(WsError::ConnectionClosed) => Ok(()),
            other => other,
        })
    }
}

/// The socket during one poll, as the `std::io` that tungstenite reads and
/// writes: `WouldBlock` when it is not ready.
struct PolledIo<'a, 'b> {
    io: &'a mut ReadAhead,
    cx: &'a mut Context<'b>,
    /// Some bytes were written.
    wrote: bool,
}

impl Read for PolledIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for PolledIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(written) => {
                self.wrote |= written.as_ref().is_ok_and(|n| *n > 0);
                written
            }
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.io).poll_flush(self.cx) {
            Poll::Ready(flushed) => flushed,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// A `TcpStream` whose reads take up to [`READ_AHEAD`] bytes from the socket
/// at once, and keep what the caller had no room for until its next reads.
/// Nothing is kept while the session is idle.
pub struct ReadAhead {
    socket: TcpStream,
    /// Read from the socket, not yet taken. Boxed, since it is seldom there
    /// and the session's task grows in steps of 128 bytes.
    ahead: Option<Box<Bytes>>,
}

impl ReadAhead {
    /// Reads from `socket`, after the bytes already read from it (`first`).
    pub fn new(socket: TcpStream, first: &[u8]) -> Self {
        let ahead = (!first.is_empty()).then(|| Box::new(Bytes::copy_from_slice(first)));
        Self { socket, ahead }
    }

    /// Copies into `buf` as much of `bytes` as it has room for; returns how
    /// much that was.
    fn fill(buf: &mut ReadBuf<'_>, bytes: &[u8]) -> usize {
        let n = bytes.len().min(buf.remaining());
        buf.put_slice(&bytes[..n]);
        n
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(ahead) = this.ahead.as_mut() {
            ahead.advance(Self::fill(buf, ahead));
            if ahead.is_empty() {
                this.ahead = None;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_AHEAD {
            return Pin::new(&mut this.socket).poll_read(cx, buf);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut this.socket).poll_read(cx, &mut read))?;
            let filled = read.filled();
            let n = Self::fill(buf, filled);
            if n < filled.len() {
                this.ahead = Some(Box::new(Bytes::copy_from_slice(&filled[n..])));
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair: the client's end and the server's, read ahead.
    async fn pair(first: &[u8]) -> (TcpStream, ReadAhead) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, ReadAhead::new(server, first))
    }

    /// Reads `len` bytes in reads of at most `chunk`, counting the reads.
    async fn read_in_chunks(r: &mut ReadAhead, len: usize, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0; chunk];
        while got.len() < len {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "unexpected end of stream after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn a_burst_larger_than_the_callers_buffer_arrives_whole_and_in_order() {
        let (mut client, mut server) = pair(b"").await;
        let sent: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.unwrap();
        let got = read_in_chunks(&mut server, sent.len(), 512).await;
        assert_eq!(got, sent);
        assert!(server.ahead.is_none(), "nothing is kept once all is taken");
    }

    #[tokio::test]
    async fn bytes_read_before_the_upgrade_come_first() {
        let (mut client, mut server) = pair(b"early").await;
        client.write_all(b" and late").await.unwrap();
        let got = read_in_chunks(&mut server, 14, 3).await;
        assert_eq!(got, b"early and late");
    }

    #[tokio::test]
    async fn what_the_caller_has_no_room_for_is_kept_for_its_next_read() {
        let (mut client, mut server) = pair(b"").await;
        client.write_all(b"0123456789").await.unwrap();
        // Wait until all ten bytes are in, so that one read takes them all.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut four = [0; 4];
        assert_eq!(server.read(&mut four).await.unwrap(), 4);
        assert_eq!(&four, b"0123");
        assert_eq!(
            server.ahead.as_deref().map(|b| &b[..]),
            Some(&b"456789"[..])
        );
        let rest = read_in_chunks(&mut server, 6, 64).await;
        assert_eq!(rest, b"456789");
        assert!(server.ahead.is_none());
    }

    #[tokio::test]
    async fn the_end_of_the_stream_reads_as_zero_bytes() {
        let (mut client, mut server) = pair(b"").await;
        client.write_all(b"bye").await.unwrap();
        client.shutdown().await.unwrap();
        drop(client);
        assert_eq!(read_in_chunks(&mut server, 3, 512).await, b"bye");
        let mut buf = [0; 16];
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn writes_reach_the_peer() {
        let (mut client, mut server) = pair(b"").await;
        server.write_all(b"hello").await.unwrap();
        server.flush().await.unwrap();
        let mut buf = [0; 5];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    /// A WebSocket pair over loopback: the client's (tokio-tungstenite's)
    /// and the server's.
    async fn ws_pair() -> (tokio_tungstenite::WebSocketStream<TcpStream>, WsStream) {
        let (client, server) = pair(b"").await;
        let client =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (client, WsStream::new(server, Role::Server, None))
    }

    #[tokio::test]
    async fn messages_go_both_ways_and_a_ping_is_answered() {
        use futures::{SinkExt, StreamExt};
        let (mut client, mut server) = ws_pair().await;
        client.send(Message::text("from the client")).await.unwrap();
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            Message::text("from the client")
        );
        server.send(Message::text("from the server")).await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::text("from the server")
        );
        client
            .send(Message::Ping(Bytes::from_static(b"hi")))
            .await
            .unwrap();
        assert!(matches!(server.next().await, Some(Ok(Message::Ping(_)))));
        server.flush().await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"hi"))
        );
    }

    #[tokio::test]
    async fn frames_queued_while_the_socket_is_full_all_arrive_in_order() {
        use futures::{SinkExt, StreamExt};
        let (mut client, mut server) = ws_pair().await;
        // Far more than the socket buffers hold while nobody reads: sends
        // block, and must resume when the client drains the socket.
        let frames = 300;
        let writer = tokio::spawn(async move {
            for i in 0..frames {
                let body = format!("{i:06}").repeat(10_000);
                server.feed(Message::text(body)).await.unwrap();
            }
            server.flush().await.unwrap();
            server
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for i in 0..frames {
            let Message::Text(text) = client.next().await.unwrap().unwrap() else {
                panic!("not a text frame");
            };
            assert_eq!(text.len(), 60_000);
            assert_eq!(&text[..6], format!("{i:06}"));
        }
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_close_from_the_peer_is_answered_and_ends_the_stream() {
        use futures::{SinkExt, StreamExt};
        let (mut client, mut server) = ws_pair().await;
        client.close(None).await.unwrap();
        assert!(matches!(server.next().await, Some(Ok(Message::Close(_)))));
        assert!(server.next().await.is_none(), "the stream ends");
        assert!(server.next().await.is_none(), "and stays ended");
        // tungstenite answered the close; the client sees its stream end.
        assert!(matches!(
            client.next().await,
            Some(Ok(Message::Close(_))) | None
        ));
        assert!(server.send(Message::text("late")).await.is_err());
    }

    #[test]
    fn the_upgrade_answer_carries_the_accept_key() {
        let mut req = Request::builder()
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
            .body(())
            .unwrap();
        let (res, _) = upgrade(&mut req, WebSocketConfig::default()).unwrap();
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        // The example of RFC 6455, section 1.3.
        assert_eq!(
            res.headers()["Sec-WebSocket-Accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(res.headers()[header::UPGRADE], "websocket");
    }

    #[test]
    fn an_upgrade_without_a_key_or_version_13_is_refused() {
        let mut no_key = Request::builder()
            .header("Sec-WebSocket-Version", "13")
            .body(())
            .unwrap();
        assert!(matches!(
            upgrade(&mut no_key, WebSocketConfig::default()),
            Err(ProtocolError::MissingSecWebSocketKey)
        ));
        let mut old = Request::builder()
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "8")
            .body(())
            .unwrap();
        assert!(matches!(
            upgrade(&mut old, WebSocketConfig::default()),
            Err(ProtocolError::MissingSecWebSocketVersionHeader)
        ));
    }
}
