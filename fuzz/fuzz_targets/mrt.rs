//! The MRT reader, decompressors and replay on an arbitrary stream. The body lives in
//! `foureyes_bgp_listener::fuzzing::mrt` (documented there) so that
//! bgp-listener/tests/fuzz_regressions.rs replays fuzz/regressions/mrt/ and fuzz/seeds/mrt/
//! through exactly these calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| foureyes_bgp_listener::fuzzing::mrt(data));
