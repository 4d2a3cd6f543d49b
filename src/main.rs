//! The composition root: read the configuration, build the adapters, wire
//! them to the core, serve until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use confab::adapters::auth::{self, HashCost, JwtAuthenticator};
use confab::adapters::clock::SystemClock;
use confab::adapters::metrics::Metrics;
use confab::adapters::presence::InMemoryPresence;
use confab::adapters::server::{self, Wiring};
use confab::adapters::store::{PgStore, SqliteStore};
use confab::adapters::ws::SessionRegistry;
use confab::adapters::ws::session::WsSettings;
use confab::config::{Database, Settings};
use confab::domain::ports::{MessageStore, UserStore};
use confab::domain::service::{ChatService, Limits, Ports};
use tokio::net::TcpListener;
use tracing::{error, info};

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
    let (users, messages) = tokio::task::spawn_blocking(move || open_store(&database)).await??;
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
    let metrics = Arc::new(Metrics::default());
    let registry = Arc::new(SessionRegistry::new(metrics.clone()));
    let ports = Ports {
        users,
        messages,
        auth: Arc::new(auth),
        presence: Arc::new(InMemoryPresence::default()),
        transport: registry.clone(),
        clock: Arc::new(SystemClock),
    };
    let limits = Limits {
        max_sessions_per_user: settings.max_sessions_per_user as usize,
    };
    let (rate_per_sec, rate_burst) = settings.rate();
    let wiring = Wiring {
        service: Arc::new(ChatService::new(ports, limits)),
        registry,
        metrics,
        ws: WsSettings {
            heartbeat: settings.heartbeat(),
            rate_per_sec,
            rate_burst,
            queue_capacity: settings.outbound_queue,
            close_timeout: std::time::Duration::from_secs(10),
        },
        grace: settings.shutdown_grace(),
        auth_rate: settings.auth_rate(),
    };
    let listener = TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
    info!("listening on http://{}", listener.local_addr()?);
    server::serve(listener, wiring, shutdown_signal()).await;
    Ok(())
}

/// Opens the store the configuration names: both ports on one adapter.
fn open_store(database: &Database) -> anyhow::Result<(Arc<dyn UserStore>, Arc<dyn MessageStore>)> {
    Ok(match database {
        Database::Sqlite(path) => {
            let store = Arc::new(SqliteStore::open(path)?);
            (store.clone(), store)
        }
        Database::Postgres(url) => {
            // libpq may quote the part of a URL it cannot parse, password included.
            let opened = PgStore::open(url).map_err(|e| anyhow!(database.scrub(&format!("{e:#}"))));
            let store = Arc::new(opened?);
            (store.clone(), store)
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
