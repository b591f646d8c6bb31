//! Transport protections of one peer's TCP connection: a TCP MD5 signature key (RFC 2385) and the
//! TTL policy (GTSM, RFC 5082, or eBGP multihop).
//!
//! Where each one is applied, and why there:
//! - The MD5 key goes on the listening socket, keyed by the peer's address, before the peer dials
//!   (the kernel verifies the SYN itself, so a key set after `accept` would be too late), and on a
//!   dialling socket before `connect`.
//! - GTSM: we send with TTL 255 and drop segments that arrive with a TTL below `256 - hops`. On a
//!   dialling socket both are set before `connect`, so even the handshake is checked. On a
//!   listening socket the send TTL must be set too (the kernel sends the SYN-ACK with the
//!   listener's TTL, and a GTSM peer drops anything below 255), and so is the minimum TTL when
//!   every peer on that socket uses GTSM. A listening socket may be shared by peers with
//!   different policies, so each accepted connection also gets its own peer's policy right after
//!   `accept`, before a byte of BGP is read: a forged OPEN from further away is then dropped by
//!   the kernel even where the handshake could not be checked.
//! - Multihop: we send with the given TTL (for a peer several hops away); nothing is checked.
//!
//! Without either, the operating system's default TTL is used (64 on Linux), which also suits
//! iBGP between loopbacks; a router that enforces single-hop eBGP checks the TTL it receives only
//! under GTSM.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use zeroize::Zeroizing;

/// A TCP MD5 key. It never appears in `Debug` output or logs, and is wiped from memory on drop.
#[derive(Clone)]
pub struct Md5Key(Zeroizing<Vec<u8>>);

impl fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Md5Key(***)")
    }
}

/// Equal keys, for `run`'s config reload (a peer whose password changed is restarted).
impl PartialEq for Md5Key {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice() == other.0.as_slice()
    }
}

impl Md5Key {
    /// Reads the key from a file, as routers' configs write it: one line; a trailing newline is
    /// not part of the key. Empty or longer than 80 bytes is an error naming the file (never
    /// showing its content).
    pub fn from_file(path: &Path) -> Result<Md5Key, String> {
        let raw = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| format!("reading MD5 password file {}: {e}", path.display()))?,
        );
        let mut key = raw.as_slice();
        while let Some(rest) = key.strip_suffix(b"\n").or_else(|| key.strip_suffix(b"\r")) {
            key = rest;
        }
        if key.is_empty() {
            return Err(format!("MD5 password file {} is empty", path.display()));
        }
        if key.len() > foureyes_sockopt::MD5_MAX_KEY_LEN {
            return Err(format!(
                "MD5 password in {} is longer than {} bytes",
                path.display(),
                foureyes_sockopt::MD5_MAX_KEY_LEN
            ));
        }
        Ok(Md5Key(Zeroizing::new(key.to_vec())))
    }
}

/// What TTL we send with, and what TTL we accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TtlPolicy {
    /// The operating system's default; nothing checked.
    #[default]
    Default,
    /// GTSM with this many hops allowed (1 for a directly connected peer): send TTL 255, drop
    /// segments with a TTL below `256 - hops`.
    Gtsm { hops: u8 },
    /// eBGP multihop: send with this TTL; nothing checked.
    Multihop { ttl: u8 },
}

impl TtlPolicy {
    /// Builds the policy from the two mutually exclusive settings (`--ttl-security HOPS`,
    /// `--multihop TTL`, or the same keys in `listener.toml`).
    pub fn from_settings(ttl_security: Option<u8>, multihop: Option<u8>) -> Result<Self, String> {
        match (ttl_security, multihop) {
            (Some(_), Some(_)) => Err("ttl-security (GTSM) and multihop exclude each other".into()),
            (Some(0), None) => Err("ttl-security needs at least 1 hop".into()),
            (Some(hops), None) => Ok(TtlPolicy::Gtsm { hops }),
            (None, Some(0)) => Err("multihop needs a TTL of at least 1".into()),
            (None, Some(ttl)) => Ok(TtlPolicy::Multihop { ttl }),
            (None, None) => Ok(TtlPolicy::Default),
        }
    }

    fn send_ttl(self) -> Option<u8> {
        match self {
            TtlPolicy::Default => None,
            TtlPolicy::Gtsm { .. } => Some(255),
            TtlPolicy::Multihop { ttl } => Some(ttl),
        }
    }

    fn min_ttl(self) -> Option<u8> {
        match self {
            // hops >= 1, so 256 - hops fits in a u8.
            TtlPolicy::Gtsm { hops } => Some(u8::try_from(256 - u16::from(hops)).unwrap_or(1)),
            TtlPolicy::Default | TtlPolicy::Multihop { .. } => None,
        }
    }
}

/// The protections of one peer's connections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transport {
    pub md5: Option<Md5Key>,
    pub ttl: TtlPolicy,
}

impl Transport {
    /// True when nothing is set (plain TCP).
    pub fn is_plain(&self) -> bool {
        self.md5.is_none() && self.ttl == TtlPolicy::Default
    }

    /// Prepares a listening socket used by this peer alone: its MD5 key, and the TTL policy (the
    /// SYN-ACK leaves with the listener's TTL, and a GTSM peer drops it unless that is 255).
    pub fn prepare_listener(&self, l: &TcpListener, peer: IpAddr) -> io::Result<()> {
        prepare_shared_listener(l, &[(peer, self)])
    }

    /// Applies the TTL policy to a connection accepted from the peer, before anything is read.
    pub fn prepare_accepted(&self, s: &TcpStream) -> io::Result<()> {
        if let Some(min) = self.ttl.min_ttl() {
            foureyes_sockopt::set_min_ttl(s, min)?;
        }
        if let Some(ttl) = self.ttl.send_ttl() {
            foureyes_sockopt::set_ttl(s, ttl)?;
        }
        Ok(())
    }

    /// Dials the peer with the key and the TTL policy in place before the SYN leaves.
    pub async fn connect(&self, remote: SocketAddr) -> io::Result<TcpStream> {
        let sock = match remote {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(key) = &self.md5 {
            foureyes_sockopt::set_tcp_md5(&sock, remote.ip(), &key.0)?;
        }
        if let Some(min) = self.ttl.min_ttl() {
            foureyes_sockopt::set_min_ttl(&sock, min)?;
        }
        if let Some(ttl) = self.ttl.send_ttl() {
            foureyes_sockopt::set_ttl(&sock, ttl)?;
        }
        sock.connect(remote).await
    }
}

/// Prepares a listening socket shared by several peers: every peer's MD5 key; the highest send
/// TTL any peer wants (255 if one uses GTSM; a higher TTL harms no peer); and a minimum TTL only
/// when every peer uses GTSM (the lowest of theirs), since the check applies to all of them. The
/// accepted connections get their own peer's exact policy afterwards.
pub fn prepare_shared_listener(l: &TcpListener, peers: &[(IpAddr, &Transport)]) -> io::Result<()> {
    for (peer, t) in peers {
        if let Some(key) = &t.md5 {
            foureyes_sockopt::set_tcp_md5(l, *peer, &key.0)?;
        }
    }
    if let Some(ttl) = peers.iter().filter_map(|(_, t)| t.ttl.send_ttl()).max() {
        foureyes_sockopt::set_ttl(l, ttl)?;
    }
    let mins: Option<Vec<u8>> = peers.iter().map(|(_, t)| t.ttl.min_ttl()).collect();
    if let Some(min) = mins.and_then(|m| m.into_iter().min()) {
        foureyes_sockopt::set_min_ttl(l, min)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_policies() {
        assert_eq!(TtlPolicy::from_settings(None, None), Ok(TtlPolicy::Default));
        let g = TtlPolicy::from_settings(Some(1), None).expect("gtsm");
        assert_eq!((g.send_ttl(), g.min_ttl()), (Some(255), Some(255)));
        let g = TtlPolicy::from_settings(Some(255), None).expect("gtsm");
        assert_eq!(g.min_ttl(), Some(1));
        let m = TtlPolicy::from_settings(None, Some(3)).expect("multihop");
        assert_eq!((m.send_ttl(), m.min_ttl()), (Some(3), None));
        assert!(TtlPolicy::from_settings(Some(1), Some(2)).is_err());
        assert!(TtlPolicy::from_settings(Some(0), None).is_err());
        assert!(TtlPolicy::from_settings(None, Some(0)).is_err());
    }

    #[test]
    fn md5_key_files_are_trimmed_checked_and_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pw");
        std::fs::write(&p, b"s3cret-pw\n").expect("write");
        let k = Md5Key::from_file(&p).expect("key");
        assert_eq!(k.0.as_slice(), b"s3cret-pw");
        assert!(!format!("{k:?}").contains("s3cret"));
        let t = Transport {
            md5: Some(k),
            ttl: TtlPolicy::Default,
        };
        assert!(!format!("{t:?}").contains("s3cret"));
        std::fs::write(&p, b"\n").expect("write");
        assert!(Md5Key::from_file(&p).expect_err("empty").contains("empty"));
        std::fs::write(&p, [b'x'; 81]).expect("write");
        let e = Md5Key::from_file(&p).expect_err("long");
        assert!(e.contains("longer") && !e.contains("xxx"));
        assert!(Md5Key::from_file(&dir.path().join("missing")).is_err());
    }
}
