//! Failed logins per account, whatever address they come from: after a few
//! failures each further one locks the account's logins for a while that
//! doubles up to a cap, so that credential stuffing from many addresses
//! gets about one guess per cap (a minute by default) at one account.
//!
//! The trade-off: whoever can fail logins can keep an account locked, so
//! that its owner waits up to the cap between attempts (429 with
//! `Retry-After`), never longer, and never at all from an address that
//! signed in to the account within the last week: those skip the lock.
//! Names that cannot exist (they break the username rules) are not
//! tracked; every other name is tracked alike, existing or not, so the
//! throttle never tells which accounts exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::forwarded::client_key;
use crate::domain::Username;

/// Accounts tracked at most; beyond, the one quiet longest is forgotten.
const MAX_TRACKED: usize = 65_536;
/// Failures are forgotten after so long without another.
const FORGET_FAILURES: Duration = Duration::from_secs(15 * 60);
/// An address stays known to an account for so long after a login from it.
const KNOWN_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// Addresses remembered per account.
const KNOWN_PER_ACCOUNT: usize = 4;
/// The first lock, doubled by each further failure.
const FIRST_LOCK: Duration = Duration::from_secs(1);

/// The per-account throttle of failed logins.
pub struct LoginThrottle {
    free: u32,
    max_lock: Duration,
    accounts: Mutex<HashMap<String, Account>>,
}

#[derive(Default)]
struct Account {
    failures: u32,
    locked_until: Option<Instant>,
    last_failure: Option<Instant>,
    /// Client addresses that signed in, and when last.
    known: Vec<(IpAddr, Instant)>,
}

impl Account {
    fn touched(&self) -> Option<Instant> {
        let known = self.known.iter().map(|(_, at)| *at).max();
        self.last_failure.max(known)
    }

    /// Drops what is too old to matter; true when nothing is left.
    fn expire(&mut self, now: Instant) -> bool {
        self.known
            .retain(|(_, at)| now.saturating_duration_since(*at) < KNOWN_FOR);
        if self.locked_until.is_some_and(|t| t <= now) {
            self.locked_until = None;
        }
        if self
            .last_failure
            .is_some_and(|t| now.saturating_duration_since(t) >= FORGET_FAILURES)
            && self.locked_until.is_none()
        {
            self.failures = 0;
            self.last_failure = None;
        }
        self.failures == 0 && self.known.is_empty()
    }
}

impl LoginThrottle {
    /// `free` failures in a row cost nothing; each one after locks the
    /// account for 1 s, 2 s, 4 s, ... up to `max_lock`.
    pub fn new(free: u32, max_lock: Duration) -> Self {
        Self {
            free,
            max_lock,
            accounts: Mutex::default(),
        }
    }

    /// Whether a login to `username` from `client` may check its password
    /// now; `Err` holds how long until it may.
    ///
    /// # Errors
    /// The wait, while the account is locked to this client.
    pub fn check(&self, username: &str, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(key) = key(username) else {
            return Ok(());
        };
        let accounts = self.accounts.lock().expect("login throttle");
        let Some(account) = accounts.get(&key) else {
            return Ok(());
        };
        let client = client_key(client);
        if account.known.iter().any(|(ip, _)| *ip == client) {
            return Ok(());
        }
        match account.locked_until {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed login to `username`.
    pub fn failed(&self, username: &str, now: Instant) {
        let Some(key) = key(username) else {
            return;
        };
        let mut accounts = self.accounts.lock().expect("login throttle");
        let account = entry(&mut accounts, key, now);
        account.expire(now);
        account.failures = account.failures.saturating_add(1);
        account.last_failure = Some(now);
        if let Some(extra) = account.failures.checked_sub(self.free + 1) {
            let lock = FIRST_LOCK
                .saturating_mul(1u32 << extra.min(20))
                .min(self.max_lock);
            account.locked_until = Some(now + lock);
        }
    }

    /// Records a login to `username` from `client`: its failures are
    /// forgotten and the address is known to it from now on.
    pub fn succeeded(&self, username: &str, client: IpAddr, now: Instant) {
        let Some(key) = key(username) else {
            return;
        };
        let mut accounts = self.accounts.lock().expect("login throttle");
        let account = entry(&mut accounts, key, now);
        account.failures = 0;
        account.locked_until = None;
        account.last_failure = None;
        let client = client_key(client);
        account.known.retain(|(ip, _)| *ip != client);
        account.known.push((client, now));
        if account.known.len() > KNOWN_PER_ACCOUNT {
            account.known.remove(0);
        }
    }

    /// Forgets what no longer matters (run now and then).
    pub fn sweep(&self, now: Instant) {
        let mut accounts = self.accounts.lock().expect("login throttle");
        accounts.retain(|_, a| !a.expire(now));
        accounts.shrink_to_fit();
    }
}

/// What accounts are tracked by: the name as it is unique, for names that
/// could exist.
fn key(username: &str) -> Option<String> {
    Username::parse(username).ok().map(|u| u.key())
}

fn entry(accounts: &mut HashMap<String, Account>, key: String, now: Instant) -> &mut Account {
    if accounts.len() >= MAX_TRACKED && !accounts.contains_key(&key) {
        accounts.retain(|_, a| !a.expire(now));
        if accounts.len() >= MAX_TRACKED {
            let quietest = accounts
                .iter()
                .min_by_key(|(_, a)| a.touched())
                .map(|(k, _)| k.clone());
            if let Some(quietest) = quietest {
                accounts.remove(&quietest);
            }
        }
    }
    accounts.entry(key).or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fail_times(t: &LoginThrottle, name: &str, n: u32, now: Instant) {
        for _ in 0..n {
            t.failed(name, now);
        }
    }

    #[test]
    fn a_few_failures_are_free_then_each_one_locks_longer_up_to_the_cap() {
        let t = LoginThrottle::new(3, Duration::from_secs(10));
        let now = Instant::now();
        let who = ip("203.0.113.1");
        fail_times(&t, "ann", 3, now);
        assert_eq!(t.check("ann", who, now), Ok(()));
        t.failed("ann", now);
        assert_eq!(t.check("ann", who, now), Err(SECOND));
        assert_eq!(t.check("ann", who, now + SECOND), Ok(()));
        t.failed("ann", now);
        assert_eq!(t.check("ann", who, now), Err(2 * SECOND));
        fail_times(&t, "ann", 10, now);
        assert_eq!(t.check("ann", who, now), Err(10 * SECOND), "capped");
        assert_eq!(
            t.check("ann", who, now + 10 * SECOND),
            Ok(()),
            "never for good"
        );
        assert_eq!(t.check("bob", who, now), Ok(()), "per account");
    }

    #[test]
    fn names_are_tracked_as_they_are_unique_and_unknown_ones_alike() {
        let t = LoginThrottle::new(0, Duration::from_secs(10));
        let now = Instant::now();
        t.failed("Ann", now);
        assert!(t.check("aNN", ip("203.0.113.1"), now).is_err());
        // A name that could exist but does not is locked the same way.
        t.failed("nobody-here", now);
        assert!(t.check("nobody-here", ip("203.0.113.1"), now).is_err());
        // One that cannot exist is not tracked at all.
        t.failed("x", now);
        assert_eq!(t.accounts.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_login_forgets_the_failures_and_its_address_skips_the_lock() {
        let t = LoginThrottle::new(0, Duration::from_secs(60));
        let now = Instant::now();
        let (home, attacker) = (ip("198.51.100.7"), ip("203.0.113.1"));
        t.succeeded("ann", home, now);
        fail_times(&t, "ann", 20, now);
        assert!(t.check("ann", attacker, now).is_err());
        assert_eq!(t.check("ann", home, now), Ok(()), "a known address");
        t.succeeded("ann", home, now);
        assert_eq!(t.check("ann", attacker, now), Ok(()), "failures forgotten");
        let later = now + KNOWN_FOR;
        fail_times(&t, "ann", 3, later);
        assert!(
            t.check("ann", home, later).is_err(),
            "known for a week only"
        );
    }

    #[test]
    fn state_is_forgotten_once_it_no_longer_matters() {
        let t = LoginThrottle::new(0, Duration::from_secs(60));
        let now = Instant::now();
        fail_times(&t, "ann", 5, now);
        t.succeeded("bob", ip("198.51.100.7"), now);
        t.sweep(now + FORGET_FAILURES + Duration::from_secs(60));
        assert_eq!(t.accounts.lock().unwrap().len(), 1, "bob's address is kept");
        t.sweep(now + KNOWN_FOR);
        assert!(t.accounts.lock().unwrap().is_empty());
    }
}
