//! The BMP station on arbitrary bytes in arbitrary chunks. The body lives in
//! `foureyes_bgp_listener::fuzzing::bmp` (documented there) so that
//! bgp-listener/tests/fuzz_regressions.rs replays fuzz/regressions/bmp/ and fuzz/seeds/bmp/
//! through exactly these calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| foureyes_bgp_listener::fuzzing::bmp(data));
