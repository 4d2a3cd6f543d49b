//! Accepts connections and serves them until shutdown, then stops
//! accepting, lets requests in flight finish, closes every session with
//! 1001 and waits (up to a grace period) for all of it.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::cluster::Cluster;
use super::http::{self, HttpState, MAX_BODY_BYTES};
use super::metrics::Metrics;
use super::wire::MAX_REPLY_BYTES;
use super::ws::SessionRegistry;
use super::ws::alarms::Alarms;
use super::ws::session::{SessionEnv, WsSettings};
use crate::domain::service::ChatService;

/// The parts the server needs, built by the composition root.
pub struct Wiring {
    /// The use cases.
    pub service: Arc<ChatService>,
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
    /// This node's cluster membership, in cluster mode.
    pub cluster: Option<Arc<Cluster>>,
}

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
    let state = Arc::new(HttpState {
        sessions: Arc::new(SessionEnv {
            service: wiring.service,
            registry: wiring.registry,
            metrics: wiring.metrics,
            settings: wiring.ws,
            shutdown: stop.clone(),
            cluster: wiring.cluster,
            alarms: alarms.clone(),
        }),
        tracker: TaskTracker::new(),
        ws_config,
        auth_limiter: governor::RateLimiter::keyed(
            governor::Quota::per_second(wiring.auth_rate.0).allow_burst(wiring.auth_rate.1),
        ),
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
    // Forget addresses that have been quiet, so the limiter stays small.
    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                state.auth_limiter.retain_recent();
                state.auth_limiter.shrink_to_fit();
            }
        })
    };
    // HTTP connections (sessions are tracked in `state.tracker`).
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    let service =
                        service_fn(move |req| http::handle(state.clone(), peer.ip(), req));
                    let conn = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    let stop = stop.clone();
                    connections.spawn(async move {
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
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    sweeper.abort();
    stalls.abort();
    info!("shutting down: closing sessions");
    stop.cancel();
    state.sessions.registry.shut_down();
    state.tracker.close();
    connections.close();
    let finished = tokio::time::timeout(wiring.grace, async {
        connections.wait().await;
        state.tracker.wait().await;
    })
    .await;
    if finished.is_err() {
        warn!("shutdown grace period over; dropping what is left");
    }
    ringer.abort();
    info!("stopped");
}
