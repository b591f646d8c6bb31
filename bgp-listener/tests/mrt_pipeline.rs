//! The threaded replay (`replay/pipeline.rs`: RIB records decoded and formatted on worker threads,
//! RIB announces written straight from the decoded attributes) against the one-thread reference:
//! `mrt::decode_all` and `watch::event_json` (serde_json), record after record. Byte for byte, on
//! the real dumps in `tests/data/mrt/` and Debian's `mrtparse` samples, and on a generated file
//! holding every attribute the JSON shows (extended and large communities, AS_SET and
//! confederation segments, aggregator, atomic aggregate, unknown attributes), RFC 7606 outcomes,
//! entries that do not decode, malformed records and a truncated end, over many chunks. Needs the
//! Debian package `mrtparse` for its samples.

use std::path::{Path, PathBuf};

use foureyes_bgp_listener::mrt::{Decoder, decode_all};
use foureyes_bgp_listener::replay::replay_bytes;
use foureyes_bgp_listener::watch::{Format, event_json, event_text};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mrt");
const MRTPARSE_EXAMPLES: &str = "/usr/share/doc/mrtparse/examples";

/// What one thread gives: every event in order (JSON lines or text), and the error count.
fn reference(data: &[u8], format: Format) -> (String, usize) {
    let mut out = String::new();
    let r = decode_all(data, &mut Decoder::new(), |ev| match format {
        Format::Jsonl => {
            out.push_str(&event_json(ev).to_string());
            out.push('\n');
        }
        _ => {
            out.push_str(&event_text(ev));
            out.push('\n');
        }
    });
    let errors = match r {
        Ok(malformed) => malformed.len(),
        Err(_) => usize::MAX,
    };
    (out, errors)
}

fn threaded(data: &[u8], format: Format) -> (String, String, usize) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let report = replay_bytes(data, format, &mut out, &mut err).expect("replay");
    (
        String::from_utf8(out).expect("utf-8"),
        String::from_utf8(err).expect("utf-8"),
        report.errors.len(),
    )
}

fn assert_same(data: &[u8], what: &str) -> usize {
    for format in [Format::Jsonl, Format::Text] {
        let (want, want_errors) = reference(data, format);
        let (got, stderr, errors) = threaded(data, format);
        if got != want {
            let at = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(got.lines().count().min(want.lines().count()));
            panic!(
                "{what} ({format:?}): output differs at line {at}:\n threaded: {:?}\nreference: {:?}",
                got.lines().nth(at),
                want.lines().nth(at)
            );
        }
        // decode_all stops at a framing error (counted as one here) and counts malformed records.
        if want_errors != usize::MAX {
            assert_eq!(errors, want_errors, "{what}: {stderr}");
        } else {
            assert!(errors >= 1, "{what}: {stderr}");
        }
    }
    reference(data, Format::Jsonl).0.lines().count()
}

fn real_files() -> Vec<PathBuf> {
    assert!(
        Path::new(MRTPARSE_EXAMPLES).is_dir(),
        "{MRTPARSE_EXAMPLES} missing: apt-get install -y mrtparse"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(DATA)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.extend(
        std::fs::read_dir(MRTPARSE_EXAMPLES)
            .expect("mrtparse examples")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                !n.contains('.')
            }),
    );
    files.sort();
    files
}

#[test]
fn threaded_replay_matches_one_thread_on_real_dumps() {
    let mut all = Vec::new();
    let mut total = 0;
    for f in real_files() {
        let raw = std::fs::read(&f).expect("read");
        total += assert_same(&raw, &f.display().to_string());
        all.push(raw);
    }
    assert!(total > 1000, "{total}");
    // The same files back to back, several times: many chunks, both workers, several peer index
    // tables and BGP4MP state carried across them.
    let mut many = Vec::new();
    for _ in 0..6 {
        for raw in &all {
            many.extend_from_slice(raw);
        }
    }
    assert!(assert_same(&many, "all files six times") > 6 * 1000);
}

// --- A generated TABLE_DUMP_V2 file with every attribute the JSON shows. -------------------------

fn record(out: &mut Vec<u8>, kind: u16, subtype: u16, body: &[u8]) {
    out.extend_from_slice(&1_800_000_000u32.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&subtype.to_be_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes());
    out.extend_from_slice(body);
}

fn attr(buf: &mut Vec<u8>, flags: u8, t: u8, v: &[u8]) {
    if v.len() > 255 {
        buf.extend_from_slice(&[flags | 0x10, t]);
        buf.extend_from_slice(&u16::try_from(v.len()).expect("len").to_be_bytes());
    } else {
        buf.extend_from_slice(&[flags, t, u8::try_from(v.len()).expect("len")]);
    }
    buf.extend_from_slice(v);
}

/// Attribute blocks, each a different case; `v6` ones carry an abbreviated MP_REACH_NLRI.
fn blocks(v6: bool, i: u32) -> Vec<Vec<u8>> {
    let nh = |b: &mut Vec<u8>| {
        if v6 {
            let mut v = vec![16u8];
            v.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
            attr(b, 0x80, 14, &v);
        } else {
            attr(b, 0x40, 3, &[198, 18, 0, 9]);
        }
    };
    let path = |segs: &[(u8, &[u32])]| {
        let mut v = Vec::new();
        for (kind, asns) in segs {
            v.push(*kind);
            v.push(u8::try_from(asns.len()).expect("len"));
            for a in *asns {
                v.extend_from_slice(&a.to_be_bytes());
            }
        }
        v
    };
    let mut all = Vec::new();
    // Everything at once.
    let mut b = Vec::new();
    attr(&mut b, 0x40, 1, &[2]);
    attr(
        &mut b,
        0x40,
        2,
        &path(&[
            (2, &[64500, 4_200_000_000 + i, 65000]),
            (1, &[1, 2, 3]),
            (3, &[64512]),
            (4, &[64513, 64514]),
        ]),
    );
    nh(&mut b);
    attr(&mut b, 0x80, 4, &i.to_be_bytes());
    attr(&mut b, 0x40, 5, &200u32.to_be_bytes());
    attr(&mut b, 0x40, 6, &[]);
    let mut agg = 4_200_000_001u32.to_be_bytes().to_vec();
    agg.extend_from_slice(&[192, 0, 2, 1]);
    attr(&mut b, 0xc0, 7, &agg);
    let mut comm = Vec::new();
    for c in [0xfde8_0001u32, 0xffff_ff01, i] {
        comm.extend_from_slice(&c.to_be_bytes());
    }
    attr(&mut b, 0xc0, 8, &comm);
    attr(
        &mut b,
        0xc0,
        16,
        &[
            0, 2, 0xfd, 0xe8, 0, 0, 0, 7, 0x80, 0x06, 0, 0, 0x4e, 0x20, 0, 0,
        ],
    );
    let mut large = Vec::new();
    for x in [4_200_000_000u32, 1, i, 64500, 0, u32::MAX] {
        large.extend_from_slice(&x.to_be_bytes());
    }
    attr(&mut b, 0xc0, 32, &large);
    attr(&mut b, 0xc0, 99, &[1, 2, 3]);
    all.push(b);
    // Only a next hop (no ORIGIN, no AS_PATH: locally originated).
    let mut b = Vec::new();
    nh(&mut b);
    all.push(b);
    // A long AS path (extended length).
    let mut b = Vec::new();
    attr(&mut b, 0x40, 1, &[0]);
    let long: Vec<u32> = (0..100).map(|k| 64_000 + k + i % 7).collect();
    attr(&mut b, 0x40, 2, &path(&[(2, &long)]));
    nh(&mut b);
    all.push(b);
    // RFC 7606: AS 0 in AGGREGATOR (attribute discard), then a repeated attribute.
    let mut b = Vec::new();
    attr(&mut b, 0x40, 1, &[0]);
    attr(&mut b, 0x40, 2, &path(&[(2, &[64500])]));
    nh(&mut b);
    let mut agg0 = 0u32.to_be_bytes().to_vec();
    agg0.extend_from_slice(&[192, 0, 2, 1]);
    attr(&mut b, 0xc0, 7, &agg0);
    attr(&mut b, 0x40, 1, &[1]);
    all.push(b);
    // RFC 7606: a bad ORIGIN (treat-as-withdraw: no announce).
    let mut b = Vec::new();
    attr(&mut b, 0x40, 1, &[7]);
    attr(&mut b, 0x40, 2, &path(&[(2, &[64500])]));
    nh(&mut b);
    all.push(b);
    // RFC 7607: AS 0 in the AS path.
    let mut b = Vec::new();
    attr(&mut b, 0x40, 2, &path(&[(2, &[64500, 0])]));
    nh(&mut b);
    all.push(b);
    // Attributes that do not decode at all (a truncated header).
    all.push(vec![0x40, 1]);
    all
}

/// A RIB dump of `prefixes` prefixes from 3 peers, every `bad_every`-th record cut short (the
/// entry count promising more than the record holds), a BGP4MP message in the middle, and
/// optionally a truncated last record.
fn generated(prefixes: u32, add_path: bool, truncated_end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pit = vec![198, 18, 0, 1, 0, 4, b'v', b'i', b'e', b'w', 0, 3];
    for p in 0..3u8 {
        pit.push(if p == 2 { 0x03 } else { 0x02 });
        pit.extend_from_slice(&[198, 18, 0, 10 + p]);
        if p == 2 {
            pit.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
        } else {
            pit.extend_from_slice(&[198, 18, 0, 10 + p]);
        }
        pit.extend_from_slice(&(64_500u32 + u32::from(p)).to_be_bytes());
    }
    record(&mut out, 13, 1, &pit);
    for i in 0..prefixes {
        let v6 = i % 4 == 3;
        let mut body = i.to_be_bytes().to_vec();
        if v6 {
            body.push(64);
            body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            body.extend_from_slice(&i.to_be_bytes());
        } else {
            body.push(24);
            body.extend_from_slice(&((i << 8) + (10 << 24)).to_be_bytes()[..3]);
        }
        let bl = blocks(v6, i);
        let entries: Vec<&Vec<u8>> = (0..3).map(|k| &bl[(i as usize + k) % bl.len()]).collect();
        let cut = i % 97 == 50;
        body.extend_from_slice(
            &(u16::try_from(entries.len()).expect("n") + u16::from(cut)).to_be_bytes(),
        );
        for (p, a) in entries.iter().enumerate() {
            body.extend_from_slice(&u16::try_from(p).expect("p").to_be_bytes());
            body.extend_from_slice(&(1_799_990_000 + i).to_be_bytes());
            if add_path {
                body.extend_from_slice(&(i % 5).to_be_bytes());
            }
            body.extend_from_slice(&u16::try_from(a.len()).expect("len").to_be_bytes());
            body.extend_from_slice(a);
        }
        let subtype = match (v6, add_path) {
            (false, false) => 2,
            (true, false) => 4,
            (false, true) => 8,
            (true, true) => 10,
        };
        record(&mut out, 13, subtype, &body);
        if i == prefixes / 2 {
            // A BGP4MP_ET STATE_CHANGE_AS4 into Established, between RIB records.
            let mut sc = 123_456u32.to_be_bytes().to_vec();
            sc.extend_from_slice(&65_001u32.to_be_bytes());
            sc.extend_from_slice(&65_002u32.to_be_bytes());
            sc.extend_from_slice(&[0, 0, 0, 1, 198, 18, 0, 1, 198, 18, 0, 2, 0, 5, 0, 6]);
            record(&mut out, 17, 5, &sc);
            // A peer index beyond the table.
            let mut bad = vec![0, 0, 0, 0, 8, 10, 0, 1, 0, 9];
            bad.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            record(&mut out, 13, 2, &bad);
        }
    }
    if truncated_end {
        let mut last = Vec::new();
        record(&mut last, 13, 2, &[0, 0, 0, 1, 24, 10, 0, 0, 0, 0]);
        out.extend_from_slice(&last[..last.len() - 3]);
    }
    out
}

#[test]
fn threaded_replay_matches_one_thread_on_every_attribute_and_error() {
    for add_path in [false, true] {
        for truncated_end in [false, true] {
            let data = generated(6000, add_path, truncated_end);
            assert!(data.len() > 1 << 20, "several chunks");
            let what = format!("generated add_path={add_path} truncated_end={truncated_end}");
            let lines = assert_same(&data, &what);
            assert!(lines > 10_000, "{what}: {lines}");
            let (want, _) = reference(&data, Format::Jsonl);
            for needle in [
                "\"extended_communities\":[\"0002fde800000007\"",
                "\"large_communities\":[\"4200000000:1:",
                "{1,2,3} 64512 {64513,64514}",
                "\"type\":\"update_error\"",
                "\"action\":\"treat-as-withdraw\"",
                "\"action\":\"attribute-discard\"",
                "\"type\":\"session_established\"",
                "\"local_pref\":200",
                "\"peer\":\"2001:db8::3\"",
            ] {
                // The reference prints these, so the comparison covered them.
                assert!(
                    want.contains(needle),
                    "{what}: no {needle} in the reference"
                );
            }
        }
    }
}

#[test]
fn summary_of_threaded_replay_counts_what_jsonl_prints() {
    let data = generated(3000, false, true);
    let (lines, _) = reference(&data, Format::Jsonl);
    let (summary, _, _) = threaded(&data, Format::Summary);
    let events = summary
        .lines()
        .find_map(|l| l.strip_prefix("events "))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.parse::<usize>().ok())
        .expect("events line");
    assert_eq!(events, lines.lines().count(), "{summary}");
    let announces: usize = summary
        .lines()
        .flat_map(|l| l.split("announce ").skip(1))
        .filter_map(|s| s.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(
        announces,
        lines.matches("\"type\":\"announce\"").count(),
        "{summary}"
    );
    assert!(summary.contains("rib entries: "), "{summary}");
    assert!(
        summary.contains("bad: RIB entries whose attributes do not decode: "),
        "{summary}"
    );
}
