//! Counters and latency histograms shared by the sessions of one run, the
//! per-session delivery bookkeeping, and the process figures read from
//! `/proc` and `getrusage`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Shards of the latency histograms: sessions record into `idx % SHARDS`, so
/// the locks are rarely contended and memory does not grow with sessions.
const SHARDS: usize = 16;
/// Largest latency recorded exactly: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("histogram bounds")
}

/// Figures shared by every session of a run.
pub struct Stats {
    /// The time every timestamp of the run counts from.
    pub epoch: Instant,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub errored: AtomicU64,
    pub delivered: AtomicU64,
    /// Every frame received, of any kind (used to see when traffic settles).
    pub frames: AtomicU64,
    /// Microseconds since `epoch` of the last ack and the last delivery.
    pub last_ack_us: AtomicU64,
    pub last_delivery_us: AtomicU64,
    shards: Vec<Mutex<Shard>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

struct Shard {
    ack: Histogram<u64>,
    delivery: Histogram<u64>,
    connect: Histogram<u64>,
}

/// Which histogram a sample goes to.
#[derive(Clone, Copy)]
pub enum Kind {
    Ack,
    Delivery,
    Connect,
}

impl Stats {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errored: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            last_ack_us: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        ack: new_hist(),
                        delivery: new_hist(),
                        connect: new_hist(),
                    })
                })
                .collect(),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Microseconds since the epoch.
    pub fn now_us(&self) -> u64 {
        self.us_at(Instant::now())
    }

    /// Microseconds from the epoch to `t`.
    pub fn us_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Records one latency sample (microseconds) from session `idx`.
    pub fn record(&self, idx: usize, kind: Kind, us: u64) {
        let mut shard = self.shards[idx % SHARDS].lock().unwrap();
        let h = match kind {
            Kind::Ack => &mut shard.ack,
            Kind::Delivery => &mut shard.delivery,
            Kind::Connect => &mut shard.connect,
        };
        h.saturating_record(us.max(1));
    }

    /// Counts one error under `key` (an error code, a close code, ...).
    pub fn error(&self, key: &str) {
        *self
            .errors
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_insert(0) += 1;
    }

    /// The errors counted so far, by key.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap().clone()
    }

    /// The merged histogram of one kind.
    pub fn merged(&self, kind: Kind) -> Histogram<u64> {
        let mut all = new_hist();
        for shard in &self.shards {
            let shard = shard.lock().unwrap();
            let h = match kind {
                Kind::Ack => &shard.ack,
                Kind::Delivery => &shard.delivery,
                Kind::Connect => &shard.connect,
            };
            all.add(h).expect("same bounds");
        }
        all
    }

    /// Percentile summary of one kind, in microseconds.
    pub fn latency(&self, kind: Kind) -> Value {
        summary(&self.merged(kind))
    }
}

/// count, min, mean, p50, p90, p99, p99.9 and max of a histogram (µs).
pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0, "min": null, "mean": null, "p50": null, "p90": null,
            "p99": null, "p999": null, "max": null});
    }
    json!({
        "count": h.len(),
        "min": h.min(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// Atomically raises `a` to at least `v`.
pub fn raise(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::Relaxed);
}

/// A growable set of small integers (message numbers of one sender).
#[derive(Default, Clone)]
pub struct BitSet(Vec<u64>);

impl BitSet {
    /// Adds `n`; returns whether it was already there.
    pub fn insert(&mut self, n: u64) -> bool {
        let (w, b) = ((n / 64) as usize, n % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        let had = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        had
    }

    /// How many members there are.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// How many members of `self` are not in `other`.
    pub fn count_missing_from(&self, other: Option<&BitSet>) -> u64 {
        let empty = BitSet::default();
        let other = other.unwrap_or(&empty);
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.0.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }
}

/// CPU time and memory of another process, from `/proc`.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_secs: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; None when unreadable.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields
    // from after the last ')'; field 3 (state) is the first one there.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tick = if tick > 0 { tick as f64 } else { 100.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(ProcSample {
        cpu_secs: (utime + stime) as f64 / tick,
        rss_kib,
    })
}

/// This process's CPU time (user + system, seconds) and peak RSS (KiB).
pub fn self_usage() -> (f64, u64) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (0.0, 0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime) + secs(ru.ru_stime), ru.ru_maxrss as u64)
}

/// Rounds to `d` decimals for display.
pub fn round(x: f64, d: i32) -> f64 {
    let p = 10f64.powi(d);
    (x * p).round() / p
}
