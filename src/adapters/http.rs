//! The HTTP adapter: the REST endpoints, health, metrics, the WebSocket
//! handshake (authenticated before the upgrade), and the web client's files.
//!
//! - `routes`: the table of endpoints, and which handler serves a request;
//! - `api`: the REST endpoints' handlers; `upgrade`: `GET /ws`;
//! - `body`: what a request carries (body, token, query), read within limits;
//! - `error`: the error replies.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::Response;
use hyper::body::Bytes;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::edge::{LogLimiter, LoginThrottle, TrustedProxies};
use super::files::Files;
use super::metrics::Metrics;
use super::ws::session::SessionEnv;
use crate::domain::service::UseCases;

mod api;
mod body;
mod error;
mod files;
mod routes;
mod sessions;
mod tus;
mod upgrade;

#[cfg(test)]
use body::{credentials_in, json_body, json_headers};
#[cfg(test)]
use error::error_response;
pub use routes::{OPENAPI, ROUTES, handle};

/// Largest HTTP request body and WebSocket frame, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body of every response: whole (most) or streamed (files).
pub type HttpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// The response type of every endpoint.
pub type HttpResponse = Response<HttpBody>;

/// A body held whole in memory.
pub fn full(bytes: impl Into<Bytes>) -> HttpBody {
    use http_body_util::BodyExt;
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What the HTTP adapter needs.
pub struct HttpState {
    /// Session plumbing, shared with every WebSocket session.
    pub sessions: Arc<SessionEnv>,
    /// Tracks session tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// WebSocket limits for the upgrade.
    pub ws_config: hyper_tungstenite::tungstenite::protocol::WebSocketConfig,
    /// Register and login attempts per client address.
    pub auth_limiter: AuthLimiter,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Failed logins per account.
    pub login_throttle: LoginThrottle,
    /// Longest wait for a request's body.
    pub request_timeout: Duration,
    /// Whether `/metrics` is served here (not on a listener of its own).
    pub metrics_here: bool,
    /// Uploads, downloads and their bytes.
    pub files: Arc<Files>,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The API, the WebSocket and the web client.
    Main,
    /// `metrics_addr`: `/metrics` only.
    Metrics,
}

/// A rate limit per client IP address, for the endpoints that check passwords.
pub type AuthLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

impl HttpState {
    fn service(&self) -> &dyn UseCases {
        &*self.sessions.service
    }

    fn metrics(&self) -> &Metrics {
        &self.sessions.metrics
    }

    fn files(&self) -> &Files {
        &self.files
    }
}

/// Connection errors, logged at most so often: clients cause them at will.
static CONNECTION_ERRORS: LogLimiter = LogLimiter::new("HTTP connection errors", 10);

/// Logs a failure to serve a connection, which is the client's doing far
/// more often than ours. A connection closed mid-request or for taking too
/// long is routine and not logged.
pub fn connection_error(e: &hyper::Error) {
    if !e.is_incomplete_message() && !e.is_timeout() && CONNECTION_ERRORS.allow() {
        warn!(error = %e, "HTTP connection error");
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests;
