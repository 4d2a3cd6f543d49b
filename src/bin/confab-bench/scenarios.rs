//! The three scenarios: `connect`, `dm` and `room`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::auth::{Account, Auth};
use crate::net::{ConnectError, Ctx, ReaderOut, Session, Target, open};
use crate::placement::Placement;
use crate::precise;
use crate::report::Report;
use crate::stats::{Kind, ProcSample, Stats, ThreadTimes, proc_sample, round, self_usage};

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

/// Process figures at the start of a measured phase.
struct Mark {
    at: Instant,
    /// One sample per server pid, in order (None: unreadable).
    server: Vec<Option<ProcSample>>,
    tool_cpu: f64,
}

fn mark(pids: &[u32]) -> Mark {
    Mark {
        at: Instant::now(),
        server: pids.iter().map(|&p| proc_sample(p)).collect(),
        tool_cpu: self_usage().0,
    }
}

/// The (from, to) samples of every server pid, if all were readable.
fn sample_pairs(from: &Mark, to: &Mark) -> Option<Vec<(ProcSample, ProcSample)>> {
    if from.server.is_empty() {
        return None;
    }
    from.server
        .iter()
        .zip(&to.server)
        .map(|(a, b)| Some((a.clone()?, b.clone()?)))
        .collect()
}

/// Server and tool figures between two marks; `per` names the unit the
/// server's CPU is divided by (e.g. `msg`), `count` how many there were.
fn usage(c: &Common, from: &Mark, to: &Mark, per: &[(&str, u64)], report: &mut Report) {
    let wall = to.at.duration_since(from.at).as_secs_f64().max(1e-9);
    report.top("measured_secs", json!(round(wall, 3)));
    match (c.server_pids.as_slice(), sample_pairs(from, to)) {
        ([], _) => report.top("server", Value::Null),
        (pids, Some(pairs)) => {
            let cpu_of = |(a, b): &(ProcSample, ProcSample)| (b.cpu_secs - a.cpu_secs).max(0.0);
            let cpu: f64 = pairs.iter().map(cpu_of).sum();
            let mut server = serde_json::Map::new();
            match pids {
                [pid] => server.insert("pid".into(), json!(pid)),
                _ => server.insert("pids".into(), json!(pids)),
            };
            server.insert("cpu_secs".into(), json!(round(cpu, 3)));
            server.insert("cpu_cores".into(), json!(round(cpu / wall, 3)));
            for (unit, count) in per {
                let v = if *count > 0 {
                    json!(round(cpu * 1e6 / *count as f64, 2))
                } else {
                    Value::Null
                };
                server.insert(format!("cpu_us_per_{unit}"), v);
            }
            let rss_before: u64 = pairs.iter().map(|(a, _)| a.rss_kib).sum();
            let rss_after: u64 = pairs.iter().map(|(_, b)| b.rss_kib).sum();
            server.insert("rss_before_kib".into(), json!(rss_before));
            server.insert("rss_after_kib".into(), json!(rss_after));
            report.top("server", Value::Object(server));
            report.top("server_threads", thread_figures(&pairs, wall, per));
            if pids.len() > 1 {
                let each: Vec<Value> = pids
                    .iter()
                    .zip(&pairs)
                    .map(|(pid, pair)| {
                        let cpu = cpu_of(pair);
                        json!({
                            "pid": pid,
                            "cpu_secs": round(cpu, 3),
                            "cpu_cores": round(cpu / wall, 3),
                            "rss_before_kib": pair.0.rss_kib,
                            "rss_after_kib": pair.1.rss_kib,
                        })
                    })
                    .collect();
                report.top("server_per_pid", json!(each));
            }
        }
        (pids, None) => {
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            report.warn(format!(
                "cannot read /proc/{{{}}}: no server figures",
                pids.join(",")
            ));
            report.top("server", Value::Null);
        }
    }
    let tool_cpu = (to.tool_cpu - from.tool_cpu).max(0.0);
    let frac = tool_cpu / wall;
    let (_, peak) = self_usage();
    let busy = frac >= 0.8;
    report.top(
        "tool",
        json!({
            "cpu_secs": round(tool_cpu, 3),
            "cpu_cores": round(frac, 3),
            "peak_rss_kib": peak,
            "near_full_core": busy,
        }),
    );
    if busy {
        report.warn(format!(
            "the load generator used {:.0}% of a core during the measured phase: it may be the bottleneck",
            frac * 100.0
        ));
    }
}

/// CPU and context switches between two samples per thread name, summed
/// over the pids: which thread (writer, async workers, checkpointer) a
/// change moved, where the process's total mixes them. A thread that
/// started meanwhile counts from zero; one that ended is left out.
fn thread_figures(pairs: &[(ProcSample, ProcSample)], wall: f64, per: &[(&str, u64)]) -> Value {
    let mut sums = BTreeMap::<&str, ThreadTimes>::new();
    for (from, to) in pairs {
        for (name, b) in &to.threads {
            let a = from.threads.get(name).copied().unwrap_or_default();
            let sum = sums.entry(name).or_default();
            sum.cpu_secs += (b.cpu_secs - a.cpu_secs).max(0.0);
            sum.voluntary_switches += b.voluntary_switches.saturating_sub(a.voluntary_switches);
            sum.involuntary_switches += b
                .involuntary_switches
                .saturating_sub(a.involuntary_switches);
        }
    }
    let each = sums.into_iter().map(|(name, t)| {
        let mut m = serde_json::Map::new();
        m.insert("cpu_cores".into(), json!(round(t.cpu_secs / wall, 3)));
        for (unit, count) in per {
            let v = (*count > 0).then(|| round(t.cpu_secs * 1e6 / *count as f64, 2));
            m.insert(format!("cpu_us_per_{unit}"), json!(v));
        }
        let rate = |n: u64| round(n as f64 / wall, 0);
        m.insert(
            "voluntary_switches_per_sec".into(),
            json!(rate(t.voluntary_switches)),
        );
        m.insert(
            "involuntary_switches_per_sec".into(),
            json!(rate(t.involuntary_switches)),
        );
        (name.to_owned(), Value::Object(m))
    });
    Value::Object(each.collect())
}

/// RSS growth of a server (or the sum of several) while `sessions` connected.
fn memory_figures(before_kib: u64, idle_kib: u64, sessions: usize) -> Value {
    json!({
        "rss_before_kib": before_kib,
        "rss_idle_kib": idle_kib,
        "growth_kib": idle_kib as i64 - before_kib as i64,
        "bytes_per_session": per_session(before_kib, idle_kib, sessions),
    })
}

/// Bytes of RSS growth per session, or null without sessions.
fn per_session(before_kib: u64, idle_kib: u64, sessions: usize) -> Value {
    match sessions {
        0 => Value::Null,
        n => json!((idle_kib as i64 - before_kib as i64) * 1024 / n as i64),
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

/// `connect`: N sessions held open; connect time, failures, server memory
/// per session.
pub async fn connect(c: Common, clients: usize, hold_secs: f64) -> Result<Report> {
    let mut report = Report::new("connect", c.params.clone());
    // Before signing in: a server may keep the memory that traffic made it
    // take and give it to the sessions, which then seem to cost less.
    let at_start = mark(&c.server_pids);
    let accounts = accounts(&c, clients, &mut report).await?;
    let ctx = new_ctx();
    let before = mark(&c.server_pids);
    let sessions = connect_all(&c, &accounts, &ctx, &mut report).await;
    let connected_at = mark(&c.server_pids);
    // Idle: let presence and other events of the connects pass first.
    settle(
        &ctx.stats,
        Duration::from_millis(300),
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_secs_f64(hold_secs.max(0.0))).await;
    let idle = mark(&c.server_pids);
    let sessions: Vec<Session> = sessions.into_iter().flatten().collect();
    let connected = sessions.len();
    let open = sessions.iter().filter(|s| !s.reader.is_finished()).count();
    let failures = report.setup.get("connect_failures").cloned();
    let connect_secs = report.setup.get("connect_secs").cloned();
    report.top("connected", json!(connected));
    report.top("failed", json!(clients - connected));
    report.top("open_after_hold", json!(open));
    report.top("connect_secs", connect_secs.unwrap_or(Value::Null));
    report.top("connect_latency_us", ctx.stats.latency(Kind::Connect));
    report.top("errors", failures.unwrap_or_else(|| json!({})));
    match sample_pairs(&before, &idle) {
        Some(pairs) => {
            let rss_before: u64 = pairs.iter().map(|(a, _)| a.rss_kib).sum();
            let rss_idle: u64 = pairs.iter().map(|(_, b)| b.rss_kib).sum();
            let mut figures = memory_figures(rss_before, rss_idle, connected);
            if let (Some(start), Some(m)) =
                (sample_pairs(&at_start, &idle), figures.as_object_mut())
            {
                let rss_start: u64 = start.iter().map(|(a, _)| a.rss_kib).sum();
                m.insert("rss_at_start_kib".into(), json!(rss_start));
                m.insert(
                    "bytes_per_session_from_start".into(),
                    per_session(rss_start, rss_idle, connected),
                );
            }
            report.top("server_memory", figures);
            if c.several_nodes() && pairs.len() == c.targets.len() {
                let per_node = c.per_node(sessions.iter().map(|s| s.idx));
                let nodes: Vec<Value> = c
                    .targets
                    .iter()
                    .zip(&c.server_pids)
                    .zip(pairs.iter().zip(per_node))
                    .map(|((t, pid), ((a, b), n))| {
                        let mut v = memory_figures(a.rss_kib, b.rss_kib, n);
                        if let Some(m) = v.as_object_mut() {
                            m.insert("url".into(), json!(t.base));
                            m.insert("pid".into(), json!(pid));
                            m.insert("sessions".into(), json!(n));
                        }
                        v
                    })
                    .collect();
                report.top("server_memory_per_node", json!(nodes));
            }
        }
        None => report.top("server_memory", Value::Null),
    }
    usage(
        &c,
        &before,
        &connected_at,
        &[("session", connected as u64)],
        &mut report,
    );
    if open < connected {
        report.warn(format!(
            "{} sessions were closed by the server during the hold: {:?}",
            connected - open,
            ctx.stats.errors()
        ));
    }
    ctx.stop.cancel();
    close_all(sessions).await;
    Ok(report)
}

/// How one client sends: frame layout and its own index.
struct Sender {
    s: u32,
    head: String,
    target: String,
    body: String,
    nonce: String,
}

impl Sender {
    fn frame(&self, n: u64, t: u64) -> Message {
        Message::text(format!(
            "{}m{n}.{t}\",\"content\":{{{},\"body\":{},\"clientMsgId\":\"{}{}.{n}.{t}\"}}}}",
            self.head, self.target, self.body, self.nonce, self.s
        ))
    }
}

fn body_json(size: usize) -> String {
    let mut body = String::from("bench ");
    while body.len() < size {
        body.push((b'a' + (body.len() % 26) as u8) as char);
    }
    body.truncate(size.max(1));
    serde_json::to_string(&body).expect("string")
}

/// Sends until `end`: open loop at `rate` msgs/s (scheduled times are the
/// timestamps, so a stall counts as latency), or closed loop with
/// `in_flight` outstanding. Returns how many were sent.
async fn send_loop(
    session: &mut Session,
    sender: &Sender,
    stats: &Stats,
    start: Instant,
    end: Instant,
    rate: f64,
    in_flight: usize,
) -> u64 {
    let mut n = 0u64;
    if rate > 0.0 {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut next = start + interval.mul_f64(rand::random::<f64>());
        while next < end {
            precise::sleep_until(next).await;
            let now = Instant::now();
            stats.record_since(
                session.idx,
                Kind::SendLag,
                stats.us_at(next),
                stats.us_at(now),
            );
            let mut batch = 0;
            while next <= now && next < end {
                let t = stats.us_at(next);
                if session.sink.feed(sender.frame(n, t)).await.is_err() {
                    stats.error("send_failed");
                    return n;
                }
                n += 1;
                batch += 1;
                next += interval;
            }
            stats.sent.fetch_add(batch, Ordering::Relaxed);
            if session.sink.flush().await.is_err() {
                stats.error("send_failed");
                return n;
            }
        }
    } else {
        session.permits.add_permits(in_flight.max(1));
        loop {
            let permit = tokio::select! {
                p = session.permits.acquire() => p,
                _ = tokio::time::sleep_until(end.into()) => break,
            };
            let Ok(permit) = permit else { break };
            permit.forget();
            let mut k = 1;
            while let Ok(p) = session.permits.try_acquire() {
                p.forget();
                k += 1;
            }
            let t = stats.now_us();
            for _ in 0..k {
                if session.sink.feed(sender.frame(n, t)).await.is_err() {
                    stats.error("send_failed");
                    return n;
                }
                n += 1;
            }
            stats.sent.fetch_add(k, Ordering::Relaxed);
            if session.sink.flush().await.is_err() {
                stats.error("send_failed");
                return n;
            }
            if Instant::now() >= end {
                break;
            }
        }
    }
    n
}

/// Runs the senders, drains, stops the readers; returns the sessions (for
/// closing), their reader results by client index, and the marks.
async fn run_phase(
    c: &Common,
    ctx: &Arc<Ctx>,
    mut sessions: Vec<Session>,
    senders: Vec<(usize, Sender)>,
    p: &MsgParams,
    fanout: u64,
    report: &mut Report,
) -> (Vec<Session>, BTreeMap<usize, ReaderOut>, Mark, Mark) {
    let stats = ctx.stats.clone();
    let nsenders = senders.len().max(1);
    let per_sender_rate = p.rate / nsenders as f64;
    eprintln!(
        "confab-bench: sending for {} s from {} senders ({})",
        p.secs,
        senders.len(),
        if p.rate > 0.0 {
            format!("open loop, {} msgs/s in all", p.rate)
        } else {
            format!("closed loop, {} in flight each", p.in_flight)
        }
    );
    let start_mark = mark(&c.server_pids);
    let start = start_mark.at;
    let end = start + Duration::from_secs_f64(p.secs);
    let mut by_idx: BTreeMap<usize, Session> = sessions.drain(..).map(|s| (s.idx, s)).collect();
    let mut tasks = Vec::new();
    for (idx, sender) in senders {
        let Some(mut session) = by_idx.remove(&idx) else {
            continue;
        };
        let stats = stats.clone();
        let in_flight = p.in_flight;
        tasks.push(tokio::spawn(async move {
            send_loop(
                &mut session,
                &sender,
                &stats,
                start,
                end,
                per_sender_rate,
                in_flight,
            )
            .await;
            session
        }));
    }
    let mut sessions: Vec<Session> = by_idx.into_values().collect();
    for t in tasks {
        if let Ok(s) = t.await {
            sessions.push(s);
        }
    }
    let send_end = Instant::now();
    // Drain: until every request is answered and every acked message
    // delivered, or nothing moved for drain_secs.
    let idle = Duration::from_secs_f64(p.drain_secs.max(0.0));
    let mut last = (u64::MAX, u64::MAX);
    let mut since = Instant::now();
    loop {
        let sent = stats.sent.load(Ordering::Relaxed);
        let acked = stats.acked.load(Ordering::Relaxed);
        let replied = acked + stats.errored.load(Ordering::Relaxed);
        let delivered = stats.delivered.load(Ordering::Relaxed);
        if replied >= sent && delivered >= acked * fanout {
            break;
        }
        if (replied, delivered) != last {
            last = (replied, delivered);
            since = Instant::now();
        } else if since.elapsed() >= idle {
            break;
        }
        if send_end.elapsed() > Duration::from_secs(300) {
            report.warn("drain stopped after 300 s".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end_mark = mark(&c.server_pids);
    report.top(
        "send_secs",
        json!(round(send_end.duration_since(start).as_secs_f64(), 3)),
    );
    report.top(
        "drain_secs",
        json!(round(end_mark.at.duration_since(send_end).as_secs_f64(), 3)),
    );
    ctx.stop.cancel();
    let mut outs = BTreeMap::new();
    let mut kept = Vec::new();
    for mut s in sessions {
        let out = (&mut s.reader).await.unwrap_or_default();
        outs.insert(s.idx, out);
        kept.push(s);
    }
    (kept, outs, start_mark, end_mark)
}

/// Acked messages that did not reach a session that should have had them.
struct Losses {
    /// Its name in the report.
    key: &'static str,
    lost: u64,
    /// Deliveries of messages whose sender got no ack.
    without_ack: u64,
}

/// The figures common to `dm` and `room` after a run.
fn message_figures(
    ctx: &Ctx,
    p: &MsgParams,
    start: &Mark,
    losses: Losses,
    senders: &[usize],
    outs: &BTreeMap<usize, ReaderOut>,
    report: &mut Report,
) -> (u64, u64) {
    let Losses {
        key: lost_key,
        lost,
        without_ack,
    } = losses;
    let stats = &ctx.stats;
    let sent = stats.sent.load(Ordering::Relaxed);
    let acked = stats.acked.load(Ordering::Relaxed);
    let errored = stats.errored.load(Ordering::Relaxed);
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let t0 = stats.us_at(start.at);
    let span = |last_us: u64| {
        let secs = last_us.saturating_sub(t0) as f64 / 1e6;
        secs.max(p.secs).max(1e-9)
    };
    report.top("sent", json!(sent));
    report.top("acked", json!(acked));
    report.top("delivered", json!(delivered));
    report.top(
        "acked_per_sec",
        json!(round(
            acked as f64 / span(stats.last_ack_us.load(Ordering::Relaxed)),
            1
        )),
    );
    report.top(
        "delivered_per_sec",
        json!(round(
            delivered as f64 / span(stats.last_delivery_us.load(Ordering::Relaxed)),
            1
        )),
    );
    report.top("ack_latency_us", stats.latency(Kind::Ack));
    report.top("delivery_latency_us", stats.latency(Kind::Delivery));
    if p.rate > 0.0 {
        report.top("send_lag_latency_us", stats.latency(Kind::SendLag));
    }
    report.top("slowest_windows", stats.slow_windows(t0, 5));
    let errors = stats.errors();
    if errors.contains_key("rate_limited") {
        report.warn(
            "the server rate-limited requests: start it with a high per-connection rate \
             (confab: CONFAB_RATE_PER_SEC / CONFAB_RATE_BURST)"
                .into(),
        );
    }
    report.top("errors", json!(errors));
    report.top(lost_key, json!(lost));
    report.top("delivered_without_ack", json!(without_ack));
    report.top("unanswered", json!(sent.saturating_sub(acked + errored)));
    report.top(
        "duplicates",
        json!(outs.values().map(|o| o.duplicates).sum::<u64>()),
    );
    report.top(
        "out_of_order",
        json!(outs.values().map(|o| o.out_of_order).sum::<u64>()),
    );
    // Fairness: how the acks were spread over the senders.
    let mut per_sender: Vec<u64> = senders
        .iter()
        .map(|s| outs.get(s).map_or(0, |o| o.acked.len()))
        .collect();
    per_sender.sort_unstable();
    report.top(
        "acked_per_sender",
        match per_sender.len() {
            0 => Value::Null,
            n => json!({
                "min": per_sender[0],
                "p10": per_sender[n / 10],
                "p50": per_sender[n / 2],
                "max": per_sender[n - 1],
            }),
        },
    );
    let ended = outs.values().filter(|o| o.ended.is_some()).count();
    report.top("sessions_closed_early", json!(ended));
    if lost > 0 {
        report.warn(format!("{lost} acknowledged deliveries never arrived"));
    }
    (acked, delivered)
}

/// `dm`: clients in pairs, 2i and 2i+1 messaging each other.
pub async fn dm(c: Common, clients: usize, p: MsgParams) -> Result<Report> {
    if clients < 2 || !clients.is_multiple_of(2) {
        bail!("--clients must be an even number of at least 2");
    }
    let mut report = Report::new("dm", c.params.clone());
    let accounts = accounts(&c, clients, &mut report).await?;
    let ctx = new_ctx();
    let sessions = connect_all(&c, &accounts, &ctx, &mut report).await;
    let up: Vec<bool> = sessions.iter().map(Option::is_some).collect();
    let sessions: Vec<Session> = sessions.into_iter().flatten().collect();
    let body = body_json(p.body_size);
    let mut senders = Vec::new();
    for i in 0..clients {
        let peer = i ^ 1;
        if up[i] && up[peer] {
            senders.push((
                i,
                Sender {
                    s: i as u32,
                    head: r#"{"type":"sendPrivateMessage","id":""#.to_owned(),
                    target: format!("\"to\":{}", serde_json::to_string(&accounts[peer].id)?),
                    body: body.clone(),
                    nonce: ctx.nonce.clone(),
                },
            ));
        }
    }
    if senders.is_empty() {
        bail!("no connected pair to send with");
    }
    report
        .setup
        .insert("pairs".into(), json!(senders.len() / 2));
    if c.several_nodes() {
        let across = senders
            .iter()
            .filter(|(i, _)| i % 2 == 0 && c.node_of(*i) != c.node_of(i + 1))
            .count();
        report
            .setup
            .insert("pairs_across_nodes".into(), json!(across));
    }
    settle(
        &ctx.stats,
        Duration::from_millis(200),
        Duration::from_secs(10),
    )
    .await;
    let sender_idx: Vec<usize> = senders.iter().map(|(i, _)| *i).collect();
    let (sessions, outs, start, end) =
        run_phase(&c, &ctx, sessions, senders, &p, 1, &mut report).await;
    // Every message that client s had acked must have reached s ^ 1.
    let mut lost = 0;
    let mut without_ack = 0;
    let empty = ReaderOut::default();
    for (&s, out) in &outs {
        let peer = outs.get(&(s ^ 1)).unwrap_or(&empty);
        let got = peer.delivered.get(&(s as u32));
        lost += out.acked.count_missing_from(got);
        if let Some(got) = got {
            without_ack += got.count_missing_from(Some(&out.acked));
        }
    }
    let (acked, _) = message_figures(
        &ctx,
        &p,
        &start,
        Losses {
            key: "never_delivered",
            lost,
            without_ack,
        },
        &sender_idx,
        &outs,
        &mut report,
    );
    usage(&c, &start, &end, &[("msg", acked)], &mut report);
    close_all(sessions).await;
    Ok(report)
}

/// `room`: one public room; `senders` of its members send at `rate`.
pub async fn room(c: Common, members: usize, senders: usize, p: MsgParams) -> Result<Report> {
    if members < 2 || senders < 1 || senders > members {
        bail!("need --members >= 2 and 1 <= --senders <= --members");
    }
    let mut report = Report::new("room", c.params.clone());
    let accounts = accounts(&c, members, &mut report).await?;
    let ctx = new_ctx();
    let sessions = connect_all(&c, &accounts, &ctx, &mut report).await;
    let mut sessions: Vec<Session> = sessions.into_iter().flatten().collect();
    if sessions.len() < 2 {
        bail!("fewer than 2 sessions connected");
    }
    eprintln!(
        "confab-bench: creating the room, {} members joining",
        sessions.len()
    );
    let t = Instant::now();
    let name = format!("bench {}", ctx.nonce.trim_matches('.'));
    let created = sessions[0]
        .ack("createRoom", json!({"name": name, "visibility": "public"}))
        .await?;
    let room_id = created["conversation"]["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("createRoom ack without conversation.id: {created}"))?
        .to_owned();
    let sem = Arc::new(Semaphore::new(64));
    let mut joins = Vec::new();
    let creator = sessions.remove(0);
    for mut s in sessions {
        let sem = sem.clone();
        let room_id = room_id.clone();
        joins.push(tokio::spawn(async move {
            let _p = sem.acquire().await.expect("semaphore");
            let r = s.ack("joinRoom", json!({"conversationId": room_id})).await;
            (s, r)
        }));
    }
    let mut sessions = vec![creator];
    for j in joins {
        let (s, r) = j.await?;
        if let Err(e) = r {
            ctx.stats.error("join_failed");
            eprintln!("confab-bench: {e:#}");
            s.close().await;
            continue;
        }
        sessions.push(s);
    }
    sessions.sort_by_key(|s| s.idx);
    report.setup.insert("room_id".into(), json!(room_id));
    report.setup.insert("members".into(), json!(sessions.len()));
    // Let the join events pass before measuring.
    settle(
        &ctx.stats,
        Duration::from_millis(300),
        Duration::from_secs(60),
    )
    .await;
    report.setup.insert(
        "room_secs".into(),
        json!(round(t.elapsed().as_secs_f64(), 3)),
    );
    let body = body_json(p.body_size);
    let target = format!("\"conversationId\":{}", serde_json::to_string(&room_id)?);
    let member_idx: Vec<usize> = sessions.iter().map(|s| s.idx).collect();
    let sending: Vec<(usize, Sender)> = member_idx
        .iter()
        .take(senders)
        .map(|&i| {
            (
                i,
                Sender {
                    s: i as u32,
                    head: r#"{"type":"sendMessage","id":""#.to_owned(),
                    target: target.clone(),
                    body: body.clone(),
                    nonce: ctx.nonce.clone(),
                },
            )
        })
        .collect();
    report.setup.insert("senders".into(), json!(sending.len()));
    let fanout = (member_idx.len() - 1) as u64;
    let sender_idx: Vec<usize> = sending.iter().map(|(i, _)| *i).collect();
    let (sessions, outs, start, end) =
        run_phase(&c, &ctx, sessions, sending, &p, fanout, &mut report).await;
    // Every message a sender had acked must have reached every other member.
    let mut lost = 0;
    let mut without_ack = 0;
    let empty = ReaderOut::default();
    for &s in &sender_idx {
        let acked = &outs.get(&s).unwrap_or(&empty).acked;
        for &r in &member_idx {
            if r == s {
                continue;
            }
            let got = outs.get(&r).and_then(|o| o.delivered.get(&(s as u32)));
            lost += acked.count_missing_from(got);
            if let Some(got) = got {
                without_ack += got.count_missing_from(Some(acked));
            }
        }
    }
    let (acked, delivered) = message_figures(
        &ctx,
        &p,
        &start,
        Losses {
            key: "lost",
            lost,
            without_ack,
        },
        &sender_idx,
        &outs,
        &mut report,
    );
    usage(
        &c,
        &start,
        &end,
        &[("delivery", delivered), ("msg", acked)],
        &mut report,
    );
    close_all(sessions).await;
    Ok(report)
}
