//! BMP station (RFC 7854, with RFC 9069 Loc-RIB and the RFC 8671 O flag): one sans-IO
//! [`Station`] per router connection turns the BMP byte stream into the same [`Event`]s a direct
//! session produces, each marked with [`Source::Bmp`].
//!
//! `Station::handle(now, input)` takes bytes received and the connection's end and returns events
//! and whether to close; no socket, task or clock lives here. BMP is one-way: nothing here can
//! produce bytes for the router.
//!
//! Decisions:
//! - Framing (common header) errors close the connection: after a bad length the stream cannot
//!   be resynchronised. A message whose *body* is malformed is dropped, counted and logged, and
//!   the feed goes on; a router's BMP feed should not be lost for one odd UPDATE.
//! - An RFC 7606 "session reset" class error inside Route Monitoring cannot reset anything (the
//!   station has no session with that peer): the message is dropped and counted.
//! - Adj-RIB-Out monitoring (O flag, RFC 8671) in Route Monitoring is skipped and counted: the
//!   listener reports what routers hold from their peers, and `BmpView` has no Adj-RIB-Out view.
//!   Peer Up and Peer Down ignore the flag: they are about the session with the peer.
//! - The AS_PATH width of a Route Monitoring UPDATE follows the A flag of its per-peer header
//!   (RFC 7854 §4.2 makes the flag authoritative); ADD-PATH follows the Peer Up OPENs. Loc-RIB
//!   (RFC 9069) is always 4-octet.
//! - A peer's routes are kept per view (pre-policy, post-policy, Loc-RIB). The first message of a
//!   view emits `Established` for that view, so a consumer keyed by [`Peer`] sees each view come
//!   up; Peer Down and the end of the connection emit one `Down` per view with its routes lost.
//! - Route Monitoring for a peer without a Peer Up is accepted (some routers send Loc-RIB without
//!   one) with a context from the per-peer header alone, and counted.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use crate::event::{BmpView, DownReason, Event, Negotiated, Peer, SessionEvent, Source, Statistic};
use crate::iana::{self, bmp};
use crate::rib::AdjRibIn;
use crate::update::{DecodeContext, parse_update};
use crate::wire::{Family, PeerOpen, check_header, decode_notification, decode_open};

/// The largest BMP message accepted. A Route Monitoring message holds one BGP UPDATE (at most
/// 65535 bytes with Extended Messages) plus headers; Peer Up holds two OPENs and a few TLVs.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Monitored peers per router connection; Peer Ups beyond this are dropped and counted, so a
/// misbehaving router cannot grow the station without bound in peer state.
pub const MAX_PEERS: usize = 8192;

/// A framing error: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("unsupported BMP version {0} (expected 3)")]
    Version(u8),
    #[error("BMP message length {0} is outside 6..={MAX_MESSAGE_LEN}")]
    Length(u32),
}

/// Why one message was dropped (the feed goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("{0}: message too short")]
    Short(&'static str),
    #[error("{0}: malformed ({1})")]
    Malformed(&'static str, &'static str),
    #[error("Route Monitoring: UPDATE dropped (session-reset class: {0})")]
    SessionResetClass(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Bytes read from the router.
    Received(Vec<u8>),
    /// The connection ended (closed by the router, failed, or the station is stopping).
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Event(Event),
    /// Close the connection (framing error or Termination); every peer is already reported down.
    Close(String),
}

/// What the router said about itself in Initiation (RFC 7854 §4.3), for logs and summaries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterInfo {
    pub sys_name: Option<String>,
    pub sys_descr: Option<String>,
    pub strings: Vec<String>,
}

/// Messages seen and dropped, per connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub messages: u64,
    pub route_monitoring: u64,
    pub statistics_reports: u64,
    pub peer_ups: u64,
    pub peer_downs: u64,
    pub route_mirroring_skipped: u64,
    pub adj_rib_out_skipped: u64,
    pub unknown_type_skipped: u64,
    /// Messages dropped because their body did not parse (including session-reset class UPDATEs).
    pub malformed_dropped: u64,
    pub session_reset_class: u64,
    pub rfc7606_actions: u64,
    pub without_peer_up: u64,
    pub peers_over_limit: u64,
}

/// A monitored peer, as the router distinguishes it (RFC 7854 §4.2: type, distinguisher, address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PeerKey {
    loc_rib: bool,
    distinguisher: u64,
    addr: IpAddr,
}

#[derive(Debug)]
struct PeerState {
    asn: u32,
    negotiated: Negotiated,
    /// How this peer's UPDATEs read, with 4-octet and with 2-octet AS_PATHs (the A flag picks one
    /// per message); ADD-PATH from the Peer Up OPENs.
    ctx4: DecodeContext,
    ctx2: DecodeContext,
    /// Known only from Route Monitoring; a later Peer Up completes it instead of restarting it.
    implicit: bool,
    /// Views announced with `Established`, each with its routes.
    views: BTreeMap<BmpView, AdjRibIn>,
}

impl PeerState {
    fn new(asn: u32, negotiated: Negotiated, add_path: Vec<Family>, implicit: bool) -> Self {
        let ctx = |four_octet_as| DecodeContext {
            four_octet_as,
            families: Family::ALL.to_vec(),
            add_path: add_path.clone(),
        };
        PeerState {
            asn,
            negotiated,
            ctx4: ctx(true),
            ctx2: ctx(false),
            implicit,
            views: BTreeMap::new(),
        }
    }

    /// Brings `view` up (one `Established`) the first time it is seen.
    fn open_view(
        &mut self,
        router: IpAddr,
        now: SystemTime,
        key: PeerKey,
        view: BmpView,
        out: &mut Vec<Output>,
    ) {
        if self.views.contains_key(&view) {
            return;
        }
        self.views.insert(view, AdjRibIn::new());
        out.push(Output::Event(Event::Session(SessionEvent::Established {
            peer: bmp_peer(router, key, self.asn, view),
            at: now,
            negotiated: self.negotiated.clone(),
        })));
    }
}

fn bmp_peer(router: IpAddr, key: PeerKey, asn: u32, view: BmpView) -> Peer {
    Peer {
        addr: key.addr,
        asn,
        source: Source::Bmp {
            router,
            view,
            distinguisher: key.distinguisher,
        },
    }
}

/// The parsed per-peer header (RFC 7854 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerPeerHeader {
    pub peer_type: u8,
    pub flags: u8,
    pub distinguisher: u64,
    pub addr: IpAddr,
    pub asn: u32,
    pub bgp_id: Ipv4Addr,
    /// `None` when the router sent zero (RFC 7854: "0 if not available").
    pub timestamp: Option<SystemTime>,
}

impl PerPeerHeader {
    pub fn is_loc_rib(&self) -> bool {
        self.peer_type == bmp::PEER_LOC_RIB
    }

    /// The view this header's messages describe.
    pub fn view(&self) -> BmpView {
        if self.is_loc_rib() {
            BmpView::LocRib
        } else if self.flags & bmp::FLAG_L != 0 {
            BmpView::PostPolicy
        } else {
            BmpView::PrePolicy
        }
    }

    /// RFC 8671 Adj-RIB-Out (not meaningful for Loc-RIB, where 0x80 is the F flag).
    pub fn adj_rib_out(&self) -> bool {
        !self.is_loc_rib() && self.flags & bmp::FLAG_O != 0
    }

    /// AS_PATH width of Route Monitoring UPDATEs: 2 octets only with the A flag, never for Loc-RIB.
    pub fn four_octet_as(&self) -> bool {
        self.is_loc_rib() || self.flags & bmp::FLAG_A == 0
    }

    fn key(&self) -> PeerKey {
        PeerKey {
            loc_rib: self.is_loc_rib(),
            distinguisher: self.distinguisher,
            addr: self.addr,
        }
    }
}

fn take<'a, const N: usize>(b: &mut &'a [u8]) -> Option<&'a [u8; N]> {
    let (head, rest) = b.split_first_chunk::<N>()?;
    *b = rest;
    Some(head)
}

/// Parses the per-peer header at the start of `body`, returning it and the rest.
pub fn parse_per_peer_header(body: &[u8]) -> Option<(PerPeerHeader, &[u8])> {
    let mut b = body;
    let &[peer_type, flags] = take::<2>(&mut b)?;
    let distinguisher = u64::from_be_bytes(*take::<8>(&mut b)?);
    let addr16 = *take::<16>(&mut b)?;
    let asn = u32::from_be_bytes(*take::<4>(&mut b)?);
    let bgp_id = Ipv4Addr::from(*take::<4>(&mut b)?);
    let secs = u32::from_be_bytes(*take::<4>(&mut b)?);
    let micros = u32::from_be_bytes(*take::<4>(&mut b)?);
    // The V flag means IPv6 for peer types 0-2; a Loc-RIB "peer" has no address (RFC 9069 §4.1)
    // and its 0x80 bit is the F (filtered) flag.
    let v6 = peer_type != bmp::PEER_LOC_RIB && flags & bmp::FLAG_V != 0;
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::from(addr16))
    } else {
        let [.., a, b, c, d] = addr16;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    };
    let timestamp = (secs != 0 || micros != 0).then(|| {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::from(secs))
            + Duration::from_micros(u64::from(micros.min(999_999)))
    });
    Some((
        PerPeerHeader {
            peer_type,
            flags,
            distinguisher,
            addr,
            asn,
            bgp_id,
            timestamp,
        },
        b,
    ))
}

/// Cuts `b` into information TLVs (2-byte type, 2-byte length) and hands each to `f`.
fn info_tlvs(mut b: &[u8], mut f: impl FnMut(u16, &[u8])) -> Result<(), &'static str> {
    while !b.is_empty() {
        let t = take::<2>(&mut b).ok_or("truncated TLV header")?;
        let l = take::<2>(&mut b).ok_or("truncated TLV header")?;
        let (v, rest) = b
            .split_at_checked(usize::from(u16::from_be_bytes(*l)))
            .ok_or("TLV overruns message")?;
        f(u16::from_be_bytes(*t), v);
        b = rest;
    }
    Ok(())
}

/// Checks a BGP PDU carried in BMP (marker, length, type) and returns its body and what follows.
/// Lengths above 4096 are accepted up to 65535: a router may forward Extended Messages (RFC 8654).
fn bgp_pdu(b: &[u8], kind: u8) -> Result<(&[u8], &[u8]), &'static str> {
    let header = b.get(..iana::HEADER_LEN).ok_or("short BGP PDU")?;
    let len = match check_header(header) {
        Ok((len, k)) if k == kind => len,
        Ok(_) => return Err("unexpected BGP message type"),
        Err(crate::wire::DecodeError::BadLength { length, kind: k })
            if k == kind && usize::from(length) > iana::MAX_MESSAGE_LEN =>
        {
            usize::from(length)
        }
        Err(_) => return Err("bad BGP message header"),
    };
    let (pdu, rest) = b.split_at_checked(len).ok_or("BGP PDU overruns message")?;
    Ok((pdu.get(iana::HEADER_LEN..).unwrap_or_default(), rest))
}

/// Known statistics types, for output (RFC 7854 §4.8, RFC 8671 §5).
pub fn stat_name(t: u16) -> Option<&'static str> {
    Some(match t {
        0 => "rejected_by_policy",
        1 => "duplicate_prefix_advertisements",
        2 => "duplicate_withdraws",
        3 => "invalidated_cluster_list_loop",
        4 => "invalidated_as_path_loop",
        5 => "invalidated_originator_id",
        6 => "invalidated_as_confed_loop",
        7 => "adj_rib_in_routes",
        8 => "loc_rib_routes",
        9 => "adj_rib_in_routes_per_afi_safi",
        10 => "loc_rib_routes_per_afi_safi",
        11 => "updates_treat_as_withdraw",
        12 => "prefixes_treat_as_withdraw",
        13 => "duplicate_update_messages",
        14 => "adj_rib_out_pre_policy_routes",
        15 => "adj_rib_out_post_policy_routes",
        16 => "adj_rib_out_pre_policy_routes_per_afi_safi",
        17 => "adj_rib_out_post_policy_routes_per_afi_safi",
        _ => return None,
    })
}

fn parse_stat(t: u16, v: &[u8]) -> Statistic {
    let unknown = || Statistic {
        stat_type: t,
        afi_safi: None,
        value: None,
        raw: v.to_vec(),
    };
    if stat_name(t).is_none() {
        return unknown();
    }
    let num = |b: &[u8]| match b.len() {
        4 => b
            .first_chunk::<4>()
            .map(|x| u64::from(u32::from_be_bytes(*x))),
        8 => b.first_chunk::<8>().map(|x| u64::from_be_bytes(*x)),
        _ => None,
    };
    let (afi_safi, value) = if bmp::STAT_PER_AFI_SAFI.contains(&t) {
        match v.split_first_chunk::<3>() {
            Some((&[a0, a1, safi], rest)) => {
                (Some((u16::from_be_bytes([a0, a1]), safi)), num(rest))
            }
            None => (None, None),
        }
    } else {
        (None, num(v))
    };
    match value {
        Some(value) => Statistic {
            stat_type: t,
            afi_safi,
            value: Some(value),
            raw: Vec::new(),
        },
        None => unknown(),
    }
}

/// The station for one router connection.
#[derive(Debug)]
pub struct Station {
    router: IpAddr,
    buf: Vec<u8>,
    start: usize,
    closed: bool,
    peers: HashMap<PeerKey, PeerState>,
    info: RouterInfo,
    counters: Counters,
}

impl Station {
    /// `router` is the address the BMP connection came from; events name it as their source.
    pub fn new(router: IpAddr) -> Self {
        Station {
            router,
            buf: Vec::new(),
            start: 0,
            closed: false,
            peers: HashMap::new(),
            info: RouterInfo::default(),
            counters: Counters::default(),
        }
    }

    pub fn router(&self) -> IpAddr {
        self.router
    }

    pub fn info(&self) -> &RouterInfo {
        &self.info
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Monitored peers currently up.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Routes held for `addr` in `view`, summed over distinguishers.
    pub fn routes(&self, addr: IpAddr, view: BmpView) -> usize {
        self.peers
            .iter()
            .filter(|(k, _)| k.addr == addr)
            .filter_map(|(_, p)| p.views.get(&view))
            .map(AdjRibIn::len)
            .sum()
    }

    /// Every table the station holds (one per monitored peer and view, all up: a peer that went
    /// down is forgotten) with what its Peer Up said was negotiated, for a resync snapshot, in a
    /// stable order.
    pub fn tables(&self) -> Vec<(Peer, &Negotiated, &AdjRibIn)> {
        let mut v: Vec<(Peer, &Negotiated, &AdjRibIn)> = self
            .peers
            .iter()
            .flat_map(|(k, st)| {
                st.views.iter().map(move |(view, rib)| {
                    (
                        bmp_peer(self.router, *k, st.asn, *view),
                        &st.negotiated,
                        rib,
                    )
                })
            })
            .collect();
        v.sort_by_key(|(p, _, _)| *p);
        v
    }

    /// Routes held over every monitored peer and view.
    pub fn routes_held(&self) -> usize {
        self.peers
            .values()
            .flat_map(|p| p.views.values())
            .map(AdjRibIn::len)
            .sum()
    }

    pub fn handle(&mut self, now: SystemTime, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        match input {
            Input::Received(bytes) => {
                if self.start > 0 && self.start >= self.buf.len() / 2 {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                self.buf.extend_from_slice(&bytes);
                loop {
                    match self.next_message() {
                        Ok(Some((kind, body))) => self.on_message(now, kind, &body, &mut out),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(router = %self.router, error = %e, "BMP framing error; closing");
                            self.close(now, format!("framing error: {e}"), &mut out);
                            break;
                        }
                    }
                    if self.closed {
                        break;
                    }
                }
            }
            Input::Closed => {
                self.all_down(now, "BMP connection to the router ended", &mut out);
                self.closed = true;
            }
        }
        out
    }

    fn next_message(&mut self) -> Result<Option<(u8, Vec<u8>)>, FramingError> {
        let avail = self.buf.get(self.start..).unwrap_or_default();
        let Some(&[version, l0, l1, l2, l3, kind]) = avail.first_chunk::<6>() else {
            return Ok(None);
        };
        if version != bmp::VERSION {
            return Err(FramingError::Version(version));
        }
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        let len = usize::try_from(length).unwrap_or(usize::MAX);
        if !(bmp::COMMON_HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
            return Err(FramingError::Length(length));
        }
        let Some(msg) = avail.get(bmp::COMMON_HEADER_LEN..len) else {
            return Ok(None);
        };
        let body = msg.to_vec();
        self.start += len;
        Ok(Some((kind, body)))
    }

    fn close(&mut self, now: SystemTime, why: String, out: &mut Vec<Output>) {
        self.all_down(now, &why, out);
        self.closed = true;
        out.push(Output::Close(why));
    }

    /// Every peer of the router is down: one `Down` per announced view, with its routes lost.
    fn all_down(&mut self, now: SystemTime, why: &str, out: &mut Vec<Output>) {
        let mut keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        keys.sort();
        for key in keys {
            self.peer_down(now, key, DownReason::Reported(why.to_string()), out);
        }
    }

    fn peer_down(
        &mut self,
        now: SystemTime,
        key: PeerKey,
        reason: DownReason,
        out: &mut Vec<Output>,
    ) {
        let Some(state) = self.peers.remove(&key) else {
            return;
        };
        for (view, mut rib) in state.views {
            out.push(Output::Event(Event::Session(SessionEvent::Down {
                peer: bmp_peer(self.router, key, state.asn, view),
                at: now,
                reason: reason.clone(),
                routes_lost: rib.clear(),
                routes_stale: 0,
                stale_families: Vec::new(),
            })));
        }
    }

    fn on_message(&mut self, now: SystemTime, kind: u8, body: &[u8], out: &mut Vec<Output>) {
        self.counters.messages += 1;
        let r = match kind {
            bmp::ROUTE_MONITORING => {
                self.counters.route_monitoring += 1;
                self.route_monitoring(now, body, out)
            }
            bmp::STATISTICS_REPORT => {
                self.counters.statistics_reports += 1;
                self.statistics(now, body, out)
            }
            bmp::PEER_DOWN => {
                self.counters.peer_downs += 1;
                self.peer_down_msg(now, body, out)
            }
            bmp::PEER_UP => {
                self.counters.peer_ups += 1;
                self.peer_up(now, body, out)
            }
            bmp::INITIATION => self.initiation(body),
            bmp::TERMINATION => {
                let why = self.termination(body);
                tracing::info!(router = %self.router, reason = %why, "BMP Termination");
                self.close(
                    now,
                    format!("router terminated the BMP session: {why}"),
                    out,
                );
                Ok(())
            }
            bmp::ROUTE_MIRRORING => {
                self.counters.route_mirroring_skipped += 1;
                tracing::debug!(router = %self.router, skipped = self.counters.route_mirroring_skipped, "Route Mirroring skipped");
                Ok(())
            }
            other => {
                self.counters.unknown_type_skipped += 1;
                tracing::debug!(router = %self.router, kind = other, "unknown BMP message type skipped");
                Ok(())
            }
        };
        if let Err(e) = r {
            self.counters.malformed_dropped += 1;
            tracing::warn!(router = %self.router, error = %e, dropped = self.counters.malformed_dropped, "BMP message dropped");
        }
    }

    fn initiation(&mut self, body: &[u8]) -> Result<(), MessageError> {
        let mut info = RouterInfo::default();
        info_tlvs(body, |t, v| {
            let s = String::from_utf8_lossy(v).into_owned();
            match t {
                bmp::INFO_SYS_NAME => info.sys_name = Some(s),
                bmp::INFO_SYS_DESCR => info.sys_descr = Some(s),
                bmp::INFO_STRING => info.strings.push(s),
                _ => {}
            }
        })
        .map_err(|e| MessageError::Malformed("Initiation", e))?;
        tracing::info!(router = %self.router, sys_name = ?info.sys_name, sys_descr = ?info.sys_descr, "BMP Initiation");
        self.info = info;
        Ok(())
    }

    fn termination(&mut self, body: &[u8]) -> String {
        let mut parts = Vec::new();
        let r = info_tlvs(body, |t, v| match (t, v) {
            (bmp::TERM_REASON, [a, b]) => parts.push(
                match u16::from_be_bytes([*a, *b]) {
                    0 => "administratively closed",
                    1 => "unspecified",
                    2 => "out of resources",
                    3 => "redundant connection",
                    4 => "permanently administratively closed",
                    _ => "unknown reason",
                }
                .to_string(),
            ),
            (bmp::INFO_STRING, s) => parts.push(String::from_utf8_lossy(s).into_owned()),
            _ => {}
        });
        if r.is_err() {
            parts.push("malformed TLVs".into());
        }
        if parts.is_empty() {
            "no reason given".into()
        } else {
            parts.join("; ")
        }
    }

    fn peer_up(
        &mut self,
        now: SystemTime,
        body: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), MessageError> {
        const M: &str = "Peer Up";
        // The O flag is not checked here: Peer Up and Peer Down describe the session with the
        // peer, whichever RIBs the router then monitors.
        let (h, rest) = parse_per_peer_header(body).ok_or(MessageError::Short(M))?;
        // Local address (16), local port, remote port, then the two OPENs.
        let rest = rest.get(20..).ok_or(MessageError::Short(M))?;
        let (sent, rest) =
            bgp_pdu(rest, iana::msg::OPEN).map_err(|e| MessageError::Malformed(M, e))?;
        let (received, tlvs) =
            bgp_pdu(rest, iana::msg::OPEN).map_err(|e| MessageError::Malformed(M, e))?;
        // Information TLVs (RFC 9069 table name among them) only go to the log.
        let _ = info_tlvs(tlvs, |t, v| {
            tracing::debug!(router = %self.router, t, value = %String::from_utf8_lossy(v), "Peer Up TLV");
        });
        let key = h.key();
        if !self.peers.contains_key(&key) && self.peers.len() >= MAX_PEERS {
            self.counters.peers_over_limit += 1;
            return Err(MessageError::Malformed(M, "too many peers for one router"));
        }
        let opens = match (decode_open(sent), decode_open(received)) {
            (Ok(s), Ok(r)) => Some((s, r)),
            (s, r) => {
                tracing::warn!(router = %self.router, peer = %h.addr, sent = ?s.err(), received = ?r.err(),
                    "Peer Up OPENs do not decode; using the per-peer header alone");
                None
            }
        };
        let (negotiated, add_path) = negotiate(&h, opens.as_ref());
        let mut state = PeerState::new(h.asn, negotiated, add_path, false);
        match self.peers.remove(&key) {
            // Routes came before the Peer Up: keep them, and read what follows with the OPENs.
            Some(old) if old.implicit => state.views = old.views,
            // A second Peer Up for a peer that is up means the router lost it in between.
            Some(old) => {
                self.peers.insert(key, old);
                self.peer_down(
                    now,
                    key,
                    DownReason::Reported("Peer Up without Peer Down".into()),
                    out,
                );
            }
            None => {}
        }
        state.open_view(self.router, now, key, h.view(), out);
        self.peers.insert(key, state);
        Ok(())
    }

    fn peer_down_msg(
        &mut self,
        now: SystemTime,
        body: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), MessageError> {
        const M: &str = "Peer Down";
        let (h, rest) = parse_per_peer_header(body).ok_or(MessageError::Short(M))?;
        let (&code, data) = rest.split_first().ok_or(MessageError::Short(M))?;
        let notification = |data: &[u8]| {
            bgp_pdu(data, iana::msg::NOTIFICATION)
                .ok()
                .and_then(|(b, _)| decode_notification(b).ok())
        };
        let reason = match code {
            bmp::DOWN_LOCAL_NOTIFICATION => match notification(data) {
                Some(n) => DownReason::Sent(n),
                None => DownReason::Reported(
                    "router closed with a NOTIFICATION that does not decode".into(),
                ),
            },
            bmp::DOWN_REMOTE_NOTIFICATION => match notification(data) {
                Some(n) => DownReason::Received(n),
                None => DownReason::Reported(
                    "peer closed with a NOTIFICATION that does not decode".into(),
                ),
            },
            bmp::DOWN_LOCAL_NO_NOTIFICATION => DownReason::Reported(match data {
                [a, b, ..] => format!(
                    "router closed the session (FSM event {})",
                    u16::from_be_bytes([*a, *b])
                ),
                _ => "router closed the session".into(),
            }),
            bmp::DOWN_REMOTE_NO_NOTIFICATION => {
                DownReason::Reported("peer closed the session without a NOTIFICATION".into())
            }
            bmp::DOWN_PEER_DECONFIGURED => {
                DownReason::Reported("peer de-configured on the router".into())
            }
            bmp::DOWN_LOCAL_TLV => DownReason::Reported("Loc-RIB instance closed".into()),
            other => DownReason::Reported(format!("unknown BMP Peer Down reason {other}")),
        };
        let key = h.key();
        if !self.peers.contains_key(&key) {
            tracing::debug!(router = %self.router, peer = %h.addr, "Peer Down for a peer that is not up");
        }
        self.peer_down(now, key, reason, out);
        Ok(())
    }

    fn route_monitoring(
        &mut self,
        now: SystemTime,
        body: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), MessageError> {
        const M: &str = "Route Monitoring";
        let (h, rest) = parse_per_peer_header(body).ok_or(MessageError::Short(M))?;
        if h.adj_rib_out() {
            self.counters.adj_rib_out_skipped += 1;
            return Ok(());
        }
        let (update, trailing) =
            bgp_pdu(rest, iana::msg::UPDATE).map_err(|e| MessageError::Malformed(M, e))?;
        if !trailing.is_empty() {
            return Err(MessageError::Malformed(M, "bytes after the UPDATE"));
        }
        let key = h.key();
        if !self.peers.contains_key(&key) {
            if self.peers.len() >= MAX_PEERS {
                self.counters.peers_over_limit += 1;
                return Err(MessageError::Malformed(M, "too many peers for one router"));
            }
            self.counters.without_peer_up += 1;
            tracing::info!(router = %self.router, peer = %h.addr, "Route Monitoring without Peer Up; accepting");
            let (negotiated, add_path) = negotiate(&h, None);
            self.peers
                .insert(key, PeerState::new(h.asn, negotiated, add_path, true));
        }
        let view = h.view();
        let router = self.router;
        let state = self.peers.get_mut(&key).ok_or(MessageError::Short(M))?;
        state.open_view(router, now, key, view, out);
        let ctx = if h.four_octet_as() {
            &state.ctx4
        } else {
            &state.ctx2
        };
        let peer = bmp_peer(router, key, state.asn, view);
        match parse_update(update, ctx) {
            Ok(upd) => {
                for action in &upd.actions {
                    self.counters.rfc7606_actions += 1;
                    tracing::warn!(%peer, ?action, "RFC 7606 error handling (BMP)");
                    out.push(Output::Event(Event::Session(SessionEvent::UpdateError {
                        peer,
                        at: now,
                        action: action.clone(),
                    })));
                }
                if let Some(rib) = state.views.get_mut(&view) {
                    for ev in rib.apply(peer, now, h.timestamp, upd) {
                        out.push(Output::Event(Event::Route(ev)));
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.counters.session_reset_class += 1;
                Err(MessageError::SessionResetClass(e.to_string()))
            }
        }
    }

    fn statistics(
        &mut self,
        now: SystemTime,
        body: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), MessageError> {
        const M: &str = "Statistics Report";
        let (h, rest) = parse_per_peer_header(body).ok_or(MessageError::Short(M))?;
        let mut b = rest;
        let count = take::<4>(&mut b).ok_or(MessageError::Short(M))?;
        let count = u32::from_be_bytes(*count);
        let mut stats = Vec::new();
        info_tlvs(b, |t, v| stats.push(parse_stat(t, v)))
            .map_err(|e| MessageError::Malformed(M, e))?;
        if usize::try_from(count).ok() != Some(stats.len()) {
            tracing::debug!(router = %self.router, count, got = stats.len(), "statistics count differs from TLVs");
        }
        let asn = self.peers.get(&h.key()).map_or(h.asn, |p| p.asn);
        let view = if h.is_loc_rib() {
            BmpView::LocRib
        } else {
            BmpView::PrePolicy
        };
        out.push(Output::Event(Event::Session(SessionEvent::Statistics {
            peer: bmp_peer(self.router, h.key(), asn, view),
            at: now,
            source_time: h.timestamp,
            stats,
        })));
        Ok(())
    }
}

/// What the Peer Up OPENs say about the session the router has with its peer, and the families
/// where the router receives ADD-PATH paths (the peer sends, the router receives).
fn negotiate(h: &PerPeerHeader, opens: Option<&(PeerOpen, PeerOpen)>) -> (Negotiated, Vec<Family>) {
    let Some((sent, received)) = opens else {
        return (
            Negotiated {
                peer_as: h.asn,
                peer_router_id: h.bgp_id,
                hold_time: 0,
                keepalive: 0,
                four_octet_as: h.four_octet_as(),
                families: vec![Family::Ipv4Unicast],
                graceful_restart: false,
                add_path: Vec::new(),
                extended_messages: false,
            },
            Vec::new(),
        );
    };
    let fams = |o: &PeerOpen| {
        o.families
            .clone()
            .unwrap_or_else(|| vec![Family::Ipv4Unicast])
    };
    let theirs = fams(received);
    let families: Vec<Family> = fams(sent)
        .into_iter()
        .filter(|f| theirs.contains(f))
        .collect();
    let add_path: Vec<Family> = families
        .iter()
        .copied()
        .filter(|f| received.add_path_send.contains(f) && sent.add_path_receive.contains(f))
        .collect();
    let hold = sent.hold_time.min(received.hold_time);
    (
        Negotiated {
            peer_as: if h.is_loc_rib() {
                h.asn
            } else {
                received.asn()
            },
            peer_router_id: received.router_id,
            hold_time: hold,
            keepalive: hold / 3,
            four_octet_as: sent.four_octet_as.is_some() && received.four_octet_as.is_some(),
            families,
            graceful_restart: sent.graceful_restart && received.graceful_restart,
            add_path: add_path.clone(),
            extended_messages: sent.extended_message && received.extended_message,
        },
        add_path,
    )
}
