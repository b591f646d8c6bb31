//! MRT (RFC 6396) reading: decompression by magic bytes, record framing, and decoding records into
//! the same [`Event`]s a live session produces.
//!
//! Decision: our own framing layer over our own decoders (`update.rs`, `rib.rs`), not
//! bgpkit-parser. The MRT framing is a 12-byte header and a handful of fixed layouts; the work is in
//! the BGP attributes, and those must come out exactly as the session path decodes them (same
//! `PathAttributes`, same RFC 7606 classification, same `AdjRibIn` semantics for UPDATE streams),
//! which bgpkit-parser's own attribute model would not give without a lossy translation. It would
//! also bring a second BGP decoder with its own panic surface into a crate that owns and fuzzes its
//! decoders (`fuzz/fuzz_targets/mrt.rs` covers this module).
//!
//! Layers, each usable on its own:
//! - [`open_decompressed`]: gzip (multi-member) or bzip2 (multi-stream, blocks decoded in
//!   parallel by [`bzip2_par`]) by magic bytes, else plain.
//! - [`RecordReader`]: streams records from any `Read`, one reused buffer, lengths bounded by
//!   [`MAX_RECORD_LEN`]; framing errors name the byte offset (of the decompressed stream).
//! - [`Decoder`]: sans-IO state (peer index table, one Adj-RIB-In per BGP4MP peer) turning records
//!   into events.
//!
//! Event semantics:
//! - Every event's peer has `source: Source::Mrt`. For the `*_LOCAL` BGP4MP subtypes the UPDATE was
//!   sent by the collector's side, so the peer named is the local address and AS.
//! - `received` is the MRT header time (with microseconds for BGP4MP_ET): when the collector had
//!   the message, so replaying a file gives the same output every time. `source_time` is the same
//!   for BGP4MP; for RIB entries it is the entry's originated time.
//! - RIB entries become `Announce` events directly and are not kept (a full table from many peers
//!   would not fit an Adj-RIB-In per peer). BGP4MP UPDATEs go through a per-peer [`AdjRibIn`], kept
//!   across files, so withdrawals and attribute changes come out as a session would give them. A
//!   withdrawal of a prefix the replay never saw announced (update files start mid-session) is
//!   still reported, with an empty previous route, and counted in [`Stats::unknown_withdraws`].
//! - STATE_CHANGE into Established gives `SessionEvent::Established` (router id, hold time and
//!   capabilities from the peer's last OPEN in the file, when there is one); leaving Established
//!   gives `SessionEvent::Down` with the routes that peer's Adj-RIB-In lost, and clears it.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::event::{
    DownReason, Event, Negotiated, Peer, Route, RouteChange, RouteEvent, SessionEvent, Source,
};
use crate::iana::{self, mrt as t};
use crate::rib::AdjRibIn;
use crate::update::{
    DecodeContext, PathAttributes, Rfc7606Action, RibAttributes, parse_rib_attributes,
};
use crate::wire::{Family, Notification, Prefix, decode_notification, decode_open, parse_nlri};

pub mod bzip2_par;

/// The largest record accepted. Real records are far smaller (a RIB record of a prefix seen by a
/// thousand peers is a few hundred KB; a BGP4MP record holds one message of at most 64 KB), so a
/// larger length means a corrupt file, and refusing it keeps a bad header from costing gigabytes.
pub const MAX_RECORD_LEN: u32 = 16 << 20;

const HEADER_LEN: usize = 12;

/// Compression of an input, told by its first bytes (RouteViews publishes `.bz2`, RIPE RIS `.gz`;
/// names are not trusted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [b'B', b'Z', b'h', ..] => Compression::Bzip2,
            _ => Compression::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
        }
    }
}

/// Wraps `r` in the decompressor its magic bytes call for. Concatenated gzip members and bzip2
/// streams (as parallel compressors write them) are read through to the end. bzip2 is decoded on
/// one thread per core ([`bzip2_par`]).
pub fn open_decompressed<R: Read + 'static>(r: R) -> io::Result<(Compression, Box<dyn BufRead>)> {
    let mut br = BufReader::with_capacity(1 << 16, r);
    let buf = br.fill_buf()?;
    if buf.len() >= 3 || buf.is_empty() {
        let c = Compression::detect(buf);
        return Ok((c, wrap(c, Box::new(br))));
    }
    // A short first read (only tiny inputs or odd readers): read up to three bytes, then put them
    // back in front.
    let mut head = buf.to_vec();
    br.consume(head.len());
    let mut more = [0u8; 3];
    let want = more.get_mut(..3 - head.len()).unwrap_or_default();
    let k = read_full(&mut br, want)?;
    head.extend_from_slice(want.get(..k).unwrap_or_default());
    let c = Compression::detect(&head);
    Ok((c, wrap(c, Box::new(io::Cursor::new(head).chain(br)))))
}

fn wrap(c: Compression, r: Box<dyn Read>) -> Box<dyn BufRead> {
    const CAP: usize = 1 << 16;
    match c {
        Compression::None => Box::new(BufReader::with_capacity(CAP, r)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            CAP,
            flate2::read::MultiGzDecoder::new(r),
        )),
        // Blocks decoded on every core, in order (`bzip2_par` says why).
        Compression::Bzip2 => Box::new(bzip2_par::ParBzDecoder::new(r)),
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..) {
        if rest.is_empty() {
            break;
        }
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Why reading or decoding stopped. Offsets count bytes of the (decompressed) MRT stream from 0.
#[derive(Debug, thiserror::Error)]
pub enum MrtError {
    #[error("read error at byte offset {offset}: {source}")]
    Io { offset: u64, source: io::Error },
    #[error(
        "truncated record at byte offset {offset}: {needed} bytes needed, the input ends after {got}"
    )]
    Truncated { offset: u64, needed: u64, got: u64 },
    #[error(
        "record at byte offset {offset} claims {length} bytes, more than the limit of {MAX_RECORD_LEN}: not an MRT file or corrupt"
    )]
    TooLong { offset: u64, length: u32 },
    #[error("malformed {kind} record at byte offset {offset}: {reason}")]
    Malformed {
        offset: u64,
        kind: &'static str,
        reason: &'static str,
    },
}

impl MrtError {
    pub fn offset(&self) -> u64 {
        match self {
            MrtError::Io { offset, .. }
            | MrtError::Truncated { offset, .. }
            | MrtError::TooLong { offset, .. }
            | MrtError::Malformed { offset, .. } => *offset,
        }
    }

    /// Whether the stream can go on after this error: a malformed body was framed correctly, so
    /// the next record starts where the header said.
    pub fn recoverable(&self) -> bool {
        matches!(self, MrtError::Malformed { .. })
    }
}

/// One framed MRT record.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Byte offset of the record's header in the (decompressed) stream.
    pub offset: u64,
    pub timestamp: u32,
    /// Microseconds of the `_ET` types (RFC 6396 §3).
    pub microseconds: Option<u32>,
    pub kind: u16,
    pub subtype: u16,
    /// The message field (after the microsecond field for `_ET` types).
    pub body: &'a [u8],
}

impl Record<'_> {
    /// Header time, with microseconds where the type has them.
    pub fn time(&self) -> SystemTime {
        let us = u64::from(self.microseconds.unwrap_or(0).min(999_999));
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::from(self.timestamp))
            + Duration::from_micros(us)
    }
}

/// `TYPE/SUBTYPE` names for counts and messages.
pub fn record_name(kind: u16, subtype: u16) -> String {
    let k = match kind {
        t::TABLE_DUMP => "TABLE_DUMP",
        t::TABLE_DUMP_V2 => "TABLE_DUMP_V2",
        t::BGP4MP => "BGP4MP",
        t::BGP4MP_ET => "BGP4MP_ET",
        other => return format!("type {other}/{subtype}"),
    };
    let s = match (kind, subtype) {
        (t::TABLE_DUMP, t::TABLE_DUMP_AFI_IPV4) => "AFI_IPv4",
        (t::TABLE_DUMP, t::TABLE_DUMP_AFI_IPV6) => "AFI_IPv6",
        (t::TABLE_DUMP_V2, t::PEER_INDEX_TABLE) => "PEER_INDEX_TABLE",
        (t::TABLE_DUMP_V2, t::RIB_IPV4_UNICAST) => "RIB_IPV4_UNICAST",
        (t::TABLE_DUMP_V2, t::RIB_IPV4_MULTICAST) => "RIB_IPV4_MULTICAST",
        (t::TABLE_DUMP_V2, t::RIB_IPV6_UNICAST) => "RIB_IPV6_UNICAST",
        (t::TABLE_DUMP_V2, t::RIB_IPV6_MULTICAST) => "RIB_IPV6_MULTICAST",
        (t::TABLE_DUMP_V2, t::RIB_GENERIC) => "RIB_GENERIC",
        (t::TABLE_DUMP_V2, t::GEO_PEER_TABLE) => "GEO_PEER_TABLE",
        (t::TABLE_DUMP_V2, t::RIB_IPV4_UNICAST_ADDPATH) => "RIB_IPV4_UNICAST_ADDPATH",
        (t::TABLE_DUMP_V2, t::RIB_IPV4_MULTICAST_ADDPATH) => "RIB_IPV4_MULTICAST_ADDPATH",
        (t::TABLE_DUMP_V2, t::RIB_IPV6_UNICAST_ADDPATH) => "RIB_IPV6_UNICAST_ADDPATH",
        (t::TABLE_DUMP_V2, t::RIB_IPV6_MULTICAST_ADDPATH) => "RIB_IPV6_MULTICAST_ADDPATH",
        (t::TABLE_DUMP_V2, t::RIB_GENERIC_ADDPATH) => "RIB_GENERIC_ADDPATH",
        (t::BGP4MP | t::BGP4MP_ET, st) => match st {
            t::STATE_CHANGE => "STATE_CHANGE",
            t::MESSAGE => "MESSAGE",
            t::ENTRY => "ENTRY",
            t::SNAPSHOT => "SNAPSHOT",
            t::MESSAGE_AS4 => "MESSAGE_AS4",
            t::STATE_CHANGE_AS4 => "STATE_CHANGE_AS4",
            t::MESSAGE_LOCAL => "MESSAGE_LOCAL",
            t::MESSAGE_AS4_LOCAL => "MESSAGE_AS4_LOCAL",
            t::MESSAGE_ADDPATH => "MESSAGE_ADDPATH",
            t::MESSAGE_AS4_ADDPATH => "MESSAGE_AS4_ADDPATH",
            t::MESSAGE_LOCAL_ADDPATH => "MESSAGE_LOCAL_ADDPATH",
            t::MESSAGE_AS4_LOCAL_ADDPATH => "MESSAGE_AS4_LOCAL_ADDPATH",
            _ => return format!("{k}/{subtype}"),
        },
        _ => return format!("{k}/{subtype}"),
    };
    format!("{k}/{s}")
}

/// Streams records from a reader, one buffer reused for every record.
pub struct RecordReader<R> {
    inner: R,
    buf: Vec<u8>,
    offset: u64,
    failed: bool,
}

impl<R: Read> RecordReader<R> {
    pub fn new(inner: R) -> Self {
        RecordReader {
            inner,
            buf: Vec::new(),
            offset: 0,
            failed: false,
        }
    }

    /// Bytes consumed so far (the offset of the next record).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record; `Ok(None)` at a clean end of input. After an error it returns `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, MrtError> {
        if self.failed {
            return Ok(None);
        }
        let r = self.read_one();
        if r.is_err() {
            self.failed = true;
        }
        let Some((start, timestamp, kind, subtype)) = r? else {
            return Ok(None);
        };
        let et = kind == t::BGP4MP_ET;
        let (microseconds, body) = if et {
            match self.buf.split_first_chunk::<4>() {
                Some((us, rest)) => (Some(u32::from_be_bytes(*us)), rest),
                None => {
                    return Err(MrtError::Malformed {
                        offset: start,
                        kind: "BGP4MP_ET",
                        reason: "shorter than its microsecond field",
                    });
                }
            }
        } else {
            (None, self.buf.as_slice())
        };
        Ok(Some(Record {
            offset: start,
            timestamp,
            microseconds,
            kind,
            subtype,
            body,
        }))
    }

    #[allow(clippy::type_complexity)]
    fn read_one(&mut self) -> Result<Option<(u64, u32, u16, u16)>, MrtError> {
        let start = self.offset;
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut self.inner, &mut header).map_err(|source| MrtError::Io {
            offset: start,
            source,
        })?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(MrtError::Truncated {
                offset: start,
                needed: HEADER_LEN as u64,
                got: got as u64,
            });
        }
        let [t0, t1, t2, t3, k0, k1, s0, s1, l0, l1, l2, l3] = header;
        let timestamp = u32::from_be_bytes([t0, t1, t2, t3]);
        let kind = u16::from_be_bytes([k0, k1]);
        let subtype = u16::from_be_bytes([s0, s1]);
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        if length > MAX_RECORD_LEN {
            return Err(MrtError::TooLong {
                offset: start,
                length,
            });
        }
        self.buf.clear();
        let want = u64::from(length);
        let n = (&mut self.inner)
            .take(want)
            .read_to_end(&mut self.buf)
            .map_err(|source| MrtError::Io {
                offset: start,
                source,
            })?;
        if (n as u64) < want {
            return Err(MrtError::Truncated {
                offset: start,
                needed: HEADER_LEN as u64 + want,
                got: HEADER_LEN as u64 + n as u64,
            });
        }
        self.offset = start + HEADER_LEN as u64 + want;
        Ok(Some((start, timestamp, kind, subtype)))
    }
}

/// Counts kept while decoding, for the summary.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Records per (type, subtype); [`record_name`] names them.
    pub records: BTreeMap<(u16, u16), u64>,
    /// RIB entries read (TABLE_DUMP_V2 and TABLE_DUMP).
    pub rib_entries: u64,
    /// BGP messages in BGP4MP records, per message type name.
    pub messages: BTreeMap<&'static str, u64>,
    /// Withdrawals of prefixes the replay had not seen announced.
    pub unknown_withdraws: u64,
    /// Things skipped on purpose, with a count each (unsupported types, other families, ...).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Bad content inside well-framed records that was skipped (a BGP message that does not
    /// decode, a RIB entry whose attributes do not); the replay goes on.
    pub bad: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Copy, Debug)]
struct IndexedPeer {
    addr: IpAddr,
    asn: u32,
}

#[derive(Debug, Default)]
struct PeerState {
    rib: AdjRibIn,
    open: Option<crate::wire::PeerOpen>,
    /// The last NOTIFICATION seen on this session and whether the collector side sent it.
    notification: Option<(Notification, bool)>,
}

/// Sans-IO decoder: records in, events out. One per replay; call [`Decoder::start_file`] between
/// files (a peer index table belongs to its file, Adj-RIBs-In carry over).
pub struct Decoder {
    /// The current peer index table, and a number no other table of this replay has.
    peer_index: Option<(usize, Arc<[IndexedPeer]>)>,
    tables: usize,
    peers: HashMap<Peer, PeerState>,
    stats: Stats,
    ctx: [DecodeContext; 4],
}

fn ctx(four_octet_as: bool, add_path: bool) -> DecodeContext {
    DecodeContext {
        four_octet_as,
        families: Family::ALL.to_vec(),
        add_path: if add_path {
            Family::ALL.to_vec()
        } else {
            Vec::new()
        },
    }
}

/// A cursor over a record body; every read is checked.
struct Cur<'a> {
    b: &'a [u8],
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (h, r) = self.b.split_at_checked(n)?;
        self.b = r;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        let (&h, r) = self.b.split_first()?;
        self.b = r;
        Some(h)
    }
    fn u16(&mut self) -> Option<u16> {
        let (h, r) = self.b.split_first_chunk::<2>()?;
        self.b = r;
        Some(u16::from_be_bytes(*h))
    }
    fn u32(&mut self) -> Option<u32> {
        let (h, r) = self.b.split_first_chunk::<4>()?;
        self.b = r;
        Some(u32::from_be_bytes(*h))
    }
    fn ip(&mut self, v6: bool) -> Option<IpAddr> {
        if v6 {
            let (h, r) = self.b.split_first_chunk::<16>()?;
            self.b = r;
            Some(IpAddr::V6(Ipv6Addr::from(*h)))
        } else {
            let (h, r) = self.b.split_first_chunk::<4>()?;
            self.b = r;
            Some(IpAddr::V4(Ipv4Addr::from(*h)))
        }
    }
    fn asn(&mut self, four: bool) -> Option<u32> {
        if four {
            self.u32()
        } else {
            self.u16().map(u32::from)
        }
    }
}

fn mrt_peer(addr: IpAddr, asn: u32) -> Peer {
    Peer {
        addr,
        asn,
        source: Source::Mrt,
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            peer_index: None,
            tables: 0,
            peers: HashMap::new(),
            stats: Stats::default(),
            ctx: [
                ctx(false, false),
                ctx(false, true),
                ctx(true, false),
                ctx(true, true),
            ],
        }
    }

    /// A new file begins: its TABLE_DUMP_V2 records refer to its own peer index table.
    pub fn start_file(&mut self) {
        self.peer_index = None;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Routes currently held for BGP4MP peers, per peer.
    pub fn held_routes(&self) -> impl Iterator<Item = (&Peer, usize)> {
        self.peers.iter().map(|(p, s)| (p, s.rib.len()))
    }

    /// Decodes one record, appending its events to `out`. A `Malformed` error leaves the events of
    /// the record's good part in `out`; the stream can go on with the next record.
    pub fn decode(&mut self, rec: &Record<'_>, out: &mut Vec<Event>) -> Result<(), MrtError> {
        *self
            .stats
            .records
            .entry((rec.kind, rec.subtype))
            .or_default() += 1;
        match (rec.kind, rec.subtype) {
            (t::TABLE_DUMP_V2, t::PEER_INDEX_TABLE) => self.peer_index_table(rec),
            (
                t::TABLE_DUMP_V2,
                st @ (t::RIB_IPV4_UNICAST
                | t::RIB_IPV6_UNICAST
                | t::RIB_IPV4_UNICAST_ADDPATH
                | t::RIB_IPV6_UNICAST_ADDPATH),
            ) => {
                let family = if matches!(st, t::RIB_IPV4_UNICAST | t::RIB_IPV4_UNICAST_ADDPATH) {
                    Family::Ipv4Unicast
                } else {
                    Family::Ipv6Unicast
                };
                let add_path = st >= t::RIB_IPV4_UNICAST_ADDPATH;
                self.rib(rec, family, add_path, out)
            }
            (t::TABLE_DUMP_V2, t::RIB_GENERIC | t::RIB_GENERIC_ADDPATH) => {
                self.skip("RIB_GENERIC records (not decoded)");
                Ok(())
            }
            (t::TABLE_DUMP_V2, _) => {
                self.skip("TABLE_DUMP_V2 multicast or other subtypes");
                Ok(())
            }
            (t::BGP4MP | t::BGP4MP_ET, st) => match st {
                t::STATE_CHANGE | t::STATE_CHANGE_AS4 => {
                    self.state_change(rec, st == t::STATE_CHANGE_AS4, out)
                }
                t::MESSAGE
                | t::MESSAGE_AS4
                | t::MESSAGE_LOCAL
                | t::MESSAGE_AS4_LOCAL
                | t::MESSAGE_ADDPATH
                | t::MESSAGE_AS4_ADDPATH
                | t::MESSAGE_LOCAL_ADDPATH
                | t::MESSAGE_AS4_LOCAL_ADDPATH => {
                    let as4 = matches!(
                        st,
                        t::MESSAGE_AS4
                            | t::MESSAGE_AS4_LOCAL
                            | t::MESSAGE_AS4_ADDPATH
                            | t::MESSAGE_AS4_LOCAL_ADDPATH
                    );
                    let local = matches!(
                        st,
                        t::MESSAGE_LOCAL
                            | t::MESSAGE_AS4_LOCAL
                            | t::MESSAGE_LOCAL_ADDPATH
                            | t::MESSAGE_AS4_LOCAL_ADDPATH
                    );
                    let add_path = st >= t::MESSAGE_ADDPATH;
                    self.message(rec, as4, local, add_path, out)
                }
                _ => {
                    self.skip("BGP4MP ENTRY/SNAPSHOT or unknown subtypes");
                    Ok(())
                }
            },
            (t::TABLE_DUMP, afi @ (t::TABLE_DUMP_AFI_IPV4 | t::TABLE_DUMP_AFI_IPV6)) => {
                self.table_dump_v1(rec, afi == t::TABLE_DUMP_AFI_IPV6, out)
            }
            _ => {
                self.skip("record types other than TABLE_DUMP, TABLE_DUMP_V2, BGP4MP(_ET)");
                Ok(())
            }
        }
    }

    fn skip(&mut self, what: &'static str) {
        *self.stats.skipped.entry(what).or_default() += 1;
    }

    fn bad(&mut self, what: &'static str) {
        *self.stats.bad.entry(what).or_default() += 1;
    }

    fn peer_index_table(&mut self, rec: &Record<'_>) -> Result<(), MrtError> {
        let bad = |reason| MrtError::Malformed {
            offset: rec.offset,
            kind: "PEER_INDEX_TABLE",
            reason,
        };
        let mut c = Cur { b: rec.body };
        c.u32().ok_or(bad("no collector BGP ID"))?;
        let name_len = c.u16().ok_or(bad("no view name length"))?;
        c.take(usize::from(name_len))
            .ok_or(bad("view name overruns record"))?;
        let count = c.u16().ok_or(bad("no peer count"))?;
        let mut peers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let ptype = c.u8().ok_or(bad("peer entry overruns record"))?;
            c.u32().ok_or(bad("peer entry overruns record"))?;
            let addr = c
                .ip(ptype & 0x01 != 0)
                .ok_or(bad("peer entry overruns record"))?;
            let asn = c
                .asn(ptype & 0x02 != 0)
                .ok_or(bad("peer entry overruns record"))?;
            peers.push(IndexedPeer { addr, asn });
        }
        self.tables += 1;
        self.peer_index = Some((self.tables, peers.into()));
        Ok(())
    }

    fn rib(
        &mut self,
        rec: &Record<'_>,
        family: Family,
        add_path: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), MrtError> {
        let Some((index_id, index)) = self.peer_index.clone() else {
            return Err(MrtError::Malformed {
                offset: rec.offset,
                kind: rib_kind(add_path),
                reason: "RIB record before any PEER_INDEX_TABLE",
            });
        };
        let job = RibJob {
            family,
            add_path,
            index,
            index_id,
        };
        let o = job.walk(rec, |e| {
            rib_entry_events(
                e.attributes,
                e.family,
                true,
                e.prefix,
                (e.peer, e.path_id, e.received, e.source_time),
                out,
            )
        });
        self.add_rib_counts(o.entries, o.bad);
        o.error.map_or(Ok(()), Err)
    }

    /// Splits off the work of a TABLE_DUMP_V2 unicast RIB record (counting the record as
    /// [`Decoder::decode`] would) so that it can run on another thread: its entries depend only on
    /// the record and the file's peer index table. `None` for every other record, and for a RIB
    /// record before any peer index table (give those to `decode`, which reports them).
    pub fn rib_job(&mut self, rec: &Record<'_>) -> Option<RibJob> {
        if rec.kind != t::TABLE_DUMP_V2 {
            return None;
        }
        let (family, add_path) = match rec.subtype {
            t::RIB_IPV4_UNICAST => (Family::Ipv4Unicast, false),
            t::RIB_IPV6_UNICAST => (Family::Ipv6Unicast, false),
            t::RIB_IPV4_UNICAST_ADDPATH => (Family::Ipv4Unicast, true),
            t::RIB_IPV6_UNICAST_ADDPATH => (Family::Ipv6Unicast, true),
            _ => return None,
        };
        let (index_id, index) = self.peer_index.clone()?;
        *self
            .stats
            .records
            .entry((rec.kind, rec.subtype))
            .or_default() += 1;
        Some(RibJob {
            family,
            add_path,
            index,
            index_id,
        })
    }

    /// Adds the counts of a [`RibJob`] run elsewhere ([`RibOutcome::entries`] and `bad`).
    pub fn add_rib_counts(&mut self, entries: u64, bad: u64) {
        self.stats.rib_entries += entries;
        if bad > 0 {
            *self
                .stats
                .bad
                .entry("RIB entries whose attributes do not decode")
                .or_default() += bad;
        }
    }

    fn table_dump_v1(
        &mut self,
        rec: &Record<'_>,
        v6: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), MrtError> {
        let bad = |reason| MrtError::Malformed {
            offset: rec.offset,
            kind: "TABLE_DUMP",
            reason,
        };
        let mut c = Cur { b: rec.body };
        c.u16().ok_or(bad("no view number"))?;
        c.u16().ok_or(bad("no sequence number"))?;
        let addr = c.ip(v6).ok_or(bad("prefix overruns record"))?;
        let plen = c.u8().ok_or(bad("no prefix length"))?;
        c.u8().ok_or(bad("no status"))?;
        let originated = c.u32().ok_or(bad("no originated time"))?;
        let peer_addr = c.ip(v6).ok_or(bad("peer address overruns record"))?;
        let peer_as = c.u16().ok_or(bad("no peer AS"))?;
        let alen = c.u16().ok_or(bad("no attribute length"))?;
        let block = c
            .take(usize::from(alen))
            .ok_or(bad("attributes overrun record"))?;
        let family = if v6 {
            Family::Ipv6Unicast
        } else {
            Family::Ipv4Unicast
        };
        let prefix = match addr {
            IpAddr::V4(a) => one_prefix(family, plen, &a.octets()),
            IpAddr::V6(a) => one_prefix(family, plen, &a.octets()),
        }
        .ok_or(bad("bad prefix length"))?;
        self.stats.rib_entries += 1;
        let peer = mrt_peer(peer_addr, u32::from(peer_as));
        let source_time = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(originated)));
        if !rib_entry_events(
            block,
            family,
            false,
            prefix,
            (peer, None, rec.time(), source_time),
            out,
        ) {
            self.bad("RIB entries whose attributes do not decode");
        }
        Ok(())
    }

    /// Reads the BGP4MP common part: peer AS, local AS, interface, AFI, peer IP, local IP.
    fn bgp4mp_head<'a>(
        rec: &Record<'a>,
        as4: bool,
        kind: &'static str,
    ) -> Result<(Peer, Peer, Cur<'a>), MrtError> {
        let bad = |reason| MrtError::Malformed {
            offset: rec.offset,
            kind,
            reason,
        };
        let mut c = Cur { b: rec.body };
        let peer_as = c.asn(as4).ok_or(bad("no peer AS"))?;
        let local_as = c.asn(as4).ok_or(bad("no local AS"))?;
        c.u16().ok_or(bad("no interface index"))?;
        let afi = c.u16().ok_or(bad("no address family"))?;
        let v6 = match afi {
            iana::afi::IPV4 => false,
            iana::afi::IPV6 => true,
            _ => return Err(bad("address family is neither IPv4 nor IPv6")),
        };
        let peer_ip = c.ip(v6).ok_or(bad("peer address overruns record"))?;
        let local_ip = c.ip(v6).ok_or(bad("local address overruns record"))?;
        Ok((mrt_peer(peer_ip, peer_as), mrt_peer(local_ip, local_as), c))
    }

    fn state_change(
        &mut self,
        rec: &Record<'_>,
        as4: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), MrtError> {
        let (peer, _local, mut c) = Self::bgp4mp_head(rec, as4, "BGP4MP STATE_CHANGE")?;
        let bad = |reason| MrtError::Malformed {
            offset: rec.offset,
            kind: "BGP4MP STATE_CHANGE",
            reason,
        };
        let old = c.u16().ok_or(bad("no old state"))?;
        let new = c.u16().ok_or(bad("no new state"))?;
        let at = rec.time();
        if new == t::STATE_ESTABLISHED && old != t::STATE_ESTABLISHED {
            let st = self.peers.entry(peer).or_default();
            st.rib.clear();
            st.notification = None;
            let open = st.open.as_ref();
            out.push(Event::Session(SessionEvent::Established {
                peer,
                at,
                negotiated: Negotiated {
                    peer_as: peer.asn,
                    peer_router_id: open.map(|o| o.router_id).unwrap_or(Ipv4Addr::UNSPECIFIED),
                    hold_time: open.map(|o| o.hold_time).unwrap_or(0),
                    keepalive: open.map(|o| o.hold_time / 3).unwrap_or(0),
                    four_octet_as: as4 || open.is_some_and(|o| o.four_octet_as.is_some()),
                    families: open
                        .and_then(|o| o.families.clone())
                        .unwrap_or_else(|| vec![Family::Ipv4Unicast]),
                    graceful_restart: open.is_some_and(|o| o.graceful_restart),
                    add_path: open.map(|o| o.add_path_send.clone()).unwrap_or_default(),
                    extended_messages: open.is_some_and(|o| o.extended_message),
                },
            }));
        } else if old == t::STATE_ESTABLISHED && new != t::STATE_ESTABLISHED {
            let st = self.peers.entry(peer).or_default();
            let routes_lost = st.rib.clear();
            let reason = match st.notification.take() {
                Some((n, true)) => DownReason::Sent(n),
                Some((n, false)) => DownReason::Received(n),
                None => DownReason::ConnectionClosed,
            };
            st.open = None;
            out.push(Event::Session(SessionEvent::Down {
                peer,
                at,
                reason,
                routes_lost,
                routes_stale: 0,
            }));
        }
        Ok(())
    }

    fn message(
        &mut self,
        rec: &Record<'_>,
        as4: bool,
        local: bool,
        add_path: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), MrtError> {
        let kind = "BGP4MP MESSAGE";
        let (peer, local_peer, c) = Self::bgp4mp_head(rec, as4, kind)?;
        let bad = |reason| MrtError::Malformed {
            offset: rec.offset,
            kind,
            reason,
        };
        // The BGP message with its 19-byte header (RFC 6396 §4.4.2).
        let msg = c.b;
        let (marker, rest) = msg
            .split_at_checked(iana::MARKER_LEN)
            .ok_or(bad("BGP message shorter than its header"))?;
        if marker.iter().any(|b| *b != 0xff) {
            return Err(bad("BGP message marker is not all ones"));
        }
        let mut h = Cur { b: rest };
        let len = usize::from(h.u16().ok_or(bad("BGP message shorter than its header"))?);
        let mtype = h.u8().ok_or(bad("BGP message shorter than its header"))?;
        let body = len
            .checked_sub(iana::HEADER_LEN)
            .and_then(|n| h.b.get(..n))
            .ok_or(bad("BGP message length disagrees with the record"))?;
        // Whose routes: the sender of the message.
        let (sender, session) = if local {
            (local_peer, local_peer)
        } else {
            (peer, peer)
        };
        let name = match mtype {
            iana::msg::OPEN => "OPEN",
            iana::msg::UPDATE => "UPDATE",
            iana::msg::NOTIFICATION => "NOTIFICATION",
            iana::msg::KEEPALIVE => "KEEPALIVE",
            iana::msg::ROUTE_REFRESH => "ROUTE-REFRESH",
            _ => "other",
        };
        *self.stats.messages.entry(name).or_default() += 1;
        let at = rec.time();
        match mtype {
            iana::msg::UPDATE => {
                let pick = |paths: bool| &self.ctx[usize::from(as4) * 2 + usize::from(paths)];
                let mut parsed = crate::update::parse_update(body, pick(add_path));
                // Some writers (BIRD 2) record ADD-PATH sessions with the plain subtypes; the OPENs
                // say so but the record does not. An UPDATE that only parses with path ids is
                // taken as that.
                // An unparseable MP NLRI (AFI/SAFI disable on a session) counts as not parsing.
                let unparsed = parsed.as_ref().map_or(true, |u| {
                    u.actions
                        .iter()
                        .any(|a| matches!(a, Rfc7606Action::AfiSafiDisable { .. }))
                });
                if unparsed
                    && !add_path
                    && let Ok(u) = crate::update::parse_update(body, pick(true))
                    && !u
                        .actions
                        .iter()
                        .any(|a| matches!(a, Rfc7606Action::AfiSafiDisable { .. }))
                {
                    self.skip("UPDATEs read as ADD-PATH though the subtype does not say so");
                    parsed = Ok(u);
                }
                let upd = match parsed {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::warn!(offset = rec.offset, error = %e, peer = %sender, "UPDATE does not decode; skipped");
                        self.bad("UPDATE messages that do not decode (a session would reset)");
                        return Ok(());
                    }
                };
                let st = self.peers.entry(sender).or_default();
                for action in &upd.actions {
                    out.push(Event::Session(SessionEvent::UpdateError {
                        peer: sender,
                        at,
                        action: action.clone(),
                    }));
                }
                let mut unknown = 0u64;
                for (family, path_id, prefix) in &upd.withdrawn {
                    if st.rib.get(*family, *path_id, prefix).is_none() {
                        unknown += 1;
                        out.push(Event::Route(RouteEvent {
                            peer: sender,
                            family: *family,
                            path_id: *path_id,
                            received: at,
                            source_time: Some(at),
                            change: RouteChange::Withdraw {
                                prefix: *prefix,
                                previous: Route {
                                    next_hop: None,
                                    attrs: std::sync::Arc::new(PathAttributes::default()),
                                },
                            },
                        }));
                    }
                }
                self.stats.unknown_withdraws += unknown;
                out.extend(
                    st.rib
                        .apply(sender, at, Some(at), upd)
                        .into_iter()
                        .map(Event::Route),
                );
            }
            iana::msg::OPEN => {
                // The peer's OPEN fills in the Established event; the collector's own is not kept.
                if !local && let Ok(open) = decode_open(body) {
                    self.peers.entry(session).or_default().open = Some(open);
                }
            }
            iana::msg::NOTIFICATION => {
                if let Ok(n) = decode_notification(body) {
                    // Key by the remote peer either way: that is the session a STATE_CHANGE names.
                    self.peers.entry(peer).or_default().notification = Some((n, local));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn rib_kind(add_path: bool) -> &'static str {
    if add_path {
        "TABLE_DUMP_V2 RIB (ADD-PATH)"
    } else {
        "TABLE_DUMP_V2 RIB"
    }
}

/// The work of one TABLE_DUMP_V2 unicast RIB record, from [`Decoder::rib_job`]: the record's
/// family and the peer index table its entries refer to. `Send`, so records can be decoded on
/// other threads than the one reading the file.
#[derive(Clone, Debug)]
pub struct RibJob {
    family: Family,
    add_path: bool,
    index: Arc<[IndexedPeer]>,
    index_id: usize,
}

/// One entry of a RIB record, its attributes not decoded yet.
#[derive(Clone, Copy, Debug)]
pub struct RibEntry<'a> {
    pub peer: Peer,
    /// The entry's index into the file's peer index table (stable within a [`RibJob::index_id`]).
    pub peer_index: u16,
    pub family: Family,
    pub path_id: Option<u32>,
    pub prefix: Prefix,
    /// The record's header time.
    pub received: SystemTime,
    /// The entry's originated time.
    pub source_time: Option<SystemTime>,
    /// The entry's attribute block, for [`crate::update::parse_rib_attributes`] (4-octet AS).
    pub attributes: &'a [u8],
}

/// What walking a RIB record gave: entries read, entries whose attributes did not decode, and
/// the error that ended the record early, if one did (then `bad` is 0: the record was not
/// finished, as [`Decoder::decode`] has always counted it).
#[derive(Debug, Default)]
pub struct RibOutcome {
    pub entries: u64,
    pub bad: u64,
    pub error: Option<MrtError>,
}

impl RibJob {
    pub fn family(&self) -> Family {
        self.family
    }

    /// Identifies the peer index table (equal for jobs of the same table), so a caller can cache
    /// per-peer data by [`RibEntry::peer_index`].
    pub fn index_id(&self) -> usize {
        self.index_id
    }

    /// Walks the entries of `rec` (the record [`Decoder::rib_job`] was given), calling `entry`
    /// for each; `entry` returns false if the attributes did not decode.
    pub fn walk(
        &self,
        rec: &Record<'_>,
        mut entry: impl FnMut(&RibEntry<'_>) -> bool,
    ) -> RibOutcome {
        let mut o = RibOutcome::default();
        let mut bad = 0;
        if let Err(e) = self.walk_inner(rec, &mut o.entries, &mut bad, &mut entry) {
            o.error = Some(e);
        } else {
            o.bad = bad;
        }
        o
    }

    fn walk_inner(
        &self,
        rec: &Record<'_>,
        entries: &mut u64,
        bad_entries: &mut u64,
        entry: &mut impl FnMut(&RibEntry<'_>) -> bool,
    ) -> Result<(), MrtError> {
        let bad = |reason| MrtError::Malformed {
            offset: rec.offset,
            kind: rib_kind(self.add_path),
            reason,
        };
        let family = self.family;
        let mut c = Cur { b: rec.body };
        c.u32().ok_or(bad("no sequence number"))?;
        let plen = c.u8().ok_or(bad("no prefix length"))?;
        let pbytes = c
            .take(usize::from(plen).div_ceil(8))
            .ok_or(bad("prefix overruns record"))?;
        let prefix = one_prefix(family, plen, pbytes).ok_or(bad("bad prefix"))?;
        let count = c.u16().ok_or(bad("no entry count"))?;
        let received = rec.time();
        for _ in 0..count {
            let idx = c.u16().ok_or(bad("RIB entry overruns record"))?;
            let originated = c.u32().ok_or(bad("RIB entry overruns record"))?;
            let path_id = if self.add_path {
                Some(c.u32().ok_or(bad("RIB entry overruns record"))?)
            } else {
                None
            };
            let alen = c.u16().ok_or(bad("RIB entry overruns record"))?;
            let block = c
                .take(usize::from(alen))
                .ok_or(bad("RIB entry attributes overrun record"))?;
            let p = self
                .index
                .get(usize::from(idx))
                .ok_or(bad("peer index beyond the PEER_INDEX_TABLE"))?;
            *entries += 1;
            let e = RibEntry {
                peer: mrt_peer(p.addr, p.asn),
                peer_index: idx,
                family,
                path_id,
                prefix,
                received,
                source_time: Some(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(originated)),
                ),
                attributes: block,
            };
            if !entry(&e) {
                *bad_entries += 1;
            }
        }
        Ok(())
    }
}

/// Builds the prefix of a RIB record, host bits cleared.
fn one_prefix(family: Family, len: u8, bytes: &[u8]) -> Option<Prefix> {
    let mut nlri = Vec::with_capacity(1 + bytes.len());
    nlri.push(len);
    nlri.extend_from_slice(bytes.get(..usize::from(len).div_ceil(8))?);
    let mut v = parse_nlri(family, &nlri, false).ok()?;
    match v.pop() {
        Some((_, p)) if v.is_empty() => Some(p),
        _ => None,
    }
}

/// Events of one RIB entry: an announce, preceded by an `UpdateError` per RFC 7606 outcome; no
/// announce if the entry is treat-as-withdraw. Returns false if the attributes do not decode at all
/// (then nothing is emitted).
fn rib_entry_events(
    block: &[u8],
    family: Family,
    four_octet_as: bool,
    prefix: Prefix,
    (peer, path_id, received, source_time): (Peer, Option<u32>, SystemTime, Option<SystemTime>),
    out: &mut Vec<Event>,
) -> bool {
    let Ok(ra) = parse_rib_attributes(block, family, four_octet_as) else {
        return false;
    };
    rib_events(
        ra,
        family,
        prefix,
        (peer, path_id, received, source_time),
        out,
    );
    true
}

impl RibEntry<'_> {
    /// The events of this entry once its attributes are decoded: what [`Decoder::decode`] gives.
    pub fn events(&self, ra: RibAttributes, out: &mut Vec<Event>) {
        rib_events(
            ra,
            self.family,
            self.prefix,
            (self.peer, self.path_id, self.received, self.source_time),
            out,
        );
    }
}

fn rib_events(
    ra: RibAttributes,
    family: Family,
    prefix: Prefix,
    (peer, path_id, received, source_time): (Peer, Option<u32>, SystemTime, Option<SystemTime>),
    out: &mut Vec<Event>,
) {
    let mut withdraw = false;
    for action in ra.actions {
        withdraw |= matches!(action, Rfc7606Action::TreatAsWithdraw { .. });
        out.push(Event::Session(SessionEvent::UpdateError {
            peer,
            at: received,
            action,
        }));
    }
    if !withdraw {
        out.push(Event::Route(RouteEvent {
            peer,
            family,
            path_id,
            received,
            source_time,
            change: RouteChange::Announce {
                prefix,
                route: Route {
                    next_hop: ra.next_hop,
                    attrs: std::sync::Arc::new(ra.attrs),
                },
            },
        }));
    }
}

/// Reads every record of `r` into `on_event`, for tests and the fuzz target: returns the first
/// framing error, after delivering the events before it. Malformed records are skipped.
pub fn decode_all<R: Read>(
    r: R,
    decoder: &mut Decoder,
    mut on_event: impl FnMut(&Event),
) -> Result<Vec<MrtError>, MrtError> {
    let mut reader = RecordReader::new(r);
    let mut events = Vec::new();
    let mut malformed = Vec::new();
    loop {
        let rec = match reader.next_record() {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(malformed),
            Err(e) if e.recoverable() => {
                malformed.push(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        events.clear();
        let r = decoder.decode(&rec, &mut events);
        for ev in &events {
            on_event(ev);
        }
        if let Err(e) = r {
            malformed.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u16, subtype: u16, body: &[u8]) -> Vec<u8> {
        let mut v = 1_800_000_000u32.to_be_bytes().to_vec();
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&subtype.to_be_bytes());
        v.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn rib_entry_next_hop_from_abbreviated_and_full_mp_reach() {
        let nh: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().expect("ip").octets();
        let mut abbreviated = vec![0x80, 14, 17, 16];
        abbreviated.extend_from_slice(&nh);
        let mut full = vec![0x80, 14, 22, 0, 2, 1, 16];
        full.extend_from_slice(&nh);
        full.extend_from_slice(&[0, 0]); // reserved, then one /0 NLRI
        for block in [abbreviated, full] {
            let ra = parse_rib_attributes(&block, Family::Ipv6Unicast, true).expect("decodes");
            assert_eq!(ra.next_hop, Some(IpAddr::V6(Ipv6Addr::from(nh))));
            assert!(ra.actions.is_empty());
        }
    }

    #[test]
    fn reader_names_offsets_of_truncated_and_absurd_records() {
        let one = rec(t::BGP4MP, t::STATE_CHANGE, &[0; 20]);
        let mut data = one.clone();
        data.extend_from_slice(&one[..15]);
        let mut r = RecordReader::new(data.as_slice());
        assert!(r.next_record().expect("first").is_some());
        let e = r.next_record().expect_err("truncated");
        assert_eq!(e.offset(), one.len() as u64);
        assert!(matches!(e, MrtError::Truncated { .. }), "{e}");
        assert!(r.next_record().expect("stays failed").is_none());

        let mut long = rec(t::TABLE_DUMP_V2, t::PEER_INDEX_TABLE, &[]);
        long[8..12].copy_from_slice(&(MAX_RECORD_LEN + 1).to_be_bytes());
        let e = RecordReader::new(long.as_slice())
            .next_record()
            .expect_err("too long");
        assert!(matches!(e, MrtError::TooLong { offset: 0, .. }), "{e}");
    }

    #[test]
    fn rib_record_before_peer_index_is_malformed_but_recoverable() {
        let data = rec(
            t::TABLE_DUMP_V2,
            t::RIB_IPV4_UNICAST,
            &[0, 0, 0, 1, 0, 0, 0],
        );
        let mut d = Decoder::new();
        let malformed = decode_all(data.as_slice(), &mut d, |_| {}).expect("framing is fine");
        assert_eq!(malformed.len(), 1);
        assert!(malformed[0].recoverable());
    }

    #[test]
    fn compression_is_told_by_magic_bytes() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::detect(b"BZh9"), Compression::Bzip2);
        assert_eq!(Compression::detect(&[0, 0, 0]), Compression::None);
        assert_eq!(Compression::detect(&[]), Compression::None);
    }
}
