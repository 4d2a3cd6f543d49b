//! What the server processes and the tool spent between two marks: CPU,
//! context switches per thread, memory per session.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

use super::Common;
use crate::report::Report;
use crate::stats::{ProcSample, ThreadTimes, proc_sample, round, self_usage};

/// Process figures at the start of a measured phase.
pub(super) struct Mark {
    pub(super) at: Instant,
    /// One sample per server pid, in order (None: unreadable).
    server: Vec<Option<ProcSample>>,
    tool_cpu: f64,
}

pub(super) fn mark(pids: &[u32]) -> Mark {
    Mark {
        at: Instant::now(),
        server: pids.iter().map(|&p| proc_sample(p)).collect(),
        tool_cpu: self_usage().0,
    }
}

/// The (from, to) samples of every server pid, if all were readable.
pub(super) fn sample_pairs(from: &Mark, to: &Mark) -> Option<Vec<(ProcSample, ProcSample)>> {
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
pub(super) fn usage(c: &Common, from: &Mark, to: &Mark, per: &[(&str, u64)], report: &mut Report) {
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
pub(super) fn memory_figures(before_kib: u64, idle_kib: u64, sessions: usize) -> Value {
    json!({
        "rss_before_kib": before_kib,
        "rss_idle_kib": idle_kib,
        "growth_kib": idle_kib as i64 - before_kib as i64,
        "bytes_per_session": per_session(before_kib, idle_kib, sessions),
    })
}

/// Bytes of RSS growth per session, or null without sessions.
pub(super) fn per_session(before_kib: u64, idle_kib: u64, sessions: usize) -> Value {
    match sessions {
        0 => Value::Null,
        n => json!((idle_kib as i64 - before_kib as i64) * 1024 / n as i64),
    }
}
