//! WebSocket sessions: connecting (optionally from a chosen source address),
//! and the reader task that every session runs from its first frame on, so
//! the server never finds it slow (4008) or silent (pings).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::stats::{BitSet, Kind, Stats, raise};

pub type Ws = WebSocketStream<TcpStream>;

/// Where the server is.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    pub addr: SocketAddr,
    pub ws_url: String,
}

impl Target {
    pub async fn parse(url: &str) -> Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--url must start with http:// (got {url})"))?;
        if rest.contains('/') {
            bail!("--url is the base URL, without a path (got {url})");
        }
        let hostport = if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !rest.ends_with(']')
        {
            rest.to_owned()
        } else {
            format!("{rest}:80")
        };
        // IPv4 first: `localhost` often resolves to ::1 first, where a
        // server listening on 127.0.0.1 is not.
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(&hostport)
            .await
            .with_context(|| format!("resolve {hostport}"))?
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        let addr = *addrs
            .first()
            .ok_or_else(|| anyhow!("{hostport} resolves to nothing"))?;
        Ok(Self {
            ws_url: format!("ws://{rest}/ws"),
            base,
            addr,
        })
    }
}

/// The source address of client `i` when spreading over `k` loopback addresses.
pub fn source_addrs(k: u8) -> Vec<IpAddr> {
    if k <= 1 {
        return Vec::new();
    }
    (1..=k).map(|i| IpAddr::from([127, 0, 0, i])).collect()
}

/// Small buffers: thousands of sessions must not cost 256 KiB each.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(1 << 20)
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the handshake with this HTTP status.
    Status(u16),
    /// Anything else, as a short key (`io:ConnectionRefused`, `timeout`, ...).
    Other(String),
}

impl ConnectError {
    pub fn key(&self) -> String {
        match self {
            ConnectError::Status(s) => format!("http_{s}"),
            ConnectError::Other(s) => s.clone(),
        }
    }
}

/// Opens a WebSocket with bearer auth and waits for the welcome frame.
pub async fn open(
    target: &Target,
    token: &str,
    source: Option<IpAddr>,
) -> Result<Ws, ConnectError> {
    let io = |e: std::io::Error| ConnectError::Other(format!("io:{:?}", e.kind()));
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io)?;
    if let Some(src) = source {
        bind_no_port(&socket);
        socket.bind(SocketAddr::new(src, 0)).map_err(io)?;
    }
    let stream = socket.connect(target.addr).await.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let mut req = target
        .ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Other(format!("request:{e}")))?;
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| ConnectError::Other("bad_token".into()))?,
    );
    let handshake = tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config()));
    let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(30), handshake).await {
        Err(_) => return Err(ConnectError::Other("timeout".into())),
        Ok(Err(tungstenite::Error::Http(res))) => {
            return Err(ConnectError::Status(res.status().as_u16()));
        }
        Ok(Err(tungstenite::Error::Io(e))) => return Err(io(e)),
        Ok(Err(e)) => return Err(ConnectError::Other(format!("ws:{}", short(&e)))),
        Ok(Ok(x)) => x,
    };
    // The first frame is the welcome.
    let welcome = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return frame_type(&t).map(str::to_owned),
                Some(Ok(Message::Close(f))) => {
                    return Some(format!("close_{}", f.map_or(1005, |f| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await;
    match welcome {
        Ok(Some(t)) if t == "welcome" => Ok(ws),
        Ok(Some(t)) if t.starts_with("close_") => Err(ConnectError::Other(t)),
        Ok(_) => Err(ConnectError::Other("no_welcome".into())),
        Err(_) => Err(ConnectError::Other("welcome_timeout".into())),
    }
}

/// Lets many sockets bound to one source address share ports (the port is
/// chosen at connect time, per destination), as plain bind(0) would not.
fn bind_no_port(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

fn short(e: &tungstenite::Error) -> String {
    let s = e.to_string();
    s.split(':')
        .next()
        .unwrap_or("")
        .replace(' ', "_")
        .to_lowercase()
}

/// The `type` of a frame: a cheap look at the usual `{"type":"...` start,
/// else a parse of just that field.
pub fn frame_type(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix(r#"{"type":""#) {
        return rest.split('"').next();
    }
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
    }
    serde_json::from_str::<Head>(text).ok().map(|h| h.kind)
}

/// What the reader of a session does with bench traffic.
pub struct Ctx {
    pub stats: Arc<Stats>,
    /// Prefix of every clientMsgId of this run (`<nonce>.`).
    pub nonce: String,
    /// Stops every reader.
    pub stop: CancellationToken,
}

/// What a session's reader learned, handed back when it stops.
#[derive(Default)]
pub struct ReaderOut {
    /// Message numbers of this session's own sends that were acked.
    pub acked: BitSet,
    /// Message numbers delivered here, by sending client index.
    pub delivered: HashMap<u32, BitSet>,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Close code or error that ended the session early, if any.
    pub ended: Option<String>,
}

/// One open session: the write half, the reader task, and the replies to
/// setup requests.
pub struct Session {
    pub idx: usize,
    pub sink: SplitSink<Ws, Message>,
    pub reader: JoinHandle<ReaderOut>,
    /// Replies (raw text) to requests whose id does not start with `m`.
    replies: mpsc::UnboundedReceiver<String>,
    /// Closed-loop sending: one permit per reply to a bench message.
    pub permits: Arc<Semaphore>,
    next_id: u64,
}

impl Session {
    /// Splits an open socket and starts its reader.
    pub fn start(idx: usize, ws: Ws, ctx: Arc<Ctx>) -> Self {
        let (sink, stream) = ws.split();
        let (tx, replies) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(0));
        let reader = tokio::spawn(read_loop(idx, stream, ctx, tx, permits.clone()));
        Self {
            idx,
            sink,
            reader,
            replies,
            permits,
            next_id: 0,
        }
    }

    /// Sends a setup request and returns its reply (ack or error).
    pub async fn request(&mut self, kind: &str, content: Value) -> Result<Value> {
        self.next_id += 1;
        let id = format!("s{}", self.next_id);
        let frame = serde_json::json!({"type": kind, "id": id, "content": content});
        self.sink
            .send(Message::text(frame.to_string()))
            .await
            .with_context(|| format!("send {kind}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let text = tokio::time::timeout(left, self.replies.recv())
                .await
                .map_err(|_| anyhow!("{kind}: no reply within 60 s"))?
                .ok_or_else(|| anyhow!("{kind}: session closed"))?;
            let v: Value = serde_json::from_str(&text)?;
            if v["id"] == id.as_str() {
                return Ok(v);
            }
        }
    }

    /// The ack content of a setup request; an error reply is an Err.
    pub async fn ack(&mut self, kind: &str, content: Value) -> Result<Value> {
        let v = self.request(kind, content).await?;
        if v["type"] != "ack" {
            bail!("{kind} failed: {v}");
        }
        Ok(v["content"].clone())
    }

    /// Closes the write side (best effort, bounded in time).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sink.close()).await;
        self.reader.abort();
    }
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
    #[serde(default)]
    content: Option<ErrContent<'a>>,
}

#[derive(Deserialize)]
struct ErrContent<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    content: EventContent<'a>,
}

#[derive(Deserialize)]
struct EventContent<'a> {
    #[serde(borrow)]
    message: EventMessage<'a>,
}

#[derive(Deserialize)]
struct EventMessage<'a> {
    seq: u64,
    #[serde(rename = "clientMsgId", borrow, default)]
    client_msg_id: Option<&'a str>,
}

/// Request id of a bench message: `m<n>.<t>`, t in µs since the epoch.
fn parse_msg_id(id: &str) -> Option<(u64, u64)> {
    let (n, t) = id.strip_prefix('m')?.split_once('.')?;
    Some((n.parse().ok()?, t.parse().ok()?))
}

/// `"key":"value"` of a frame, found without parsing it (the key may not
/// occur inside string values, where quotes are escaped).
fn str_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    rest.split('"').next()
}

async fn read_loop(
    idx: usize,
    mut stream: SplitStream<Ws>,
    ctx: Arc<Ctx>,
    replies: mpsc::UnboundedSender<String>,
    permits: Arc<Semaphore>,
) -> ReaderOut {
    let stats = &ctx.stats;
    let mut out = ReaderOut::default();
    let mut last_seq = 0u64;
    // One waiter for the whole session (a new one per frame would take the
    // token's lock every time).
    let stop = ctx.stop.cancelled();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => break,
            n = stream.next() => n,
        };
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                if !ctx.stop.is_cancelled() {
                    let key = format!("close_{}", f.map_or(1005, |f| u16::from(f.code)));
                    stats.error(&key);
                    out.ended = Some(key);
                }
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                if !ctx.stop.is_cancelled() {
                    let key = format!("ws_error:{}", short(&e));
                    stats.error(&key);
                    out.ended = Some(key);
                }
                break;
            }
            None => {
                if !ctx.stop.is_cancelled() {
                    stats.error("closed");
                    out.ended = Some("closed".into());
                }
                break;
            }
        };
        stats.frames.fetch_add(1, Ordering::Relaxed);
        let text = text.as_str();
        match frame_type(text) {
            Some("message") => {
                let (cmid, seq) = match (str_field(text, r#""clientMsgId":""#), seq_field(text)) {
                    (Some(c), Some(s)) => (Some(c), s),
                    _ => match serde_json::from_str::<Event>(text) {
                        Ok(e) => (e.content.message.client_msg_id, e.content.message.seq),
                        Err(_) => continue,
                    },
                };
                let Some(rest) = cmid.and_then(|c| c.strip_prefix(ctx.nonce.as_str())) else {
                    continue;
                };
                let mut parts = rest.split('.');
                let (Some(s), Some(n), Some(t)) = (
                    parts.next().and_then(|x| x.parse::<u32>().ok()),
                    parts.next().and_then(|x| x.parse::<u64>().ok()),
                    parts.next().and_then(|x| x.parse::<u64>().ok()),
                ) else {
                    continue;
                };
                let now = stats.now_us();
                if out.delivered.entry(s).or_default().insert(n) {
                    out.duplicates += 1;
                    continue;
                }
                if seq <= last_seq {
                    out.out_of_order += 1;
                }
                last_seq = last_seq.max(seq);
                stats.record_since(idx, Kind::Delivery, t, now);
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                raise(&stats.last_delivery_us, now);
            }
            Some(kind @ ("ack" | "error")) => {
                let fast = if kind == "ack" {
                    text.strip_prefix(r#"{"type":"ack","id":""#)
                        .and_then(|r| r.split('"').next())
                } else {
                    None
                };
                let (id, code) = match fast {
                    Some(id) => (Some(id), None),
                    None => match serde_json::from_str::<Reply>(text) {
                        Ok(r) => (r.id, r.content.and_then(|c| c.code)),
                        Err(_) => (None, None),
                    },
                };
                match id.and_then(parse_msg_id) {
                    Some((n, t)) => {
                        let now = stats.now_us();
                        if kind == "ack" {
                            out.acked.insert(n);
                            stats.record(idx, Kind::Ack, now.saturating_sub(t));
                            stats.acked.fetch_add(1, Ordering::Relaxed);
                            raise(&stats.last_ack_us, now);
                        } else {
                            stats.error(code.unwrap_or("unknown"));
                            stats.errored.fetch_add(1, Ordering::Relaxed);
                        }
                        permits.add_permits(1);
                    }
                    None if id.is_some_and(|i| i.starts_with('s')) => {
                        let _ = replies.send(text.to_owned());
                    }
                    None => {
                        // An error without a readable id (e.g. rate limited).
                        if kind == "error" {
                            stats.error(code.unwrap_or("unknown"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The `seq` number of a message event, read without parsing the frame.
fn seq_field(text: &str) -> Option<u64> {
    let at = text.find(r#""seq":"#)? + 6;
    let digits: &str = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}
