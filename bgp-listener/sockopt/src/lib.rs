//! TCP MD5 signatures (RFC 2385) and the minimum-TTL check of GTSM (RFC 5082) for BGP sockets.
//!
//! Why this crate exists: neither socket2 0.6, rustix 1.1 nor nix 0.30 exposes `TCP_MD5SIG`,
//! `IP_MINTTL` or `IPV6_MINHOPCOUNT`, and every router still asks for them. The workspace forbids
//! unsafe code; the two `setsockopt(2)` calls below are the only exception, with plain-data
//! arguments built safely and checked lengths. Linux only (the option numbers and the
//! `struct tcp_md5sig` layout are Linux's); elsewhere the functions return `Unsupported`.
//!
//! Both options must be set before the peer's first segment where they matter: the MD5 key on a
//! listening socket before the SYN arrives (the kernel checks the SYN), and on a dialling socket
//! before `connect`.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

/// The longest key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// Whether the socket is IPv6 (an IPv6 socket may carry IPv4 peers as mapped addresses).
fn is_v6(fd: &impl AsFd) -> io::Result<bool> {
    let sock = socket2::SockRef::from(fd);
    Ok(sock.domain()? == socket2::Domain::IPV6)
}

/// `struct tcp_md5sig` from `linux/tcp.h`: a 128-byte `sockaddr_storage`, flags, prefix length,
/// key length, interface index, then the key. Built as plain bytes so no unsafe code is needed to
/// fill it; the kernel copies `size_of` bytes and does not care about our alignment.
#[repr(C)]
struct Md5Sig {
    addr: [u8; 128],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MD5_MAX_KEY_LEN],
}

impl Md5Sig {
    fn new(peer: IpAddr, v6_socket: bool, key: &[u8]) -> io::Result<Md5Sig> {
        if key.len() > MD5_MAX_KEY_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TCP MD5 key longer than {MD5_MAX_KEY_LEN} bytes"),
            ));
        }
        let mut sig = Md5Sig {
            addr: [0; 128],
            flags: 0,
            prefixlen: 0,
            keylen: 0,
            ifindex: 0,
            key: [0; MD5_MAX_KEY_LEN],
        };
        // An IPv6 socket sees IPv4 peers as ::ffff:a.b.c.d, and the key must name that form.
        let peer = match (peer, v6_socket) {
            (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
            (IpAddr::V6(v6), false) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("IPv6 peer {v6} on an IPv4 socket"),
                    ));
                }
            },
            (p, _) => p,
        };
        match peer {
            IpAddr::V4(v4) => {
                // sockaddr_in: family (host order), port 0, address (network order).
                sig.addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                sig.addr[4..8].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                // sockaddr_in6: family, port 0, flowinfo 0, address, scope id 0.
                sig.addr[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                sig.addr[8..24].copy_from_slice(&v6.octets());
            }
        }
        sig.keylen = key.len() as u16;
        sig.key[..key.len()].copy_from_slice(key);
        Ok(sig)
    }
}

impl Drop for Md5Sig {
    fn drop(&mut self) {
        // The key is a secret: do not leave it on the stack.
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// Signs every segment to and from `peer` with `key` (RFC 2385). On a listening socket this
/// covers connections the peer opens; set it before the peer dials. An empty key removes it.
#[allow(unsafe_code)]
pub fn set_tcp_md5(fd: &impl AsFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if !cfg!(target_os = "linux") {
        return Err(io::ErrorKind::Unsupported.into());
    }
    let sig = Md5Sig::new(peer, is_v6(fd)?, key)?;
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: `raw` is an open socket borrowed for the call; the option value points at `sig`,
    // which lives until the call returns, and the length passed is exactly its size. The kernel
    // only reads from it.
    let rc = unsafe {
        libc::setsockopt(
            raw,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&sig as *const Md5Sig).cast::<libc::c_void>(),
            std::mem::size_of::<Md5Sig>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_int(
    fd: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    set_int_raw(fd.as_fd().as_raw_fd(), level, name, v)
}

#[allow(unsafe_code)]
fn set_int_raw(
    raw: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `raw` is an open socket borrowed by the caller for the call; the value points at a
    // local `c_int` that outlives the call and the length is its size. The kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            raw,
            level,
            name,
            (&v as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops every received segment whose TTL (hop limit) is below `min` (GTSM, RFC 5082: with
/// `hops` allowed, `min = 256 - hops`). On an IPv6 socket both the IPv6 hop limit and the IPv4
/// TTL (for mapped IPv4 peers) are set.
pub fn set_min_ttl(fd: &impl AsFd, min: u8) -> io::Result<()> {
    if !cfg!(target_os = "linux") {
        return Err(io::ErrorKind::Unsupported.into());
    }
    let v = libc::c_int::from(min);
    if is_v6(fd)? {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, v)?;
        // Mapped IPv4 traffic on a dual-stack socket is checked against IP_MINTTL; an IPv6-only
        // socket refuses nothing here, so an error is not fatal.
        let _ = set_int(fd, libc::IPPROTO_IP, libc::IP_MINTTL, v);
        Ok(())
    } else {
        set_int(fd, libc::IPPROTO_IP, libc::IP_MINTTL, v)
    }
}

/// The TTL (hop limit) of segments we send: 255 for GTSM, the hop count for eBGP multihop.
pub fn set_ttl(fd: &impl AsFd, ttl: u8) -> io::Result<()> {
    let sock = socket2::SockRef::from(fd);
    if is_v6(fd)? {
        sock.set_unicast_hops_v6(u32::from(ttl))?;
        // Mapped IPv4 peers on a dual-stack socket use the IPv4 TTL.
        let _ = sock.set_ttl_v4(u32::from(ttl));
        Ok(())
    } else {
        sock.set_ttl_v4(u32::from(ttl))
    }
}

/// TCP keepalive: the first probe after `idle` without traffic, then every `interval`, and the
/// connection fails after `probes` unanswered ones. For connections we only read (BMP), where
/// nothing we send would notice a peer that vanished without a FIN or RST.
pub fn set_keepalive(
    fd: &impl AsFd,
    idle: std::time::Duration,
    interval: std::time::Duration,
    probes: u32,
) -> io::Result<()> {
    let ka = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval)
        .with_retries(probes);
    socket2::SockRef::from(fd).set_tcp_keepalive(&ka)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn md5_key_is_accepted_by_the_kernel_for_v4_v6_and_mapped_peers() {
        let l4 = TcpListener::bind("127.0.0.1:0").expect("bind v4");
        set_tcp_md5(&l4, "127.0.0.2".parse().expect("ip"), b"secret").expect("v4 key");
        let l6 = TcpListener::bind("[::1]:0").expect("bind v6");
        set_tcp_md5(&l6, "::1".parse().expect("ip"), b"secret").expect("v6 key");
        set_tcp_md5(&l6, "192.0.2.1".parse().expect("ip"), b"secret").expect("mapped key");
        set_tcp_md5(&l4, "127.0.0.2".parse().expect("ip"), b"").expect("remove key");
    }

    #[test]
    fn long_keys_and_v6_peers_on_v4_sockets_are_refused() {
        let l4 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let e =
            set_tcp_md5(&l4, "127.0.0.2".parse().expect("ip"), &[b'k'; 81]).expect_err("too long");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = set_tcp_md5(&l4, "2001:db8::1".parse().expect("ip"), b"k").expect_err("v6 on v4");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn min_ttl_and_ttl_are_set_and_read_back() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        set_min_ttl(&s, 255).expect("min ttl");
        set_ttl(&s, 255).expect("ttl");
        assert_eq!(socket2::SockRef::from(&s).ttl_v4().expect("ttl"), 255);
        // Loopback traffic leaves with TTL 255 and so passes a minimum of 255.
        let l6 = TcpListener::bind("[::1]:0").expect("bind v6");
        let s6 = TcpStream::connect(l6.local_addr().expect("addr")).expect("connect v6");
        set_min_ttl(&s6, 254).expect("min hop count");
        set_ttl(&s6, 254).expect("hops");
        assert_eq!(
            socket2::SockRef::from(&s6).unicast_hops_v6().expect("hops"),
            254
        );
    }
}
