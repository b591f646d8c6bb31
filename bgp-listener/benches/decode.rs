//! Decode microbenchmark: prefixes per second per core for `parse_update` + `AdjRibIn::apply`
//! (always decoding every attribute set), for `parse_update_interned` + `apply` (what a session
//! runs: sets already held are found by their raw bytes) on a synthetic 1M-prefix IPv4 table
//! (the same generator as `benches/bgp_full_table.sh`), and for the whole sans-IO session path
//! (framing, decode, Adj-RIB-In, events). Target ≥ 3M prefixes/s/core.
//! `cargo bench -p foureyes-bgp-listener --bench decode` (set `FULLTABLE_PREFIXES` to change size,
//! and `DECODE_BENCH` to a comma-separated subset of `decode,interned,session` to run only those,
//! e.g. under `perf record`).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

#[path = "support/fulltable_gen.rs"]
mod fulltable_gen;

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use foureyes_bgp_listener::event::Peer;
use foureyes_bgp_listener::rib::AdjRibIn;
use foureyes_bgp_listener::session::{Input, Session, SessionConfig};
use foureyes_bgp_listener::update::{
    DecodeContext, ParsedUpdate, SessionKind, parse_update, parse_update_interned,
    parse_update_interned_into,
};
use foureyes_bgp_listener::wire::{Family, Framer};

fn bodies(data: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    let mut rest = data;
    while rest.len() >= 19 {
        let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
        v.push(&rest[19..len]);
        rest = &rest[len..];
    }
    v
}

fn open_from_peer() -> Vec<u8> {
    let caps = [1, 4, 0, 1, 0, 1, 65, 4, 0, 0, 0xfd, 0xe9, 64, 2, 0, 120];
    let mut b = vec![4, 0xfd, 0xe9, 0, 90, 198, 18, 0, 1, caps.len() as u8 + 2, 2];
    b.push(caps.len() as u8);
    b.extend_from_slice(&caps);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + b.len()) as u16).to_be_bytes());
    m.push(1);
    m.extend_from_slice(&b);
    m
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("FULLTABLE_PREFIXES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (data, updates) = fulltable_gen::generate(n, 1, 65001, [198, 18, 0, 1]);
    let msgs = bodies(&data);
    println!(
        "table: {n} prefixes, {updates} UPDATEs, {} bytes, {} attribute sets; a RouteEvent is {} bytes, a session Output {}",
        data.len(),
        n / 10,
        std::mem::size_of::<foureyes_bgp_listener::event::RouteEvent>(),
        std::mem::size_of::<foureyes_bgp_listener::session::Output>(),
    );
    let ctx = DecodeContext {
        four_octet_as: true,
        families: vec![Family::Ipv4Unicast],
        add_path: Vec::new(),
    };
    let peer = Peer::session("198.18.0.1".parse().unwrap(), 65001);
    let now = SystemTime::now();
    let only = std::env::var("DECODE_BENCH").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|s| s == name);

    // The decoder alone: framing and every UPDATE decoded in full (NLRI and every attribute set,
    // no interning, no Adj-RIB-In, no events), into one reused `ParsedUpdate` as a session does.
    let mut rates = Vec::new();
    for round in 0..if run("parse") { 5 } else { 0 } {
        let mut framer = Framer::new();
        let mut body = Vec::new();
        let mut parsed = ParsedUpdate::default();
        let mut prefixes = 0usize;
        let t = Instant::now();
        for chunk in data.chunks(64 * 1024) {
            framer.push(chunk);
            while let Some(kind) = framer.next_frame_into(&mut body).unwrap() {
                assert_eq!(kind, 2);
                parse_update_interned_into(
                    &body,
                    &ctx,
                    SessionKind::External,
                    &mut |_| None,
                    &mut parsed,
                )
                .unwrap();
                prefixes += black_box(&parsed).announced.len();
            }
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(prefixes, n);
        let rate = n as f64 / secs;
        println!(
            "decode only (framing + full UPDATE decode) round {round}: {secs:.3} s, {:.2}M prefixes/s",
            rate / 1e6
        );
        rates.push(rate);
    }
    if !rates.is_empty() {
        println!(
            "decode only (framing + full UPDATE decode): median {:.2}M prefixes/s/core (target >= 3M)",
            median(rates) / 1e6
        );
    }

    let mut rates = Vec::new();
    for round in 0..if run("decode") { 5 } else { 0 } {
        let mut rib = AdjRibIn::new();
        let mut events = 0usize;
        let t = Instant::now();
        for body in &msgs {
            let upd = parse_update(body, &ctx).unwrap();
            events += black_box(rib.apply(peer, now, None, upd)).len();
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(rib.len(), n);
        assert_eq!(events, n + 1);
        let rate = n as f64 / secs;
        println!(
            "parse_update+apply (always decoding) round {round}: {secs:.3} s, {:.2}M prefixes/s",
            rate / 1e6,
        );
        rates.push(rate);
    }
    if !rates.is_empty() {
        println!(
            "parse_update+apply (always decoding): median {:.2}M prefixes/s/core",
            median(rates) / 1e6
        );
    }

    // What a session does: attribute sets already held are found by their raw bytes.
    let mut rates = Vec::new();
    for round in 0..if run("interned") { 5 } else { 0 } {
        let mut rib = AdjRibIn::new();
        let mut events = 0usize;
        let t = Instant::now();
        for body in &msgs {
            let upd = parse_update_interned(body, &ctx, SessionKind::External, &mut |raw| {
                rib.find_raw_set(raw, SessionKind::External)
            })
            .unwrap();
            events += black_box(rib.apply(peer, now, None, upd)).len();
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(rib.len(), n);
        assert_eq!(events, n + 1);
        let rate = n as f64 / secs;
        println!(
            "parse_update_interned+apply round {round}: {secs:.3} s, {:.2}M prefixes/s, {} attribute sets held",
            rate / 1e6,
            rib.attribute_sets()
        );
        rates.push(rate);
    }
    if !rates.is_empty() {
        println!(
            "parse_update_interned+apply: median {:.2}M prefixes/s/core (target >= 3M)",
            median(rates) / 1e6
        );
    }

    // The session path as the driver runs it: one output vector reused for every read.
    let mut rates = Vec::new();
    for round in 0..if run("session") { 3 } else { 0 } {
        let mut cfg = SessionConfig::new(
            65002,
            65001,
            "198.18.0.2".parse().unwrap(),
            "198.18.0.1".parse().unwrap(),
        );
        cfg.families = vec![Family::Ipv4Unicast];
        let mut s = Session::new(cfg);
        s.handle(now, Input::Connected);
        s.handle(now, Input::Received(open_from_peer()));
        s.handle(
            now,
            Input::Received(vec![0xff; 16].into_iter().chain([0, 19, 4]).collect()),
        );
        let t = Instant::now();
        let mut outputs = 0usize;
        let mut out = Vec::new();
        for chunk in data.chunks(64 * 1024) {
            s.handle_into(now, Input::Received(chunk.to_vec()), &mut out);
            outputs += black_box(&out).len();
            out.clear();
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(s.rib().len(), n);
        assert!(outputs > n);
        let rate = n as f64 / secs;
        println!(
            "session (framing+decode+rib+events) round {round}: {secs:.3} s, {:.2}M prefixes/s",
            rate / 1e6
        );
        rates.push(rate);
    }
    if !rates.is_empty() {
        println!(
            "session path: median {:.2}M prefixes/s/core",
            median(rates) / 1e6
        );
    }
}
