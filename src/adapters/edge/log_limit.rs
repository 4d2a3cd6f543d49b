//! A cap on log lines that clients can cause: a flood of malformed
//! connections must not become a flood of log lines (a disk filled, the
//! lines that matter drowned).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

/// How long a window of the cap lasts.
const WINDOW: Duration = Duration::from_secs(60);

/// At most so many lines of one kind a minute; the rest are counted and the
/// count is logged when the next minute's first line comes.
pub struct LogLimiter {
    what: &'static str,
    per_minute: u32,
    window: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// A cap of `per_minute` lines about `what` (named in the line that
    /// says how many were left out).
    pub const fn new(what: &'static str, per_minute: u32) -> Self {
        Self {
            what,
            per_minute,
            window: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether one more line may be logged now.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut w = self.window.lock().expect("log window");
        if w.start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            if w.suppressed > 0 {
                warn!(
                    suppressed = w.suppressed,
                    "{}: {} more not logged in the last minute", self.what, w.suppressed
                );
            }
            *w = Window {
                start: Some(now),
                logged: 0,
                suppressed: 0,
            };
        }
        if w.logged < self.per_minute {
            w.logged += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_the_cap_lines_are_counted_until_the_next_minute() {
        let limiter = LogLimiter::new("test lines", 3);
        let t0 = Instant::now();
        let allowed = (0..10).filter(|_| limiter.allow_at(t0)).count();
        assert_eq!(allowed, 3);
        assert_eq!(limiter.window.lock().unwrap().suppressed, 7);
        assert!(!limiter.allow_at(t0 + Duration::from_secs(59)));
        assert!(limiter.allow_at(t0 + WINDOW));
        let w = limiter.window.lock().unwrap();
        assert_eq!((w.logged, w.suppressed), (1, 0));
    }
}
