//! The composition root: the adapters built from the settings and wired to
//! the core, ready to serve until a shutdown signal. `main.rs` runs one;
//! a test or a tool may run one inside its own process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use tokio::net::TcpListener;
use tracing::info;

use crate::adapters::auth::{self, HashCost, JwtAuthenticator};
use crate::adapters::blob;
use crate::adapters::clock::SystemClock;
use crate::adapters::cluster::{self, Cluster};
use crate::adapters::edge::connections::raise_open_files_limit;
use crate::adapters::edge::{ConnectionLimits, LoginThrottle};
use crate::adapters::files::sweep::{self, SweepSettings};
use crate::adapters::files::{FileSettings, Files, Signer};
use crate::adapters::metrics::Metrics;
use crate::adapters::presence::InMemoryPresence;
use crate::adapters::server::{self, EdgeSettings, Wiring};
use crate::adapters::store::{PgStore, SqliteStore};
use crate::adapters::ws::session::WsSettings;
use crate::adapters::ws::{Attach, Outbound, SessionRegistry};
use crate::config::{Database, Settings};
use crate::domain::file::FileLimits;
use crate::domain::ports::{
    BlockStore, Clock, DeviceStore, FileStore, MessageStore, PresenceRegistry, Revoker, Transport,
    UserStore,
};
use crate::domain::positions::SeqIndex;
use crate::domain::service::{ChatService, Limits, Ports};

/// A server built and listening, not yet serving.
pub struct Application {
    listener: TcpListener,
    bound: SocketAddr,
    wiring: Wiring,
    /// This node's membership, in cluster mode: left after the last session.
    cluster: Option<Arc<Cluster>>,
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free one),
    /// joins the cluster when `redis_url` is set, and wires it all to the
    /// core.
    ///
    /// # Errors
    /// When the store, the listener, the secret or the cluster cannot be
    /// had, or the open files limit leaves no room for connections.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (listener, wiring, cluster) = wire(settings).await?;
        let bound = listener.local_addr()?;
        Ok(Self {
            listener,
            bound,
            wiring,
            cluster,
        })
    }

    /// The port it listens on (the one picked, when the settings said 0).
    pub fn port(&self) -> u16 {
        self.bound.port()
    }

    /// Serves until SIGTERM or Ctrl-C, then drains and leaves the cluster.
    pub async fn run_until_stopped(self) {
        self.run_until(shutdown_signal()).await;
    }

    /// Serves until `shutdown` resolves, then drains and leaves the cluster
    /// (a test may pass a future that never resolves, and leave SIGTERM to
    /// its own process).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        info!("listening on http://{}", self.bound);
        server::serve(self.listener, self.wiring, shutdown).await;
        if let Some(cluster) = self.cluster {
            cluster.leave().await;
        }
    }
}

/// The listener, bound, and everything the server needs, built from
/// `settings` and wired to the core.
async fn wire(settings: Settings) -> anyhow::Result<(TcpListener, Wiring, Option<Arc<Cluster>>)> {
    let database = settings.database()?;
    info!("database: {database}");
    let metrics = Arc::new(Metrics::default());
    let opened = metrics.clone();
    let scrub = settings.sqlite_scrub();
    let Stores {
        users,
        messages,
        blocks,
        devices,
        files: file_store,
        index,
    } = tokio::task::spawn_blocking(move || open_store(&database, &opened, scrub)).await??;
    let secret = match &settings.jwt_secret {
        Some(s) => s.clone().into_bytes(),
        None => {
            let path = settings.secret_path();
            let (secret, made) = auth::load_or_create_secret(&path)?;
            let verb = if made {
                "generated a JWT secret into"
            } else {
                "using the JWT secret in"
            };
            info!("no jwt_secret configured: {verb} {}", path.display());
            secret
        }
    };
    let cost = HashCost {
        memory_kib: settings.argon2_memory_kib,
        iterations: settings.argon2_iterations,
    };
    let auth = JwtAuthenticator::new(&secret, settings.token_ttl_secs, cost)?;
    let blobs = blob::open(&settings.files_url())?;
    info!("files: {}", blobs.describe());
    if settings.redis_url().is_some() && !blobs.shared() {
        // A folder is shared only if the operator says so by naming one
        // (a mount every node has); the default is this node's own.
        if settings.files_url.as_deref().is_none_or(str::is_empty) {
            anyhow::bail!(
                "cluster mode needs a file store every node shares: set files_url to s3://bucket?endpoint=... or to a folder every node mounts (docs/files.md)"
            );
        }
        info!("files: cluster mode with a folder; every node must mount the same one");
    }
    let files = Arc::new(Files::new(
        blobs,
        Signer::new(&secret),
        FileSettings {
            staging: settings.data_dir.join("files").join("staging"),
            base_url: settings.files_base_url(),
            max_file_bytes: settings.max_file_bytes,
            thumbnail_workers: settings.thumbnail_workers as usize,
            uploads_per_minute: settings.uploads_per_minute,
            upload_ttl: std::time::Duration::from_secs(settings.upload_ttl_secs),
        },
    )?);
    let registry = Arc::new(SessionRegistry::new(metrics.clone()));
    // Bound first: the address is the node's default name in a cluster.
    let listener = TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
    let bound = listener.local_addr()?;
    let (cluster, reach): (_, Reach) = match settings.cluster(bound) {
        Some(cluster_settings) => {
            let Some(index) = index else {
                anyhow::bail!("cluster mode needs PostgreSQL");
            };
            let broker = cluster::redis::connect(&cluster_settings).await?;
            let cluster = Cluster::join(
                cluster_settings,
                broker,
                registry.clone(),
                messages.clone(),
                index,
                devices.clone(),
                metrics.clone(),
            )
            .await?;
            let reach = Reach {
                presence: cluster.presence(),
                transport: cluster.transport(),
                revoker: cluster.revoker(),
            };
            (Some(cluster), reach)
        }
        None => (
            None,
            Reach {
                presence: Arc::new(InMemoryPresence::default()),
                transport: registry.clone(),
                revoker: registry.clone(),
            },
        ),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ports = Ports {
        users,
        messages,
        blocks,
        auth: Arc::new(auth),
        devices,
        files: file_store.clone(),
        revoker: reach.revoker,
        presence: reach.presence,
        transport: reach.transport,
        clock: clock.clone(),
    };
    let limits = Limits {
        max_sessions_per_user: settings.max_sessions_per_user as usize,
        max_devices_per_user: settings.max_devices_per_user as usize,
        refresh_ttl_ms: secs_to_ms(settings.refresh_ttl_secs),
        refresh_grace_ms: secs_to_ms(settings.refresh_grace_secs),
        files: FileLimits {
            max_file_bytes: settings.max_file_bytes,
            quota_bytes: settings.file_quota_bytes,
        },
    };
    let service = Arc::new(ChatService::new(ports, limits));
    tokio::spawn(sweep::run(
        files.clone(),
        file_store,
        clock,
        SweepSettings {
            every: std::time::Duration::from_secs(settings.files_sweep_secs),
            unattached_ttl: std::time::Duration::from_secs(settings.unattached_file_ttl_secs),
            grace: std::time::Duration::from_secs(settings.files_orphan_grace_secs),
        },
    ));
    if let Some(cluster) = &cluster {
        cluster.start(service.clone());
    }
    let (rate_per_sec, rate_burst) = settings.rate();
    let edge = edge(&settings, &metrics).await?;
    let attach: Arc<dyn Attach> = match &cluster {
        Some(cluster) => cluster.clone(),
        None => registry.clone(),
    };
    let wiring = Wiring {
        service,
        registry,
        metrics,
        ws: WsSettings {
            heartbeat: settings.heartbeat(),
            rate_per_sec,
            rate_burst,
            outbound: Arc::new(Outbound::new(
                settings.outbound_queue,
                settings.outbound_session_bytes,
                settings.outbound_total_bytes,
                settings.slow_consumer_secs,
            )),
            close_timeout: std::time::Duration::from_secs(10),
        },
        grace: settings.shutdown_grace(),
        auth_rate: settings.auth_rate(),
        attach,
        edge,
        files,
    };
    Ok((listener, wiring, cluster))
}

/// The timeouts, caps and throttles at the edge, and the metrics listener.
async fn edge(settings: &Settings, metrics: &Metrics) -> anyhow::Result<EdgeSettings> {
    let (before, open_files) = raise_open_files_limit().context("reading the open files limit")?;
    if open_files > before {
        info!("open files limit raised from {before} to {open_files} (the hard limit)");
    }
    let total = open_files
        .checked_sub(settings.reserved_fds)
        .filter(|n| *n > 0);
    let Some(total) = total else {
        anyhow::bail!(
            "the open files limit ({open_files}) leaves no room for connections with reserved_fds = {}; raise the limit (ulimit -n) or lower reserved_fds",
            settings.reserved_fds
        );
    };
    let trusted_proxies = Arc::new(settings.trusted_proxies()?);
    let limits = Arc::new(ConnectionLimits::new(
        usize::try_from(total).unwrap_or(usize::MAX),
        settings.max_connections_per_address,
        trusted_proxies.clone(),
        metrics.connections_open.clone(),
        metrics.sessions.clone(),
    ));
    info!(
        "connections: at most {} in all (open files {open_files} less {} reserved), {} per client address",
        limits.total(),
        settings.reserved_fds,
        limits.per_address()
    );
    let metrics_listener = match settings.metrics_addr()? {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on metrics_addr {addr}"))?;
            info!(
                "metrics served on http://{}/metrics",
                listener.local_addr()?
            );
            Some(listener)
        }
        None => None,
    };
    Ok(EdgeSettings {
        request_timeout: settings.request_timeout(),
        limits,
        trusted_proxies,
        login_throttle: LoginThrottle::new(
            settings.login_free_failures,
            std::time::Duration::from_secs(settings.login_max_lock_secs),
        ),
        metrics_listener,
    })
}

/// The store the configuration names: both ports on one adapter, and
/// the cluster's index when it can be shared by several nodes.
struct Stores {
    users: Arc<dyn UserStore>,
    messages: Arc<dyn MessageStore>,
    blocks: Arc<dyn BlockStore>,
    devices: Arc<dyn DeviceStore>,
    files: Arc<dyn FileStore>,
    index: Option<Arc<dyn SeqIndex>>,
}

/// Opens the store the configuration names; SQLite's empties its WAL
/// within `scrub` of an edit or a delete.
fn open_store(
    database: &Database,
    metrics: &Metrics,
    scrub: std::time::Duration,
) -> anyhow::Result<Stores> {
    Ok(match database {
        Database::Sqlite(path) => {
            let store = Arc::new(SqliteStore::open(path, metrics.store.clone(), scrub)?);
            Stores {
                users: store.clone(),
                messages: store.clone(),
                blocks: store.clone(),
                devices: store.clone(),
                files: store,
                index: None,
            }
        }
        Database::Postgres(url) => {
            // libpq may quote the part of a URL it cannot parse, password included.
            let opened = PgStore::open(url).map_err(|e| anyhow!(database.scrub(&format!("{e:#}"))));
            let store = Arc::new(opened?);
            Stores {
                users: store.clone(),
                messages: store.clone(),
                blocks: store.clone(),
                devices: store.clone(),
                files: store.clone(),
                index: Some(store),
            }
        }
    })
}

/// The ports that reach sessions: this process's, or the cluster's.
struct Reach {
    presence: Arc<dyn PresenceRegistry>,
    transport: Arc<dyn Transport>,
    revoker: Arc<dyn Revoker>,
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
