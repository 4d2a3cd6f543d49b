//! Caps on open connections: per client address, so that one address
//! cannot take what everyone needs, and in total, so that the process keeps
//! file descriptors for its store, its cluster links and for accepting at
//! all. A connection over a cap is closed as soon as it is accepted.
//!
//! A connection holds its slot while it speaks HTTP, and on as a WebSocket
//! session (in its mailbox), so that one address cannot hold more sessions
//! than connections. Once upgraded it counts toward the total through the
//! session registry's gauge rather than as an HTTP connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

use super::forwarded::{self, TrustedProxies};

/// The connection caps and what is open now.
pub struct ConnectionLimits {
    total: usize,
    per_address: usize,
    trusted: Arc<TrustedProxies>,
    open: Mutex<Open>,
    gauge: Gauge,
    sessions: Gauge,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds as many connections as one address may.
    PerAddress,
    /// The process holds as many connections as its descriptors allow.
    Total,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::PerAddress => "per_address",
            Self::Total => "total",
        }
    }
}

impl ConnectionLimits {
    /// Caps of `total` connections and `per_address` from one client
    /// address; the latter is held to half the former, so that one address
    /// never takes all. Peers in `trusted` (load balancers, which carry
    /// everyone's connections) have no per-address cap. `gauge` follows the
    /// number of HTTP connections open; `sessions` is the number of open
    /// WebSocket sessions, which count toward the total.
    pub fn new(
        total: usize,
        per_address: usize,
        trusted: Arc<TrustedProxies>,
        gauge: Gauge,
        sessions: Gauge,
    ) -> Self {
        Self {
            total,
            per_address: per_address.min(total / 2).max(1),
            trusted,
            open: Mutex::default(),
            gauge,
            sessions,
        }
    }

    /// The cap on all connections.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The cap per client address, after holding it to half the total.
    pub fn per_address(&self) -> usize {
        self.per_address
    }

    /// A slot for a connection from `peer`, held until the slot is dropped.
    ///
    /// # Errors
    /// [`Refused`] when a cap is reached.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refused> {
        let counted = !self.trusted.contains(peer);
        let key = counted.then(|| forwarded::client_key(peer));
        let mut open = self.open.lock().expect("connection counts");
        let sessions = usize::try_from(self.sessions.get()).unwrap_or(0);
        if open.total + sessions >= self.total {
            return Err(Refused::Total);
        }
        if let Some(key) = key {
            let n = open.by_address.entry(key).or_default();
            if *n >= self.per_address {
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        open.total += 1;
        self.gauge.inc();
        Ok(Slot {
            limits: self.clone(),
            peer,
            counted,
            upgraded: AtomicBool::new(false),
        })
    }
}

/// One admitted connection's place under the caps, given back on drop.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    peer: IpAddr,
    /// Counted under its address (every peer but a trusted proxy). The
    /// address's key is worked out again on drop rather than kept: a
    /// session holds its slot for life, and this keeps it in 48 bytes.
    counted: bool,
    /// Now a WebSocket session, counted in the total as one.
    upgraded: AtomicBool,
}

impl Slot {
    /// The TCP peer's address.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// The connection is now a WebSocket session: the session registry
    /// counts it toward the total from here on, while its address keeps
    /// counting it until the session ends and drops the slot.
    pub fn upgraded(&self) {
        if !self.upgraded.swap(true, Ordering::AcqRel) {
            let mut open = self.limits.open.lock().expect("connection counts");
            open.total -= 1;
            self.limits.gauge.dec();
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("peer", &self.peer)
            .field("upgraded", &self.upgraded)
            .finish_non_exhaustive()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let upgraded = *self.upgraded.get_mut();
        let mut open = self.limits.open.lock().expect("connection counts");
        if !upgraded {
            open.total -= 1;
            self.limits.gauge.dec();
        }
        let key = forwarded::client_key(self.peer);
        if self.counted
            && let Some(n) = open.by_address.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&key);
            }
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as servers that
/// expect many connections do (nginx's `worker_rlimit_nofile`, Go's runtime
/// since 1.19): the soft limit is often 1024 while the hard one is far
/// higher. Returns the limit before and after.
///
/// # Errors
/// When the limit cannot be read.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    // Linux refuses more than fs.nr_open (1 Mi by default), even under an
    // unlimited hard limit.
    let target = limit.rlim_max.min(1 << 20);
    if target > before {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok((before, target));
        }
    }
    Ok((before, before))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize, trusted: &[&str]) -> Arc<ConnectionLimits> {
        let trusted: Vec<String> = trusted.iter().map(|s| (*s).to_owned()).collect();
        Arc::new(ConnectionLimits::new(
            total,
            per_address,
            Arc::new(TrustedProxies::parse(&trusted).unwrap()),
            Gauge::default(),
            Gauge::default(),
        ))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_cap_and_others_still_get_in() {
        let l = limits(100, 3, &[]);
        let held: Vec<Slot> = (0..3).map(|_| l.admit(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refused::PerAddress));
        assert!(l.admit(ip("10.0.0.2")).is_ok());
        drop(held);
        assert!(l.admit(ip("10.0.0.1")).is_ok(), "slots are given back");
        assert!(l.open.lock().unwrap().by_address.is_empty());
    }

    #[test]
    fn the_total_cap_refuses_everyone_once_reached() {
        let l = limits(4, 100, &[]);
        let held: Vec<Slot> = (1..=4)
            .map(|i| l.admit(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert_eq!(l.admit(ip("10.0.0.9")).err(), Some(Refused::Total));
        assert_eq!(l.gauge.get(), 4);
        drop(held);
        assert_eq!(l.gauge.get(), 0);
        assert!(l.admit(ip("10.0.0.9")).is_ok());
        // WebSocket sessions hold descriptors too.
        l.sessions.set(4);
        assert_eq!(l.admit(ip("10.0.0.9")).err(), Some(Refused::Total));
    }

    #[test]
    fn an_upgraded_connection_counts_for_its_address_until_it_ends_and_as_a_session() {
        let l = limits(100, 2, &[]);
        let session = l.admit(ip("10.0.0.1")).unwrap();
        session.upgraded();
        session.upgraded();
        assert_eq!(l.gauge.get(), 0, "no longer an HTTP connection");
        assert_eq!(
            l.open.lock().unwrap().total,
            0,
            "the registry counts it now"
        );
        let _http = l.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refused::PerAddress));
        drop(session);
        assert_eq!(l.open.lock().unwrap().total, 1);
        assert!(
            l.admit(ip("10.0.0.1")).is_ok(),
            "the session's place is given back"
        );
    }

    #[test]
    fn a_slot_is_small_enough_to_keep_for_a_sessions_life() {
        // Held by every session: its Arc's allocation is memory per session.
        assert!(
            std::mem::size_of::<Slot>() <= 32,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn one_address_never_gets_more_than_half_the_total() {
        let l = limits(10, 1000, &[]);
        assert_eq!(l.per_address(), 5);
        let _held: Vec<Slot> = (0..5).map(|_| l.admit(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refused::PerAddress));
    }

    #[test]
    fn trusted_proxies_have_no_per_address_cap() {
        let l = limits(100, 2, &["10.1.0.0/16"]);
        let _held: Vec<Slot> = (0..20).map(|_| l.admit(ip("10.1.2.3")).unwrap()).collect();
        assert_eq!(
            l.admit(ip("10.9.0.1")).map(|s| s.peer()),
            Ok(ip("10.9.0.1"))
        );
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_bit_prefix() {
        let l = limits(100, 2, &[]);
        let _a = l.admit(ip("2001:db8::1")).unwrap();
        let _b = l.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(l.admit(ip("2001:db8::3")).err(), Some(Refused::PerAddress));
        assert!(l.admit(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
        let (before, after) = raise_open_files_limit().unwrap();
        assert!(after >= before);
        let (again, _) = raise_open_files_limit().unwrap();
        assert_eq!(again, after);
    }
}
