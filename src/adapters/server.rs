//! Accepts connections and serves them until shutdown, then stops
//! accepting, lets requests in flight finish, closes every session with
//! 1001 and waits (up to a grace period) for all of it. Connections over
//! a cap are closed at once; a request must arrive within a timeout.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::edge::{ConnectionLimits, LogLimiter, LoginThrottle, Slot, TrustedProxies};
use super::files::Files;
use super::http::{self, HttpState, Listener, MAX_BODY_BYTES};
use super::metrics::Metrics;
use super::wire::MAX_REPLY_BYTES;
use super::ws::alarms::Alarms;
use super::ws::session::{SessionEnv, WsSettings};
use super::ws::{Attach, SessionRegistry};
use crate::domain::service::UseCases;

/// The parts the server needs, built by the composition root.
pub struct Wiring {
    /// The use cases.
    pub service: Arc<dyn UseCases>,
    /// The session registry (the same object the service uses as `Transport`).
    pub registry: Arc<SessionRegistry>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Session behaviour.
    pub ws: WsSettings,
    /// Longest wait for sessions and requests at shutdown.
    pub grace: Duration,
    /// Register and login attempts per client address: per second, burst.
    pub auth_rate: (NonZeroU32, NonZeroU32),
    /// Where sessions attach: the registry, or the cluster in cluster mode.
    pub attach: Arc<dyn Attach>,
    /// Timeouts, caps and throttles at the edge.
    pub edge: EdgeSettings,
    /// Uploads and downloads.
    pub files: Arc<Files>,
}

/// How the server guards its edge (`adapters::edge`).
pub struct EdgeSettings {
    /// Longest a connection may take to send a request's headers, from its
    /// opening or its previous response; and again for a body.
    pub request_timeout: Duration,
    /// The caps on connections.
    pub limits: Arc<ConnectionLimits>,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// The per-account throttle of failed logins.
    pub login_throttle: LoginThrottle,
    /// Where `/metrics` is served instead of the main listener, if set.
    pub metrics_listener: Option<TcpListener>,
}

/// The most a request's head (request line and headers) may take.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refused connections and failed accepts, logged at most so often.
static REFUSED_LOG: LogLimiter = LogLimiter::new("connections refused", 10);
static ACCEPT_LOG: LogLimiter = LogLimiter::new("failed accepts", 10);

/// Serves `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve(listener: TcpListener, wiring: Wiring, shutdown: impl Future<Output = ()>) {
    let stop = CancellationToken::new();
    // A small read buffer: every session keeps its own for life (a larger
    // frame grows it), most sessions are idle, and memory per session is
    // what decides how many one machine holds. It is also the most one read
    // takes, but those reads are copies from what the session's socket
    // already gave (`ws::socket::ReadAhead`), not system calls: a request of
    // a few hundred bytes costs a few of them.
    // Frames are written out only on flush, so a burst of events leaves in
    // one write.
    // What waits to be written is bounded by `Outbound`, in frames and
    // bytes, before it reaches tungstenite; its own buffer holds the write
    // buffer and one frame at most, so its bound only has to let the
    // largest frame through (a reply is at most `MAX_REPLY_BYTES`): a
    // tighter one refused large replies and ended the session.
    let write_buffer = 16 * 1024;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_BODY_BYTES))
        .max_frame_size(Some(MAX_BODY_BYTES))
        .read_buffer_size(64)
        .write_buffer_size(write_buffer)
        .max_write_buffer_size(write_buffer + 4 * MAX_REPLY_BYTES);
    // One timer rings every session's heartbeat, expiry and drain.
    let alarms = Alarms::new();
    let ringer = {
        let alarms = alarms.clone();
        tokio::spawn(async move { alarms.run().await })
    };
    let edge = wiring.edge;
    let metrics = wiring.metrics.clone();
    let state = Arc::new(HttpState {
        sessions: Arc::new(SessionEnv {
            service: wiring.service,
            registry: wiring.registry,
            metrics: wiring.metrics,
            settings: wiring.ws,
            shutdown: stop.clone(),
            attach: wiring.attach,
            alarms: alarms.clone(),
        }),
        tracker: TaskTracker::new(),
        ws_config,
        auth_limiter: governor::RateLimiter::keyed(
            governor::Quota::per_second(wiring.auth_rate.0).allow_burst(wiring.auth_rate.1),
        ),
        trusted_proxies: edge.trusted_proxies,
        login_throttle: edge.login_throttle,
        request_timeout: edge.request_timeout,
        metrics_here: edge.metrics_listener.is_none(),
        files: wiring.files,
    });
    // Sessions whose sockets take nothing while bytes wait are cut off.
    let stalls = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let sessions = &state.sessions;
                sessions.registry.sweep(&sessions.settings.outbound);
            }
        })
    };
    // Forget addresses and accounts that have been quiet, so that the
    // limiters stay small.
    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                state.auth_limiter.retain_recent();
                state.auth_limiter.shrink_to_fit();
                state.login_throttle.sweep(std::time::Instant::now());
            }
        })
    };
    // hyper's header timer starts as soon as a connection waits for a
    // request, opened or kept alive, so it also closes idle connections;
    // an upgraded one has left hyper by then and keeps its heartbeat.
    // A request's headers fit in 32 KiB (431 beyond): hyper's default of
    // about 400 KiB let a connection pin that much while it trickled them.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(edge.request_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    // HTTP connections (sessions are tracked in `state.tracker`).
    let acceptor = Arc::new(Acceptor {
        limits: edge.limits,
        metrics,
        builder,
        stop: stop.clone(),
        connections: TaskTracker::new(),
        state: state.clone(),
    });
    let metrics_task = edge.metrics_listener.map(|listener| {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = acceptor.accept(&listener) => {
                        if let Some((stream, slot)) = accepted {
                            acceptor.serve(stream, slot, Listener::Metrics);
                        }
                    }
                    () = acceptor.stop.cancelled() => break,
                }
            }
        })
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = acceptor.accept(&listener) => {
                if let Some((stream, slot)) = accepted {
                    acceptor.serve(stream, slot, Listener::Main);
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    sweeper.abort();
    stalls.abort();
    info!("shutting down: closing sessions");
    stop.cancel();
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    state.sessions.registry.shut_down();
    state.tracker.close();
    acceptor.connections.close();
    let finished = tokio::time::timeout(wiring.grace, async {
        acceptor.connections.wait().await;
        state.tracker.wait().await;
    })
    .await;
    if finished.is_err() {
        warn!("shutdown grace period over; dropping what is left");
    }
    ringer.abort();
    info!("stopped");
}

/// Takes connections under the caps and serves them.
struct Acceptor {
    limits: Arc<ConnectionLimits>,
    metrics: Arc<Metrics>,
    builder: http1::Builder,
    stop: CancellationToken,
    connections: TaskTracker,
    state: Arc<HttpState>,
}

impl Acceptor {
    /// The next connection with its slot; `None` for one closed at once
    /// because it was over a cap, or a failed accept.
    async fn accept(&self, listener: &TcpListener) -> Option<(TcpStream, Slot)> {
        match listener.accept().await {
            Ok((stream, peer)) => match self.limits.admit(peer.ip()) {
                Ok(slot) => Some((stream, slot)),
                Err(refused) => {
                    self.metrics.connection_refused(refused.label());
                    if REFUSED_LOG.allow() {
                        warn!(peer = %peer.ip(), cap = refused.label(), "connection refused: over the cap");
                    }
                    None
                }
            },
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                if ACCEPT_LOG.allow() {
                    warn!(error = %e, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        }
    }

    /// Serves HTTP on `stream` until it closes or is upgraded.
    fn serve(&self, stream: TcpStream, slot: Slot, on: Listener) {
        let _ = stream.set_nodelay(true);
        let state = self.state.clone();
        let slot = Arc::new(slot);
        let service = service_fn(move |req| http::handle(state.clone(), slot.clone(), on, req));
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = self.stop.clone();
        self.connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    // Finish the request in flight, accept no more.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                http::connection_error(&e);
            }
        });
    }
}
