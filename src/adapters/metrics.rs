//! Prometheus metrics for operators, served at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of the error counter: the contract's error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// e.g. `bad_request`.
    pub code: &'static str,
}

/// Label of the close counter: the WebSocket close code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabel {
    /// e.g. `4008`.
    pub code: u16,
}

/// Every metric confab exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket sessions on this process.
    pub sessions: Gauge,
    /// Users with at least one session on this process.
    pub connected_users: Gauge,
    /// WebSocket sessions opened since start.
    pub sessions_opened: Counter,
    /// Sessions closed by the server, by close code.
    pub sessions_closed: Family<CloseLabel, Counter>,
    /// WebSocket requests received since start.
    pub requests: Counter,
    /// Error replies (WebSocket and HTTP), by code.
    pub errors: Family<CodeLabel, Counter>,
    /// Sends acknowledged since start (idempotent retries included).
    pub messages_acked: Counter,
    /// Event frames queued for sessions since start.
    pub events_queued: Counter,
    /// HTTP requests served since start.
    pub http_requests: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("confab");
        let m = Self {
            sessions: Gauge::default(),
            connected_users: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_closed: Family::default(),
            requests: Counter::default(),
            errors: Family::default(),
            messages_acked: Counter::default(),
            events_queued: Counter::default(),
            http_requests: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("sessions", "Open WebSocket sessions", m.sessions.clone());
        registry.register(
            "connected_users",
            "Users with at least one open session",
            m.connected_users.clone(),
        );
        registry.register(
            "sessions_opened",
            "WebSocket sessions opened",
            m.sessions_opened.clone(),
        );
        registry.register(
            "sessions_closed_by_server",
            "Sessions closed by the server, by close code",
            m.sessions_closed.clone(),
        );
        registry.register(
            "ws_requests",
            "WebSocket requests received",
            m.requests.clone(),
        );
        registry.register("errors", "Error replies by code", m.errors.clone());
        registry.register(
            "messages_acked",
            "Send requests acknowledged after commit (idempotent retries included)",
            m.messages_acked.clone(),
        );
        registry.register(
            "events_queued",
            "Event frames queued for sessions",
            m.events_queued.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests served",
            m.http_requests.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Counts one error reply.
    pub fn error(&self, code: &'static str) {
        self.errors.get_or_create(&CodeLabel { code }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
