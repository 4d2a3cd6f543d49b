//! The `connect` scenario: sessions held open, and what they cost.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::usage::{mark, memory_figures, per_session, sample_pairs, usage};
use super::{Common, accounts, close_all, connect_all, new_ctx, settle};
use crate::net::Session;
use crate::report::Report;
use crate::stats::Kind;

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
