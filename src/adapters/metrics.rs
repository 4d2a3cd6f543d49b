//! Prometheus metrics for operators, served at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

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

/// Label of the resync counter (what caused it) and of the refused
/// connections counter (the cap they hit).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `periodic`, `reconnect` or `probe`; `per_address` or `total`.
    pub reason: &'static str,
}

/// What a cluster member exports (zero on a single server).
#[derive(Default)]
pub struct ClusterMetrics {
    /// Events published to Redis for other nodes.
    pub published: Counter,
    /// Events not published: queue full, or Redis failing.
    pub publish_dropped: Counter,
    /// Events received from other nodes.
    pub received: Counter,
    /// Message events dropped as already given.
    pub duplicates_dropped: Counter,
    /// Gaps filled from the store.
    pub gap_fills: Counter,
    /// Messages given by gap fills.
    pub gap_filled_messages: Counter,
    /// Comparisons of every cursor with the store, by cause.
    pub resyncs: Family<ReasonLabel, Counter>,
    /// Liveness probes that did not come back.
    pub probe_failures: Counter,
    /// 1 while the pub/sub connection is up.
    pub redis_connected: Gauge,
    /// Sessions of dead nodes closed by this node's reaper.
    pub presence_reaped: Counter,
}

impl ClusterMetrics {
    /// Counts one resync.
    pub fn resync(&self, reason: &'static str) {
        self.resyncs.get_or_create(&ReasonLabel { reason }).inc();
    }

    fn register(&self, registry: &mut Registry) {
        // One metric a line: a table reads down, a wrapped one does not.
        #[rustfmt::skip]
        let counters = [
            ("cluster_published", "Events published to Redis for other nodes", &self.published),
            ("cluster_publish_dropped", "Events not published (queue full or Redis failing)", &self.publish_dropped),
            ("cluster_received", "Events received from other nodes", &self.received),
            ("cluster_duplicates_dropped", "Message events dropped as already given", &self.duplicates_dropped),
            ("cluster_gap_fills", "Delivery gaps filled from the store", &self.gap_fills),
            ("cluster_gap_filled_messages", "Messages given by gap fills", &self.gap_filled_messages),
            ("cluster_probe_failures", "Pub/sub liveness probes that did not come back", &self.probe_failures),
            ("presence_reaped", "Sessions of dead nodes closed by this node", &self.presence_reaped),
        ];
        register_all(registry, &counters);
        registry.register(
            "cluster_resyncs",
            "Comparisons of delivery cursors with the store, by cause",
            self.resyncs.clone(),
        );
        registry.register(
            "cluster_redis_connected",
            "1 while the Redis pub/sub connection is up",
            self.redis_connected.clone(),
        );
    }
}

/// The SQLite store's writer: how long commits take (their fsync, mostly)
/// and what the checkpointer does.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Seconds each batch's COMMIT took.
    pub commit_seconds: Histogram,
    /// Writes per committed batch.
    pub batch_writes: Histogram,
    /// Checkpoint passes run.
    pub checkpoint_passes: Counter,
    /// Times the WAL was long and the writer copied its last frames back,
    /// so that the next batch starts it over.
    pub wal_restarts: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            // 50 µs to ~0.8 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            // 1 to 512, the most a batch holds.
            batch_writes: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            checkpoint_passes: Counter::default(),
            wal_restarts: Counter::default(),
        }
    }
}

impl StoreMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "store_commit_seconds",
            "Seconds each SQLite batch's commit took (its fsync, mostly)",
            self.commit_seconds.clone(),
        );
        registry.register(
            "store_batch_writes",
            "Writes per committed SQLite batch",
            self.batch_writes.clone(),
        );
        registry.register(
            "store_checkpoint_passes",
            "SQLite WAL checkpoint passes",
            self.checkpoint_passes.clone(),
        );
        registry.register(
            "store_wal_restarts",
            "Times the SQLite writer copied a long WAL's last frames back so that it starts over",
            self.wal_restarts.clone(),
        );
    }
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
    /// WebSocket writes that failed (the peer gone, or a frame refused).
    pub write_failures: Counter,
    /// Bytes waiting to be written across every session (updated each second).
    pub outbound_bytes: Gauge,
    /// Open HTTP connections (a WebSocket is counted in `sessions`).
    pub connections_open: Gauge,
    /// Connections closed as soon as accepted, by the cap they hit.
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Logins refused because their account was locked by failed ones.
    pub logins_throttled: Counter,
    /// Refresh tokens presented again after their rotation (sessions ended).
    pub refresh_reuse: Counter,
    /// Files stored, by simple or resumable upload.
    pub files_uploaded: Counter,
    /// Cluster delivery and presence.
    pub cluster: ClusterMetrics,
    /// The SQLite store's writer (empty on PostgreSQL).
    pub store: StoreMetrics,
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
            write_failures: Counter::default(),
            outbound_bytes: Gauge::default(),
            connections_open: Gauge::default(),
            connections_refused: Family::default(),
            logins_throttled: Counter::default(),
            refresh_reuse: Counter::default(),
            files_uploaded: Counter::default(),
            cluster: ClusterMetrics::default(),
            store: StoreMetrics::default(),
            registry: Registry::default(),
        };
        #[rustfmt::skip]
        let gauges = [
            ("sessions", "Open WebSocket sessions", &m.sessions),
            ("connected_users", "Users with at least one open session", &m.connected_users),
            ("outbound_queued_bytes", "Bytes waiting to be written across every WebSocket session", &m.outbound_bytes),
            ("connections_open", "Open HTTP connections (WebSocket sessions are counted apart)", &m.connections_open),
        ];
        register_all(&mut registry, &gauges);
        registry.register(
            "sessions_closed_by_server",
            "Sessions closed by the server, by close code",
            m.sessions_closed.clone(),
        );
        registry.register("errors", "Error replies by code", m.errors.clone());
        registry.register(
            "connections_refused",
            "Connections closed as soon as accepted, by the cap they hit",
            m.connections_refused.clone(),
        );
        #[rustfmt::skip]
        let counters = [
            ("sessions_opened", "WebSocket sessions opened", &m.sessions_opened),
            ("ws_requests", "WebSocket requests received", &m.requests),
            ("messages_acked", "Send requests acknowledged after commit (idempotent retries included)", &m.messages_acked),
            ("events_queued", "Event frames queued for sessions", &m.events_queued),
            ("http_requests", "HTTP requests served", &m.http_requests),
            ("ws_write_failures", "WebSocket writes that failed (the peer gone, or a frame refused)", &m.write_failures),
            ("logins_throttled", "Logins refused while their account was locked by failed ones", &m.logins_throttled),
            ("refresh_token_reuse", "Refresh tokens presented after their rotation; each ended its session", &m.refresh_reuse),
            ("files_uploaded", "Files stored, by simple or resumable upload", &m.files_uploaded),
        ];
        register_all(&mut registry, &counters);
        m.cluster.register(&mut registry);
        m.store.register(&mut registry);
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Counts one connection refused at a cap.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

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

/// Registers each metric of a table under its name and help text.
fn register_all<M: Metric + Clone>(registry: &mut Registry, table: &[(&str, &str, &M)]) {
    for (name, help, metric) in table {
        registry.register(*name, *help, (*metric).clone());
    }
}
