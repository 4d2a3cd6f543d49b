//! confab-bench: a load generator for confab and any other server of the
//! same wire contract (docs/protocol.md), speaking only that contract:
//! HTTP for accounts, JSON over WebSocket for everything else.
//!
//! Scenarios:
//! - `connect --clients N [--hold-secs S]`: N sessions held open; time to
//!   connect, failures, server memory per session.
//! - `dm --clients N --rate R --secs S [--in-flight K]`: private messages
//!   between pairs (2i <-> 2i+1), open loop at R msgs/s in all, or closed
//!   loop (`--rate 0`) with K in flight per sender.
//! - `room --members M --senders K --rate R --secs S`: one public room, K
//!   of its members sending at R msgs/s in all.
//! - `files [--size BYTES] [--scratch-dir DIR]`: one file (1 GiB) up and
//!   down through the file endpoints, the server's RSS meanwhile, and the
//!   same disk's copy and write rates beside them.
//!
//! Several nodes of a cluster (docs/cluster.md): `--url` and `--server-pid`
//! repeated. Sessions go round-robin over the nodes by client index, so in
//! `dm` every pair straddles two nodes unless `--same-node` keeps each pair
//! together; accounts are made through the first URL; server figures are
//! summed over the pids.
//!
//! A table goes to stdout, or with `--json` exactly one JSON object;
//! progress and errors go to stderr.

mod auth;
mod net;
mod placement;
mod precise;
mod report;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::auth::{Auth, default_cache_path};
use crate::net::{Target, source_addrs};
use crate::placement::Placement;
use crate::report::Report;
use crate::scenarios::{Common, FileParams, MsgParams};

#[derive(Parser)]
#[command(
    name = "confab-bench",
    version,
    about = "Load generator for confab (or any server of its wire contract)"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct CommonArgs {
    /// Base URL of the server; repeated for the nodes of a cluster, which
    /// get the sessions round-robin (accounts are made through the first).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    /// The server's process id: its CPU time and memory are read from /proc.
    /// Repeated for a cluster, in the order of `--url`: figures are summed.
    #[arg(long, global = true)]
    server_pid: Vec<u32>,
    /// Print exactly one JSON object on stdout (everything else on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Users are named `<prefix>-<n>`, n from 0.
    #[arg(long, global = true, default_value = "bench")]
    user_prefix: String,
    /// The password of every benchmark user.
    #[arg(long, global = true, default_value = "bench-password-1")]
    password: String,
    /// Spread client sockets over the source addresses 127.0.0.1 .. 127.0.0.K
    /// (when ephemeral ports run out).
    #[arg(long, global = true, default_value_t = 1)]
    source_addrs: u8,
    /// Token cache file (default: under the temp dir, named after the URL).
    #[arg(long, global = true)]
    token_cache: Option<PathBuf>,
    /// Handshakes in progress at once.
    #[arg(long, global = true, default_value_t = 128)]
    connect_concurrency: usize,
    /// Registrations and logins in progress at once (each costs an argon2 hash).
    #[arg(long, global = true, default_value_t = 8)]
    auth_concurrency: usize,
    /// Worker threads of the tool (default: the number of cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Scheduling policy of the tool's threads.
    #[arg(long, global = true, value_enum, default_value_t = Sched::Batch)]
    sched: Sched,
}

/// How the tool's threads are scheduled beside the server they measure.
#[derive(Clone, Copy, ValueEnum)]
enum Sched {
    /// SCHED_BATCH: a tool thread woken by the server's writes waits for
    /// the running thread's time slice instead of preempting it.
    Batch,
    /// The system's default policy.
    Normal,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hold N authenticated sessions; connect time, failures, server memory
    /// per session (from VmRSS: most telling on a freshly started server,
    /// since freed memory is seldom given back to the system).
    Connect {
        #[arg(long)]
        clients: usize,
        /// Seconds to hold the sessions idle before measuring the server's memory.
        #[arg(long, default_value_t = 1.0)]
        hold_secs: f64,
    },
    /// Private messages between pairs of clients (2i <-> 2i+1).
    Dm {
        #[arg(long)]
        clients: usize,
        /// With several URLs: both members of pair k on node k % n (by
        /// default they are on different nodes, so every message crosses
        /// the broker).
        #[arg(long)]
        same_node: bool,
        #[command(flatten)]
        msg: MsgArgs,
    },
    /// One public room; some of its members send.
    Room {
        #[arg(long)]
        members: usize,
        #[arg(long)]
        senders: usize,
        #[command(flatten)]
        msg: MsgArgs,
    },
    /// One file up (`POST /api/v1/files`, streamed from disk) and down (its
    /// signed link, hashed): MB/s, the server's RSS during each, and the
    /// disk's own copy, write and hash rates for the same bytes.
    Files {
        /// The file's size: bytes, or with KiB, MiB, GiB (or kB, MB, GB).
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        size: u64,
        /// Where the file and the disk's baselines are written: a folder on
        /// the disk of the server's data folder (default: the temp dir).
        #[arg(long)]
        scratch_dir: Option<PathBuf>,
        /// Milliseconds between readings of the server's RSS.
        #[arg(long, default_value_t = 50)]
        sample_ms: u64,
    },
}

/// A size in bytes: a number with an optional binary (KiB, MiB, GiB) or
/// decimal (kB, MB, GB) unit.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: a size is a number of bytes, e.g. 1GiB or 500MB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (KiB, MiB, GiB, kB, MB, GB)"
            ));
        }
    };
    match n.checked_mul(scale) {
        Some(0) => Err("the size must be at least one byte".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{text:?} is too large")),
    }
}

#[derive(Args, Clone)]
struct MsgArgs {
    /// Messages per second in all, spread over the senders (open loop);
    /// 0 for closed loop.
    #[arg(long)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long)]
    secs: f64,
    /// Closed loop: messages in flight per sender.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Message body length in characters.
    #[arg(long, default_value_t = 32)]
    body_size: usize,
    /// At the end, stop waiting for replies and deliveries once nothing
    /// arrived for this many seconds.
    #[arg(long, default_value_t = 2.0)]
    drain_secs: f64,
}

impl MsgArgs {
    fn params(&self) -> MsgParams {
        MsgParams {
            rate: self.rate,
            secs: self.secs,
            in_flight: self.in_flight,
            body_size: self.body_size.clamp(1, 4000),
            drain_secs: self.drain_secs,
        }
    }

    fn json(&self) -> Value {
        json!({
            "rate": self.rate,
            "mode": if self.rate > 0.0 { "open_loop" } else { "closed_loop" },
            "secs": self.secs,
            "in_flight": if self.rate > 0.0 { Value::Null } else { json!(self.in_flight) },
            "body_size": self.body_size,
            "drain_secs": self.drain_secs,
        })
    }
}

fn main() {
    let cli = Cli::parse();
    // Before any thread starts: threads inherit their creator's policy.
    if let Sched::Batch = cli.common.sched
        && let Err(e) = batch_scheduling()
    {
        eprintln!("confab-bench: SCHED_BATCH refused ({e}); the default policy stays");
    }
    let threads = cli
        .common
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let json_out = cli.common.json;
    match rt.block_on(run(cli)) {
        Ok(report) => {
            if json_out {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            rt.shutdown_timeout(std::time::Duration::from_millis(200));
        }
        Err(e) => {
            eprintln!("confab-bench: {e:#}");
            if json_out {
                println!("{}", json!({"error": format!("{e:#}")}));
            }
            rt.shutdown_timeout(std::time::Duration::from_millis(200));
            std::process::exit(1);
        }
    }
}

/// Puts this thread, and every thread it starts from now on, under
/// SCHED_BATCH. With the tool and the server on the same two cores, each
/// write of the server woke a reader of the tool that preempted the
/// server's worker: a context switch each way, the largest item in both
/// processes' profiles of the open loop.
#[cfg(target_os = "linux")]
fn batch_scheduling() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread, and `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn batch_scheduling() -> std::io::Result<()> {
    Err(std::io::Error::other("SCHED_BATCH is Linux's"))
}

/// The calling thread's scheduling policy, as the report names it.
fn policy() -> &'static str {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pid 0 is the calling thread; nothing else is passed.
        match unsafe { libc::sched_getscheduler(0) } {
            libc::SCHED_BATCH => "batch",
            libc::SCHED_OTHER => "normal",
            _ => "other",
        }
    }
    #[cfg(not(target_os = "linux"))]
    "normal"
}

async fn run(cli: Cli) -> Result<Report> {
    // Read on a worker thread: the policy the scenarios actually run under.
    let sched = tokio::spawn(async { policy() }).await?;
    let a = &cli.common;
    let mut targets = Vec::with_capacity(a.url.len());
    for url in &a.url {
        targets.push(Target::parse(url).await?);
    }
    let first = targets[0].clone();
    let sources = source_addrs(a.source_addrs);
    if !sources.is_empty()
        && targets
            .iter()
            .any(|t| !t.addr.is_ipv4() || !t.addr.ip().is_loopback())
    {
        anyhow::bail!("--source-addrs spreads over 127.0.0.x: only for a server on 127.0.0.1");
    }
    // Tokens must outlive the run (with a minute to spare).
    let run_secs = match &cli.cmd {
        Cmd::Connect { hold_secs, .. } => *hold_secs,
        Cmd::Dm { msg, .. } | Cmd::Room { msg, .. } => msg.secs + msg.drain_secs,
        // An upload and a download of a large file on a slow disk.
        Cmd::Files { .. } => 3600.0,
    };
    let min_valid_secs = run_secs.clamp(0.0, 1e9) as i64 + 120;
    let cache = a
        .token_cache
        .clone()
        .unwrap_or_else(|| default_cache_path(&first.base));
    let auth = Arc::new(Auth::new(
        &first.base,
        &a.password,
        &cache,
        &sources,
        a.auth_concurrency,
        min_valid_secs,
    )?);
    // One node: the parameters read as they always have.
    let server_pid = match a.server_pid.as_slice() {
        [] => Value::Null,
        [pid] => json!(pid),
        pids => json!(pids),
    };
    let mut params = json!({
        "url": first.base,
        "server_pid": server_pid,
        "user_prefix": a.user_prefix,
        "source_addrs": a.source_addrs,
        "token_cache": cache.display().to_string(),
        "sched": sched,
    });
    let add = |params: &mut Value, extra: Value| {
        if let (Some(p), Value::Object(e)) = (params.as_object_mut(), extra) {
            p.extend(e);
        }
    };
    if targets.len() > 1 {
        let urls: Vec<&str> = targets.iter().map(|t| t.base.as_str()).collect();
        add(&mut params, json!({"urls": urls}));
    }
    match &cli.cmd {
        Cmd::Connect { clients, hold_secs } => add(
            &mut params,
            json!({"clients": clients, "hold_secs": hold_secs}),
        ),
        Cmd::Dm {
            clients,
            same_node,
            msg,
        } => {
            add(&mut params, json!({"clients": clients}));
            if targets.len() > 1 {
                add(&mut params, json!({"same_node": same_node}));
            }
            add(&mut params, msg.json());
        }
        Cmd::Room {
            members,
            senders,
            msg,
        } => {
            add(&mut params, json!({"members": members, "senders": senders}));
            add(&mut params, msg.json());
        }
        Cmd::Files {
            size,
            scratch_dir,
            sample_ms,
        } => add(
            &mut params,
            json!({
                "size": size,
                "scratch_dir": scratch_dir.clone().unwrap_or_else(std::env::temp_dir).display().to_string(),
                "sample_ms": sample_ms,
            }),
        ),
    }
    let placement = match &cli.cmd {
        Cmd::Dm {
            same_node: true, ..
        } => Placement::SamePairNode,
        _ => Placement::RoundRobin,
    };
    if a.server_pid.len() > 1 && a.server_pid.len() != targets.len() {
        eprintln!(
            "confab-bench: {} --server-pid for {} --url: per-node figures need one pid per URL, in order",
            a.server_pid.len(),
            targets.len()
        );
    }
    let common = Common {
        targets,
        placement,
        server_pids: a.server_pid.clone(),
        auth,
        sources,
        connect_concurrency: a.connect_concurrency,
        prefix: a.user_prefix.clone(),
        params,
    };
    match cli.cmd {
        Cmd::Connect { clients, hold_secs } => scenarios::connect(common, clients, hold_secs).await,
        Cmd::Dm { clients, msg, .. } => scenarios::dm(common, clients, msg.params()).await,
        Cmd::Room {
            members,
            senders,
            msg,
        } => scenarios::room(common, members, senders, msg.params()).await,
        Cmd::Files {
            size,
            scratch_dir,
            sample_ms,
        } => {
            let params = FileParams {
                size,
                scratch: scratch_dir.unwrap_or_else(std::env::temp_dir),
                sample_every: std::time::Duration::from_millis(sample_ms.max(1)),
            };
            scenarios::files(common, params).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_with_their_units() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1 TiB").is_err());
        assert!(parse_size("GiB").is_err());
    }
}
