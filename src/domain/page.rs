//! Page sizes: a client may ask for one; each use case has a default and a
//! largest.

use std::num::NonZeroU64;

/// A page size as a client asked for it: none (the use case's default) or
/// a positive count, not yet clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageLimit(Option<NonZeroU64>);

/// A `limit` below 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit must be a positive integer")]
pub struct InvalidLimit;

impl PageLimit {
    /// The limit a client gave, if any.
    ///
    /// # Errors
    /// [`InvalidLimit`] for 0: a client asking for nothing has a bug.
    pub fn parse(raw: Option<u64>) -> Result<Self, InvalidLimit> {
        match raw {
            None => Ok(Self(None)),
            Some(n) => NonZeroU64::new(n)
                .map(|n| Self(Some(n)))
                .ok_or(InvalidLimit),
        }
    }

    /// How many to take: `default` when none was asked for, at most `max`.
    pub fn within(self, default: usize, max: usize) -> usize {
        match self.0 {
            None => default,
            Some(n) => usize::try_from(n.get()).unwrap_or(max).min(max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_is_the_default_and_a_large_one_is_clamped() {
        let pick = |raw| PageLimit::parse(raw).unwrap().within(20, 100);
        assert_eq!(pick(None), 20);
        assert_eq!(pick(Some(7)), 7);
        assert_eq!(pick(Some(101)), 100);
        assert_eq!(pick(Some(u64::MAX)), 100);
    }

    #[test]
    fn a_limit_of_0_is_refused() {
        assert_eq!(PageLimit::parse(Some(0)), Err(InvalidLimit));
    }
}
