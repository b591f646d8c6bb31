//! The RPKI-to-Router protocol, router side: RFC 8210 (version 1) falling back to RFC 6810
//! (version 0). Sans-IO: [`frame`] finds PDU boundaries in received bytes and [`Session`] turns
//! each PDU into bytes to send or a new VRP set; `client.rs` owns the socket and the timers.
//!
//! Why not NLnet Labs' `rpki` crate (0.20, feature `rtr`)? Its `rtr` feature does not build
//! without `crypto` (`rtr/payload.rs` imports `crypto::keys`), which pulls aws-lc-rs, a large C
//! build, into the collector for a client that needs none of it; its client also proposes the
//! 8210bis draft (version 2) first and leaves the expire timer to the caller. The router side of
//! RTR is ten fixed-layout PDUs, so we keep it here as a bounded decoder that never panics
//! (random-input test below) and a state machine tested without sockets.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use super::{Vrp, VrpSet};

/// Largest PDU accepted. The biggest legitimate ones are Error Reports (they quote a PDU and carry
/// text) and Router Keys; prefix PDUs are 20 or 32 bytes.
pub const MAX_PDU: u32 = 64 * 1024;
/// Most VRPs one response may carry and the set may hold (the global table is about 500k): a
/// cache that sends more gets an Error Report instead of our memory.
pub const MAX_VRPS: usize = 4_000_000;
/// The version proposed first (RFC 8210).
pub const VERSION: u8 = 1;

pub const SERIAL_NOTIFY: u8 = 0;
pub const SERIAL_QUERY: u8 = 1;
pub const RESET_QUERY: u8 = 2;
pub const CACHE_RESPONSE: u8 = 3;
pub const IPV4_PREFIX: u8 = 4;
pub const IPV6_PREFIX: u8 = 6;
pub const END_OF_DATA: u8 = 7;
pub const CACHE_RESET: u8 = 8;
pub const ROUTER_KEY: u8 = 9;
pub const ERROR_REPORT: u8 = 10;

/// RFC 8210 section 12 error codes.
pub mod code {
    pub const CORRUPT_DATA: u16 = 0;
    pub const INTERNAL_ERROR: u16 = 1;
    pub const NO_DATA_AVAILABLE: u16 = 2;
    pub const INVALID_REQUEST: u16 = 3;
    pub const UNSUPPORTED_VERSION: u16 = 4;
    pub const UNSUPPORTED_PDU_TYPE: u16 = 5;
    pub const WITHDRAWAL_OF_UNKNOWN: u16 = 6;
    pub const DUPLICATE_ANNOUNCEMENT: u16 = 7;
    pub const UNEXPECTED_VERSION: u16 = 8;
}

/// Refresh, retry and expire intervals (RFC 8210 section 6). Version 0 carries none, so these
/// defaults (the RFC's suggested values) stay until a version 1 End of Data brings others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub refresh: Duration,
    pub retry: Duration,
    pub expire: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(3600),
            retry: Duration::from_secs(600),
            expire: Duration::from_secs(7200),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("PDU length {0} outside 8..={MAX_PDU}")]
    Length(u32),
}

/// Length of the first complete PDU in `buf`, `None` if more bytes are needed.
pub fn frame(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(len) = buf.get(4..8) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if !(8..=MAX_PDU).contains(&len) {
        return Err(FrameError::Length(len));
    }
    let len = len as usize;
    Ok((buf.len() >= len).then_some(len))
}

/// A decoded cache-to-router PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    SerialNotify {
        session: u16,
        serial: u32,
    },
    CacheResponse {
        session: u16,
    },
    /// IPv4 or IPv6 Prefix; `vrp` is `None` when its lengths are impossible (corrupt data).
    Prefix {
        announce: bool,
        vrp: Option<Vrp>,
    },
    EndOfData {
        session: u16,
        serial: u32,
        timing: Option<Timing>,
    },
    CacheReset,
    RouterKey,
    ErrorReport {
        code: u16,
        text: String,
    },
    /// A router-to-cache query sent to us, or a type this version does not define.
    Unexpected {
        pdu_type: u8,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("PDU type {pdu_type}: {what}")]
pub struct DecodeError {
    pub pdu_type: u8,
    pub what: &'static str,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decodes one framed PDU: `(version, pdu)`. Every field is read through bounds-checked slices.
pub fn decode(b: &[u8]) -> Result<(u8, Pdu), DecodeError> {
    let pdu_type = b.get(1).copied().unwrap_or(u8::MAX);
    let err = |what| DecodeError { pdu_type, what };
    let version = *b.first().ok_or(err("empty"))?;
    let field = be16(b, 2).ok_or(err("short header"))?;
    let len = be32(b, 4).ok_or(err("short header"))? as usize;
    if len != b.len() {
        return Err(err("length field does not match the frame"));
    }
    let exact = |n: usize| {
        if len == n {
            Ok(())
        } else {
            Err(err("wrong length for this PDU type"))
        }
    };
    let pdu = match pdu_type {
        SERIAL_NOTIFY => {
            exact(12)?;
            Pdu::SerialNotify {
                session: field,
                serial: be32(b, 8).ok_or(err("short"))?,
            }
        }
        CACHE_RESPONSE => {
            exact(8)?;
            Pdu::CacheResponse { session: field }
        }
        IPV4_PREFIX | IPV6_PREFIX => {
            let v6 = pdu_type == IPV6_PREFIX;
            exact(if v6 { 32 } else { 20 })?;
            let flags = *b.get(8).ok_or(err("short"))?;
            let len = *b.get(9).ok_or(err("short"))?;
            let max_len = *b.get(10).ok_or(err("short"))?;
            let (addr, asn): (IpAddr, u32) = if v6 {
                let a = b.get(12..28).ok_or(err("short"))?;
                let mut o = [0u8; 16];
                o.copy_from_slice(a);
                (Ipv6Addr::from(o).into(), be32(b, 28).ok_or(err("short"))?)
            } else {
                let a = be32(b, 12).ok_or(err("short"))?;
                (Ipv4Addr::from(a).into(), be32(b, 16).ok_or(err("short"))?)
            };
            Pdu::Prefix {
                announce: flags & 1 == 1,
                vrp: Vrp::new(addr, len, max_len, asn),
            }
        }
        END_OF_DATA => {
            let serial = be32(b, 8).ok_or(err("short"))?;
            let timing = match (version, len) {
                (0, 12) => None,
                (v, 24) if v >= 1 => {
                    let s = |at| be32(b, at).map(|x| Duration::from_secs(x.into()));
                    Some(Timing {
                        refresh: s(12).ok_or(err("short"))?,
                        retry: s(16).ok_or(err("short"))?,
                        expire: s(20).ok_or(err("short"))?,
                    })
                }
                _ => return Err(err("wrong length for this PDU type")),
            };
            Pdu::EndOfData {
                session: field,
                serial,
                timing,
            }
        }
        CACHE_RESET => {
            exact(8)?;
            Pdu::CacheReset
        }
        ROUTER_KEY if version >= 1 => Pdu::RouterKey,
        ERROR_REPORT => {
            let pdu_len = be32(b, 8).ok_or(err("short"))? as usize;
            let text_at = 12usize
                .checked_add(pdu_len)
                .ok_or(err("encapsulated PDU too long"))?;
            let text_len = be32(b, text_at).ok_or(err("encapsulated PDU too long"))? as usize;
            let text = text_at
                .checked_add(4)
                .and_then(|s| b.get(s..s.checked_add(text_len)?))
                .ok_or(err("error text too long"))?;
            Pdu::ErrorReport {
                code: field,
                text: String::from_utf8_lossy(text).chars().take(200).collect(),
            }
        }
        t => Pdu::Unexpected { pdu_type: t },
    };
    Ok((version, pdu))
}

fn header(version: u8, pdu_type: u8, field: u16, len: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(len as usize);
    v.push(version);
    v.push(pdu_type);
    v.extend_from_slice(&field.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

pub fn reset_query(version: u8) -> Vec<u8> {
    header(version, RESET_QUERY, 0, 8)
}

pub fn serial_query(version: u8, session: u16, serial: u32) -> Vec<u8> {
    let mut v = header(version, SERIAL_QUERY, session, 12);
    v.extend_from_slice(&serial.to_be_bytes());
    v
}

/// An Error Report quoting (at most the first 1 KiB of) the offending PDU.
pub fn error_report(version: u8, code: u16, offending: &[u8], text: &str) -> Vec<u8> {
    let pdu = offending.get(..offending.len().min(1024)).unwrap_or(&[]);
    let text = text.as_bytes();
    let len = 16 + pdu.len() + text.len();
    let mut v = header(version, ERROR_REPORT, code, len as u32);
    v.extend_from_slice(&(pdu.len() as u32).to_be_bytes());
    v.extend_from_slice(pdu);
    v.extend_from_slice(&(text.len() as u32).to_be_bytes());
    v.extend_from_slice(text);
    v
}

/// What one received PDU leads to.
#[derive(Debug)]
pub enum Step {
    Nothing,
    Send(Vec<u8>),
    /// An End of Data was applied: publish this set.
    Synced(Arc<VrpSet>),
}

/// Why the session must end; the connection is closed after sending `reply`, if any.
#[derive(Debug)]
pub struct Fail {
    pub reply: Option<Vec<u8>>,
    pub reason: String,
    /// The cache speaks only this lower version: reconnect with it.
    pub downgrade: Option<u8>,
    /// The cache has no data yet: retry after the retry interval.
    pub no_data: bool,
}

impl Fail {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reply: None,
            reason: reason.into(),
            downgrade: None,
            no_data: false,
        }
    }
}

struct Transfer {
    reset: bool,
    session: u16,
    changes: Vec<(bool, Vrp)>,
}

/// One router's view of one cache: the VRP set, the session id and serial it corresponds to, and
/// the query in flight. It outlives connections, so a reconnect can continue with a Serial Query.
pub struct Session {
    version: u8,
    negotiated: bool,
    state: Option<(u16, u32)>,
    vrps: HashSet<Vrp>,
    /// A query is outstanding: `Some(true)` for a Reset Query.
    querying: Option<bool>,
    transfer: Option<Transfer>,
    pub timing: Timing,
}

impl Session {
    pub fn new(version: u8) -> Self {
        Self {
            version,
            negotiated: false,
            state: None,
            vrps: HashSet::new(),
            querying: None,
            transfer: None,
            timing: Timing::default(),
        }
    }

    pub fn version(&self) -> u8 {
        self.version
    }

    /// `(session id, serial)` of the data held.
    pub fn state(&self) -> Option<(u16, u32)> {
        self.state
    }

    /// A new connection: ask for changes since our serial, or for everything.
    pub fn connected(&mut self) -> Vec<u8> {
        self.negotiated = false;
        self.transfer = None;
        self.query()
    }

    fn query(&mut self) -> Vec<u8> {
        match self.state {
            Some((session, serial)) => {
                self.querying = Some(false);
                serial_query(self.version, session, serial)
            }
            None => {
                self.querying = Some(true);
                reset_query(self.version)
            }
        }
    }

    /// The refresh timer fired: a Serial Query, unless one is already in flight.
    pub fn refresh(&mut self) -> Option<Vec<u8>> {
        self.querying.is_none().then(|| self.query())
    }

    pub fn awaiting_response(&self) -> bool {
        self.querying.is_some()
    }

    /// The data expired (RFC 8210 section 6): forget it, so the next connection resets.
    pub fn forget(&mut self) {
        self.state = None;
        self.vrps = HashSet::new();
        self.transfer = None;
    }

    fn fail(&self, code: u16, frame: &[u8], reason: impl Into<String>) -> Fail {
        let reason = reason.into();
        Fail {
            reply: Some(error_report(self.version, code, frame, &reason)),
            ..Fail::new(reason)
        }
    }

    /// Handles one framed PDU from the cache.
    pub fn handle(&mut self, frame: &[u8]) -> Result<Step, Fail> {
        let (version, pdu) = match decode(frame) {
            Ok(x) => x,
            Err(e) => return Err(self.fail(code::CORRUPT_DATA, frame, e.to_string())),
        };
        if let Pdu::ErrorReport { code: c, text } = &pdu {
            // Never answer an Error Report (RFC 8210 section 5.11).
            let mut f = Fail::new(format!("cache reported error {c}: {text}"));
            if *c == code::UNSUPPORTED_VERSION && !self.negotiated && version < self.version {
                f.downgrade = Some(version);
            }
            f.no_data = *c == code::NO_DATA_AVAILABLE;
            return Err(f);
        }
        if self.negotiated {
            if version != self.version {
                return Err(self.fail(
                    code::UNEXPECTED_VERSION,
                    frame,
                    format!("version {version} after negotiating {}", self.version),
                ));
            }
        } else if version > self.version {
            return Err(self.fail(
                code::UNSUPPORTED_VERSION,
                frame,
                format!("version {version} is above {}", self.version),
            ));
        } else {
            // RFC 8210 section 7: a cache answering in a lower version sets the version.
            self.version = version;
            self.negotiated = true;
        }
        match pdu {
            Pdu::SerialNotify { serial, .. } => {
                if self.querying.is_some() || self.state.is_some_and(|(_, s)| s == serial) {
                    return Ok(Step::Nothing);
                }
                Ok(Step::Send(self.query()))
            }
            Pdu::CacheResponse { session } => {
                let Some(reset) = self.querying else {
                    return Err(self.fail(code::CORRUPT_DATA, frame, "unsolicited Cache Response"));
                };
                if self.transfer.is_some() {
                    return Err(self.fail(code::CORRUPT_DATA, frame, "Cache Response twice"));
                }
                if !reset && self.state.is_some_and(|(s, _)| s != session) {
                    self.state = None;
                    return Err(self.fail(code::CORRUPT_DATA, frame, "session id changed"));
                }
                self.transfer = Some(Transfer {
                    reset,
                    session,
                    changes: Vec::new(),
                });
                Ok(Step::Nothing)
            }
            Pdu::Prefix { announce, vrp } => {
                let Some(vrp) = vrp else {
                    return Err(self.fail(code::CORRUPT_DATA, frame, "impossible prefix lengths"));
                };
                let Some(t) = self.transfer.as_mut() else {
                    return Err(self.fail(code::CORRUPT_DATA, frame, "prefix outside a response"));
                };
                if t.changes.len() >= MAX_VRPS {
                    return Err(self.fail(
                        code::INTERNAL_ERROR,
                        frame,
                        format!("more than {MAX_VRPS} VRPs in one response"),
                    ));
                }
                t.changes.push((announce, vrp));
                Ok(Step::Nothing)
            }
            Pdu::RouterKey => Ok(Step::Nothing),
            Pdu::EndOfData {
                session,
                serial,
                timing,
            } => {
                let Some(t) = self.transfer.take() else {
                    return Err(self.fail(
                        code::CORRUPT_DATA,
                        frame,
                        "End of Data outside a response",
                    ));
                };
                if t.session != session {
                    self.state = None;
                    return Err(self.fail(code::CORRUPT_DATA, frame, "session id changed"));
                }
                if t.reset {
                    self.vrps = t
                        .changes
                        .into_iter()
                        .filter_map(|(a, v)| a.then_some(v))
                        .collect();
                } else {
                    for (announce, v) in t.changes {
                        // On failure the held set no longer matches any serial: forget the
                        // state so the next connection starts over with a Reset Query.
                        if announce && !self.vrps.insert(v) {
                            self.state = None;
                            return Err(self.fail(
                                code::DUPLICATE_ANNOUNCEMENT,
                                frame,
                                format!("duplicate announcement of {v:?}"),
                            ));
                        }
                        if !announce && !self.vrps.remove(&v) {
                            self.state = None;
                            return Err(self.fail(
                                code::WITHDRAWAL_OF_UNKNOWN,
                                frame,
                                format!("withdrawal of unknown {v:?}"),
                            ));
                        }
                    }
                }
                if self.vrps.len() > MAX_VRPS {
                    self.state = None;
                    return Err(self.fail(
                        code::INTERNAL_ERROR,
                        frame,
                        format!("more than {MAX_VRPS} VRPs"),
                    ));
                }
                self.state = Some((session, serial));
                self.querying = None;
                if let Some(t) = timing {
                    self.timing = t;
                }
                Ok(Step::Synced(Arc::new(VrpSet::new(
                    self.vrps.iter().copied(),
                ))))
            }
            Pdu::CacheReset => {
                self.state = None;
                self.transfer = None;
                Ok(Step::Send(self.query()))
            }
            Pdu::ErrorReport { .. } => Ok(Step::Nothing),
            Pdu::Unexpected { pdu_type } => {
                let c = if matches!(pdu_type, SERIAL_QUERY | RESET_QUERY) {
                    code::INVALID_REQUEST
                } else {
                    code::UNSUPPORTED_PDU_TYPE
                };
                Err(self.fail(c, frame, format!("unexpected PDU type {pdu_type}")))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn prefix4(version: u8, announce: bool, a: [u8; 4], len: u8, max: u8, asn: u32) -> Vec<u8> {
        let mut v = header(version, IPV4_PREFIX, 0, 20);
        v.extend_from_slice(&[u8::from(announce), len, max, 0]);
        v.extend_from_slice(&a);
        v.extend_from_slice(&asn.to_be_bytes());
        v
    }

    fn prefix6(version: u8, a: Ipv6Addr, len: u8, max: u8, asn: u32) -> Vec<u8> {
        let mut v = header(version, IPV6_PREFIX, 0, 32);
        v.extend_from_slice(&[1, len, max, 0]);
        v.extend_from_slice(&a.octets());
        v.extend_from_slice(&asn.to_be_bytes());
        v
    }

    fn eod(version: u8, session: u16, serial: u32) -> Vec<u8> {
        let len = if version == 0 { 12 } else { 24 };
        let mut v = header(version, END_OF_DATA, session, len);
        v.extend_from_slice(&serial.to_be_bytes());
        if version >= 1 {
            for x in [5u32, 2, 30] {
                v.extend_from_slice(&x.to_be_bytes());
            }
        }
        v
    }

    fn synced(s: &mut Session, f: &[u8]) -> Arc<VrpSet> {
        match s.handle(f) {
            Ok(Step::Synced(set)) => set,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reset_then_serial_update() {
        let mut s = Session::new(VERSION);
        assert_eq!(s.connected(), reset_query(1));
        s.handle(&header(1, CACHE_RESPONSE, 42, 8)).unwrap();
        s.handle(&prefix4(1, true, [192, 0, 2, 0], 24, 24, 64496))
            .unwrap();
        s.handle(&prefix6(1, "2001:db8::".parse().unwrap(), 32, 48, 64496))
            .unwrap();
        let set = synced(&mut s, &eod(1, 42, 7));
        assert_eq!(set.len(), 2);
        assert_eq!(s.state(), Some((42, 7)));
        assert_eq!(s.timing.refresh, Duration::from_secs(5));
        assert_eq!(s.timing.expire, Duration::from_secs(30));
        // A notify for a newer serial asks for the difference.
        let Ok(Step::Send(q)) = s.handle(&{
            let mut n = header(1, SERIAL_NOTIFY, 42, 12);
            n.extend_from_slice(&8u32.to_be_bytes());
            n
        }) else {
            panic!()
        };
        assert_eq!(q, serial_query(1, 42, 7));
        s.handle(&header(1, CACHE_RESPONSE, 42, 8)).unwrap();
        s.handle(&prefix4(1, false, [192, 0, 2, 0], 24, 24, 64496))
            .unwrap();
        s.handle(&prefix4(1, true, [198, 51, 100, 0], 24, 24, 64497))
            .unwrap();
        let set = synced(&mut s, &eod(1, 42, 8));
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.validate("192.0.2.0".parse().unwrap(), 24, 64496),
            super::super::RpkiState::NotFound
        );
        // Reconnecting continues from the serial.
        assert_eq!(s.connected(), serial_query(1, 42, 8));
    }

    #[test]
    fn version_0_cache_downgrades_the_session() {
        let mut s = Session::new(VERSION);
        s.connected();
        let f = s
            .handle(&error_report(
                0,
                code::UNSUPPORTED_VERSION,
                &reset_query(1),
                "v0 only",
            ))
            .unwrap_err();
        assert_eq!(f.downgrade, Some(0));
        assert!(f.reply.is_none(), "an Error Report is never answered");
        let mut s = Session::new(0);
        assert_eq!(s.connected(), reset_query(0));
        s.handle(&header(0, CACHE_RESPONSE, 1, 8)).unwrap();
        s.handle(&prefix4(0, true, [10, 0, 0, 0], 8, 8, 1)).unwrap();
        assert_eq!(synced(&mut s, &eod(0, 1, 1)).len(), 1);
        assert_eq!(s.timing, Timing::default());
        // A cache that answers in version 0 straight away is accepted too.
        let mut s = Session::new(VERSION);
        s.connected();
        s.handle(&header(0, CACHE_RESPONSE, 1, 8)).unwrap();
        assert_eq!(s.version(), 0);
        // But then it may not change its mind.
        let f = s
            .handle(&prefix4(1, true, [10, 0, 0, 0], 8, 8, 1))
            .unwrap_err();
        assert!(f.reply.is_some());
    }

    #[test]
    fn protocol_errors_forget_the_state_and_answer_with_an_error_report() {
        let mut s = Session::new(VERSION);
        s.connected();
        s.handle(&header(1, CACHE_RESPONSE, 3, 8)).unwrap();
        synced(&mut s, &eod(1, 3, 1));
        s.refresh().unwrap();
        s.handle(&header(1, CACHE_RESPONSE, 3, 8)).unwrap();
        s.handle(&prefix4(1, false, [10, 0, 0, 0], 8, 8, 1))
            .unwrap();
        let f = s.handle(&eod(1, 3, 2)).unwrap_err();
        let reply = f.reply.unwrap();
        assert_eq!(reply.get(1), Some(&ERROR_REPORT));
        assert_eq!(be16(&reply, 2), Some(code::WITHDRAWAL_OF_UNKNOWN));
        assert_eq!(s.state(), None);
        assert_eq!(s.connected(), reset_query(1));
        // Impossible lengths are corrupt data.
        s.handle(&header(1, CACHE_RESPONSE, 3, 8)).unwrap();
        let f = s
            .handle(&prefix4(1, true, [10, 0, 0, 0], 8, 33, 1))
            .unwrap_err();
        assert_eq!(be16(&f.reply.unwrap(), 2), Some(code::CORRUPT_DATA));
        // A cache reset asks for everything again.
        let mut s = Session::new(VERSION);
        s.connected();
        s.handle(&header(1, CACHE_RESPONSE, 3, 8)).unwrap();
        synced(&mut s, &eod(1, 3, 1));
        let Ok(Step::Send(q)) = s.handle(&header(1, CACHE_RESET, 0, 8)) else {
            panic!()
        };
        assert_eq!(q, reset_query(1));
    }

    #[test]
    fn framing_is_bounded() {
        assert_eq!(frame(&[1, 2, 3]), Ok(None));
        assert_eq!(frame(&header(1, 2, 0, 8)), Ok(Some(8)));
        assert_eq!(frame(&header(1, 2, 0, 12)), Ok(None));
        assert!(frame(&header(1, 2, 0, 7)).is_err());
        assert!(frame(&header(1, 2, 0, MAX_PDU + 1)).is_err());
    }

    /// Random and mutated input never panics the decoder or the session.
    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(8210);
        let seeds = [
            prefix4(1, true, [10, 0, 0, 0], 8, 8, 1),
            prefix6(1, Ipv6Addr::LOCALHOST, 128, 128, 1),
            eod(1, 1, 1),
            eod(0, 1, 1),
            error_report(1, 2, &reset_query(1), "no data"),
            header(1, CACHE_RESPONSE, 1, 8),
        ];
        for i in 0..200_000 {
            let mut b = if i % 2 == 0 {
                let n = rng.gen_range(0..64);
                (0..n).map(|_| rng.r#gen::<u8>()).collect::<Vec<u8>>()
            } else {
                let mut b = seeds[i % seeds.len()].clone();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..b.len());
                    b[at] = rng.r#gen();
                }
                b
            };
            if rng.gen_bool(0.5) && b.len() >= 8 {
                if let Some(v) = b.get_mut(0) {
                    *v &= 1;
                }
                let n = b.len() as u32;
                b.splice(4..8, n.to_be_bytes());
            }
            let _ = decode(&b);
            let _ = frame(&b);
            let mut s = Session::new(VERSION);
            s.connected();
            let _ = s.handle(&header(1, CACHE_RESPONSE, 1, 8));
            let _ = s.handle(&b);
        }
    }
}
