//! The bodies of the cargo-fuzz targets (fuzz/fuzz_targets/*.rs call these and nothing else), so
//! that `tests/fuzz_regressions.rs` replays kept crash inputs and seeds through exactly the calls
//! the fuzzer made: a target and its regression test cannot drift apart.
//!
//! Each function panics when an invariant breaks (that is how libFuzzer sees a crash); none of
//! them is meant for production paths.

use std::io::Read;
use std::time::SystemTime;

use crate::bmp;
use crate::event::{Event, Peer};
use crate::event_jsonl::JsonlWriter;
use crate::mrt::bzip2_par::ParBzDecoder;
use crate::mrt::{Compression, Decoder, decode_all, open_decompressed};
use crate::replay::replay_bytes;
use crate::rib::AdjRibIn;
use crate::session::{Direction, Input, Output, Session, SessionConfig, Timer};
use crate::update::{
    DecodeContext, SessionKind, parse_rib_attributes, parse_update, parse_update_from,
    parse_update_interned,
};
use crate::watch::{Format, event_json, event_text};
use crate::wire::Family;

/// A target's body: panics when the input breaks an invariant.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `[[bin]]` in fuzz/Cargo.toml (and of its directories under
/// fuzz/seeds/ and fuzz/regressions/).
pub const TARGETS: &[(&str, Target)] = &[
    ("bgp_session", bgp_session),
    ("bgp_update", bgp_update),
    ("bmp", bmp),
    ("mrt", mrt),
];

/// The direct JSON-lines writer must give exactly what the reference (`watch::event_json`,
/// serde_json) gives.
fn assert_same_json(w: &mut JsonlWriter, ev: &Event) {
    let mut line = Vec::new();
    w.line(&mut line, ev);
    assert!(
        line == format!("{}\n", event_json(ev)).into_bytes(),
        "event_jsonl differs from event_json for {ev:?}"
    );
}

fn bgp_msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(
        &u16::try_from(19 + body.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    v.push(kind);
    v.extend_from_slice(body);
    v
}

/// Framer + OPEN/UPDATE/NOTIFICATION decoders + Adj-RIB-In, through the session: after a valid
/// OPEN/KEEPALIVE exchange, arbitrary bytes arrive in arbitrary chunks. Nothing may panic, and
/// the session may only ever send OPEN, KEEPALIVE or NOTIFICATION. The first byte picks 2- or
/// 4-octet AS, so both AS_PATH widths get fuzzed.
pub fn bgp_session(data: &[u8]) {
    let cfg = SessionConfig::new(
        65002,
        65001,
        std::net::Ipv4Addr::new(198, 18, 0, 2),
        std::net::Ipv4Addr::new(198, 18, 0, 1).into(),
    );
    let mut s = Session::new(cfg);
    let now = SystemTime::UNIX_EPOCH;
    let (four, data) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, rest),
        None => (true, data),
    };
    let mut caps = vec![2u8, 0, 1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1];
    if four {
        caps.extend_from_slice(&[65, 4, 0, 0, 0xfd, 0xe9]);
    }
    let caps_len = u8::try_from(caps.len()).unwrap_or(u8::MAX);
    if let Some(l) = caps.get_mut(1) {
        *l = caps_len - 2;
    }
    let mut open = vec![4, 0xfd, 0xe9, 0, 90, 198, 18, 0, 1, caps_len];
    open.extend_from_slice(&caps);
    s.handle(now, Input::Connected);
    s.handle(now, Input::Received(bgp_msg(1, &open)));
    s.handle(now, Input::Received(bgp_msg(4, &[])));
    for chunk in data.chunks(97) {
        for o in s.handle(now, Input::Received(chunk.to_vec())) {
            if let Output::Send(m) = o {
                assert!(matches!(m.message_type(), 1 | 3 | 4));
            }
        }
    }
    // The same bytes on a contender connection (collision handling), then the primary closing
    // (graceful-restart stale marking and promotion of the contender).
    s.handle(now, Input::ContenderConnected(Direction::Accepted));
    for chunk in data.chunks(61) {
        for o in s.handle(now, Input::ContenderReceived(chunk.to_vec())) {
            if let Output::Send(m) | Output::SendContender(m) = o {
                assert!(matches!(m.message_type(), 1 | 3 | 4));
            }
        }
    }
    s.handle(now, Input::Closed);
    s.handle(now, Input::TimerFired(Timer::Restart));
}

/// The UPDATE decoder alone, on an arbitrary body, with both AS widths; and, differentially, the
/// session's fast path (`parse_update_interned`, sets found by raw bytes) against the full decode:
/// applied twice to two Adj-RIB-Ins, both must give the same result and the same events, and
/// each event's JSON line (`event_jsonl`) must be what `event_json` gives.
pub fn bgp_update(data: &[u8]) {
    let mut jsonl = JsonlWriter::new();
    for (four_octet_as, add_path) in [(false, false), (true, false), (true, true)] {
        let ctx = DecodeContext {
            four_octet_as,
            families: Family::ALL.to_vec(),
            add_path: if add_path {
                Family::ALL.to_vec()
            } else {
                Vec::new()
            },
        };
        let _ = parse_update(data, &ctx);
        let peer = Peer::session(std::net::Ipv4Addr::LOCALHOST.into(), 65001);
        for kind in [SessionKind::Internal, SessionKind::External] {
            let mut fast = AdjRibIn::new();
            let mut slow = AdjRibIn::new();
            for _ in 0..2 {
                let a = parse_update_interned(data, &ctx, kind, &mut |raw| {
                    fast.find_raw_set(raw, kind)
                });
                let b = parse_update_from(data, &ctx, kind);
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.announced, b.announced);
                        assert_eq!(a.withdrawn, b.withdrawn);
                        assert_eq!(a.actions, b.actions);
                        let ea = fast.apply(peer, SystemTime::UNIX_EPOCH, None, a);
                        let eb = slow.apply(peer, SystemTime::UNIX_EPOCH, None, b);
                        assert_eq!(ea, eb);
                        for ev in ea {
                            assert_same_json(&mut jsonl, &Event::Route(ev));
                        }
                    }
                    (Err(_), Err(_)) => {}
                    _ => {
                        panic!("fast path and full decode disagree on whether the UPDATE is valid")
                    }
                }
            }
        }
    }
}

fn bmp_msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![3];
    v.extend_from_slice(
        &u32::try_from(6 + body.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn bmp_open(asn: u16, sr: u8) -> Vec<u8> {
    let [a0, a1] = asn.to_be_bytes();
    let caps = [
        1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 65, 4, 0, 0, a0, a1, 69, 4, 0, 1, 1, sr,
    ];
    let n = caps.len() as u8;
    let mut o = vec![4, a0, a1, 0, 90, 198, 18, 0, 1, n + 2, 2, n];
    o.extend_from_slice(&caps);
    bgp_msg(1, &o)
}

/// A valid Initiation and Peer Up (4-octet AS, ADD-PATH for IPv4) for peer 198.18.0.1, AS 65001,
/// so that Route Monitoring reaches the UPDATE decoder with a real context.
fn bmp_preamble() -> Vec<u8> {
    let mut hdr = vec![0u8, 0];
    hdr.extend_from_slice(&[0; 8]);
    hdr.extend_from_slice(&[0; 12]);
    hdr.extend_from_slice(&[198, 18, 0, 1]);
    hdr.extend_from_slice(&65001u32.to_be_bytes());
    hdr.extend_from_slice(&[198, 18, 0, 1]);
    hdr.extend_from_slice(&[0; 8]);
    let mut up = hdr;
    up.extend_from_slice(&[0; 20]);
    up.extend(bmp_open(65010, 1));
    up.extend(bmp_open(65001, 2));
    let mut v = bmp_msg(4, &[0, 2, 0, 1, b'r']);
    v.extend(bmp_msg(3, &up));
    v
}

/// The BMP station on arbitrary bytes in arbitrary chunks (the first byte picks the chunk size,
/// so message boundaries land everywhere), after [`bmp_preamble`]: framing, every message type,
/// the OPEN/UPDATE/NOTIFICATION decoders behind them, and the per-peer Adj-RIB-Ins. Nothing may
/// panic, and every event's JSON line must be what `event_json` gives.
pub fn bmp(data: &[u8]) {
    let now = SystemTime::UNIX_EPOCH;
    let mut st = bmp::Station::new(std::net::Ipv4Addr::new(192, 0, 2, 1).into());
    let mut jsonl = JsonlWriter::new();
    let mut check = |outputs: Vec<bmp::Output>| {
        for o in outputs {
            if let bmp::Output::Event(ev) = o {
                assert_same_json(&mut jsonl, &ev);
            }
        }
    };
    check(st.handle(now, bmp::Input::Received(bmp_preamble())));
    let (step, data) = match data.split_first() {
        Some((b, rest)) => (usize::from(*b).max(1), rest),
        None => (1, data),
    };
    for chunk in data.chunks(step) {
        check(st.handle(now, bmp::Input::Received(chunk.to_vec())));
    }
    check(st.handle(now, bmp::Input::Closed));
}

/// The MRT reader and decoder on an arbitrary stream: framing, every record type, the RIB-entry
/// attribute decoder, the event formatters, and (when the input starts with their magic bytes)
/// the gzip and bzip2 paths. The threaded replay (`replay::replay_bytes`) must print exactly what
/// `decode_all` and `event_json` print, and so must `event_jsonl` event by event. The parallel
/// bzip2 decoder must give what the `bzip2` crate's serial decoder gives: the same bytes when
/// that succeeds, and an error and bytes that agree with its bytes as far as both go when not.
pub fn mrt(data: &[u8]) {
    let mut decoder = Decoder::new();
    let mut want = String::new();
    let mut jsonl = JsonlWriter::new();
    let _ = decode_all(data, &mut decoder, |ev| {
        want.push_str(&event_json(ev).to_string());
        want.push('\n');
        assert_same_json(&mut jsonl, ev);
        let _ = event_text(ev);
    });
    if Compression::detect(data) == Compression::None {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        replay_bytes(data, Format::Jsonl, &mut out, &mut err).expect("in-memory replay");
        assert!(
            out == want.as_bytes(),
            "threaded replay differs from decode_all"
        );
    }
    if let Ok((_, r)) = open_decompressed(std::io::Cursor::new(data.to_vec())) {
        let mut decoder = Decoder::new();
        let _ = decode_all(r, &mut decoder, |_| {});
    }
    if Compression::detect(data) == Compression::Bzip2 {
        // Output capped: a few bytes of bzip2 can stand for megabytes.
        const CAP: u64 = 1 << 24;
        let mut serial = Vec::new();
        let serial_ok = bzip2::read::MultiBzDecoder::new(data)
            .take(CAP)
            .read_to_end(&mut serial)
            .is_ok();
        for threads in [0, 2] {
            let mut par = Vec::new();
            let ok = ParBzDecoder::with_threads(data, threads)
                .take(CAP)
                .read_to_end(&mut par)
                .is_ok();
            if serial.len() as u64 >= CAP || par.len() as u64 >= CAP {
                continue;
            }
            assert_eq!(
                ok, serial_ok,
                "parallel bzip2 ok={ok}, serial ok={serial_ok}"
            );
            if ok {
                assert!(par == serial, "parallel bzip2 output differs");
            } else {
                // Not a prefix either way: the serial decoder drops what it decoded in the call
                // that failed (a bad stream CRC after a good block), this one keeps good blocks.
                let n = par.len().min(serial.len());
                assert!(
                    par.get(..n) == serial.get(..n),
                    "parallel bzip2 output differs"
                );
            }
        }
    }
    for family in Family::ALL {
        for four in [false, true] {
            let _ = parse_rib_attributes(data, family, four);
        }
    }
}
