//! All configuration, read in one place: built-in defaults, then an
//! optional `confab.toml` (or the file named by `CONFAB_CONFIG`), then
//! `CONFAB_*` environment variables. Nothing else reads the environment.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::adapters::cluster::ClusterSettings;
use crate::adapters::cluster::fault::Faults;
use crate::adapters::wire::MAX_REPLY_BYTES;
use crate::adapters::ws::MAX_QUEUE_FRAMES;

/// The least `outbound_session_bytes` may be: room for the largest reply
/// and the events around it.
const MIN_SESSION_BYTES: usize = 4 * MAX_REPLY_BYTES;
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
    /// Token lifetime in seconds.
    pub token_ttl_secs: u64,
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
        let settings: Settings = config::Config::builder()
            .set_default("host", "127.0.0.1")
            .and_then(|b| b.set_default("port", 8080))
            .and_then(|b| b.set_default("data_dir", "./data"))
            .and_then(|b| b.set_default("token_ttl_secs", 86_400))
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
            .map_err(|e| ConfigError(e.to_string()))?
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
            )
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("token_ttl_secs", self.token_ttl_secs),
            ("sqlite_scrub_secs", self.sqlite_scrub_secs),
            ("rate_per_sec", u64::from(self.rate_per_sec)),
            ("rate_burst", u64::from(self.rate_burst)),
            ("auth_rate_per_sec", u64::from(self.auth_rate_per_sec)),
            ("auth_rate_burst", u64::from(self.auth_rate_burst)),
            ("heartbeat_secs", self.heartbeat_secs),
            (
                "max_sessions_per_user",
                u64::from(self.max_sessions_per_user),
            ),
            ("outbound_queue", self.outbound_queue as u64),
            ("outbound_session_bytes", self.outbound_session_bytes as u64),
            ("outbound_total_bytes", self.outbound_total_bytes as u64),
            ("slow_consumer_secs", u64::from(self.slow_consumer_secs)),
            ("argon2_iterations", u64::from(self.argon2_iterations)),
            ("cluster_reorder_ms", self.cluster_reorder_ms),
            ("cluster_resync_secs", self.cluster_resync_secs),
            ("cluster_probe_secs", self.cluster_probe_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            (
                "max_connections_per_address",
                self.max_connections_per_address as u64,
            ),
            ("login_max_lock_secs", self.login_max_lock_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be at least 1")));
            }
        }
        if self.outbound_queue > MAX_QUEUE_FRAMES {
            return Err(ConfigError(format!(
                "outbound_queue must be at most {MAX_QUEUE_FRAMES}"
            )));
        }
        if self.outbound_session_bytes < MIN_SESSION_BYTES {
            return Err(ConfigError(format!(
                "outbound_session_bytes must be at least {MIN_SESSION_BYTES} (the largest reply and then some)"
            )));
        }
        if self.sqlite_scrub_secs > 3600 {
            return Err(ConfigError("sqlite_scrub_secs must be at most 3600".into()));
        }
        if self.argon2_memory_kib < 8 {
            return Err(ConfigError("argon2_memory_kib must be at least 8".into()));
        }
        if self.jwt_secret.as_deref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError("jwt_secret must be at least 16 bytes".into()));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| ConfigError(format!("log is not a valid tracing filter: {e}")))?;
        self.database()?;
        self.trusted_proxies()?;
        self.metrics_addr()?;
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if self.presence_ttl_secs < 2 {
            return Err(ConfigError("presence_ttl_secs must be at least 2".into()));
        }
        if self.cluster_reorder_ms > 500 {
            return Err(ConfigError("cluster_reorder_ms must be at most 500".into()));
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return Err(ConfigError(
                "redis_prefix must be non-empty, without spaces".into(),
            ));
        }
        if let Some(faults) = self.faults.as_deref() {
            Faults::parse(faults).map_err(|e| ConfigError(format!("faults: {e}")))?;
        }
        let Some(url) = self.redis_url() else {
            return Ok(());
        };
        if !url.starts_with("redis://") {
            return Err(ConfigError(
                "redis_url must be a redis://host:port/db URL".into(),
            ));
        }
        if !matches!(self.database()?, Database::Postgres(_)) {
            return Err(ConfigError(
                "redis_url (cluster mode) needs a postgres:// database_url: every node must share the store".into(),
            ));
        }
        if self.jwt_secret.is_none() {
            return Err(ConfigError(
                "redis_url (cluster mode) needs jwt_secret, the same on every node".into(),
            ));
        }
        Ok(())
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

/// Where confab keeps its data, as `database_url` says.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its libpq connection URL.
    Postgres(String),
}

impl Database {
    /// `text` with every password of the URL replaced by `***`, for errors
    /// that may quote parts of it.
    pub fn scrub(&self, text: &str) -> String {
        match self {
            Self::Sqlite(_) => text.to_owned(),
            Self::Postgres(url) => masked(url)
                .1
                .into_iter()
                .fold(text.to_owned(), |text, secret| text.replace(secret, "***")),
        }
    }
}

impl std::fmt::Display for Database {
    /// For logs: a PostgreSQL URL is shown with its password masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "SQLite at {}", path.display()),
            Self::Postgres(url) => write!(f, "PostgreSQL at {}", masked(url).0),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `url` with the password of its user part, and of any `password` query
/// parameter, replaced by `***`; and the passwords it held.
fn masked(url: &str) -> (String, Vec<&str>) {
    let mut secrets = Vec::new();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, secret)) => {
                secrets.push(secret);
                format!("{name}:***@{host}")
            }
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, secret)) if key.eq_ignore_ascii_case("password") => {
                        secrets.push(secret);
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    secrets.retain(|s| !s.is_empty());
    (format!("{scheme}://{authority}{tail}"), secrets)
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: Option<&str>) -> Settings {
        Settings {
            host: "127.0.0.1".into(),
            port: 0,
            data_dir: PathBuf::from("/var/lib/confab"),
            database_url: url.map(str::to_owned),
            jwt_secret: None,
            token_ttl_secs: 1,
            sqlite_scrub_secs: 30,
            rate_per_sec: 1,
            rate_burst: 1,
            auth_rate_per_sec: 1,
            auth_rate_burst: 1,
            heartbeat_secs: 1,
            max_sessions_per_user: 1,
            log: "info".into(),
            outbound_queue: 1,
            outbound_session_bytes: MIN_SESSION_BYTES,
            outbound_total_bytes: 1,
            slow_consumer_secs: 1,
            shutdown_grace_secs: 1,
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            redis_url: None,
            node_id: None,
            redis_prefix: "confab".into(),
            presence_ttl_secs: 12,
            cluster_reorder_ms: 200,
            cluster_resync_secs: 10,
            cluster_probe_secs: 5,
            faults: None,
            request_timeout_secs: 20,
            max_connections_per_address: 256,
            reserved_fds: 128,
            trusted_proxies: Vec::new(),
            login_free_failures: 5,
            login_max_lock_secs: 60,
            metrics_addr: None,
        }
    }

    #[test]
    fn trusted_proxies_and_the_metrics_address_are_checked() {
        let mut s = with_url(None);
        s.trusted_proxies = vec!["10.0.0.0/8".into(), "192.168.1.1".into()];
        assert!(
            s.trusted_proxies()
                .unwrap()
                .contains("10.1.2.3".parse().unwrap())
        );
        s.trusted_proxies.push("10.0.0.0/99".into());
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("trusted_proxies") && err.contains("10.0.0.0/99"),
            "{err}"
        );
        s.trusted_proxies.clear();
        s.metrics_addr = Some("127.0.0.1:9090".into());
        assert_eq!(
            s.metrics_addr().unwrap(),
            Some("127.0.0.1:9090".parse().unwrap())
        );
        s.metrics_addr = Some("localhost".into());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("metrics_addr")
        );
        s.metrics_addr = Some(String::new());
        assert_eq!(s.metrics_addr().unwrap(), None);
        s.request_timeout_secs = 0;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("request_timeout_secs")
        );
    }

    #[test]
    fn cluster_mode_needs_postgres_and_a_shared_secret() {
        let mut s = with_url(Some("postgres://db/confab"));
        s.redis_url = Some("redis://127.0.0.1:6379/".into());
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("jwt_secret"), "{err}");
        s.jwt_secret = Some("0123456789abcdef".into());
        s.validate().unwrap();
        let bound = "10.0.0.5:8080".parse().unwrap();
        let cluster = s.cluster(bound).unwrap();
        assert_eq!(cluster.node_id, "10.0.0.5:8080");
        assert_eq!(cluster.presence_ttl, Duration::from_secs(12));
        let mut sqlite = s.clone();
        sqlite.database_url = None;
        let err = sqlite.validate().unwrap_err().to_string();
        assert!(err.contains("postgres"), "{err}");
        s.redis_url = Some("http://x".into());
        assert!(s.validate().unwrap_err().to_string().contains("redis_url"));
        s.redis_url = Some(String::new());
        assert!(s.cluster(bound).is_none(), "empty means single-process");
    }

    #[test]
    fn cluster_bounds_are_checked() {
        let mut s = with_url(None);
        s.cluster_reorder_ms = 501;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("cluster_reorder_ms")
        );
        s.cluster_reorder_ms = 200;
        s.presence_ttl_secs = 1;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("presence_ttl_secs")
        );
        s.presence_ttl_secs = 12;
        s.faults = Some("drop_publish_every:x".into());
        assert!(s.validate().unwrap_err().to_string().contains("faults"));
    }

    #[test]
    fn outbound_limits_are_checked() {
        let mut s = with_url(None);
        s.validate().unwrap();
        s.outbound_session_bytes = MIN_SESSION_BYTES - 1;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("outbound_session_bytes"), "{err}");
        s.outbound_session_bytes = MIN_SESSION_BYTES;
        s.outbound_queue = MAX_QUEUE_FRAMES + 1;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("outbound_queue")
        );
        s.outbound_queue = MAX_QUEUE_FRAMES;
        s.slow_consumer_secs = 0;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("slow_consumer_secs")
        );
    }

    #[test]
    fn the_sqlite_scrub_interval_is_1_to_3600_seconds() {
        let mut s = with_url(None);
        for (secs, ok) in [(0, false), (1, true), (3600, true), (3601, false)] {
            s.sqlite_scrub_secs = secs;
            match s.validate() {
                Ok(()) => assert!(ok, "{secs}"),
                Err(e) => assert!(!ok && e.to_string().contains("sqlite_scrub_secs"), "{e}"),
            }
        }
    }

    #[test]
    fn without_a_url_the_database_is_sqlite_in_the_data_dir() {
        for url in [None, Some("")] {
            assert_eq!(
                with_url(url).database().unwrap(),
                Database::Sqlite("/var/lib/confab/confab.db".into())
            );
        }
    }

    #[test]
    fn sqlite_urls_and_plain_paths_name_a_file() {
        for (url, path) in [
            ("sqlite:///srv/c.db", "/srv/c.db"),
            ("sqlite://c.db", "c.db"),
            ("sqlite:c.db", "c.db"),
            ("/srv/c.db", "/srv/c.db"),
            ("data/c.db", "data/c.db"),
        ] {
            assert_eq!(
                with_url(Some(url)).database().unwrap(),
                Database::Sqlite(path.into()),
                "{url}"
            );
        }
    }

    #[test]
    fn postgres_urls_name_a_postgres_database() {
        for url in [
            "postgres://confab@db.example/confab",
            "postgresql://confab:pw@127.0.0.1:5432/confab?sslmode=require",
        ] {
            assert_eq!(
                with_url(Some(url)).database().unwrap(),
                Database::Postgres(url.into())
            );
        }
    }

    #[test]
    fn an_unknown_scheme_is_refused_without_repeating_the_url() {
        let err = with_url(Some("mysql://root:hunter2@db/confab"))
            .database()
            .unwrap_err()
            .to_string();
        assert!(err.contains("database_url"), "{err}");
        assert!(err.contains("\"mysql\""), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_postgres_url_is_logged_with_its_password_masked() {
        for (url, shown) in [
            (
                "postgres://confab:hunter2@db:5432/confab",
                "PostgreSQL at postgres://confab:***@db:5432/confab",
            ),
            (
                "postgresql://confab:p%40ss@db/confab?sslmode=require&password=hunter2",
                "PostgreSQL at postgresql://confab:***@db/confab?sslmode=require&password=***",
            ),
            (
                "postgres://confab@db?password=hunter2",
                "PostgreSQL at postgres://confab@db?password=***",
            ),
            ("postgres://db/confab", "PostgreSQL at postgres://db/confab"),
        ] {
            let shown_now = Database::Postgres(url.into()).to_string();
            assert_eq!(shown_now, shown);
            assert_eq!(format!("{:?}", Database::Postgres(url.into())), shown);
        }
    }

    #[test]
    fn errors_quoting_a_password_are_scrubbed() {
        let db = Database::Postgres("postgres://confab:s%zzret@db/c?password=other".into());
        assert_eq!(
            db.scrub(r#"invalid percent-encoded token: "s%zzret"; other"#),
            r#"invalid percent-encoded token: "***"; ***"#
        );
        let file = Database::Sqlite("/srv/c.db".into());
        assert_eq!(file.scrub("secret stays"), "secret stays");
    }
}
