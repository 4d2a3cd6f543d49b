//! A timer finer than tokio's, for the open-loop senders. Tokio rounds a
//! deadline up to its next millisecond tick, so a sender woke up to a
//! millisecond late, and since a message's timestamp is the time it was
//! scheduled for, that lateness was counted as the server's latency. One
//! thread keeps the deadlines in a heap and wakes each task at its
//! instant, within the kernel's timer slack (about 50 µs).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// A task to wake at `at`.
struct Due {
    at: Instant,
    waker: Waker,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}

/// The deadlines, earliest first, and the condition the timer thread
/// waits on for an earlier one.
struct Timer {
    due: Mutex<BinaryHeap<Reverse<Due>>>,
    earlier: Condvar,
}

impl Timer {
    /// The process's timer; its thread starts on first use.
    fn get() -> &'static Timer {
        static TIMER: OnceLock<&'static Timer> = OnceLock::new();
        TIMER.get_or_init(|| {
            let timer: &'static Timer = Box::leak(Box::new(Timer {
                due: Mutex::new(BinaryHeap::new()),
                earlier: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("bench-timer".into())
                .spawn(move || timer.run())
                .expect("the timer thread starts");
            timer
        })
    }

    fn lock(&self) -> MutexGuard<'_, BinaryHeap<Reverse<Due>>> {
        self.due.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, at: Instant, waker: Waker) {
        let mut due = self.lock();
        let first = due.peek().is_none_or(|Reverse(d)| at < d.at);
        due.push(Reverse(Due { at, waker }));
        if first {
            self.earlier.notify_one();
        }
    }

    fn run(&self) {
        let mut due = self.lock();
        let mut ready = Vec::new();
        loop {
            let now = Instant::now();
            while let Some(Reverse(d)) = due.peek()
                && d.at <= now
            {
                let Reverse(d) = due.pop().expect("peeked");
                ready.push(d.waker);
            }
            if !ready.is_empty() {
                // Woken outside the lock: a woken task may add its next
                // deadline at once.
                drop(due);
                ready.drain(..).for_each(Waker::wake);
                due = self.lock();
                continue;
            }
            due = match due.peek() {
                None => self.earlier.wait(due).unwrap_or_else(|e| e.into_inner()),
                Some(Reverse(d)) => {
                    let wait = d.at - now;
                    self.earlier
                        .wait_timeout(due, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// Completes at `at`, give or take the kernel's timer slack.
pub fn sleep_until(at: Instant) -> Sleep {
    Sleep { at, added: false }
}

/// See [`sleep_until`].
pub struct Sleep {
    at: Instant,
    added: bool,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        // Polled once by its task before it is due: the timer wakes that
        // same task, so one entry is enough.
        if !self.added {
            self.added = true;
            Timer::get().add(self.at, cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wakes_at_its_deadline_not_before_and_in_order() {
        let start = Instant::now();
        // Far off, so that a loaded machine waking the early task late
        // still finds the late one pending.
        let late = tokio::spawn(sleep_until(start + Duration::from_millis(500)));
        let early = Instant::now() + Duration::from_millis(5);
        sleep_until(early).await;
        assert!(Instant::now() >= early);
        assert!(!late.is_finished(), "the later deadline is still to come");
        late.await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(500));
        // Already due: ready at once.
        sleep_until(start).await;
    }
}
