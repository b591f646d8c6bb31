//! The BMP station on arbitrary bytes in arbitrary chunks: framing, every message type, the
//! OPEN/UPDATE/NOTIFICATION decoders behind them, and the per-peer Adj-RIB-Ins. Nothing may
//! panic, and every event's JSON line (`event_jsonl`) must be what `event_json` gives. The first
//! bytes are a valid Initiation and Peer Up (4-octet AS, ADD-PATH for IPv4) so that Route
//! Monitoring reaches the UPDATE decoder with a real context.
#![no_main]

#[path = "jsonl_check.rs"]
mod jsonl_check;

use std::time::SystemTime;

use foureyes_bgp_listener::bmp::{Input, Output, Station};
use foureyes_bgp_listener::event_jsonl::JsonlWriter;
use libfuzzer_sys::fuzz_target;

fn bgp(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn bmp(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![3];
    v.extend_from_slice(&((6 + body.len()) as u32).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn open(asn: u16, sr: u8) -> Vec<u8> {
    let caps = [
        1,
        4,
        0,
        1,
        0,
        1,
        1,
        4,
        0,
        2,
        0,
        1,
        65,
        4,
        0,
        0,
        asn.to_be_bytes()[0],
        asn.to_be_bytes()[1],
        69,
        4,
        0,
        1,
        1,
        sr,
    ];
    let mut o = vec![
        4,
        asn.to_be_bytes()[0],
        asn.to_be_bytes()[1],
        0,
        90,
        198,
        18,
        0,
        1,
        caps.len() as u8 + 2,
        2,
        caps.len() as u8,
    ];
    o.extend_from_slice(&caps);
    bgp(1, &o)
}

fn preamble() -> Vec<u8> {
    let mut hdr = vec![0u8, 0];
    hdr.extend_from_slice(&[0; 8]);
    hdr.extend_from_slice(&[0; 12]);
    hdr.extend_from_slice(&[198, 18, 0, 1]);
    hdr.extend_from_slice(&65001u32.to_be_bytes());
    hdr.extend_from_slice(&[198, 18, 0, 1]);
    hdr.extend_from_slice(&[0; 8]);
    let mut up = hdr.clone();
    up.extend_from_slice(&[0; 20]);
    up.extend(open(65010, 1));
    up.extend(open(65001, 2));
    let mut v = bmp(4, &[0, 2, 0, 1, b'r']);
    v.extend(bmp(3, &up));
    v
}

fuzz_target!(|data: &[u8]| {
    let now = SystemTime::UNIX_EPOCH;
    let mut st = Station::new("192.0.2.1".parse().expect("router"));
    let mut jsonl = JsonlWriter::new();
    let mut check = |outputs: Vec<Output>| {
        for o in outputs {
            if let Output::Event(ev) = o {
                jsonl_check::assert_same_json(&mut jsonl, &ev);
            }
        }
    };
    check(st.handle(now, Input::Received(preamble())));
    // First byte picks the chunk size, so message boundaries land everywhere.
    let (step, data) = match data.split_first() {
        Some((b, rest)) => (usize::from(*b).max(1), rest),
        None => (1, data),
    };
    for chunk in data.chunks(step) {
        check(st.handle(now, Input::Received(chunk.to_vec())));
    }
    check(st.handle(now, Input::Closed));
});
