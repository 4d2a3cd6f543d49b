//! A real WebSocket client for tests: requests matched to their replies by
//! id, every other frame kept for later inspection.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::server::{Account, TestServer, WAIT};

impl TestServer {
    /// Opens a session with header auth and consumes the welcome.
    pub async fn connect(&self, account: &Account) -> Client {
        let mut c = Client::connect(&self.ws_url(), &account.token)
            .await
            .unwrap_or_else(|status| panic!("connect {}: HTTP {status}", account.username));
        let welcome = c.next_frame().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c
    }

    /// `connect` from the local address `from` (another loopback address).
    pub async fn connect_from(&self, from: std::net::IpAddr, account: &Account) -> Client {
        let stream = self.tcp_from(from).await;
        let mut req = self.ws_url().into_client_request().unwrap();
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {}", account.token).parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
            .await
            .unwrap_or_else(|e| panic!("connect {} from {from}: {e}", account.username));
        let mut c = Client::new(ws);
        let welcome = c.next_frame().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c
    }
}

/// A WebSocket client that matches replies to requests by id and keeps
/// every other frame for later inspection.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    buffered: Vec<Value>,
    /// The close code, once the server closed the connection.
    pub closed: Option<u16>,
}

impl Client {
    /// Opens a WebSocket with `Authorization: Bearer`; Err(status) when refused.
    pub async fn connect(url: &str, token: &str) -> Result<Client, u16> {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        Self::open(req).await
    }

    /// Opens a WebSocket with a prepared request; Err(status) when refused.
    pub async fn open(req: tungstenite::handshake::client::Request) -> Result<Client, u16> {
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Client::new(ws)),
            Err(tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("WebSocket connect failed: {e}"),
        }
    }

    fn new(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            next_id: 0,
            buffered: Vec::new(),
            closed: None,
        }
    }

    /// Sends a raw frame.
    pub async fn send(&mut self, frame: Message) {
        self.ws.send(frame).await.unwrap();
    }

    /// Sends a text frame; false when the connection is gone.
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.ws.send(Message::text(text)).await.is_ok()
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    /// Sends a request with a fresh id and returns its reply (ack or error).
    pub async fn request(&mut self, kind: &str, content: Value) -> Value {
        let id = self.send_request(kind, content).await;
        self.reply_to(&id).await
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send_request(&mut self, kind: &str, content: Value) -> String {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let frame = json!({"type": kind, "id": id, "content": content});
        self.send_text(&frame.to_string()).await;
        id
    }

    /// Waits for the reply to request `id`.
    pub async fn reply_to(&mut self, id: &str) -> Value {
        self.wait_for(|f| f["id"] == id && (f["type"] == "ack" || f["type"] == "error"))
            .await
    }

    /// The ack content of a request; panics on an error reply.
    pub async fn ack(&mut self, kind: &str, content: Value) -> Value {
        let reply = self.request(kind, content).await;
        assert_eq!(reply["type"], "ack", "{kind}: {reply}");
        reply["content"].clone()
    }

    /// Every message of `conversation` after seq `after`, oldest first,
    /// read page by page with `getHistory`.
    pub async fn history_after(&mut self, conversation: &str, after: u64) -> Vec<Value> {
        let mut stored = Vec::new();
        let mut after = after;
        loop {
            let page = self
                .ack(
                    "getHistory",
                    json!({"conversationId": conversation, "afterSeq": after, "limit": 200}),
                )
                .await;
            for m in page["messages"].as_array().unwrap() {
                after = m["seq"].as_u64().unwrap();
                stored.push(m.clone());
            }
            if page["hasMore"] == false {
                return stored;
            }
        }
    }

    /// The error code of a request that must fail.
    pub async fn error_code(&mut self, kind: &str, content: Value) -> String {
        let reply = self.request(kind, content).await;
        assert_eq!(reply["type"], "error", "{kind} should fail: {reply}");
        reply["content"]["code"].as_str().unwrap().to_owned()
    }

    /// The next frame from the server, buffered ones first.
    pub async fn next_frame(&mut self) -> Value {
        if !self.buffered.is_empty() {
            return self.buffered.remove(0);
        }
        self.read_frame(WAIT)
            .await
            .unwrap_or_else(|| panic!("no frame within {WAIT:?} (closed: {:?})", self.closed))
    }

    /// The next frame (buffered ones first), or `None` when none comes
    /// within `limit` or the connection is gone.
    pub async fn next_frame_within(&mut self, limit: Duration) -> Option<Value> {
        if !self.buffered.is_empty() {
            return Some(self.buffered.remove(0));
        }
        self.read_frame(limit).await
    }

    async fn read_frame(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Message::Close(frame)) => {
                    self.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Ok(_) => {}
                Err(_) => {
                    if self.closed.is_none() {
                        self.closed = Some(1006);
                    }
                    return None;
                }
            }
        }
    }

    /// The first frame (buffered or new) matching `pred`; others are kept.
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        match self.wait_for_within(WAIT, pred).await {
            Some(frame) => frame,
            None => panic!(
                "no matching frame within {WAIT:?}; closed: {:?}; kept: {:?}",
                self.closed, self.buffered
            ),
        }
    }

    /// The first frame (buffered or new) matching `pred`, or `None` when
    /// none comes within `limit`; others are kept.
    pub async fn wait_for_within(
        &mut self,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(i) = self.buffered.iter().position(&pred) {
            return Some(self.buffered.remove(i));
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.read_frame(left).await?;
            if pred(&frame) {
                return Some(frame);
            }
            self.buffered.push(frame);
        }
    }

    /// The next event of type `kind`.
    pub async fn event(&mut self, kind: &str) -> Value {
        self.wait_for(|f| f["type"] == kind).await["content"].clone()
    }

    /// Reads for `window` and fails if a frame matching `pred` arrives.
    pub async fn expect_none(&mut self, window: Duration, pred: impl Fn(&Value) -> bool) {
        if let Some(f) = self.buffered.iter().find(|f| pred(f)) {
            panic!("unexpected frame {f}");
        }
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.read_frame(left).await {
                Some(f) if pred(&f) => panic!("unexpected frame {f}"),
                Some(f) => self.buffered.push(f),
                None => return,
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed_with(&mut self, limit: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + limit;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "not closed within {limit:?}");
            if let Some(f) = self.read_frame(left).await {
                self.buffered.push(f);
            }
        }
        self.closed.unwrap()
    }

    /// Closes the connection normally.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
        // Drain until the server answers the close.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.ws.next().await.is_some() {}
        })
        .await;
    }

    /// Reads raw frames (no JSON parsing, so it keeps up with floods)
    /// until a `message` event has been seen and then `linger` has passed,
    /// or `limit` runs out; returns how many `message` events came.
    pub async fn count_message_events(&mut self, limit: Duration, linger: Duration) -> usize {
        let mut deadline = tokio::time::Instant::now() + limit;
        let mut seen = 0;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if let Message::Text(t) = frame
                && t.starts_with(r#"{"type":"message""#)
            {
                seen += 1;
                deadline = deadline.min(tokio::time::Instant::now() + linger);
            }
        }
        seen
    }

    /// Frames received but not yet consumed.
    pub fn buffered(&self) -> &[Value] {
        &self.buffered
    }
}
