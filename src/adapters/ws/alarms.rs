//! One timer for every session's heartbeat, token expiry and shutdown
//! drain.
//!
//! A tokio `Sleep` in each session task costs every session about 120
//! bytes for its whole life, most of a step of the task's allocation
//! (docs/performance-log.md, "Where an idle session's memory goes"). Sessions
//! set their next alarm here instead: a heap of 16-byte entries, driven
//! by one task with one `Sleep`, rings a session by marking its mailbox
//! and waking it. A session has one alarm at a time; setting it again
//! replaces the earlier one, whose entry is skipped when it comes due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use super::registry::Mailbox;

/// Every session's next alarm, and the task that rings them.
pub struct Alarms {
    /// The earliest due first.
    heap: Mutex<BinaryHeap<Reverse<Due>>>,
    /// Wakes the driver when an alarm earlier than all others is set.
    earlier: Notify,
    origin: Instant,
}

/// One alarm, ordered by when it is due alone.
struct Due {
    /// In milliseconds from the origin, rounded up: an alarm rings at its
    /// time or later, never before.
    at: u64,
    /// Held weakly: a session that ended leaves its entry behind until it
    /// comes due, and only that.
    mailbox: Weak<Mailbox>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Alarms {
    /// No alarms set; time counts from now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            heap: Mutex::default(),
            earlier: Notify::new(),
            origin: Instant::now(),
        })
    }

    /// Rings `mailbox` at `at` (or, rounded up to the millisecond, just
    /// after), in place of any alarm it had.
    pub fn set(&self, mailbox: &Arc<Mailbox>, at: Instant) {
        let ms = self.millis(at);
        mailbox.set_alarm(ms);
        let mut heap = self.lock();
        let first = heap.peek().is_none_or(|Reverse(next)| ms < next.at);
        heap.push(Reverse(Due {
            at: ms,
            mailbox: Arc::downgrade(mailbox),
        }));
        drop(heap);
        if first {
            self.earlier.notify_one();
        }
    }

    /// Rings alarms as they come due, for as long as the server runs.
    pub async fn run(&self) {
        loop {
            let next = self.ring_due();
            let earlier = self.earlier.notified();
            match next {
                Some(ms) => {
                    tokio::select! {
                        () = sleep_until(self.instant(ms)) => {}
                        () = earlier => {}
                    }
                }
                None => earlier.await,
            }
        }
    }

    /// Rings every alarm due by now; returns when the next one is due.
    fn ring_due(&self) -> Option<u64> {
        let now = Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64;
        let mut due = Vec::new();
        let next = {
            let mut heap = self.lock();
            while let Some(first) = heap.peek_mut() {
                if first.0.at > now {
                    break;
                }
                due.push(PeekMut::pop(first).0);
            }
            heap.peek().map(|Reverse(next)| next.at)
        };
        // Rung outside the lock: a wake-up may run the session at once,
        // and it may set its next alarm.
        for Due { at, mailbox } in due {
            if let Some(mailbox) = mailbox.upgrade() {
                mailbox.ring_alarm(at);
            }
        }
        next
    }

    /// The moment `ms` milliseconds after the origin.
    fn instant(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    /// `at` in whole milliseconds from the origin, rounded up.
    fn millis(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        since.as_nanos().div_ceil(1_000_000) as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<Due>>> {
        // A push or a pop cannot leave the heap half-changed.
        self.heap.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SessionId;

    fn mailbox() -> Arc<Mailbox> {
        Mailbox::new(
            SessionId::new("s"),
            crate::domain::DeviceId::new("d"),
            Arc::new(super::super::Outbound::new(4, 1 << 20, 1 << 20, 5)),
            None,
        )
    }

    fn driven() -> Arc<Alarms> {
        let alarms = Alarms::new();
        let driver = alarms.clone();
        tokio::spawn(async move { driver.run().await });
        alarms
    }

    #[tokio::test(start_paused = true)]
    async fn an_alarm_rings_at_its_time_and_not_before() {
        let alarms = driven();
        let m = mailbox();
        alarms.set(&m, Instant::now() + Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(1499)).await;
        assert!(!m.take_alarm());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(m.take_alarm());
        assert!(!m.take_alarm(), "taken once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_alarm_never_delays_an_earlier_one_set_after_it() {
        let alarms = driven();
        let (late, early) = (mailbox(), mailbox());
        alarms.set(&late, Instant::now() + Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(10)).await;
        alarms.set(&early, Instant::now() + Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(201)).await;
        assert!(early.take_alarm());
        assert!(!late.take_alarm());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(late.take_alarm());
    }

    #[tokio::test(start_paused = true)]
    async fn setting_an_alarm_again_replaces_the_earlier_one() {
        let alarms = driven();
        let m = mailbox();
        alarms.set(&m, Instant::now() + Duration::from_secs(1));
        alarms.set(&m, Instant::now() + Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!m.take_alarm(), "the replaced alarm does not ring");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(m.take_alarm());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ring_wakes_the_session_and_an_ended_session_is_skipped() {
        let alarms = driven();
        let (count, waker) = crate::adapters::ws::registry::tests::counting_waker();
        let m = mailbox();
        m.register(&waker);
        alarms.set(&m, Instant::now() + Duration::from_millis(50));
        let gone = mailbox();
        alarms.set(&gone, Instant::now() + Duration::from_millis(10));
        drop(gone);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(m.take_alarm());
        assert!(alarms.lock().is_empty(), "both entries gone");
    }
}
