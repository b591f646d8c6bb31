//! The MRT reader and decoder on an arbitrary stream: framing, every record type, the RIB-entry
//! attribute decoder, the event formatters, and (when the input starts with their magic bytes) the
//! gzip and bzip2 paths. The threaded replay (`replay::replay_bytes`, which writes RIB announces
//! without building events) must print exactly what `decode_all` and `event_json` print, and so
//! must the direct JSON-lines writer (`event_jsonl`) event by event. The parallel bzip2 decoder
//! must give what the `bzip2` crate's serial decoder gives: the same bytes when that succeeds, and
//! an error and bytes that agree with its bytes as far as both go when not.
#![no_main]

#[path = "jsonl_check.rs"]
mod jsonl_check;

use std::io::Read;

use foureyes_bgp_listener::event_jsonl::JsonlWriter;
use foureyes_bgp_listener::mrt::bzip2_par::ParBzDecoder;
use foureyes_bgp_listener::mrt::{Compression, Decoder, decode_all, open_decompressed};
use foureyes_bgp_listener::replay::replay_bytes;
use foureyes_bgp_listener::update::parse_rib_attributes;
use foureyes_bgp_listener::watch::{Format, event_json, event_text};
use foureyes_bgp_listener::wire::Family;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    let mut want = String::new();
    let mut jsonl = JsonlWriter::new();
    let _ = decode_all(data, &mut decoder, |ev| {
        want.push_str(&event_json(ev).to_string());
        want.push('\n');
        jsonl_check::assert_same_json(&mut jsonl, ev);
        let _ = event_text(ev);
    });
    if Compression::detect(data) == Compression::None {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        replay_bytes(data, Format::Jsonl, &mut out, &mut err).expect("in-memory replay");
        assert!(out == want.as_bytes(), "threaded replay differs from decode_all");
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
            assert_eq!(ok, serial_ok, "parallel bzip2 ok={ok}, serial ok={serial_ok}");
            if ok {
                assert!(par == serial, "parallel bzip2 output differs");
            } else {
                // Not a prefix either way: the serial decoder drops what it decoded in the call
                // that failed (a bad stream CRC after a good block), this one keeps good blocks.
                let n = par.len().min(serial.len());
                assert!(par.get(..n) == serial.get(..n), "parallel bzip2 output differs");
            }
        }
    }
    for family in Family::ALL {
        for four in [false, true] {
            let _ = parse_rib_attributes(data, family, four);
        }
    }
});
