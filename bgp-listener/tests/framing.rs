//! Framing: every malformed header maps to its exact NOTIFICATION, and nothing panics.

mod common;

use common::msg;
use foureyes_bgp_listener::wire::{
    DecodeError, Framer, LocalCapabilities, Notification, OpenMessage, Outgoing, decode_open,
    encode,
};

fn first_error(bytes: &[u8]) -> Option<Notification> {
    let mut f = Framer::new();
    f.push(bytes);
    loop {
        match f.next_frame() {
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(e) => return Some(Notification::from(&e)),
        }
    }
}

fn header(marker: [u8; 16], len: u16, kind: u8) -> Vec<u8> {
    let mut v = marker.to_vec();
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v
}

#[test]
fn malformed_headers_map_to_exact_notifications() {
    let ones = [0xff; 16];
    let mut bad_marker = ones;
    bad_marker[7] = 0xfe;
    let cases: Vec<(&str, Vec<u8>, Notification)> = vec![
        (
            "marker not all ones",
            header(bad_marker, 19, 4),
            Notification::new(1, 1),
        ),
        (
            "length 0",
            header(ones, 0, 4),
            Notification::with_data(1, 2, vec![0, 0]),
        ),
        (
            "length 18",
            header(ones, 18, 4),
            Notification::with_data(1, 2, vec![0, 18]),
        ),
        (
            "length 4097",
            header(ones, 4097, 2),
            Notification::with_data(1, 2, vec![0x10, 0x01]),
        ),
        (
            "length 65535",
            header(ones, 65535, 2),
            Notification::with_data(1, 2, vec![0xff, 0xff]),
        ),
        (
            "KEEPALIVE of 20",
            header(ones, 20, 4),
            Notification::with_data(1, 2, vec![0, 20]),
        ),
        (
            "OPEN of 28",
            header(ones, 28, 1),
            Notification::with_data(1, 2, vec![0, 28]),
        ),
        (
            "UPDATE of 22",
            header(ones, 22, 2),
            Notification::with_data(1, 2, vec![0, 22]),
        ),
        (
            "NOTIFICATION of 20",
            header(ones, 20, 3),
            Notification::with_data(1, 2, vec![0, 20]),
        ),
        (
            "type 0",
            header(ones, 19, 0),
            Notification::with_data(1, 3, vec![0]),
        ),
        (
            "type 6",
            header(ones, 19, 6),
            Notification::with_data(1, 3, vec![6]),
        ),
        (
            "type 255",
            header(ones, 19, 255),
            Notification::with_data(1, 3, vec![255]),
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(first_error(&bytes), Some(want), "{name}");
    }
}

#[test]
fn messages_split_across_reads_are_reassembled() {
    let mut stream = msg(4, &[]);
    stream.extend(msg(2, &[0, 0, 0, 0]));
    let mut f = Framer::new();
    let mut frames = Vec::new();
    for b in &stream {
        f.push(std::slice::from_ref(b));
        while let Some(fr) = f.next_frame().expect("valid") {
            frames.push(fr.kind);
        }
    }
    assert_eq!(frames, vec![4, 2]);
    assert_eq!(f.buffered(), 0);
}

#[test]
fn a_short_header_waits_for_more_bytes() {
    let mut f = Framer::new();
    f.push(&[0xff; 10]);
    assert_eq!(f.next_frame(), Ok(None));
    f.push(&[]);
    assert_eq!(f.next_frame(), Ok(None));
}

#[test]
fn framer_and_decoders_never_panic_on_arbitrary_bytes() {
    // A small deterministic generator: random headers with valid markers and random lengths/types.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ctx = foureyes_bgp_listener::update::DecodeContext {
        four_octet_as: true,
        families: foureyes_bgp_listener::wire::Family::ALL.to_vec(),
        add_path: Vec::new(),
    };
    for _ in 0..20_000 {
        let n = (next() % 200) as usize;
        let mut body: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        let _ = foureyes_bgp_listener::update::parse_update(&body, &ctx);
        let _ = decode_open(&body);
        body.truncate(n / 2);
        let mut f = Framer::new();
        f.push(&msg((next() % 6) as u8, &body));
        let _ = f.next_frame();
        let raw: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        f.push(&raw);
        let _ = f.next_frame();
    }
}

#[test]
fn open_encodes_the_receive_only_capability_set() {
    let o = Outgoing::Open(OpenMessage {
        local_as: 4_200_000_000,
        hold_time: 90,
        router_id: "198.18.0.2".parse().expect("ip"),
        capabilities: LocalCapabilities {
            families: foureyes_bgp_listener::wire::Family::ALL.to_vec(),
            graceful_restart_time: Some(120),
            add_path_receive: foureyes_bgp_listener::wire::Family::ALL.to_vec(),
            extended_message: true,
            four_octet_as: true,
        },
    });
    let bytes = encode(&o);
    let mut f = Framer::new();
    f.push(&bytes);
    let fr = f.next_frame().expect("frame").expect("complete");
    assert_eq!(fr.kind, 1);
    let back = decode_open(&fr.body).expect("decodes");
    assert_eq!(back.my_as, 23456, "AS_TRANS in My AS");
    assert_eq!(back.asn(), 4_200_000_000);
    assert_eq!(back.hold_time, 90);
    assert!(back.graceful_restart);
    assert!(!back.route_refresh, "route refresh must not be advertised");
    assert!(
        back.add_path_send.is_empty(),
        "receive only: Send/Receive = 1"
    );
    assert!(back.extended_message);
    assert_eq!(back.capability_codes, vec![1, 1, 65, 69, 6, 64]);
    assert_eq!(encode(&Outgoing::Keepalive), msg(4, &[]));
    assert_eq!(
        encode(&Outgoing::Notification(Notification::with_data(
            1,
            2,
            vec![0, 18]
        ))),
        msg(3, &[1, 2, 0, 18])
    );
}

#[test]
fn open_errors_map_to_open_notifications() {
    let mut bad_version = common::open_with(65001, 90, [1, 1, 1, 1], &[]);
    bad_version[19] = 3;
    let e = decode_open(bad_version.get(19..).expect("body")).expect_err("version 3");
    assert_eq!(e, DecodeError::UnsupportedVersion(3));
    assert_eq!(
        Notification::from(&e),
        Notification::with_data(2, 1, vec![0, 4])
    );
    // Optional parameter type 1 (authentication, deprecated) → 2/4.
    let mut body = vec![4, 0xfd, 0xe9, 0, 90, 1, 1, 1, 1, 3, 1, 1, 0];
    let e = decode_open(&body).expect_err("param 1");
    assert_eq!(Notification::from(&e), Notification::new(2, 4));
    // A capability overrunning its parameter → 2/0.
    body = vec![4, 0xfd, 0xe9, 0, 90, 1, 1, 1, 1, 4, 2, 2, 65, 4];
    let e = decode_open(&body).expect_err("overrun");
    assert_eq!(Notification::from(&e), Notification::new(2, 0));
}

/// RFC 8654: 65535-octet messages only once Extended Messages is negotiated, and never an OPEN
/// over 4096.
#[test]
fn extended_messages_raise_the_bound_only_when_negotiated() {
    let big = msg(2, &vec![0u8; 5000]);
    let mut f = Framer::new();
    f.push(&big);
    assert!(
        matches!(
            f.next_frame(),
            Err(foureyes_bgp_listener::wire::DecodeError::BadLength { length: 5019, .. })
        ),
        "4096 is the bound without the capability"
    );
    let mut f = Framer::new();
    f.set_extended(true);
    f.push(&big);
    assert_eq!(
        f.next_frame().ok().flatten().map(|fr| fr.body.len()),
        Some(5000)
    );
    let mut f = Framer::new();
    f.set_extended(true);
    f.push(&msg(1, &vec![0u8; 5000]));
    assert!(f.next_frame().is_err(), "an OPEN stays within 4096");
    let mut f = Framer::new();
    f.set_extended(true);
    f.push(&msg(2, &vec![0u8; 65535 - 19]));
    assert!(
        f.next_frame().is_ok_and(|fr| fr.is_some()),
        "65535 is the bound"
    );
}
