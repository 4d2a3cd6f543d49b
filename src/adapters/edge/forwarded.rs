//! The client's address: the TCP peer's, or, when the peer is a trusted
//! proxy (the load balancer docs/cluster.md puts in front), the one the
//! proxies recorded in `X-Forwarded-For`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use hyper::header::HeaderMap;
use ipnet::IpNet;

/// The peers whose `X-Forwarded-For` is believed: `trusted_proxies`.
#[derive(Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`) and bare addresses.
    ///
    /// # Errors
    /// The first entry that is neither, quoted.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{entry:?} is not an address or a CIDR"))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer`: `peer` itself unless
    /// it is a trusted proxy; then the rightmost `X-Forwarded-For` hop that
    /// is not a trusted proxy (hops left of it are whatever the client
    /// chose to send). A hop that does not parse makes the header worthless:
    /// then it is `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            hops.extend(value.split(','));
        }
        let mut leftmost = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                return peer;
            };
            if !self.contains(ip) {
                return ip;
            }
            leftmost = ip;
        }
        // Every hop is a proxy of ours: the request began among them.
        leftmost
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(|ip: IpAddr| ip.to_canonical())
}

/// What limits per client address are keyed by: an IPv4 address, or an
/// IPv6 address's /64 prefix (what one subscriber is usually given, so
/// that one machine cannot walk through its own addresses).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        TrustedProxies::parse(&list).unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_and_bare_addresses_parse_and_garbage_is_named() {
        let p = proxies(&["10.0.0.0/8", " 192.168.1.7 ", "fd00::/8", ""]);
        assert!(p.contains(ip("10.200.0.1")));
        assert!(p.contains(ip("192.168.1.7")));
        assert!(!p.contains(ip("192.168.1.8")));
        assert!(p.contains(ip("fd12::1")));
        assert!(p.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped");
        let err = TrustedProxies::parse(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
    }

    #[test]
    fn an_untrusted_peers_header_is_ignored() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = forwarded(&["1.2.3.4"]);
        assert_eq!(p.client(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_hop_that_is_not_a_proxy_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        assert_eq!(p.client(peer, &forwarded(&["1.2.3.4"])), ip("1.2.3.4"));
        // The client sent a spoofed hop first; our proxies appended the real one.
        assert_eq!(
            p.client(peer, &forwarded(&["6.6.6.6, 1.2.3.4, 10.0.0.2"])),
            ip("1.2.3.4")
        );
        // Several headers are one list, in order.
        assert_eq!(
            p.client(peer, &forwarded(&["6.6.6.6", "1.2.3.4 , 10.0.0.2"])),
            ip("1.2.3.4")
        );
        assert_eq!(
            p.client(peer, &forwarded(&["[2001:db8::5]:443", "10.0.0.3:80"])),
            ip("2001:db8::5")
        );
        assert_eq!(
            p.client(peer, &forwarded(&["::ffff:1.2.3.4"])),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn a_missing_or_malformed_header_from_a_proxy_means_the_proxy() {
        let p = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        assert_eq!(p.client(peer, &HeaderMap::new()), peer);
        for bad in ["", "unknown", "1.2.3.4, not-an-ip", "1.2.3.4,,"] {
            assert_eq!(p.client(peer, &forwarded(&[bad])), peer, "{bad:?}");
        }
        // Garbage left of the client's hop is the client's own affair.
        assert_eq!(
            p.client(peer, &forwarded(&["garbage, 1.2.3.4"])),
            ip("1.2.3.4")
        );
        // Only proxies: the request began among them.
        assert_eq!(
            p.client(peer, &forwarded(&["10.0.0.7, 10.0.0.2"])),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_bit_prefix() {
        assert_eq!(client_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(client_key(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
    }
}
