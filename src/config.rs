//! All configuration, read in one place: built-in defaults, then an
//! optional `confab.toml` (or the file named by `CONFAB_CONFIG`), then
//! `CONFAB_*` environment variables. Nothing else reads the environment.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
    /// `sqlite://PATH`, `sqlite:PATH` or a plain path; default `<data_dir>/confab.db`.
    pub database_url: Option<String>,
    /// HS256 secret; generated and kept in `<data_dir>/jwt_secret` when unset.
    pub jwt_secret: Option<String>,
    /// Token lifetime in seconds.
    pub token_ttl_secs: u64,
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
    /// Seconds shutdown waits for sessions and requests to finish.
    pub shutdown_grace_secs: u64,
    /// argon2id memory cost in KiB (lower it only for tests and benchmarks).
    pub argon2_memory_kib: u32,
    /// argon2id passes (lower it only for tests and benchmarks).
    pub argon2_iterations: u32,
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
            .and_then(|b| b.set_default("rate_per_sec", 20))
            .and_then(|b| b.set_default("rate_burst", 50))
            .and_then(|b| b.set_default("auth_rate_per_sec", 5))
            .and_then(|b| b.set_default("auth_rate_burst", 20))
            .and_then(|b| b.set_default("heartbeat_secs", 30))
            .and_then(|b| b.set_default("max_sessions_per_user", 10))
            .and_then(|b| b.set_default("log", "info"))
            .and_then(|b| b.set_default("outbound_queue", 1024))
            .and_then(|b| b.set_default("shutdown_grace_secs", 10))
            .and_then(|b| b.set_default("argon2_memory_kib", 19_456))
            .and_then(|b| b.set_default("argon2_iterations", 2))
            .map_err(|e| ConfigError(e.to_string()))?
            .add_source(
                config::File::with_name(&file)
                    .format(config::FileFormat::Toml)
                    .required(explicit.is_some()),
            )
            .add_source(config::Environment::with_prefix("CONFAB").try_parsing(true))
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("token_ttl_secs", self.token_ttl_secs),
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
            ("argon2_iterations", u64::from(self.argon2_iterations)),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be at least 1")));
            }
        }
        if self.argon2_memory_kib < 8 {
            return Err(ConfigError("argon2_memory_kib must be at least 8".into()));
        }
        if self.jwt_secret.as_deref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError("jwt_secret must be at least 16 bytes".into()));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| ConfigError(format!("log is not a valid tracing filter: {e}")))?;
        self.database_path()?;
        Ok(())
    }

    /// The SQLite file the database URL names.
    ///
    /// # Errors
    /// For a URL of a database confab cannot open.
    pub fn database_path(&self) -> Result<PathBuf, ConfigError> {
        let Some(url) = self.database_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(self.data_dir.join("confab.db"));
        };
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return Ok(PathBuf::from(path));
        }
        if url.contains("://") {
            return Err(ConfigError(format!(
                "database_url: unsupported scheme in {:?}; use sqlite://PATH or a file path",
                url.split("://").next().unwrap_or_default()
            )));
        }
        Ok(PathBuf::from(url))
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

    /// Interval between pings.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// How long shutdown may take.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}
