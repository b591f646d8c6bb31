//! Framer + OPEN/UPDATE/NOTIFICATION decoders + Adj-RIB-In, through the session: after a valid
//! OPEN/KEEPALIVE exchange, arbitrary bytes arrive in arbitrary chunks. Nothing may panic, and
//! the session may only ever send OPEN, KEEPALIVE or NOTIFICATION.
#![no_main]

use std::time::SystemTime;

use foureyes_bgp_listener::session::{Direction, Input, Output, Session, SessionConfig, Timer};
use libfuzzer_sys::fuzz_target;

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fuzz_target!(|data: &[u8]| {
    let cfg = SessionConfig::new(
        65002,
        65001,
        "198.18.0.2".parse().expect("id"),
        "198.18.0.1".parse().expect("peer"),
    );
    let mut s = Session::new(cfg);
    let now = SystemTime::UNIX_EPOCH;
    // First byte picks 2- or 4-octet AS, so both AS_PATH widths get fuzzed.
    let (four, data) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, rest),
        None => (true, data),
    };
    let mut caps = vec![2u8, 0, 1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1];
    if four {
        caps.extend_from_slice(&[65, 4, 0, 0, 0xfd, 0xe9]);
    }
    caps[1] = (caps.len() - 2) as u8;
    let mut open = vec![4, 0xfd, 0xe9, 0, 90, 198, 18, 0, 1, caps.len() as u8];
    open.extend_from_slice(&caps);
    s.handle(now, Input::Connected);
    s.handle(now, Input::Received(msg(1, &open)));
    s.handle(now, Input::Received(msg(4, &[])));
    for chunk in data.chunks(97) {
        for o in s.handle(now, Input::Received(chunk.to_vec())) {
            if let Output::Send(m) = o {
                assert!(matches!(m.message_type(), 1 | 3 | 4));
            }
        }
    }
    // The same bytes on a contender connection (collision handling), then the primary closing
    // (graceful-restart stale marking and promotion of the contender).
    s.handle(now, Input::ContenderConnected(Direction::Accepted));
    for chunk in data.chunks(61) {
        for o in s.handle(now, Input::ContenderReceived(chunk.to_vec())) {
            if let Output::Send(m) | Output::SendContender(m) = o {
                assert!(matches!(m.message_type(), 1 | 3 | 4));
            }
        }
    }
    s.handle(now, Input::Closed);
    s.handle(now, Input::TimerFired(Timer::Restart));
});
