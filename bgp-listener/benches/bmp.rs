//! BMP station throughput: a synthetic feed of one router, one peer, `BENCH_PREFIXES` IPv4
//! prefixes (default 1M) in Route Monitoring messages of 3 prefixes each (as BIRD/FRR pack a full
//! table), fed in 64 KiB reads, against a ceiling that only frames the BMP messages. Feeds are
//! encoded before the clock starts. Prints best and median of `BENCH_ROUNDS` (default 5) and the
//! process's peak RSS.
//!
//! `cargo bench -p foureyes-bgp-listener --no-default-features --bench bmp`
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use foureyes_bgp_listener::bmp::{Input, Output, Station};
use foureyes_bgp_listener::event::BmpView;

fn bgp(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&u16::try_from(19 + body.len()).unwrap().to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn bmp(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![3];
    v.extend_from_slice(&u32::try_from(6 + body.len()).unwrap().to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn per_peer(ts: u32) -> Vec<u8> {
    let mut h = vec![0u8, 0];
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&[0; 12]);
    h.extend_from_slice(&[198, 18, 0, 1]);
    h.extend_from_slice(&65001u32.to_be_bytes());
    h.extend_from_slice(&[198, 18, 0, 1]);
    h.extend_from_slice(&ts.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    h
}

fn open(asn: u16) -> Vec<u8> {
    let a = asn.to_be_bytes();
    let caps = [1, 4, 0, 1, 0, 1, 65, 4, 0, 0, a[0], a[1]];
    let mut o = vec![4, a[0], a[1], 0, 90, 198, 18, 0, 1, 14, 2, 12];
    o.extend_from_slice(&caps);
    bgp(1, &o)
}

fn feed(prefixes: usize) -> Vec<u8> {
    let mut v = bmp(4, &[0, 2, 0, 5, b'b', b'e', b'n', b'c', b'h']);
    let mut up = per_peer(1);
    up.extend_from_slice(&[0; 20]);
    up.extend(open(65010));
    up.extend(open(65001));
    v.extend(bmp(3, &up));
    let mut i = 0usize;
    while i < prefixes {
        let mut attrs = vec![0x40, 1, 1, 0];
        let origin_as = 64512 + u32::try_from(i / 3 % 1000).unwrap();
        attrs.extend_from_slice(&[0x40, 2, 14, 2, 3]);
        for asn in [65001u32, 65100, origin_as] {
            attrs.extend_from_slice(&asn.to_be_bytes());
        }
        attrs.extend_from_slice(&[0x40, 3, 4, 198, 18, 0, 1]);
        let mut body = vec![0, 0];
        body.extend_from_slice(&u16::try_from(attrs.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&attrs);
        for _ in 0..3 {
            if i >= prefixes {
                break;
            }
            // Distinct /24s from 10.0.0.0 up (1M of them end in 25.255.255.0/24).
            let [_, a, b, c] = (u32::try_from(i).unwrap() + (10 << 16)).to_be_bytes();
            body.extend_from_slice(&[24, a, b, c]);
            i += 1;
        }
        let mut m = per_peer(1_700_000_000);
        m.extend(bgp(2, &body));
        v.extend(bmp(0, &m));
    }
    v
}

fn station(feed: &[u8]) -> (Duration, usize) {
    let t = Instant::now();
    let mut st = Station::new("192.0.2.1".parse().unwrap());
    let mut events = 0usize;
    let now = SystemTime::now();
    for chunk in feed.chunks(64 * 1024) {
        for o in st.handle(now, Input::Received(chunk.to_vec())) {
            if let Output::Event(_) = o {
                events += 1;
            }
        }
    }
    let d = t.elapsed();
    let held = st.routes("198.18.0.1".parse().unwrap(), BmpView::PrePolicy);
    assert_eq!(held + 1, events, "every prefix is distinct and held");
    (d, events)
}

/// The ceiling: cut the stream into BMP messages and nothing else.
fn frame_only(feed: &[u8]) -> (Duration, usize) {
    let t = Instant::now();
    let mut buf: Vec<u8> = Vec::new();
    let mut n = 0usize;
    for chunk in feed.chunks(64 * 1024) {
        buf.extend_from_slice(chunk);
        let mut off = 0;
        while let Some(h) = buf.get(off..off + 6) {
            let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
            if buf.len() < off + len {
                break;
            }
            std::hint::black_box(buf.get(off + 6..off + len));
            off += len;
            n += 1;
        }
        buf.drain(..off);
    }
    (t.elapsed(), n)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let prefixes: usize = std::env::var("BENCH_PREFIXES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let f = feed(prefixes);
    println!(
        "BMP feed: {prefixes} IPv4 prefixes, 3 per Route Monitoring message, {:.1} MB",
        f.len() as f64 / 1e6
    );
    let (mut st, mut fr) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (d, events) = station(&f);
        assert_eq!(
            events,
            prefixes + 1,
            "Established + one announce per prefix"
        );
        st.push(d);
        fr.push(frame_only(&f).0);
    }
    st.sort();
    fr.sort();
    let med = |v: &[Duration]| v[v.len() / 2];
    let rate = |d: Duration| prefixes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "station (frame + decode + Adj-RIB-In + events): best {:.3} s ({:.2} M prefixes/s), median {:.3} s",
        st[0].as_secs_f64(),
        rate(st[0]),
        med(&st).as_secs_f64()
    );
    println!(
        "frame only (ceiling): best {:.3} s, median {:.3} s",
        fr[0].as_secs_f64(),
        med(&fr).as_secs_f64()
    );
    println!("peak RSS {:.0} MB", peak_rss_mb());
}
