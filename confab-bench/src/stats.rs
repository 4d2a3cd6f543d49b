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

/// Deliveries at least this late are also counted by when they were sent,
/// so that a report can tell one stall from a tail spread over the run.
const SLOW_US: u64 = 10_000;
/// Width of those windows of send time.
const WINDOW_US: u64 = 100_000;

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
    send_lag: Histogram<u64>,
    /// By window of send time: slow deliveries, the latest of them, and
    /// the latest an open-loop sender woke (if 10 ms or more).
    slow: BTreeMap<u64, Window>,
}

impl Shard {
    fn histogram(&mut self, kind: Kind) -> &mut Histogram<u64> {
        match kind {
            Kind::Ack => &mut self.ack,
            Kind::Delivery => &mut self.delivery,
            Kind::Connect => &mut self.connect,
            Kind::SendLag => &mut self.send_lag,
        }
    }
}

/// See [`Shard::slow`].
#[derive(Default, Clone, Copy)]
struct Window {
    slow: u64,
    max_us: u64,
    max_lag_us: u64,
}

/// Which histogram a sample goes to.
#[derive(Clone, Copy)]
pub enum Kind {
    Ack,
    Delivery,
    Connect,
    /// How late an open-loop sender woke after a message's scheduled time.
    SendLag,
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
                        send_lag: new_hist(),
                        slow: BTreeMap::new(),
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
        shard.histogram(kind).saturating_record(us.max(1));
    }

    /// Records a delivery (`at` is when its message was sent) or a
    /// sender's wake-up (`at` is when it was due) at `now`, both in
    /// microseconds since the epoch, from session `idx`; a late one is also
    /// kept by its window of `at`.
    pub fn record_since(&self, idx: usize, kind: Kind, at: u64, now: u64) {
        let us = now.saturating_sub(at);
        let mut shard = self.shards[idx % SHARDS].lock().unwrap();
        shard.histogram(kind).saturating_record(us.max(1));
        if us >= SLOW_US {
            let window = shard.slow.entry(at / WINDOW_US).or_default();
            match kind {
                Kind::SendLag => window.max_lag_us = window.max_lag_us.max(us),
                _ => {
                    window.slow += 1;
                    window.max_us = window.max_us.max(us);
                }
            }
        }
    }

    /// The `n` windows of send time with the most slow deliveries, from
    /// `start` (microseconds since the epoch): when each began (ms after
    /// `start`), how many of its deliveries took 10 ms or more, the latest
    /// (ms), and how late a sender woke in it at worst (ms; 0 under 10 ms):
    /// a stall of the tool itself shows there too.
    pub fn slow_windows(&self, start: u64, n: usize) -> Value {
        let mut all: BTreeMap<u64, Window> = BTreeMap::new();
        for shard in &self.shards {
            for (&w, one) in &shard.lock().unwrap().slow {
                let e = all.entry(w).or_default();
                e.slow += one.slow;
                e.max_us = e.max_us.max(one.max_us);
                e.max_lag_us = e.max_lag_us.max(one.max_lag_us);
            }
        }
        let mut windows: Vec<_> = all.into_iter().filter(|(_, w)| w.slow > 0).collect();
        windows.sort_by_key(|&(at, w)| (std::cmp::Reverse(w.slow), at));
        windows.truncate(n);
        windows.sort_by_key(|&(at, _)| at);
        let ms = |us: u64| round(us as f64 / 1e3, 1);
        Value::Array(
            windows
                .into_iter()
                .map(|(at, w)| {
                    let at = (at * WINDOW_US) as i64 - start as i64;
                    json!({"at_ms": at / 1000, "slow": w.slow, "max_ms": ms(w.max_us),
                        "max_send_lag_ms": ms(w.max_lag_us)})
                })
                .collect(),
        )
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
            all.add(&*shard.lock().unwrap().histogram(kind))
                .expect("same bounds");
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
#[derive(Clone, Debug)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_secs: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
    /// The process's threads, summed by name (a name is the kernel's
    /// `comm`, cut to 15 bytes: `tokio-rt-worker`, `confab-sqlite-w`).
    pub threads: BTreeMap<String, ThreadTimes>,
}

/// CPU time and context switches of the threads of one name.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadTimes {
    /// utime + stime, in seconds.
    pub cpu_secs: f64,
    /// Switches away from a thread that waited (for I/O, a lock, a timer).
    pub voluntary_switches: u64,
    /// Switches away from a thread that could have run on.
    pub involuntary_switches: u64,
}

/// The clock ticks per second that `/proc`'s CPU times count in.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if tick > 0 { tick as f64 } else { 100.0 }
}

/// utime + stime, in ticks, from the text of a `stat` file.
fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: count fields
    // from after the last ')'; field 3 (state) is the first one there.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The number after `key` in the text of a `status` file.
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Reads `/proc/PID/stat`, `/proc/PID/status` and its threads' own;
/// None when the process's files are unreadable (a thread that ended
/// while they were read is left out).
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let tick = clock_ticks();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status_field(&status, "VmRSS")?;
    let mut threads = BTreeMap::<String, ThreadTimes>::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = task.path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let (Some(comm), Some(stat), Some(status)) = (read("comm"), read("stat"), read("status"))
        else {
            continue;
        };
        let t = threads.entry(comm.trim_end().to_owned()).or_default();
        t.cpu_secs += stat_ticks(&stat).unwrap_or(0) as f64 / tick;
        t.voluntary_switches += status_field(&status, "voluntary_ctxt_switches").unwrap_or(0);
        t.involuntary_switches += status_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    Some(ProcSample {
        cpu_secs: stat_ticks(&stat)? as f64 / tick,
        rss_kib,
        threads,
    })
}

/// One KiB figure of `/proc/PID/status` (`VmRSS`, `VmHWM`), alone: cheap
/// enough to read every few milliseconds.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, key)
}

/// Restarts the kernel's high-water mark of `pid`'s RSS (`VmHWM`) from its
/// current RSS, so that `VmHWM` later holds a peak since that sampling may
/// have missed (the kernel raises the mark only when it unmaps memory, so
/// it is no more complete than the samples). False when not allowed
/// (another user's process) or not supported.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_past_a_command_name_with_spaces_and_parens() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1000";
        assert_eq!(stat_ticks(stat), Some(325));
        let status = "Name:\tx\nVmRSS:\t  1234 kB\nvoluntary_ctxt_switches:\t17\n\
                      nonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(status_field(status, "VmRSS"), Some(1234));
        assert_eq!(status_field(status, "voluntary_ctxt_switches"), Some(17));
        assert_eq!(status_field(status, "nonvoluntary_ctxt_switches"), Some(3));
        assert_eq!(status_field(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_is_sampled_with_its_threads_by_name() {
        let name = "bench-sampled";
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        // The new thread names itself once it runs, so sample only after it has.
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                started.send(()).unwrap();
                rx.recv()
            })
            .unwrap();
        running.recv().unwrap();
        let s = proc_sample(std::process::id()).expect("own /proc is readable");
        assert!(s.rss_kib > 0);
        assert!(s.threads.contains_key(name), "{:?}", s.threads.keys());
        drop(stop);
        t.join().unwrap().unwrap_err();
    }

    #[test]
    fn slow_deliveries_are_counted_by_the_window_they_were_sent_in() {
        let stats = Stats::new();
        let start = 1_000_000;
        // Window 1.0-1.1 s: two slow (one on another shard), one quick.
        stats.record_since(0, Kind::Delivery, start + 10_000, start + 40_000);
        stats.record_since(1, Kind::Delivery, start + 90_000, start + 102_000);
        stats.record_since(0, Kind::Delivery, start + 20_000, start + 21_000);
        // Window 1.5-1.6 s: one slow.
        stats.record_since(2, Kind::Delivery, start + 550_000, start + 600_000);
        // Window 2.0-2.1 s: one slow, the least, left out of the top 2.
        stats.record_since(3, Kind::Delivery, start + 1_000_000, start + 1_011_000);

        // A sender 12 ms late in the first window, one 2 ms late in the second.
        stats.record_since(0, Kind::SendLag, start + 5_000, start + 17_000);
        stats.record_since(0, Kind::SendLag, start + 500_000, start + 502_000);
        // A late sender alone makes no slow window.
        stats.record_since(0, Kind::SendLag, start + 3_000_000, start + 3_050_000);

        let windows = stats.slow_windows(start, 2);
        assert_eq!(
            windows,
            json!([
                {"at_ms": 0, "slow": 2, "max_ms": 30.0, "max_send_lag_ms": 12.0},
                {"at_ms": 500, "slow": 1, "max_ms": 50.0, "max_send_lag_ms": 0.0},
            ])
        );
        assert_eq!(stats.merged(Kind::SendLag).len(), 3);
        assert_eq!(
            stats.merged(Kind::Delivery).len(),
            5,
            "all in the histogram"
        );
    }
}
