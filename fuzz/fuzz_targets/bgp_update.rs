//! The UPDATE decoder, fast path against full decode. The body lives in
//! `foureyes_bgp_listener::fuzzing::bgp_update` (documented there) so that
//! bgp-listener/tests/fuzz_regressions.rs replays fuzz/regressions/bgp_update/ and fuzz/seeds/bgp_update/
//! through exactly these calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| foureyes_bgp_listener::fuzzing::bgp_update(data));
