//! IP prefixes as the store keeps them: (afi, network bytes, length).
//!
//! The network is stored masked, big-endian, in 4 (IPv4) or 16 (IPv6) bytes. SQLite compares BLOBs
//! with `memcmp`, so "every prefix inside P" is the byte range `[net(P), broadcast(P)]` with
//! `len >= len(P)`, and "every prefix covering P" is at most 33 (or 129) exact `(net, len)` probes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `afi` column values (the IANA AFI numbers; 0 for session events that have no prefix).
pub const AFI_NONE: i64 = 0;
pub const AFI_IPV4: i64 = 1;
pub const AFI_IPV6: i64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPrefix {
    /// The network address, host bits cleared.
    pub addr: IpAddr,
    pub len: u8,
}

impl IpPrefix {
    /// Parses `ADDR/LEN` or a bare address (a host prefix). Host bits are cleared, so
    /// `192.0.2.77/24` names `192.0.2.0/24`: a user pasting an interface address gets its subnet.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("prefix {s:?}: {a:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("prefix {s:?}: length must be 0..={max}"))?,
        };
        Ok(Self::new(addr, len))
    }

    /// A prefix with host bits cleared; `len` is capped at the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Self {
        match addr {
            IpAddr::V4(a) => {
                let len = len.min(32);
                let bits = u32::from(a) & mask32(len);
                IpPrefix {
                    addr: IpAddr::V4(Ipv4Addr::from(bits)),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = len.min(128);
                let bits = u128::from(a) & mask128(len);
                IpPrefix {
                    addr: IpAddr::V6(Ipv6Addr::from(bits)),
                    len,
                }
            }
        }
    }

    pub fn afi(&self) -> i64 {
        if self.addr.is_ipv4() {
            AFI_IPV4
        } else {
            AFI_IPV6
        }
    }

    pub fn net(&self) -> Vec<u8> {
        match self.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// The last address inside the prefix, as stored bytes.
    pub fn broadcast(&self) -> Vec<u8> {
        match self.addr {
            IpAddr::V4(a) => (u32::from(a) | !mask32(self.len)).to_be_bytes().to_vec(),
            IpAddr::V6(a) => (u128::from(a) | !mask128(self.len)).to_be_bytes().to_vec(),
        }
    }

    /// Every prefix that covers this one (itself included), longest first, as `(net, len)`.
    pub fn covering(&self) -> Vec<(Vec<u8>, u8)> {
        (0..=self.len)
            .rev()
            .map(|l| {
                let p = IpPrefix::new(self.addr, l);
                (p.net(), l)
            })
            .collect()
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_masks_and_refuses_nonsense() {
        let p = IpPrefix::parse("192.0.2.77/24").unwrap();
        assert_eq!(p.to_string(), "192.0.2.0/24");
        assert_eq!(p.net(), vec![192, 0, 2, 0]);
        assert_eq!(p.broadcast(), vec![192, 0, 2, 255]);
        assert_eq!(
            IpPrefix::parse("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            IpPrefix::parse("2001:db8::1/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            IpPrefix::parse("0.0.0.0/0").unwrap().broadcast(),
            vec![255; 4]
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
            "10.0.0.0/",
        ] {
            assert!(IpPrefix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn covering_lists_every_shorter_prefix() {
        let c = IpPrefix::parse("10.1.2.0/24").unwrap().covering();
        assert_eq!(c.len(), 25);
        assert_eq!(c[0], (vec![10, 1, 2, 0], 24));
        assert_eq!(c[16], (vec![10, 0, 0, 0], 8));
        assert_eq!(c[24], (vec![0, 0, 0, 0], 0));
    }
}
