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

fn write_bird_conf(lab: &Lab, routes: &str, passive: bool) {
    let conf = format!(
        r#"
router id {BIRD_V4};
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
    local {BIRD_V4} as 65001;
    neighbor {LISTENER_V4} as 65002;
    {passive}
    hold time 30;
    connect retry time 1;
    ipv4 {{ import all; export all; add paths tx; }};
    ipv6 {{ import all; export all; next hop address 2001:2::1; }};
}}
"#,
        log = lab.path("bird.log").display(),
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

fn assert_bird_receive_only(pcap: &[u8]) -> Vec<u8> {
    assert_receive_only(pcap, ip(LISTENER_V4), ip(BIRD_V4))
}

const ROUTES: &str = r#"
    route 198.19.1.0/24 blackhole { bgp_community.add((65001,100)); bgp_large_community.add((65001,1,2)); };
    route 198.19.2.0/24 blackhole { bgp_community.add((65001,200)); };
    route 198.19.3.0/24 blackhole;
    route 2001:2:0:a::/64 blackhole { bgp_community.add((65001,600)); };
    route 2001:2:0:b::/64 blackhole;
"#;

#[test]
fn bird_passive_session_exit_on_eor_ipv4_ipv6_and_receive_only_capture() {
    let mut lab = bird_lab();
    write_bird_conf(&lab, ROUTES, false);
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
    let pcap = lab.stop_capture();

    let events = parse_lines(&out);
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

    let a = find(&events, "announce", "198.19.1.0/24");
    assert_eq!(a["peer"], BIRD_V4);
    assert_eq!(a["afi_safi"], "ipv4-unicast");
    assert_eq!(a["as_path"], "65001");
    assert_eq!(a["next_hop"], BIRD_V4);
    assert_eq!(a["communities"], serde_json::json!(["65001:100"]));
    assert_eq!(a["large_communities"], serde_json::json!(["65001:1:2"]));
    assert!(
        a["path_id"].as_u64().is_some(),
        "ADD-PATH: v4 events carry BIRD's path id: {a}"
    );
    assert!(a["received"].as_str().is_some_and(|s| s.starts_with("20")));
    assert_eq!(
        find(&events, "announce", "198.19.2.0/24")["communities"],
        serde_json::json!(["65001:200"])
    );
    find(&events, "announce", "198.19.3.0/24");
    let v6 = find(&events, "announce", "2001:2:0:a::/64");
    assert_eq!(v6["afi_safi"], "ipv6-unicast");
    assert_eq!(v6["communities"], serde_json::json!(["65001:600"]));
    assert_eq!(v6["next_hop"], "2001:2::1");
    assert!(v6["path_id"].is_null(), "no ADD-PATH for v6: {v6}");
    find(&events, "announce", "2001:2:0:b::/64");
    for fam in ["ipv4-unicast", "ipv6-unicast"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "end_of_rib" && e["afi_safi"] == fam),
            "End-of-RIB for {fam}"
        );
    }
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

    let sent = assert_bird_receive_only(&pcap);
    assert_eq!(
        sent.last(),
        Some(&3),
        "the listener ends with a Cease NOTIFICATION: {sent:?}"
    );
}

#[test]
fn bird_active_session_sees_change_and_withdraw_and_stays_receive_only() {
    let mut lab = bird_lab();
    write_bird_conf(&lab, ROUTES, true);
    start_bird(&mut lab);
    lab.start_capture();
    let mut w = lab.watch(&[
        "--local-as",
        "65002",
        "--peer",
        BIRD_V4,
        "--remote-as",
        "65001",
        "--connect",
        "--router-id",
        "198.18.0.2",
    ]);
    w.events.wait("End-of-RIB v6", |e| {
        e["type"] == "end_of_rib" && e["afi_safi"] == "ipv6-unicast"
    });
    w.events.wait("End-of-RIB v4", |e| {
        e["type"] == "end_of_rib" && e["afi_safi"] == "ipv4-unicast"
    });

    // Change a community and drop a prefix, then reconfigure BIRD.
    let changed = ROUTES
        .replace(
            "bgp_community.add((65001,200));",
            "bgp_community.add((65001,201));",
        )
        .replace("    route 198.19.3.0/24 blackhole;\n", "");
    write_bird_conf(&lab, &changed, true);
    let reply = birdc(&lab, &["configure"]);
    assert!(
        reply.contains("Reconfigured") || reply.contains("reconfigured"),
        "birdc: {reply}"
    );
    w.events
        .wait("withdraw", |e| is(e, "withdraw", "198.19.3.0/24"));
    let ch = w.events.wait("attribute change", |e| {
        is(e, "attribute_change", "198.19.2.0/24")
    });
    assert_eq!(ch["changed"], serde_json::json!(["communities"]));
    assert_eq!(ch["communities"], serde_json::json!(["65001:201"]));
    assert_eq!(
        ch["previous"]["communities"],
        serde_json::json!(["65001:200"])
    );

    // SIGINT: the listener sends Cease and exits.
    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
    std::thread::sleep(Duration::from_millis(1000));
    let proto = birdc(&lab, &["show", "protocols", "all", "fe"]);
    let pcap = lab.stop_capture();
    assert_bird_receive_only(&pcap);
    // BIRD's view agrees that nothing was imported from the listener.
    assert!(
        proto
            .lines()
            .all(|l| !l.trim_start().starts_with("Routes:") || l.contains(" 0 imported")),
        "BIRD imported routes from the listener:\n{proto}"
    );
}

/// With graceful restart not advertised, BIRD 2.0.12 still sends End-of-RIB (RFC 4724 lets a
/// speaker send it to any peer), so the End-of-RIB rule ends the transfer even though the listener
/// did not ask for it; the quiet-period rule is covered by `watch_loopback.rs`.
#[test]
fn bird_sends_end_of_rib_even_without_graceful_restart() {
    let mut lab = bird_lab();
    write_bird_conf(&lab, ROUTES, false);
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
