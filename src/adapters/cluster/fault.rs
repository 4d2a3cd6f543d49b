//! Test-only fault hooks (docs/cluster.md, section 8.3): a publish lost or
//! late after its commit, and a subscription that looks alive but delivers
//! nothing. The binary reads
//! the setting only when built with debug assertions, so a release build
//! has none.

use std::time::Duration;

/// What to do to the publishes of `message` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Faults {
    /// Publish everything.
    #[default]
    None,
    /// Drop every Nth message publish.
    DropEvery(u64),
    /// Hold every Nth message publish this long while later ones go out.
    DelayEvery(u64, Duration),
    /// From this long after start, the subscriber ignores every push until
    /// its connection is replaced (what the liveness probe is for).
    DeafAfter(Duration),
}

/// What the publisher does with one message publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it now.
    Pass,
    /// Do not publish it.
    Drop,
    /// Publish it after this long.
    Delay(Duration),
}

impl Faults {
    /// Parses `drop_publish_every:N`, `delay_publish_every:N:MS` or
    /// `deaf_subscriber_after:MS`.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let number = |s: &str| -> Result<u64, String> {
            s.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{s:?} is not a positive number"))
        };
        match parts.as_slice() {
            [""] => Ok(Self::None),
            ["drop_publish_every", n] => Ok(Self::DropEvery(number(n)?)),
            ["delay_publish_every", n, ms] => Ok(Self::DelayEvery(
                number(n)?,
                Duration::from_millis(number(ms)?),
            )),
            ["deaf_subscriber_after", ms] => {
                Ok(Self::DeafAfter(Duration::from_millis(number(ms)?)))
            }
            _ => Err("expected drop_publish_every:N, delay_publish_every:N:MS or deaf_subscriber_after:MS".to_owned()),
        }
    }

    /// The verdict on the `n`th message publish (counted from 1).
    pub fn verdict(self, n: u64) -> Verdict {
        match self {
            Self::DropEvery(every) if n.is_multiple_of(every) => Verdict::Drop,
            Self::DelayEvery(every, hold) if n.is_multiple_of(every) => Verdict::Delay(hold),
            _ => Verdict::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_hooks_parse_and_pick_every_nth() {
        let drop = Faults::parse("drop_publish_every:5").unwrap();
        assert_eq!(drop.verdict(4), Verdict::Pass);
        assert_eq!(drop.verdict(5), Verdict::Drop);
        let delay = Faults::parse("delay_publish_every:3:1000").unwrap();
        assert_eq!(delay.verdict(6), Verdict::Delay(Duration::from_secs(1)));
        assert_eq!(Faults::parse("").unwrap(), Faults::None);
        let deaf = Faults::parse("deaf_subscriber_after:2000").unwrap();
        assert_eq!(deaf, Faults::DeafAfter(Duration::from_secs(2)));
        assert_eq!(deaf.verdict(1), Verdict::Pass, "publishes untouched");
        for bad in ["drop_publish_every:0", "delay_publish_every:3", "nonsense"] {
            assert!(Faults::parse(bad).is_err(), "{bad}");
        }
    }
}
