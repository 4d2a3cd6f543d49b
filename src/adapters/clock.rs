//! The `Clock` adapter: the system's wall clock.

use crate::domain::Timestamp;
use crate::domain::ports::Clock;

/// Reads the system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(chrono::Utc::now().timestamp_millis())
    }
}
