//! Interop with a real BIRD 2 peer, in two network namespaces joined by a veth pair.
//!
//! Needs root, `bird2` and `tcpdump` (Debian packages) and the built binary (`cargo build --bins`,
//! which `cargo test` does for integration tests). Addresses are in 198.18.0.0/15 and 2001:2::/48
//! and live only inside the test's own namespaces; names carry the test's pid and a counter, and
//! everything is torn down on drop, also after a panic.
//!
//! Receive-only proof: tcpdump captures the listener's side of the veth; the test reassembles the
//! listener→BIRD TCP stream, frames it with the listener's own framer, and asserts it holds only
//! message types 1, 3 and 4 (BIRD's counters count routes, not messages, so the capture is the
//! proof for BIRD, as issue 4 says).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::lab::*;

const BIRD_V4: &str = ROUTER_V4;

/// Whether a static-route line announces an IPv6 (`v6`) or IPv4 prefix.
fn is_route(line: &str, v6: bool) -> bool {
    let mut words = line.split_whitespace();
    words.next() == Some("route") && words.next().is_some_and(|p| p.contains(':') == v6)
}

fn bird_lab() -> Lab {
    need("bird", "bird2");
    need("tcpdump", "tcpdump");
    let mut lab = Lab::new("bird");
    lab.keep_log(lab.path("bird.log"));
    lab
}

/// BIRD's config: the static routes in `routes`, BIRD dialling the listener unless `passive`,
/// over transport `t`. The next hop of the family that is not the transport's is set explicitly
/// (BIRD has no address of that family on the session to take it from).
fn write_bird_conf(lab: &Lab, routes: &str, passive: bool, t: Transport) {
    let conf = format!(
        r#"
router id {ROUTER_V4};
log "{log}" all;
protocol device {{ }}
protocol static s4 {{
    ipv4;
{routes4}
}}
protocol static s6 {{
    ipv6;
{routes6}
}}
protocol bgp fe {{
    local {router} as 65001;
    neighbor {listener} as 65002;
    {passive}
    hold time 30;
    connect retry time 1;
    ipv4 {{ import all; export all; add paths tx; next hop address {ROUTER_V4}; }};
    ipv6 {{ import all; export all; next hop address {ROUTER_V6}; }};
}}
"#,
        log = lab.path("bird.log").display(),
        router = t.router,
        listener = t.listener,
        routes4 = routes
            .lines()
            .filter(|l| is_route(l, false))
            .collect::<Vec<_>>()
            .join("\n"),
        routes6 = routes
            .lines()
            .filter(|l| is_route(l, true))
            .collect::<Vec<_>>()
            .join("\n"),
        passive = if passive { "passive on;" } else { "" },
    );
    std::fs::write(lab.path("bird.conf"), conf).expect("write bird.conf");
}

fn start_bird(lab: &mut Lab) {
    let mut cmd = lab.in_router("bird");
    cmd.arg("-f")
        .arg("-c")
        .arg(lab.path("bird.conf"))
        .arg("-s")
        .arg(lab.path("bird.ctl"));
    cmd.stdout(std::process::Stdio::null());
    lab.spawn_router("bird", cmd);
}

fn birdc(lab: &Lab, args: &[&str]) -> String {
    let out = lab
        .in_router("birdc")
        .arg("-s")
        .arg(lab.path("bird.ctl"))
        .args(args)
        .output()
        .expect("birdc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// BIRD's own view of the established session: it exported routes to the listener and imported
/// none from it, in both channels.
fn assert_bird_imported_nothing(lab: &Lab) {
    let proto = birdc(lab, &["show", "protocols", "all", "fe"]);
    let routes: Vec<&str> = proto
        .lines()
        .filter(|l| l.trim_start().starts_with("Routes:"))
        .collect();
    assert_eq!(routes.len(), 2, "one Routes: line per channel:\n{proto}");
    assert!(
        routes
            .iter()
            .all(|l| l.contains(" 0 imported") && !l.contains(" 0 exported")),
        "BIRD imported routes from the listener (or exported none):\n{proto}"
    );
}

/// The capture holds only OPEN, KEEPALIVE and NOTIFICATION from the listener.
fn assert_bird_receive_only(lab: &mut Lab, t: Transport) -> Vec<u8> {
    let pcap = lab.stop_capture();
    assert_receive_only(&pcap, t.listener_ip(), t.router_ip())
}

const ROUTES: &str = r#"
    route 198.19.1.0/24 blackhole { bgp_community.add((65001,100)); bgp_large_community.add((65001,1,2)); };
    route 198.19.2.0/24 blackhole { bgp_community.add((65001,200)); };
    route 198.19.3.0/24 blackhole;
    route 2001:2:0:a::/64 blackhole { bgp_community.add((65001,600)); };
    route 2001:2:0:b::/64 blackhole;
"#;

/// The session and the initial transfer of `ROUTES`, whichever side dialled and whatever the
/// transport: both families, ADD-PATH for IPv4 only (BIRD's path id on every v4 event).
fn assert_bird_initial(events: &[serde_json::Value]) {
    let est = events
        .iter()
        .find(|e| e["type"] == "session_established")
        .expect("established");
    assert_eq!(est["peer_as"], 65001);
    assert_eq!(
        est["families"],
        serde_json::json!(["ipv4-unicast", "ipv6-unicast"])
    );
    assert_eq!(est["graceful_restart"], true);
    assert_eq!(est["four_octet_as"], true);
    assert_eq!(
        est["add_path"],
        serde_json::json!(["ipv4-unicast"]),
        "BIRD sends paths for v4 only"
    );

    let a = find(events, "announce", "198.19.1.0/24");
    assert_eq!(a["peer"], est["peer"]);
    assert_eq!(a["afi_safi"], "ipv4-unicast");
    assert_eq!(a["as_path"], "65001");
    assert_eq!(a["next_hop"], ROUTER_V4);
    assert_eq!(a["communities"], serde_json::json!(["65001:100"]));
    assert_eq!(a["large_communities"], serde_json::json!(["65001:1:2"]));
    assert!(a["received"].as_str().is_some_and(|s| s.starts_with("20")));
    let a2 = find(events, "announce", "198.19.2.0/24");
    assert_eq!(a2["communities"], serde_json::json!(["65001:200"]));
    let a3 = find(events, "announce", "198.19.3.0/24");
    for v4 in [a, a2, a3] {
        assert!(
            v4["path_id"].as_u64().is_some(),
            "ADD-PATH: v4 events carry BIRD's path id: {v4}"
        );
    }
    let v6 = find(events, "announce", "2001:2:0:a::/64");
    assert_eq!(v6["afi_safi"], "ipv6-unicast");
    assert_eq!(v6["communities"], serde_json::json!(["65001:600"]));
    assert_eq!(v6["next_hop"], ROUTER_V6);
    assert!(v6["path_id"].is_null(), "no ADD-PATH for v6: {v6}");
    find(events, "announce", "2001:2:0:b::/64");
    for fam in ["ipv4-unicast", "ipv6-unicast"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "end_of_rib" && e["afi_safi"] == fam),
            "End-of-RIB for {fam}"
        );
    }
}

/// `--exit-on-eor` against BIRD: the transfer-complete line and the Cease the listener ends with.
#[test]
fn bird_passive_session_exit_on_eor_ipv4_ipv6_and_receive_only_capture() {
    let t = Transport::V4;
    let mut lab = bird_lab();
    write_bird_conf(&lab, ROUTES, false, t);
    lab.start_capture();
    let mut child = lab
        .listener(&[
            "watch",
            "--local-as",
            "65002",
            "--peer",
            BIRD_V4,
            "--remote-as",
            "65001",
            "--listen",
            "198.18.0.2:179",
            "--format",
            "jsonl",
            "--exit-on-eor",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Proc)
        .expect("spawn listener");
    let child = &mut child.0;
    // Give the listener a moment to bind before BIRD dials.
    std::thread::sleep(Duration::from_millis(300));
    start_bird(&mut lab);
    let status = wait_with_timeout(child, Duration::from_secs(60));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    assert!(
        status.success(),
        "listener exited with {status}; output:\n{out}"
    );
    std::thread::sleep(Duration::from_millis(1000));

    let events = parse_lines(&out);
    assert_bird_initial(&events);
    assert_eq!(find(&events, "announce", "198.19.1.0/24")["peer"], BIRD_V4);
    let last = events.last().expect("output");
    assert_eq!(last["type"], "transfer_complete", "last line: {last}");
    assert_eq!(last["rule"], "end-of-rib");
    assert_eq!(
        last["prefixes"],
        serde_json::json!({"ipv4-unicast": 3, "ipv6-unicast": 2})
    );
    assert!(
        last["seconds_established_to_last_eor"]
            .as_f64()
            .is_some_and(|s| (0.0..30.0).contains(&s))
    );

    let sent = assert_bird_receive_only(&mut lab, t);
    assert_eq!(
        sent.last(),
        Some(&3),
        "the listener ends with a Cease NOTIFICATION: {sent:?}"
    );
}

/// One cell of the interop matrix: BIRD dials the listener (`listener_passive`) or the listener
/// dials BIRD, over transport `t`; the session carries both families. After the initial
/// transfer BIRD is reconfigured: a community changes on a v4 prefix (same path id), communities
/// and large communities change on a v6 prefix, and one prefix per family goes away. Then the
/// listener stops with a Cease, and the capture and BIRD's import counters show it sent nothing
/// else.
fn bird_session(t: Transport, listener_passive: bool) {
    let mut lab = bird_lab();
    write_bird_conf(&lab, ROUTES, !listener_passive, t);
    lab.start_capture();
    let mut w = if listener_passive {
        let w = lab.watch(&t.passive_args("65002", "65001"));
        // Give the listener a moment to bind before BIRD dials (it retries every second anyway).
        std::thread::sleep(Duration::from_millis(300));
        start_bird(&mut lab);
        w
    } else {
        start_bird(&mut lab);
        lab.watch(&t.active_args("65002", "65001"))
    };
    for fam in ["ipv4-unicast", "ipv6-unicast"] {
        w.events.wait(&format!("End-of-RIB {fam}"), |e| {
            e["type"] == "end_of_rib" && e["afi_safi"] == fam
        });
    }
    let initial = w.events.seen.clone();
    assert_bird_initial(&initial);
    assert_eq!(
        find(&initial, "announce", "198.19.1.0/24")["peer"],
        t.router
    );
    let mark = w.events.seen.len();

    let changed = ROUTES
        .replace(
            "bgp_community.add((65001,200));",
            "bgp_community.add((65001,201));",
        )
        .replace(
            "bgp_community.add((65001,600));",
            "bgp_community.add((65001,601)); bgp_large_community.add((65001,6,1));",
        )
        .replace("    route 198.19.3.0/24 blackhole;\n", "")
        .replace("    route 2001:2:0:b::/64 blackhole;\n", "");
    write_bird_conf(&lab, &changed, !listener_passive, t);
    let reply = birdc(&lab, &["configure"]);
    assert!(
        reply.contains("Reconfigured") || reply.contains("reconfigured"),
        "birdc: {reply}"
    );
    let limit = Duration::from_secs(60);
    let ch = w.events.wait_from(mark, limit, "v4 change", |e| {
        is(e, "attribute_change", "198.19.2.0/24")
    });
    assert_eq!(ch["changed"], serde_json::json!(["communities"]), "{ch}");
    assert_eq!(ch["communities"], serde_json::json!(["65001:201"]));
    assert_eq!(
        ch["previous"]["communities"],
        serde_json::json!(["65001:200"])
    );
    assert_eq!(
        ch["path_id"],
        find(&initial, "announce", "198.19.2.0/24")["path_id"],
        "the same BIRD path changed"
    );
    let ch6 = w.events.wait_from(mark, limit, "v6 change", |e| {
        is(e, "attribute_change", "2001:2:0:a::/64")
    });
    assert_eq!(
        ch6["changed"],
        serde_json::json!(["communities", "large_communities"]),
        "{ch6}"
    );
    assert_eq!(ch6["communities"], serde_json::json!(["65001:601"]));
    assert_eq!(ch6["large_communities"], serde_json::json!(["65001:6:1"]));
    assert_withdrawn(&mut w.events, mark);
    assert!(
        w.events.seen.iter().all(|e| e["type"] != "session_down"),
        "one session throughout: {:#?}",
        w.events.seen
    );

    assert_bird_imported_nothing(&lab);
    // SIGINT: the listener sends Cease and exits.
    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
    std::thread::sleep(Duration::from_millis(1000));
    let sent = assert_bird_receive_only(&mut lab, t);
    assert_eq!(sent.last(), Some(&3), "ends with our Cease: {sent:?}");
}

#[test]
fn bird_dials_the_passive_listener_over_ipv4() {
    bird_session(Transport::V4, true);
}

#[test]
fn bird_dials_the_passive_listener_over_ipv6() {
    bird_session(Transport::V6, true);
}

#[test]
fn the_active_listener_dials_bird_over_ipv4() {
    bird_session(Transport::V4, false);
}

#[test]
fn the_active_listener_dials_bird_over_ipv6() {
    bird_session(Transport::V6, false);
}

/// With graceful restart not advertised, BIRD 2.0.12 still sends End-of-RIB (RFC 4724 lets a
/// speaker send it to any peer), so the End-of-RIB rule ends the transfer even though the listener
/// did not ask for it; the quiet-period rule is covered by `watch_loopback.rs`.
#[test]
fn bird_sends_end_of_rib_even_without_graceful_restart() {
    let mut lab = bird_lab();
    write_bird_conf(&lab, ROUTES, false, Transport::V4);
    let mut child = lab
        .listener(&[
            "watch",
            "--local-as",
            "65002",
            "--peer",
            BIRD_V4,
            "--remote-as",
            "65001",
            "--listen",
            "198.18.0.2",
            "--format",
            "jsonl",
            "--exit-on-eor",
            "--no-graceful-restart",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Proc)
        .expect("spawn listener");
    let child = &mut child.0;
    std::thread::sleep(Duration::from_millis(300));
    start_bird(&mut lab);
    let status = wait_with_timeout(child, Duration::from_secs(60));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    assert!(
        status.success(),
        "listener exited with {status}; output:\n{out}"
    );
    let events = parse_lines(&out);
    let est = events
        .iter()
        .find(|e| e["type"] == "session_established")
        .expect("established");
    assert_eq!(est["graceful_restart"], false);
    let last = events.last().expect("output");
    assert_eq!(last["type"], "transfer_complete");
    assert_eq!(last["rule"], "end-of-rib", "{last}");
    assert_eq!(
        events.iter().filter(|e| e["type"] == "end_of_rib").count(),
        2
    );
    assert_eq!(
        last["prefixes"],
        serde_json::json!({"ipv4-unicast": 3, "ipv6-unicast": 2})
    );
}
