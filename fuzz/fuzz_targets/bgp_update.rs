//! The UPDATE decoder alone, on an arbitrary body, with both AS widths.
#![no_main]

use foureyes_bgp_listener::update::{DecodeContext, parse_update};
use foureyes_bgp_listener::wire::Family;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
    }
});
