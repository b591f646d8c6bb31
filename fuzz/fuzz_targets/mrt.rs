//! The MRT reader and decoder on an arbitrary stream: framing, every record type, the RIB-entry
//! attribute decoder, the event formatters, and (when the input starts with their magic bytes) the
//! gzip and bzip2 paths.
#![no_main]

use foureyes_bgp_listener::mrt::{Decoder, decode_all, open_decompressed};
use foureyes_bgp_listener::update::parse_rib_attributes;
use foureyes_bgp_listener::watch::{event_json, event_text};
use foureyes_bgp_listener::wire::Family;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    let _ = decode_all(data, &mut decoder, |ev| {
        let _ = event_json(ev);
        let _ = event_text(ev);
    });
    if let Ok((_, r)) = open_decompressed(std::io::Cursor::new(data.to_vec())) {
        let mut decoder = Decoder::new();
        let _ = decode_all(r, &mut decoder, |_| {});
    }
    for family in Family::ALL {
        for four in [false, true] {
            let _ = parse_rib_attributes(data, family, four);
        }
    }
});
