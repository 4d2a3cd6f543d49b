//! The composition root: read the configuration, build the adapters, wire
//! them to the core, serve until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use confab::adapters::auth::{self, HashCost, JwtAuthenticator};
use confab::adapters::clock::SystemClock;
use confab::adapters::cluster::{self, Cluster};
use confab::adapters::edge::connections::raise_open_files_limit;
use confab::adapters::edge::{ConnectionLimits, LoginThrottle};
use confab::adapters::metrics::Metrics;
use confab::adapters::presence::InMemoryPresence;
use confab::adapters::server::{self, EdgeSettings, Wiring};
use confab::adapters::store::{PgStore, SqliteStore};
use confab::adapters::ws::session::WsSettings;
use confab::adapters::ws::{Attach, Outbound, SessionRegistry};
use confab::config::{Database, Settings};
use confab::domain::ports::{BlockStore, MessageStore, PresenceRegistry, Transport, UserStore};
use confab::domain::positions::SeqIndex;
use confab::domain::service::{ChatService, Limits, Ports};
use tokio::net::TcpListener;
use tracing::{error, info};

/// jemalloc rather than glibc's malloc: a tenth to a sixth less server CPU
/// per message (docs/performance-log.md, "jemalloc").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: pages freed are handed back
/// within about a second rather than ten, by jemalloc's own background
/// thread, so that an idle server holds what its sessions keep and not
/// what their handshakes used. Not at once (`dirty_decay_ms:0`): a busy
/// server then returned and took back pages all the time, and each
/// `madvise` that gave one back stopped the other core to flush its TLB
/// (7% of the CPU per message, for the same memory per idle session).
/// (`_RJEM_MALLOC_CONF` in the environment still overrides them.)
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true".as_ptr());

/// A C string pointer, as jemalloc declares `malloc_conf`.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points to a string literal, which is immutable and static.
unsafe impl Sync for MallocConf {}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("confab: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&settings.log))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let database = settings.database()?;
    info!("database: {database}");
    let metrics = Arc::new(Metrics::default());
    let opened = metrics.clone();
    let scrub = settings.sqlite_scrub();
    let (users, messages, blocks, index) =
        tokio::task::spawn_blocking(move || open_store(&database, &opened, scrub)).await??;
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
    let registry = Arc::new(SessionRegistry::new(metrics.clone()));
    // Bound first: the address is the node's default name in a cluster.
    let listener = TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
    let bound = listener.local_addr()?;
    let (cluster, presence, transport): (_, Arc<dyn PresenceRegistry>, Arc<dyn Transport>) =
        match settings.cluster(bound) {
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
                    metrics.clone(),
                )
                .await?;
                let (presence, transport) = (cluster.presence(), cluster.transport());
                (Some(cluster), presence, transport)
            }
            None => (
                None,
                Arc::new(InMemoryPresence::default()),
                registry.clone(),
            ),
        };
    let ports = Ports {
        users,
        messages,
        blocks,
        auth: Arc::new(auth),
        presence,
        transport,
        clock: Arc::new(SystemClock),
    };
    let limits = Limits {
        max_sessions_per_user: settings.max_sessions_per_user as usize,
    };
    let service = Arc::new(ChatService::new(ports, limits));
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
    };
    info!("listening on http://{bound}");
    server::serve(listener, wiring, shutdown_signal()).await;
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    Ok(())
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
type Stores = (
    Arc<dyn UserStore>,
    Arc<dyn MessageStore>,
    Arc<dyn BlockStore>,
    Option<Arc<dyn SeqIndex>>,
);

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
            (store.clone(), store.clone(), store, None)
        }
        Database::Postgres(url) => {
            // libpq may quote the part of a URL it cannot parse, password included.
            let opened = PgStore::open(url).map_err(|e| anyhow!(database.scrub(&format!("{e:#}"))));
            let store = Arc::new(opened?);
            (store.clone(), store.clone(), store.clone(), Some(store))
        }
    })
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

#[cfg(test)]
mod tests {
    /// The server's allocator is jemalloc, with the options `MALLOC_CONF`
    /// gives it (a misnamed symbol would be silently ignored).
    #[test]
    fn jemalloc_is_the_allocator_and_reads_confabs_options() {
        use tikv_jemalloc_ctl::raw;
        // SAFETY: the decay options are `ssize_t` and background_thread a
        // `bool` in jemalloc's mallctl table.
        let (dirty, muzzy, background) = unsafe {
            (
                raw::read::<isize>(b"opt.dirty_decay_ms\0").unwrap(),
                raw::read::<isize>(b"opt.muzzy_decay_ms\0").unwrap(),
                raw::read::<bool>(b"background_thread\0").unwrap(),
            )
        };
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            assert_eq!((dirty, muzzy, background), (1000, 0, true));
        }
    }
}
