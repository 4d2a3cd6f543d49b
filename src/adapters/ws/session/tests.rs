//! Unit tests of the session's pace and of its task's size.

use tokio::time::Instant;

use super::run;
use super::write::{PACE_BURST, PACE_INTERVAL, Pace};

/// The size of the future `f` returns, without calling it.
fn returned_size<A, B, C, F>(_: impl FnOnce(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// The most bytes the session future may take: see `run`, where 8 bytes
/// more grow tokio's cell for the task from 768 bytes to 896, for every
/// session. A debug build lays the future out 8 bytes larger.
const MAX_SESSION_FUTURE: usize = if cfg!(debug_assertions) { 664 } else { 656 };

#[test]
fn the_session_task_fits_its_768_byte_cell() {
    let size = returned_size(run);
    assert!(
        size <= MAX_SESSION_FUTURE,
        "the session future is {size} bytes"
    );
}

#[test]
fn a_burst_of_writes_goes_at_once_then_one_per_interval() {
    let t0 = Instant::now();
    let mut pace = Pace::new(t0);
    for _ in 0..PACE_BURST {
        assert!(pace.next_write() <= t0);
        pace.spend(t0);
    }
    assert_eq!(pace.next_write(), t0 + PACE_INTERVAL);
    pace.spend(t0 + PACE_INTERVAL);
    assert_eq!(pace.next_write(), t0 + PACE_INTERVAL * 2);
    // Quiet for long enough, the whole burst is back.
    let later = t0 + PACE_INTERVAL * (PACE_BURST + 2);
    assert!(pace.next_write() <= later);
    pace.spend(later);
    assert!(pace.next_write() <= later);
}

#[test]
fn writes_beyond_the_budget_hold_events_back_one_interval_at_most() {
    let t0 = Instant::now();
    let mut pace = Pace::new(t0);
    // Replies write whatever the pace: a hundred of them at once.
    for _ in 0..100 {
        pace.spend(t0);
    }
    assert_eq!(pace.next_write(), t0 + PACE_INTERVAL);
}
