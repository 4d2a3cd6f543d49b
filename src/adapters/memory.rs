//! Hands memory that glibc's malloc keeps after a burst of connections back
//! to the system.
//!
//! A connection's handshake (HTTP parsing, the token check) allocates
//! several times what its session keeps. glibc holds on to freed memory for
//! reuse, interleaved with the sessions that stay, so after many clients
//! connect the resident size stays near its peak for good. `malloc_trim`
//! returns the free pages in the middle of the heap too; it walks the
//! whole heap, so it runs on the blocking pool, and only after sessions
//! have opened since the last time.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;

/// How often the trimmer looks whether sessions were opened.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Trims the heap every `every` while sessions keep opening; returns the
/// task, to abort at shutdown.
pub fn spawn_trimmer(metrics: Arc<Metrics>, every: Duration) -> tokio::task::JoinHandle<()> {
    spawn_with(metrics, every, trim)
}

fn spawn_with(metrics: Arc<Metrics>, every: Duration, trim: fn()) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = metrics.sessions_opened.get();
        loop {
            tick.tick().await;
            let opened = metrics.sessions_opened.get();
            if opened != seen {
                seen = opened;
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks and releases malloc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static TRIMS: AtomicUsize = AtomicUsize::new(0);

    fn counted() {
        TRIMS.fetch_add(1, Ordering::SeqCst);
    }

    #[tokio::test(start_paused = true)]
    async fn the_heap_is_trimmed_once_after_sessions_opened_and_not_while_quiet() {
        let metrics = Arc::new(Metrics::default());
        let task = spawn_with(metrics.clone(), Duration::from_secs(1), counted);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0, "nothing opened yet");
        metrics.sessions_opened.inc();
        metrics.sessions_opened.inc();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1, "one trim for the burst");
        metrics.sessions_opened.inc();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 2);
        task.abort();
    }
}
