//! The target policy: where a tenant's notification may go (the SSRF guard).
//!
//! A notifier URL or SMTP host is chosen by a tenant, so without a guard a tenant could make the
//! collector call its own admin endpoints, the metadata service or hosts on the operator's private
//! network. The policy is checked on the *resolved* addresses at connect time (the HTTP client's
//! resolver and the SMTP path both connect only to an address that passed), so a name that
//! resolves to a public address when checked and to 127.0.0.1 when used (DNS rebinding) cannot
//! slip through. Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

/// What a notification target may reach.
///
/// Refused unless listed in `allowed`: loopback, unspecified, link-local, multicast, broadcast,
/// reserved ranges, the collector's own addresses, and (unless `allow_private`) private, shared
/// (CGNAT) and unique-local ranges. `allowed` is the operator's explicit allowance and wins over
/// every rule, so `127.0.0.1/32` there lets tests and local relays through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow_private: bool,
    pub allowed: Vec<IpNet>,
    /// The collector's own addresses (its listening and interface addresses).
    pub own_addresses: Vec<IpAddr>,
    /// The host's interface addresses, kept current by the caller: a collector bound to an
    /// unspecified address (`0.0.0.0`, `::`) answers on every one of them, and interfaces come
    /// and go while it runs, so this is shared and refreshed rather than fixed at start.
    pub host_addresses: HostAddresses,
}

/// A shared, replaceable list of addresses; clones see the same list.
#[derive(Clone, Default)]
pub struct HostAddresses(Arc<RwLock<Arc<[IpAddr]>>>);

impl HostAddresses {
    /// Replaces the list (canonical forms, so IPv4-mapped addresses match their IPv4 address).
    pub fn set<I: IntoIterator<Item = IpAddr>>(&self, addrs: I) {
        let mut v: Vec<IpAddr> = addrs.into_iter().map(canonical).collect();
        v.sort_unstable();
        v.dedup();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = v.into();
    }

    /// The current list.
    pub fn get(&self) -> Arc<[IpAddr]> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn contains(&self, addr: IpAddr) -> bool {
        self.get().binary_search(&addr).is_ok()
    }
}

impl std::fmt::Debug for HostAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.get().iter()).finish()
    }
}

/// Equal when they hold the same addresses now.
impl PartialEq for HostAddresses {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for HostAddresses {}

/// Why an address was refused. It names the host and address so the operator can act, and it
/// never holds a URL path or query (where webhook tokens live).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "target policy refuses {host} ({addr}): {reason} address; an operator can allow it in the notifier target policy"
)]
pub struct PolicyError {
    pub host: String,
    pub addr: IpAddr,
    pub reason: &'static str,
}

/// A name that resolved to nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Refused(#[from] PolicyError),
    #[error("cannot resolve {host}: {detail}")]
    Lookup { host: String, detail: String },
}

impl TargetPolicy {
    /// A policy that allows exactly the given networks in addition to public addresses (tests use
    /// `allowing(["127.0.0.1/32", "::1/128"])`).
    pub fn allowing<I: IntoIterator<Item = IpNet>>(nets: I) -> Self {
        Self {
            allowed: nets.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Checks one address; `host` only labels the error.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), PolicyError> {
        let addr = canonical(addr);
        if self.allowed.iter().any(|n| n.contains(&addr)) {
            return Ok(());
        }
        let refuse = |reason| {
            Err(PolicyError {
                host: host.to_string(),
                addr,
                reason,
            })
        };
        if self.own_addresses.iter().any(|a| canonical(*a) == addr)
            || self.host_addresses.contains(addr)
        {
            return refuse("the collector's own");
        }
        if let Some(reason) = classify(addr) {
            if reason == PRIVATE && self.allow_private {
                return Ok(());
            }
            return refuse(reason);
        }
        Ok(())
    }

    /// Resolves `host` (a name or an address literal) and keeps the addresses the policy allows.
    /// Fails when none is left, naming the first refused address.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let found: Vec<SocketAddr> = if let Ok(ip) = bare.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| ResolveError::Lookup {
                    host: host.to_string(),
                    detail: e.to_string(),
                })?
                .take(32)
                .collect()
        };
        let mut first_refusal = None;
        let mut ok = Vec::new();
        for sa in found {
            match self.check(host, sa.ip()) {
                Ok(()) => ok.push(SocketAddr::new(canonical(sa.ip()), sa.port())),
                Err(e) => {
                    tracing::warn!(host, addr = %sa.ip(), reason = e.reason, "notification target address refused");
                    first_refusal.get_or_insert(e);
                }
            }
        }
        if ok.is_empty() {
            return Err(match first_refusal {
                Some(e) => e.into(),
                None => ResolveError::Lookup {
                    host: host.to_string(),
                    detail: "no addresses".into(),
                },
            });
        }
        Ok(ok)
    }
}

const PRIVATE: &str = "private";

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they reach.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn classify(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn classify_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if a.is_link_local() {
        Some("link-local")
    } else if a.is_multicast() {
        Some("multicast")
    } else if a.is_broadcast() || o[0] >= 240 {
        Some("reserved")
    } else if a.is_private()
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        // RFC 1918, RFC 6598 shared space, RFC 2544 benchmarking (used by our own test labs).
        Some(PRIVATE)
    } else {
        None
    }
}

fn classify_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_unspecified() {
        Some("unspecified")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if a.is_multicast() {
        Some("multicast")
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        // Unique-local, and the deprecated site-local.
        Some(PRIVATE)
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64: judge the embedded IPv4 address.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        classify_v4(v4)
    } else if s[0] == 0x2002 {
        // 6to4: judge the embedded IPv4 address.
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        classify_v4(v4)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn default_policy_refuses_internal_addresses() {
        let p = TargetPolicy {
            own_addresses: vec![ip("203.0.113.7")],
            ..TargetPolicy::default()
        };
        for (a, why) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "private"),
            ("fd00::1", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("203.0.113.7", "the collector's own"),
        ] {
            let e = p.check("h", ip(a)).expect_err(a);
            assert_eq!(e.reason, why, "{a}");
        }
        for a in ["93.184.216.34", "2606:4700::1111", "203.0.113.8"] {
            assert!(p.check("h", ip(a)).is_ok(), "{a}");
        }
    }

    #[test]
    fn allowances_open_exactly_what_they_name() {
        let p = TargetPolicy {
            allow_private: true,
            allowed: vec!["127.0.0.1/32".parse().expect("net")],
            ..TargetPolicy::default()
        };
        assert!(p.check("h", ip("10.0.0.1")).is_ok());
        assert!(p.check("h", ip("127.0.0.1")).is_ok());
        assert!(p.check("h", ip("127.0.0.2")).is_err());
        assert!(p.check("h", ip("169.254.1.1")).is_err());
    }

    #[test]
    fn host_addresses_are_shared_and_replaceable() {
        let p = TargetPolicy {
            allow_private: true,
            ..TargetPolicy::default()
        };
        let clone = p.clone();
        assert!(clone.check("h", ip("198.18.7.1")).is_ok());
        p.host_addresses
            .set([ip("::ffff:198.18.7.1"), ip("2001:db8::7")]);
        let e = clone.check("h", ip("198.18.7.1")).expect_err("own");
        assert_eq!(e.reason, "the collector's own");
        assert!(clone.check("h", ip("2001:db8::7")).is_err());
        // The operator's allowance still wins.
        let allowed = TargetPolicy {
            allowed: vec!["198.18.7.1/32".parse().expect("net")],
            ..p.clone()
        };
        assert!(allowed.check("h", ip("198.18.7.1")).is_ok());
        p.host_addresses.set([]);
        assert!(clone.check("h", ip("198.18.7.1")).is_ok());
    }
}
