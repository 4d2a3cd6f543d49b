//! Time as the core sees it: milliseconds since the Unix epoch, UTC.
//!
//! Milliseconds are the contract's precision, and an integer sorts and
//! stores the same way in every database.

/// A point in time, in whole milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Builds a timestamp from milliseconds since the epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down), as JWT claims use.
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
}
