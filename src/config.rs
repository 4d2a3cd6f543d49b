//! All configuration, read in one place: built-in defaults, then an
//! optional `confab.toml` (or the file named by `CONFAB_CONFIG`), then
//! `CONFAB_*` environment variables. Nothing else reads the environment.

mod database;
#[cfg(test)]
mod tests;
mod validate;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use config::ConfigBuilder;
use config::builder::DefaultState;
use serde::Deserialize;

pub use database::Database;

use crate::adapters::cluster::ClusterSettings;
use crate::adapters::cluster::fault::Faults;
use crate::adapters::edge::TrustedProxies;

/// Every setting, with its key in `confab.toml`; the environment variable is
/// `CONFAB_` and the key in capitals.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0 picks a free one).
    pub port: u16,
    /// Folder for the database and the generated JWT secret.
    pub data_dir: PathBuf,
    /// `postgres://...` (or `postgresql://...`) for PostgreSQL; `sqlite://PATH`,
    /// `sqlite:PATH` or a plain path for SQLite; default `<data_dir>/confab.db`.
    pub database_url: Option<String>,
    /// HS256 secret; generated and kept in `<data_dir>/jwt_secret` when unset.
    pub jwt_secret: Option<String>,
    /// Access token lifetime in seconds (the contract's default is 24 hours).
    pub token_ttl_secs: u64,
    /// Refresh token lifetime in seconds; each refresh starts a new one.
    pub refresh_ttl_secs: u64,
    /// Seconds after its rotation in which a spent refresh token presented
    /// again is answered 409 (a race) rather than ending its session (reuse).
    pub refresh_grace_secs: u64,
    /// Most live device sessions per user; one more ends the least recently used.
    pub max_devices_per_user: u32,
    /// Seconds between checks of the open connections' device sessions
    /// against the database (revocations a node's bus missed).
    pub revocation_sweep_secs: u64,
    /// Longest time, in seconds, that the text an edit or a delete replaced
    /// stays in the SQLite files (the WAL is then checkpointed and emptied).
    pub sqlite_scrub_secs: u64,
    /// WebSocket requests per second per connection, sustained.
    pub rate_per_sec: u32,
    /// WebSocket requests per connection in a burst.
    pub rate_burst: u32,
    /// Register and login attempts per second per client address, sustained.
    pub auth_rate_per_sec: u32,
    /// Register and login attempts per client address in a burst.
    pub auth_rate_burst: u32,
    /// Seconds between server pings; two unanswered pings close the connection.
    pub heartbeat_secs: u64,
    /// Most open sessions per user.
    pub max_sessions_per_user: u32,
    /// A tracing filter, e.g. `info` or `confab=debug`.
    pub log: String,
    /// Frames a session's outbound queue holds before the session is closed as slow (4008).
    pub outbound_queue: usize,
    /// Bytes waiting for one session before it is closed as slow (4008).
    pub outbound_session_bytes: usize,
    /// Bytes waiting across every session before those holding over 1 MiB
    /// are closed as slow (4008).
    pub outbound_total_bytes: usize,
    /// Seconds a session's socket may take nothing while bytes wait for it
    /// before it is closed as slow (4008).
    pub slow_consumer_secs: u8,
    /// Seconds shutdown waits for sessions and requests to finish.
    pub shutdown_grace_secs: u64,
    /// argon2id memory cost in KiB (lower it only for tests and benchmarks).
    pub argon2_memory_kib: u32,
    /// argon2id passes (lower it only for tests and benchmarks).
    pub argon2_iterations: u32,
    /// `redis://host:port/db`: makes this process a member of a cluster
    /// (docs/cluster.md); needs PostgreSQL and a shared `jwt_secret`.
    pub redis_url: Option<String>,
    /// This node's stable name in the cluster; default `host:port`.
    pub node_id: Option<String>,
    /// Prefix of every Redis key and channel.
    pub redis_prefix: String,
    /// Seconds a session's cluster presence lives without a heartbeat; a
    /// killed node's users show offline within about this long.
    pub presence_ttl_secs: u64,
    /// Milliseconds a gap in a conversation's events waits before the
    /// store fills it (at most 500).
    pub cluster_reorder_ms: u64,
    /// Seconds between comparisons of every delivery cursor with the store.
    pub cluster_resync_secs: u64,
    /// Seconds the pub/sub connection may sit idle before it is probed.
    pub cluster_probe_secs: u64,
    /// Test-only publish faults, honoured by debug builds only.
    pub faults: Option<String>,
    /// Seconds a connection may take to send a request's headers, counted
    /// from its opening or its previous response (so it also closes idle
    /// connections), and again for the body.
    pub request_timeout_secs: u64,
    /// Most connections (HTTP and WebSocket) from one client address.
    pub max_connections_per_address: usize,
    /// File descriptors kept out of the connection cap, for the store,
    /// the cluster's links and the process itself.
    pub reserved_fds: u64,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
    /// Failed logins in a row to one account before each further one locks it.
    pub login_free_failures: u32,
    /// Longest lock of an account's logins after failed ones, in seconds.
    pub login_max_lock_secs: u64,
    /// `HOST:PORT` to serve `/metrics` on instead of the main listener.
    pub metrics_addr: Option<String>,
    /// Where uploaded files are kept: a folder (`file:///path` or a path),
    /// or `s3://bucket?endpoint=...`; default `<data_dir>/files`.
    pub files_url: Option<String>,
    /// Where signed file links point, e.g. `https://files.example.com`
    /// (an origin of their own); default this server, by relative links.
    pub files_base_url: Option<String>,
    /// Largest file, in bytes.
    pub max_file_bytes: u64,
    /// Most bytes of files one user may keep.
    pub file_quota_bytes: u64,
    /// Uploads (simple or resumable) one user may start a minute.
    pub uploads_per_minute: u32,
    /// Seconds a file that no message carries is kept.
    pub unattached_file_ttl_secs: u64,
    /// Seconds between sweeps of unused files, blobs and uploads.
    pub files_sweep_secs: u64,
    /// Seconds an unreferenced blob or a staging file is left alone (an
    /// upload may be about to name it).
    pub files_orphan_grace_secs: u64,
    /// Seconds a resumable upload may take before it is dropped.
    pub upload_ttl_secs: u64,
    /// Most thumbnails made at once.
    pub thumbnail_workers: u32,
}

/// A configuration that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Reads the configuration from its three layers and checks it.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn load() -> Result<Self, ConfigError> {
        let explicit = std::env::var("CONFAB_CONFIG").ok();
        let file = explicit.clone().unwrap_or_else(|| "confab.toml".into());
        let layers = defaults()?
            .add_source(
                config::File::with_name(&file)
                    .format(config::FileFormat::Toml)
                    .required(explicit.is_some()),
            )
            .add_source(
                config::Environment::with_prefix("CONFAB")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("trusted_proxies"),
            );
        Self::checked(layers)
    }

    /// The built-in defaults with `overrides` (keys as in `confab.toml`)
    /// on top, checked; no file and no environment variable is read. For
    /// a server started inside another program, a test's say.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn from_overrides(overrides: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let layers = overrides
            .iter()
            .try_fold(defaults()?, |b, (key, value)| b.set_override(*key, *value))
            .map_err(|e| ConfigError(e.to_string()))?;
        Self::checked(layers)
    }

    /// The settings `layers` make, once they pass every check.
    fn checked(layers: ConfigBuilder<DefaultState>) -> Result<Self, ConfigError> {
        let settings: Settings = layers
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The Redis URL, when this process is a cluster member.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.is_empty())
    }

    /// The cluster settings, when `redis_url` is set; `bound` is the
    /// address the server listens on, the default node id.
    pub fn cluster(&self, bound: std::net::SocketAddr) -> Option<ClusterSettings> {
        let redis_url = self.redis_url()?.to_owned();
        // A release build has no fault hook at all.
        let faults = match self.faults.as_deref() {
            Some(f) if cfg!(debug_assertions) => Faults::parse(f).unwrap_or_default(),
            _ => Faults::None,
        };
        Some(ClusterSettings {
            redis_url,
            prefix: self.redis_prefix.clone(),
            node_id: self.node_id.clone().unwrap_or_else(|| bound.to_string()),
            presence_ttl: Duration::from_secs(self.presence_ttl_secs),
            reorder: Duration::from_millis(self.cluster_reorder_ms),
            resync_every: Duration::from_secs(self.cluster_resync_secs),
            probe_after: Duration::from_secs(self.cluster_probe_secs),
            revocation_sweep: Duration::from_secs(self.revocation_sweep_secs),
            faults,
        })
    }

    /// The database the URL names.
    ///
    /// # Errors
    /// For a URL of a database confab cannot use; the message never
    /// repeats the URL, which may hold a password.
    pub fn database(&self) -> Result<Database, ConfigError> {
        let Some(url) = self.database_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(Database::Sqlite(self.data_dir.join("confab.db")));
        };
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_owned()));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(ConfigError(format!(
                "database_url: unsupported scheme {scheme:?}; use postgres://..., sqlite://PATH or a file path"
            )));
        }
        Ok(Database::Sqlite(PathBuf::from(url)))
    }

    /// Where uploaded files are kept: `files_url`, or a folder in `data_dir`.
    pub fn files_url(&self) -> String {
        match self.files_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => url.to_owned(),
            None => self.data_dir.join("files").display().to_string(),
        }
    }

    /// The origin signed file links point to, without a trailing slash;
    /// empty for this server.
    pub fn files_base_url(&self) -> String {
        self.files_base_url
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned()
    }

    /// Where a generated JWT secret is kept.
    pub fn secret_path(&self) -> PathBuf {
        self.data_dir.join("jwt_secret")
    }

    /// WebSocket requests per second and burst, non-zero after validation.
    pub fn rate(&self) -> (NonZeroU32, NonZeroU32) {
        (nz(self.rate_per_sec), nz(self.rate_burst))
    }

    /// Register and login attempts per second and burst per address.
    pub fn auth_rate(&self) -> (NonZeroU32, NonZeroU32) {
        (nz(self.auth_rate_per_sec), nz(self.auth_rate_burst))
    }

    /// The peers whose `X-Forwarded-For` is believed.
    ///
    /// # Errors
    /// For an entry that is not an address or a CIDR.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| ConfigError(format!("trusted_proxies: {e}")))
    }

    /// Where `/metrics` is served apart, if it is.
    ///
    /// # Errors
    /// For a value that is not `HOST:PORT` with a numeric host.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(addr) = self.metrics_addr.as_deref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        addr.parse().map(Some).map_err(|_| {
            ConfigError(format!(
                "metrics_addr: {addr:?} is not an address and port such as 127.0.0.1:9090"
            ))
        })
    }

    /// How long a request may take to arrive.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Interval between pings.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// How long shutdown may take.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Longest time replaced text stays in the SQLite files.
    pub fn sqlite_scrub(&self) -> Duration {
        Duration::from_secs(self.sqlite_scrub_secs)
    }
}

/// Every setting's built-in value, the first layer.
fn defaults() -> Result<ConfigBuilder<DefaultState>, ConfigError> {
    config::Config::builder()
        .set_default("host", "127.0.0.1")
        .and_then(|b| b.set_default("port", 8080))
        .and_then(|b| b.set_default("data_dir", "./data"))
        .and_then(|b| b.set_default("token_ttl_secs", 86_400))
        .and_then(|b| b.set_default("refresh_ttl_secs", 30 * 86_400))
        .and_then(|b| b.set_default("refresh_grace_secs", 30))
        .and_then(|b| b.set_default("max_devices_per_user", 100))
        .and_then(|b| b.set_default("revocation_sweep_secs", 10))
        .and_then(|b| b.set_default("sqlite_scrub_secs", 30))
        .and_then(|b| b.set_default("rate_per_sec", 20))
        .and_then(|b| b.set_default("rate_burst", 50))
        .and_then(|b| b.set_default("auth_rate_per_sec", 5))
        .and_then(|b| b.set_default("auth_rate_burst", 20))
        .and_then(|b| b.set_default("heartbeat_secs", 30))
        .and_then(|b| b.set_default("max_sessions_per_user", 10))
        .and_then(|b| b.set_default("log", "info"))
        .and_then(|b| b.set_default("outbound_queue", 4096))
        .and_then(|b| b.set_default("outbound_session_bytes", 32 << 20))
        .and_then(|b| b.set_default("outbound_total_bytes", 512 << 20))
        .and_then(|b| b.set_default("slow_consumer_secs", 5))
        .and_then(|b| b.set_default("shutdown_grace_secs", 10))
        .and_then(|b| b.set_default("argon2_memory_kib", 19_456))
        .and_then(|b| b.set_default("argon2_iterations", 2))
        .and_then(|b| b.set_default("redis_prefix", "confab"))
        .and_then(|b| b.set_default("presence_ttl_secs", 12))
        .and_then(|b| b.set_default("cluster_reorder_ms", 200))
        .and_then(|b| b.set_default("cluster_resync_secs", 10))
        .and_then(|b| b.set_default("cluster_probe_secs", 5))
        .and_then(|b| b.set_default("request_timeout_secs", 20))
        .and_then(|b| b.set_default("max_connections_per_address", 256))
        .and_then(|b| b.set_default("reserved_fds", 128))
        .and_then(|b| b.set_default("trusted_proxies", Vec::<String>::new()))
        .and_then(|b| b.set_default("login_free_failures", 5))
        .and_then(|b| b.set_default("login_max_lock_secs", 60))
        .and_then(|b| b.set_default("max_file_bytes", 100u64 << 20))
        .and_then(|b| b.set_default("file_quota_bytes", 1u64 << 30))
        .and_then(|b| b.set_default("uploads_per_minute", 30))
        .and_then(|b| b.set_default("unattached_file_ttl_secs", 86_400))
        .and_then(|b| b.set_default("files_sweep_secs", 600))
        .and_then(|b| b.set_default("files_orphan_grace_secs", 3600))
        .and_then(|b| b.set_default("upload_ttl_secs", 86_400))
        .and_then(|b| b.set_default("thumbnail_workers", 2))
        .map_err(|e| ConfigError(e.to_string()))
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}
