//! The checks a configuration passes before it is used: each names the
//! setting it refuses.

use super::{ConfigError, Database, Settings};
use crate::adapters::cluster::fault::Faults;
use crate::adapters::wire::MAX_REPLY_BYTES;
use crate::adapters::ws::MAX_QUEUE_FRAMES;

/// The least `outbound_session_bytes` may be: room for the largest reply
/// and the events around it.
pub(super) const MIN_SESSION_BYTES: usize = 4 * MAX_REPLY_BYTES;

impl Settings {
    /// Checks every setting.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("token_ttl_secs", self.token_ttl_secs),
            ("refresh_ttl_secs", self.refresh_ttl_secs),
            ("max_devices_per_user", u64::from(self.max_devices_per_user)),
            ("revocation_sweep_secs", self.revocation_sweep_secs),
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
            ("max_file_bytes", self.max_file_bytes),
            ("file_quota_bytes", self.file_quota_bytes),
            ("uploads_per_minute", u64::from(self.uploads_per_minute)),
            ("unattached_file_ttl_secs", self.unattached_file_ttl_secs),
            ("files_sweep_secs", self.files_sweep_secs),
            ("files_orphan_grace_secs", self.files_orphan_grace_secs),
            ("upload_ttl_secs", self.upload_ttl_secs),
            ("thumbnail_workers", u64::from(self.thumbnail_workers)),
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
        let base = self.files_base_url();
        let web_origin = base.starts_with("https://") || base.starts_with("http://");
        if !base.is_empty() && !web_origin {
            return Err(ConfigError(
                "files_base_url must be an http:// or https:// origin".into(),
            ));
        }
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
}
