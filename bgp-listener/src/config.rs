//! `listener.toml`, the configuration of `run`: peers, an optional BMP station, the spool.
//!
//! Strict like the collector's config: unknown keys are errors naming the key and the file, so a
//! typo never silently leaves a peer unconfigured. Defaults live in one place (this file). The
//! listener opens a listening socket only where this file names one (a peer's `listen`, or
//! `bmp.listen`): agents are otherwise outbound-only. Secrets are never held here: an MD5
//! password would be named by a `*_file` key.
//!
//! ```toml
//! local_as = 65002
//! router_id = "192.0.2.10"
//!
//! [[peer]]
//! address = "192.0.2.1"         # only connections from this address are accepted
//! remote_as = 65001
//! listen = "192.0.2.10:179"     # passive; several peers may share one address
//!
//! [[peer]]
//! address = "2001:db8::1"
//! remote_as = 65003
//! connect = true                # active: dial address:port (179 unless `port` says otherwise)
//! hold_time = 30
//! add_path = false
//! extended_messages = false     # RFC 8654 (default true)
//! ipv6 = false                  # address families advertised: ipv4, ipv6 (default true each;
//!                               # not both off)
//! four_octet_as = false         # RFC 6793 capability (default true; needs local_as <= 65535)
//! stale_routes_time = 360       # graceful restart: stale routes wait this long for End-of-RIB
//! max_prefixes = 1000000        # warn past this many routes per family
//! max_prefixes_teardown = false # and tear the session down only if this says so
//! max_prefixes_idle_hold = 300  # after a teardown, refuse the peer this many seconds
//! md5_password_file = "peer2.md5" # TCP MD5 (RFC 2385); relative to this file's directory
//! ttl_security = 1              # GTSM (RFC 5082): hops allowed; or `multihop = TTL`
//!
//! [bmp]
//! listen = "0.0.0.0:11019"
//! allow = ["192.0.2.1"]         # routers allowed to stream BMP
//! ```

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::driver::BGP_PORT;
use crate::session::SessionConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {msg}")]
    Read { path: String, msg: String },
    #[error("{path}: {msg}")]
    Invalid { path: String, msg: String },
}

/// Records the spool keeps while the collector is unreachable (a few full tables' worth).
pub const DEFAULT_SPOOL_RECORDS: u64 = 5_000_000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Default local AS for every peer.
    pub local_as: u32,
    /// BGP identifier for every peer (a peer may override it).
    pub router_id: Ipv4Addr,
    /// Default proposed hold time (0 or 3..=65535).
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub bmp: Option<BmpConfig>,
    #[serde(default)]
    pub spool: SpoolConfig,
}

fn default_hold() -> u16 {
    90
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// A label for logs; defaults to the address.
    #[serde(default)]
    pub name: Option<String>,
    pub address: IpAddr,
    pub remote_as: u32,
    #[serde(default)]
    pub local_as: Option<u32>,
    #[serde(default)]
    pub router_id: Option<Ipv4Addr>,
    /// Passive: accept the peer's connection here (ADDR or ADDR:PORT, port 179 by default).
    #[serde(default)]
    pub listen: Option<String>,
    /// Active: dial the peer.
    #[serde(default)]
    pub connect: bool,
    /// Port to dial with `connect`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub hold_time: Option<u16>,
    #[serde(default = "yes")]
    pub graceful_restart: bool,
    /// Seconds the peer's stale routes wait for its End-of-RIB after a graceful restart
    /// (default 360).
    #[serde(default)]
    pub stale_routes_time: Option<u64>,
    #[serde(default = "yes")]
    pub add_path: bool,
    /// Advertise Extended Messages (RFC 8654): UPDATEs up to 65535 octets when the peer does too.
    #[serde(default = "yes")]
    pub extended_messages: bool,
    /// Advertise (and accept routes for) IPv4 unicast.
    #[serde(default = "yes")]
    pub ipv4: bool,
    /// Advertise (and accept routes for) IPv6 unicast.
    #[serde(default = "yes")]
    pub ipv6: bool,
    /// Advertise 4-octet AS numbers (RFC 6793).
    #[serde(default = "yes")]
    pub four_octet_as: bool,
    /// Warn (a `prefix_limit` event) when the peer's routes in one family exceed this.
    #[serde(default)]
    pub max_prefixes: Option<u32>,
    /// Also tear the session down (Cease, RFC 4486 subcode 1) when `max_prefixes` is crossed.
    #[serde(default)]
    pub max_prefixes_teardown: bool,
    /// Seconds after such a teardown during which the peer is refused (default 300; 0 lets it
    /// straight back).
    #[serde(default)]
    pub max_prefixes_idle_hold: Option<u64>,
    /// TCP MD5 (RFC 2385): the file holding the password (relative to this config file's
    /// directory unless absolute). The password itself never goes in this file.
    #[serde(default)]
    pub md5_password_file: Option<PathBuf>,
    /// GTSM (RFC 5082): hops allowed (1 = directly connected); we send with TTL 255.
    #[serde(default)]
    pub ttl_security: Option<u8>,
    /// eBGP multihop: the TTL we send with.
    #[serde(default)]
    pub multihop: Option<u8>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BmpConfig {
    /// Where routers connect (ADDR:PORT).
    pub listen: SocketAddr,
    /// Routers allowed to stream BMP; connections from any other address are closed unread.
    pub allow: Vec<IpAddr>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    #[serde(default = "default_spool")]
    pub max_records: u64,
}

fn default_spool() -> u64 {
    DEFAULT_SPOOL_RECORDS
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_records: DEFAULT_SPOOL_RECORDS,
        }
    }
}

/// How one configured peer's connection comes about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMode {
    Passive(SocketAddr),
    Active(SocketAddr),
}

/// A validated peer: its session parameters and connection mode.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub name: String,
    pub session: SessionConfig,
    pub mode: PeerMode,
    pub transport: crate::transport::Transport,
}

/// Parses `ADDR` or `ADDR:PORT` (IPv6 with or without brackets), port 179 by default.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("{s:?} is not an address or address:port"))?;
    Ok(SocketAddr::new(ip, BGP_PORT))
}

impl ListenerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: p.clone(),
            msg: e.to_string(),
        })?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let cfg: ListenerConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_string(),
            msg: e.to_string(),
        })?;
        cfg.peers(path)?;
        Ok(cfg)
    }

    /// Validates every peer and returns them with their session parameters.
    pub fn peers(&self, path: &str) -> Result<Vec<Peer>, ConfigError> {
        let bad = |msg: String| ConfigError::Invalid {
            path: path.to_string(),
            msg,
        };
        if self.peers.is_empty() && self.bmp.is_none() {
            return Err(bad("no [[peer]] and no [bmp]: nothing to listen to".into()));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for p in &self.peers {
            let name = p.name.clone().unwrap_or_else(|| p.address.to_string());
            let addr = p.address.to_canonical();
            if !seen.insert(addr) {
                return Err(bad(format!(
                    "peer {addr} is configured twice (one session per peer address)"
                )));
            }
            let hold = p.hold_time.unwrap_or(self.hold_time);
            if hold == 1 || hold == 2 {
                return Err(bad(format!(
                    "peer {name}: hold_time must be 0 or at least 3"
                )));
            }
            let mode = match (&p.listen, p.connect) {
                (Some(l), false) => PeerMode::Passive(
                    parse_listen(l).map_err(|e| bad(format!("peer {name}: listen {e}")))?,
                ),
                (None, true) => PeerMode::Active(SocketAddr::new(addr, p.port.unwrap_or(BGP_PORT))),
                _ => {
                    return Err(bad(format!(
                        "peer {name}: give exactly one of listen = \"ADDR[:PORT]\" or connect = true"
                    )));
                }
            };
            let mut s = SessionConfig::new(
                p.local_as.unwrap_or(self.local_as),
                p.remote_as,
                p.router_id.unwrap_or(self.router_id),
                addr,
            );
            s.hold_time = hold;
            s.graceful_restart = p.graceful_restart;
            if let Some(t) = p.stale_routes_time {
                s.stale_routes_time = std::time::Duration::from_secs(t);
            }
            s.add_path = p.add_path;
            s.extended_message = p.extended_messages;
            s.families = crate::session::families(p.ipv4, p.ipv6);
            s.four_octet_as = p.four_octet_as;
            s.check().map_err(|e| bad(format!("peer {name}: {e}")))?;
            if p.max_prefixes_teardown && p.max_prefixes.is_none() {
                return Err(bad(format!(
                    "peer {name}: max_prefixes_teardown needs max_prefixes"
                )));
            }
            if p.max_prefixes_idle_hold.is_some() && !p.max_prefixes_teardown {
                return Err(bad(format!(
                    "peer {name}: max_prefixes_idle_hold needs max_prefixes_teardown = true"
                )));
            }
            s.max_prefixes = p.max_prefixes.map(|limit| crate::session::MaxPrefixes {
                limit,
                teardown: p.max_prefixes_teardown,
                idle_hold: p.max_prefixes_idle_hold.map_or(
                    crate::session::MAX_PREFIXES_IDLE_HOLD,
                    std::time::Duration::from_secs,
                ),
            });
            let md5 = match &p.md5_password_file {
                Some(f) => {
                    let f = match Path::new(path).parent() {
                        Some(dir) if f.is_relative() => dir.join(f),
                        _ => f.clone(),
                    };
                    Some(
                        crate::transport::Md5Key::from_file(&f)
                            .map_err(|e| bad(format!("peer {name}: {e}")))?,
                    )
                }
                None => None,
            };
            let ttl = crate::transport::TtlPolicy::from_settings(p.ttl_security, p.multihop)
                .map_err(|e| bad(format!("peer {name}: {e}")))?;
            out.push(Peer {
                name,
                session: s,
                mode,
                transport: crate::transport::Transport { md5, ttl },
            });
        }
        if let Some(b) = &self.bmp
            && b.allow.is_empty()
        {
            return Err(bad(
                "[bmp] allow is empty: name the routers allowed to stream BMP".into(),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
local_as = 65002
router_id = "192.0.2.10"
[[peer]]
address = "192.0.2.1"
remote_as = 65001
listen = "192.0.2.10"
[[peer]]
address = "2001:db8::1"
remote_as = 65003
connect = true
port = 1179
hold_time = 30
add_path = false
max_prefixes = 1000
stale_routes_time = 120
"#;

    #[test]
    fn a_good_file_gives_passive_and_active_peers() {
        let c = ListenerConfig::parse(GOOD, "l.toml").unwrap();
        let p = c.peers("l.toml").unwrap();
        assert_eq!(
            p[0].mode,
            PeerMode::Passive("192.0.2.10:179".parse().unwrap())
        );
        assert_eq!(
            p[1].mode,
            PeerMode::Active("[2001:db8::1]:1179".parse().unwrap())
        );
        assert_eq!(p[1].session.hold_time, 30);
        assert!(!p[1].session.add_path);
        let m = p[1].session.max_prefixes.as_ref().unwrap();
        assert_eq!((m.limit, m.teardown), (1000, false));
        assert!(p[0].session.max_prefixes.is_none());
        assert!(p[0].session.graceful_restart);
        assert_eq!(
            p[0].session.stale_routes_time,
            crate::session::STALE_ROUTES_TIME
        );
        assert_eq!(p[1].session.stale_routes_time.as_secs(), 120);
        assert_eq!(p[0].session.local_as, 65002);
    }

    #[test]
    fn md5_files_are_relative_to_the_config_and_ttl_settings_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p1.md5"), "pw-one\n").unwrap();
        let path = dir.path().join("l.toml").display().to_string();
        let text = GOOD.replace(
            "listen = \"192.0.2.10\"",
            "listen = \"192.0.2.10\"\nmd5_password_file = \"p1.md5\"\nttl_security = 1",
        );
        let p = ListenerConfig::parse(&text, &path)
            .unwrap()
            .peers(&path)
            .unwrap();
        assert!(p[0].transport.md5.is_some());
        assert_eq!(
            p[0].transport.ttl,
            crate::transport::TtlPolicy::Gtsm { hops: 1 }
        );
        assert!(p[1].transport.is_plain());
        let both = text.replace("ttl_security = 1", "ttl_security = 1\nmultihop = 2");
        let e = ListenerConfig::parse(&both, &path).unwrap_err().to_string();
        assert!(e.contains("exclude each other"), "{e}");
        let missing = text.replace("p1.md5", "nope.md5");
        let e = ListenerConfig::parse(&missing, &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.md5") && e.contains("192.0.2.1"), "{e}");
    }

    #[test]
    fn mistakes_are_errors_naming_the_file_and_the_problem() {
        for (text, needle) in [
            (
                GOOD.replace("remote_as = 65001", "remote_as = 65001\nremote_ass = 1"),
                "remote_ass",
            ),
            (
                GOOD.replace("listen = \"192.0.2.10\"", ""),
                "exactly one of",
            ),
            (
                GOOD.replace("listen = \"192.0.2.10\"", "listen = \"x\"\nconnect = true"),
                "exactly one of",
            ),
            (
                GOOD.replace("listen = \"192.0.2.10\"", "listen = \"nonsense\""),
                "not an address",
            ),
            (GOOD.replace("hold_time = 30", "hold_time = 2"), "hold_time"),
            (
                GOOD.replace(
                    "listen = \"192.0.2.10\"",
                    "listen = \"192.0.2.10\"\nmax_prefixes_teardown = true",
                ),
                "needs max_prefixes",
            ),
            (
                GOOD.replace(
                    "max_prefixes = 1000",
                    "max_prefixes = 1000\nmax_prefixes_idle_hold = 60",
                ),
                "needs max_prefixes_teardown",
            ),
            (GOOD.replace("2001:db8::1", "192.0.2.1"), "configured twice"),
            (
                "local_as = 1\nrouter_id = \"192.0.2.1\"\n".to_string(),
                "nothing to listen to",
            ),
            (
                format!("{GOOD}\n[bmp]\nlisten = \"0.0.0.0:11019\"\nallow = []\n"),
                "allow is empty",
            ),
        ] {
            let e = ListenerConfig::parse(&text, "l.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("l.toml: "), "{e}");
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
