//! Failed logins per account, whatever address they come from: after a few
//! failures each further one locks the account's logins for a while that
//! doubles up to a cap, so that credential stuffing from many addresses
//! gets about one guess per cap (a minute by default) at one account.
//! Attempts in flight count too: past the free failures, one at a time.
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
    last_failure: Option<Instant>,
    /// Attempts let through and not yet answered. Each may be a failure:
    /// past the free ones, one at a time (else a thousand guesses sent at
    /// once would all pass before the first failure is recorded).
    in_flight: u32,
    /// Client addresses that signed in, and when last.
    known: Vec<(IpAddr, Instant)>,
}

impl Account {
    fn touched(&self) -> Option<Instant> {
        let known = self.known.iter().map(|(_, at)| *at).max();
        self.last_failure.max(known)
    }

    /// Drops what is too old to matter (failures `forget` after the last);
    /// true when nothing is left.
    fn expire(&mut self, now: Instant, forget: Duration) -> bool {
        self.known
            .retain(|(_, at)| now.saturating_duration_since(*at) < KNOWN_FOR);
        if self
            .last_failure
            .is_some_and(|t| now.saturating_duration_since(t) >= forget)
        {
            self.failures = 0;
            self.last_failure = None;
        }
        self.failures == 0 && self.in_flight == 0 && self.known.is_empty()
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

    /// The lock after `failures` failures in a row, if any.
    fn lock_after(&self, failures: u32) -> Option<Duration> {
        let extra = failures.checked_sub(self.free + 1)?;
        Some(
            FIRST_LOCK
                .saturating_mul(1u32 << extra.min(20))
                .min(self.max_lock),
        )
    }

    /// Failures are forgotten so long after the last, and never while
    /// they still lock.
    fn forget_after(&self) -> Duration {
        FORGET_FAILURES.max(self.max_lock)
    }

    /// Lets a login to `username` from `client` check its password now,
    /// or says how long until it may.
    ///
    /// # Errors
    /// The wait, while the account is locked to this client.
    pub fn begin(
        &self,
        username: &str,
        client: IpAddr,
        now: Instant,
    ) -> Result<Attempt<'_>, Duration> {
        let Some(key) = key(username) else {
            return Ok(Attempt::untracked(self));
        };
        let mut accounts = self.accounts.lock().expect("login throttle");
        let client = client_key(client);
        let forget = self.forget_after();
        let account = entry(&mut accounts, key.clone(), now, forget);
        account.expire(now, forget);
        let known = account.known.iter().any(|(ip, _)| *ip == client);
        if !known {
            let locked_until = account
                .last_failure
                .zip(self.lock_after(account.failures))
                .map(|(at, lock)| at + lock);
            if let Some(until) = locked_until.filter(|t| *t > now) {
                return Err(until - now);
            }
            let pending = account.failures + account.in_flight;
            if account.in_flight > 0 && pending >= self.free {
                return Err(self.lock_after(pending + 1).unwrap_or(FIRST_LOCK));
            }
            account.in_flight += 1;
        }
        Ok(Attempt {
            throttle: self,
            key: Some(key),
            in_flight: !known,
        })
    }

    /// Forgets what no longer matters (run now and then).
    pub fn sweep(&self, now: Instant) {
        let mut accounts = self.accounts.lock().expect("login throttle");
        let forget = self.forget_after();
        accounts.retain(|_, a| !a.expire(now, forget));
        accounts.shrink_to_fit();
    }

    fn with_account(&self, key: &str, f: impl FnOnce(&mut Account)) {
        let mut accounts = self.accounts.lock().expect("login throttle");
        if let Some(account) = accounts.get_mut(key) {
            f(account);
        }
    }
}

/// One login let through the throttle; say how it went with [`failed`]
/// or [`succeeded`]. Dropped unsaid (the client went away, or the store
/// failed), it counts for nothing.
///
/// [`failed`]: Attempt::failed
/// [`succeeded`]: Attempt::succeeded
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    key: Option<String>,
    in_flight: bool,
}

impl<'a> Attempt<'a> {
    fn untracked(throttle: &'a LoginThrottle) -> Self {
        Self {
            throttle,
            key: None,
            in_flight: false,
        }
    }

    /// The password was wrong, or the account does not exist.
    pub fn failed(mut self, now: Instant) {
        let Some(key) = self.key.take() else {
            return;
        };
        let in_flight = std::mem::take(&mut self.in_flight);
        self.throttle.with_account(&key, |account| {
            if in_flight {
                account.in_flight = account.in_flight.saturating_sub(1);
            }
            account.failures = account.failures.saturating_add(1);
            account.last_failure = Some(now);
        });
    }

    /// The login succeeded from `client`: the account's failures are
    /// forgotten and the address is known to it from now on.
    pub fn succeeded(mut self, client: IpAddr, now: Instant) {
        let Some(key) = self.key.take() else {
            return;
        };
        let in_flight = std::mem::take(&mut self.in_flight);
        self.throttle.with_account(&key, |account| {
            if in_flight {
                account.in_flight = account.in_flight.saturating_sub(1);
            }
            account.failures = 0;
            account.last_failure = None;
            let client = client_key(client);
            account.known.retain(|(ip, _)| *ip != client);
            account.known.push((client, now));
            if account.known.len() > KNOWN_PER_ACCOUNT {
                account.known.remove(0);
            }
        });
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let (Some(key), true) = (self.key.take(), self.in_flight) {
            self.throttle.with_account(&key, |account| {
                account.in_flight = account.in_flight.saturating_sub(1);
            });
        }
    }
}

/// What accounts are tracked by: the name as it is unique, for names that
/// could exist.
fn key(username: &str) -> Option<String> {
    Username::parse(username).ok().map(|u| u.key())
}

fn entry(
    accounts: &mut HashMap<String, Account>,
    key: String,
    now: Instant,
    forget: Duration,
) -> &mut Account {
    if accounts.len() >= MAX_TRACKED && !accounts.contains_key(&key) {
        accounts.retain(|_, a| !a.expire(now, forget));
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

    const WHO: &str = "203.0.113.1";

    fn fail_times(t: &LoginThrottle, name: &str, n: u32, now: Instant) {
        for _ in 0..n {
            t.begin(name, ip(WHO), now).unwrap().failed(now);
        }
    }

    fn wait(t: &LoginThrottle, name: &str, from: &str, now: Instant) -> Option<Duration> {
        t.begin(name, ip(from), now).err()
    }

    #[test]
    fn a_few_failures_are_free_then_each_one_locks_longer_up_to_the_cap() {
        let t = LoginThrottle::new(3, Duration::from_secs(10));
        let now = Instant::now();
        fail_times(&t, "ann", 3, now);
        assert_eq!(wait(&t, "ann", WHO, now), None);
        // (That attempt, dropped unanswered, counted for nothing.)
        fail_times(&t, "ann", 1, now);
        assert_eq!(wait(&t, "ann", WHO, now), Some(SECOND));
        let later = now + SECOND;
        fail_times(&t, "ann", 1, later);
        assert_eq!(wait(&t, "ann", WHO, later), Some(2 * SECOND));
        let mut at = later;
        for _ in 0..10 {
            at += Duration::from_secs(10);
            fail_times(&t, "ann", 1, at);
        }
        assert_eq!(wait(&t, "ann", WHO, at), Some(10 * SECOND), "capped");
        let end = at + 10 * SECOND;
        assert_eq!(wait(&t, "ann", WHO, end), None, "never for good");
        assert_eq!(wait(&t, "bob", WHO, at), None, "per account");
    }

    #[test]
    fn past_the_free_failures_attempts_go_one_at_a_time() {
        let t = LoginThrottle::new(2, Duration::from_secs(10));
        let now = Instant::now();
        let first = t.begin("ann", ip(WHO), now).unwrap();
        let second = t.begin("ann", ip(WHO), now).unwrap();
        // Were both to fail, a third would lock: it waits for their answer.
        assert_eq!(wait(&t, "ann", "198.51.100.1", now), Some(SECOND));
        first.failed(now);
        second.succeeded(ip(WHO), now);
        assert_eq!(wait(&t, "ann", "198.51.100.1", now), None);
        // One abandoned gives its place back.
        drop(t.begin("ann", ip(WHO), now).unwrap());
        assert_eq!(t.accounts.lock().unwrap()["ann"].in_flight, 0);
        fail_times(&t, "ann", 2, now);
        // (WHO signed in, so it is known now: others try.)
        let third = t.begin("ann", ip("198.51.100.1"), now).unwrap();
        assert!(
            wait(&t, "ann", "198.51.100.2", now).is_some(),
            "one at a time"
        );
        third.failed(now);
        assert_eq!(
            wait(&t, "ann", "198.51.100.2", now),
            Some(SECOND),
            "then locked"
        );
        assert_eq!(
            wait(&t, "ann", WHO, now),
            None,
            "but not for a known address"
        );
    }

    #[test]
    fn names_are_tracked_as_they_are_unique_and_unknown_ones_alike() {
        let t = LoginThrottle::new(0, Duration::from_secs(10));
        let now = Instant::now();
        fail_times(&t, "Ann", 1, now);
        assert!(wait(&t, "aNN", WHO, now).is_some());
        // A name that could exist but does not is locked the same way.
        fail_times(&t, "nobody-here", 1, now);
        assert!(wait(&t, "nobody-here", WHO, now).is_some());
        // One that cannot exist is not tracked at all.
        fail_times(&t, "x", 1, now);
        assert_eq!(t.accounts.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_login_forgets_the_failures_and_its_address_skips_the_lock() {
        let t = LoginThrottle::new(0, Duration::from_secs(60));
        let now = Instant::now();
        let home = "198.51.100.7";
        t.begin("ann", ip(home), now)
            .unwrap()
            .succeeded(ip(home), now);
        fail_times(&t, "ann", 1, now);
        assert!(wait(&t, "ann", WHO, now).is_some());
        let from_home = t.begin("ann", ip(home), now).expect("a known address");
        from_home.succeeded(ip(home), now);
        assert_eq!(wait(&t, "ann", WHO, now), None, "failures forgotten");
        let later = now + KNOWN_FOR;
        t.sweep(later);
        fail_times(&t, "ann", 1, later);
        assert!(
            wait(&t, "ann", home, later).is_some(),
            "known for a week only"
        );
    }

    #[test]
    fn state_is_forgotten_once_it_no_longer_matters() {
        let t = LoginThrottle::new(0, Duration::from_secs(60));
        let now = Instant::now();
        fail_times(&t, "ann", 1, now);
        let bob = "198.51.100.7";
        t.begin("bob", ip(bob), now)
            .unwrap()
            .succeeded(ip(bob), now);
        t.sweep(now + FORGET_FAILURES + Duration::from_secs(60));
        assert_eq!(t.accounts.lock().unwrap().len(), 1, "bob's address is kept");
        t.sweep(now + KNOWN_FOR);
        assert!(t.accounts.lock().unwrap().is_empty());
    }
}
