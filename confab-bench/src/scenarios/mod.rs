//! The scenarios: `connect`, `dm`, `room` and `files`.

mod connect;
mod files;
mod messages;
mod phase;
mod usage;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::{Account, Auth};
use crate::net::{ConnectError, Ctx, Session, Target, open};
use crate::placement::Placement;
use crate::report::Report;
use crate::stats::{Kind, Stats, round};

pub use connect::connect;
pub use files::{FileParams, files};
pub use messages::{dm, room};

/// Settings every scenario shares.
pub struct Common {
    /// The nodes, at least one; accounts are made through the first.
    pub targets: Vec<Target>,
    /// Which node each client index goes to.
    pub placement: Placement,
    /// Server processes whose figures are summed (one per target, in order,
    /// for per-node figures).
    pub server_pids: Vec<u32>,
    pub auth: Arc<Auth>,
    pub sources: Vec<IpAddr>,
    pub connect_concurrency: usize,
    pub prefix: String,
    /// For the report.
    pub params: Value,
}

/// Parameters of a message scenario.
pub struct MsgParams {
    /// Aggregate messages per second; 0 for closed loop.
    pub rate: f64,
    pub secs: f64,
    /// Closed loop: messages in flight per sender.
    pub in_flight: usize,
    pub body_size: usize,
    pub drain_secs: f64,
}

impl Common {
    /// The node index of client `i`.
    fn node_of(&self, i: usize) -> usize {
        self.placement.node_of(i, self.targets.len())
    }

    fn several_nodes(&self) -> bool {
        self.targets.len() > 1
    }

    /// How many of the connected clients are on each node.
    fn per_node(&self, idx: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let mut count = vec![0; self.targets.len()];
        for i in idx {
            count[self.node_of(i)] += 1;
        }
        count
    }
}

fn user_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Users ready, with how long it took and how.
async fn accounts(c: &Common, n: usize, report: &mut Report) -> Result<Vec<Account>> {
    eprintln!("confab-bench: preparing {n} users ({}-0 ..)", c.prefix);
    let t = Instant::now();
    let accounts = c.auth.accounts(&user_names(&c.prefix, n)).await?;
    let counts = &c.auth.counts;
    report.setup.insert("users".into(), json!(n));
    report.setup.insert(
        "cached".into(),
        json!(counts.cached.load(Ordering::Relaxed)),
    );
    report.setup.insert(
        "registered".into(),
        json!(counts.registered.load(Ordering::Relaxed)),
    );
    report.setup.insert(
        "logged_in".into(),
        json!(counts.logged_in.load(Ordering::Relaxed)),
    );
    report.setup.insert(
        "auth_secs".into(),
        json!(round(t.elapsed().as_secs_f64(), 3)),
    );
    Ok(accounts)
}

/// Opens a session per account (refreshing a token the handshake rejects
/// with 401), each reading from its first frame on.
async fn connect_all(
    c: &Common,
    accounts: &[Account],
    ctx: &Arc<Ctx>,
    report: &mut Report,
) -> Vec<Option<Session>> {
    eprintln!("confab-bench: connecting {} sessions", accounts.len());
    let sem = Arc::new(Semaphore::new(c.connect_concurrency.max(1)));
    let start = Instant::now();
    let tasks: Vec<_> = accounts
        .iter()
        .enumerate()
        .map(|(i, acc)| {
            let sem = sem.clone();
            let target = c.targets[c.node_of(i)].clone();
            let auth = c.auth.clone();
            let ctx = ctx.clone();
            let source = (!c.sources.is_empty()).then(|| c.sources[i % c.sources.len()]);
            let mut token = acc.token.clone();
            let name = acc.name.clone();
            tokio::spawn(async move {
                let _permit = sem.acquire().await.expect("semaphore");
                let mut retried = false;
                loop {
                    let t = Instant::now();
                    match open(&target, &token, source).await {
                        Ok(ws) => {
                            let us = t.elapsed().as_micros() as u64;
                            ctx.stats.record(i, Kind::Connect, us);
                            return Ok(Session::start(i, ws, ctx));
                        }
                        Err(ConnectError::Status(401)) if !retried => {
                            retried = true;
                            match auth.refresh(&name).await {
                                Ok(acc) => token = acc.token,
                                Err(e) => {
                                    eprintln!("confab-bench: {e:#}");
                                    return Err("refresh_failed".to_owned());
                                }
                            }
                        }
                        Err(e) => return Err(e.key()),
                    }
                }
            })
        })
        .collect();
    let mut sessions = Vec::with_capacity(tasks.len());
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => sessions.push(Some(s)),
            Ok(Err(key)) => {
                *failures.entry(key).or_default() += 1;
                sessions.push(None);
            }
            Err(_) => {
                *failures.entry("task_panicked".into()).or_default() += 1;
                sessions.push(None);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let connected = sessions.iter().filter(|s| s.is_some()).count();
    if c.auth.counts.refreshed.load(Ordering::Relaxed) > 0 {
        let _ = c.auth.save();
    }
    report.setup.insert("connected".into(), json!(connected));
    if c.several_nodes() {
        let per_node = c.per_node(sessions.iter().flatten().map(|s| s.idx));
        report
            .setup
            .insert("sessions_per_node".into(), json!(per_node));
    }
    report
        .setup
        .insert("connect_secs".into(), json!(round(secs, 3)));
    report.setup.insert(
        "connects_per_sec".into(),
        json!(round(connected as f64 / secs.max(1e-9), 1)),
    );
    report.setup.insert(
        "token_refreshes".into(),
        json!(c.auth.counts.refreshed.load(Ordering::Relaxed)),
    );
    report
        .setup
        .insert("connect_failures".into(), json!(failures));
    if !failures.is_empty() {
        report.warn(format!(
            "{} of {} sessions failed to connect: {:?}",
            accounts.len() - connected,
            accounts.len(),
            failures
        ));
    }
    sessions
}

/// Waits until no frame has arrived for `quiet` (at most `limit`).
async fn settle(stats: &Stats, quiet: Duration, limit: Duration) {
    let start = Instant::now();
    let mut last = stats.frames.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = stats.frames.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

fn new_ctx() -> Arc<Ctx> {
    Arc::new(Ctx {
        stats: Arc::new(Stats::new()),
        nonce: format!("b{:08x}.", rand::random::<u32>()),
        stop: CancellationToken::new(),
    })
}

async fn close_all(sessions: Vec<Session>) {
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(s.close()))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}
