//! The session state machine on arbitrary bytes after an OPEN exchange. The body lives in
//! `foureyes_bgp_listener::fuzzing::bgp_session` (documented there) so that
//! bgp-listener/tests/fuzz_regressions.rs replays fuzz/regressions/bgp_session/ and fuzz/seeds/bgp_session/
//! through exactly these calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| foureyes_bgp_listener::fuzzing::bgp_session(data));
