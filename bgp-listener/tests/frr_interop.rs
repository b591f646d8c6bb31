//! Interop with a real FRR `bgpd` (Debian `frr`) in a network namespace, over a veth pair.
//!
//! Two kinds of session, each run over an IPv4 and over an IPv6 transport, each one router
//! start-up covering IPv4 and IPv6 unicast together:
//! - passive listener, eBGP, FRR dials, `addpath-tx-all-paths` for IPv4;
//! - active listener, iBGP (so LOCAL_PREF is sent), the listener dials FRR, the same for IPv6.
//!
//! FRR 8.4 advertises ADD-PATH send for every family it carries whether or not
//! `addpath-tx-all-paths` is set there, so both families are negotiated in both sessions and
//! every event carries FRR's path id.
//!
//! Each announces, changes attributes (MED, communities, LOCAL_PREF, AS path prepend) through
//! route-maps, withdraws, and checks the `--format jsonl` events. Receive-only proof from FRR's
//! side: its `show bgp neighbor X json` message statistics count 0 UPDATEs received (and some
//! sent), and a tcpdump capture of the listener's TCP payload holds only message types 1, 3, 4.
//!
//! bgpd runs without zebra (`-Z`), as root (`-S`), with its config, pid file, vty socket and log
//! in the lab's temp dir, so parallel instances never share a path. Without zebra FRR does not know
//! the interface addresses, so the route-maps set the next hops the test expects for both families
//! whatever the transport (`set ipv6 next-hop global`, `set ip next-hop`); `no bgp network
//! import-check` lets `network` statements announce without a RIB route. The configs name the
//! listener by its IPv4 (passive) or IPv6 (active) address; `passive_conf`/`active_conf` put in the
//! transport's.

mod common;

use std::time::Duration;

use common::lab::*;
use serde_json::{Value, json};

const BGPD: &str = "/usr/lib/frr/bgpd";

fn frr_lab(tag: &str) -> Lab {
    need(BGPD, "frr");
    need("vtysh", "frr");
    need("tcpdump", "tcpdump");
    let mut lab = Lab::new(tag);
    lab.keep_log(lab.path("bgpd.log"));
    lab
}

fn start_bgpd(lab: &mut Lab, conf: &str) {
    let conf = format!(
        "frr defaults traditional\nhostname fe-frr\nlog file {}\n!\n{conf}",
        lab.path("bgpd.log").display()
    );
    std::fs::write(lab.path("bgpd.conf"), conf).expect("write bgpd.conf");
    let mut cmd = lab.in_router(BGPD);
    cmd.args(["-Z", "-S", "-P", "0", "-l", ROUTER_V4, "-l", ROUTER_V6])
        .arg("-f")
        .arg(lab.path("bgpd.conf"))
        .arg("-i")
        .arg(lab.path("bgpd.pid"))
        .arg("--vty_socket")
        .arg(lab.dir());
    cmd.stdout(std::process::Stdio::null());
    lab.spawn_router("bgpd", cmd);
}

/// Runs vtysh commands against this lab's bgpd (each `-c` is one line, in order).
fn vtysh(lab: &Lab, lines: &[&str]) -> String {
    let dir = lab.dir().display().to_string();
    let mut args = vec!["--vty_socket", &dir, "-d", "bgpd"];
    for l in lines {
        args.push("-c");
        args.push(l);
    }
    lab.router_output("vtysh", &args)
}

/// FRR's message statistics for `neighbor`, polled until the JSON is there.
fn frr_message_stats(lab: &Lab, neighbor: &str) -> Value {
    let out = vtysh(lab, &[&format!("show bgp neighbor {neighbor} json")]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("vtysh JSON ({e}): {out}"));
    v[neighbor]["messageStats"].clone()
}

fn assert_frr_received_no_update(lab: &Lab, neighbor: &str) {
    let stats = frr_message_stats(lab, neighbor);
    assert!(
        stats["updatesSent"].as_u64().is_some_and(|n| n > 0),
        "FRR's counters are live (it sent UPDATEs): {stats}"
    );
    assert!(
        stats["keepalivesRecv"].as_u64().is_some_and(|n| n > 0),
        "and counted the listener's KEEPALIVEs: {stats}"
    );
    assert_eq!(
        stats["updatesRecv"],
        json!(0),
        "FRR received an UPDATE from the listener: {stats}"
    );
    assert_eq!(
        stats["routeRefreshRecv"],
        json!(0),
        "FRR received a ROUTE-REFRESH from the listener: {stats}"
    );
}

/// Waits for the End-of-RIB of both families and an announce for each prefix (in any order: a
/// slow bgpd may still be reading its `network` statements when the session comes up).
fn wait_initial(w: &mut Watch, prefixes: &[&str]) {
    for fam in ["ipv4-unicast", "ipv6-unicast"] {
        w.events.wait(&format!("End-of-RIB {fam}"), |e| {
            e["type"] == "end_of_rib" && e["afi_safi"] == fam
        });
    }
    for p in prefixes {
        w.events
            .wait(&format!("announce {p}"), |e| is(e, "announce", p));
    }
}

const PASSIVE_CONF: &str = r#"
ip prefix-list P2 seq 5 permit 198.19.2.0/24
route-map OUT4 permit 10
 match ip address prefix-list P2
 set ip next-hop 198.18.0.1
 set metric 20
 set community 65001:200
exit
route-map OUT4 permit 20
 set ip next-hop 198.18.0.1
 set community 65001:100
 set large-community 65001:1:2
exit
route-map OUT6 permit 10
 set ipv6 next-hop global 2001:2::1
 set community 65001:600
exit
router bgp 65001
 bgp router-id 198.18.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 no bgp default ipv4-unicast
 neighbor 198.18.0.2 remote-as 65002
 neighbor 198.18.0.2 disable-connected-check
 neighbor 198.18.0.2 timers connect 1
 !
 address-family ipv4 unicast
  network 198.19.1.0/24
  network 198.19.2.0/24
  network 198.19.3.0/24
  neighbor 198.18.0.2 activate
  neighbor 198.18.0.2 addpath-tx-all-paths
  neighbor 198.18.0.2 route-map OUT4 out
 exit-address-family
 !
 address-family ipv6 unicast
  network 2001:2:0:a::/64
  network 2001:2:0:b::/64
  neighbor 198.18.0.2 activate
  neighbor 198.18.0.2 route-map OUT6 out
 exit-address-family
exit
"#;

/// `PASSIVE_CONF` with FRR's neighbor at the listener's address on transport `t`.
fn passive_conf(t: Transport) -> String {
    PASSIVE_CONF.replace(LISTENER_V4, t.listener)
}

/// `ACTIVE_CONF` with FRR's neighbor at the listener's address on transport `t`.
fn active_conf(t: Transport) -> String {
    ACTIVE_CONF.replace(LISTENER_V6, t.listener)
}

#[test]
fn frr_dials_the_passive_listener_over_ipv4() {
    frr_dials_the_passive_listener_ebgp_addpath_change_withdraw_receive_only(Transport::V4);
}

#[test]
fn frr_dials_the_passive_listener_over_ipv6() {
    frr_dials_the_passive_listener_ebgp_addpath_change_withdraw_receive_only(Transport::V6);
}

fn frr_dials_the_passive_listener_ebgp_addpath_change_withdraw_receive_only(t: Transport) {
    let mut lab = frr_lab("frp");
    lab.start_capture();
    let mut w = lab.watch(&t.passive_args("65002", "65001"));
    // Give the listener a moment to bind before FRR dials (FRR retries every second anyway).
    std::thread::sleep(Duration::from_millis(300));
    start_bgpd(&mut lab, &passive_conf(t));

    let est = w.events.wait("session established", |e| {
        e["type"] == "session_established"
    });
    assert_eq!(est["peer"], t.router);
    assert_eq!(est["peer_as"], 65001);
    assert_eq!(est["peer_router_id"], ROUTER_V4);
    assert_eq!(est["families"], json!(["ipv4-unicast", "ipv6-unicast"]));
    assert_eq!(est["four_octet_as"], true);
    assert_eq!(est["graceful_restart"], true);
    assert_eq!(
        est["add_path"],
        json!(["ipv4-unicast", "ipv6-unicast"]),
        "FRR 8.4 advertises ADD-PATH send for every family it carries"
    );
    wait_initial(
        &mut w,
        &[
            "198.19.1.0/24",
            "198.19.2.0/24",
            "198.19.3.0/24",
            "2001:2:0:a::/64",
            "2001:2:0:b::/64",
        ],
    );
    let ev = w.events.seen.clone();
    let a1 = find(&ev, "announce", "198.19.1.0/24");
    assert_eq!(a1["afi_safi"], "ipv4-unicast");
    assert_eq!(a1["as_path"], "65001");
    assert_eq!(a1["next_hop"], ROUTER_V4);
    assert_eq!(a1["origin"], "igp");
    assert_eq!(a1["communities"], json!(["65001:100"]));
    assert_eq!(a1["large_communities"], json!(["65001:1:2"]));
    assert!(
        a1["path_id"].as_u64().is_some(),
        "ADD-PATH: FRR's v4 paths carry a path id: {a1}"
    );
    let a2 = find(&ev, "announce", "198.19.2.0/24");
    assert_eq!(a2["med"], 20);
    assert_eq!(a2["communities"], json!(["65001:200"]));
    find(&ev, "announce", "198.19.3.0/24");
    let v6 = find(&ev, "announce", "2001:2:0:a::/64");
    assert_eq!(v6["afi_safi"], "ipv6-unicast");
    assert_eq!(v6["next_hop"], ROUTER_V6);
    assert_eq!(v6["communities"], json!(["65001:600"]));
    assert!(
        v6["path_id"].as_u64().is_some(),
        "ADD-PATH: FRR's v6 paths carry a path id: {v6}"
    );
    find(&ev, "announce", "2001:2:0:b::/64");
    let mark = w.events.seen.len();

    // Change MED, communities and prepend the AS path for one prefix; withdraw one per family.
    vtysh(
        &lab,
        &[
            "configure terminal",
            "route-map OUT4 permit 10",
            "set metric 30",
            "set community 65001:201",
            "set as-path prepend 65001 65001",
            "exit",
            "router bgp 65001",
            "address-family ipv4 unicast",
            "no network 198.19.3.0/24",
            "exit-address-family",
            "address-family ipv6 unicast",
            "no network 2001:2:0:b::/64",
            "end",
            &format!("clear bgp ipv4 unicast {} soft out", t.listener),
        ],
    );
    let ch = w
        .events
        .wait_from(mark, Duration::from_secs(60), "attribute change", |e| {
            is(e, "attribute_change", "198.19.2.0/24")
        });
    assert_eq!(
        ch["changed"],
        json!(["as_path", "med", "communities"]),
        "{ch}"
    );
    assert_eq!(ch["as_path"], "65001 65001 65001");
    assert_eq!(ch["med"], 30);
    assert_eq!(ch["communities"], json!(["65001:201"]));
    assert_eq!(ch["previous"]["med"], 20);
    assert_eq!(ch["previous"]["communities"], json!(["65001:200"]));
    assert_eq!(ch["previous"]["as_path"], "65001");
    assert_withdrawn(&mut w.events, mark);

    assert!(
        w.events.seen.iter().all(|e| e["type"] != "session_down"),
        "one session throughout: {:#?}",
        w.events.seen
    );
    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
    std::thread::sleep(Duration::from_millis(500));
    assert_frr_received_no_update(&lab, t.listener);
    let pcap = lab.stop_capture();
    let sent = assert_receive_only(&pcap, t.listener_ip(), t.router_ip());
    assert_eq!(sent.last(), Some(&3), "ends with our Cease: {sent:?}");
    assert_eq!(
        sent.iter().filter(|t| **t == 3).count(),
        1,
        "one NOTIFICATION: {sent:?}"
    );
}

const ACTIVE_CONF: &str = r#"
route-map OUT4 permit 10
 set ip next-hop 198.18.0.1
 set local-preference 200
 set metric 10
exit
route-map OUT6 permit 10
 set ipv6 next-hop global 2001:2::1
 set local-preference 200
 set extcommunity rt 65001:7
exit
router bgp 65001
 bgp router-id 198.18.0.1
 no bgp network import-check
 no bgp default ipv4-unicast
 neighbor 2001:2::2 remote-as 65001
 neighbor 2001:2::2 passive
 !
 address-family ipv4 unicast
  network 198.19.1.0/24
  network 198.19.3.0/24
  neighbor 2001:2::2 activate
  neighbor 2001:2::2 route-map OUT4 out
 exit-address-family
 !
 address-family ipv6 unicast
  network 2001:2:0:a::/64
  network 2001:2:0:b::/64
  neighbor 2001:2::2 activate
  neighbor 2001:2::2 addpath-tx-all-paths
  neighbor 2001:2::2 route-map OUT6 out
 exit-address-family
exit
"#;

#[test]
fn the_active_listener_dials_frr_over_ipv4() {
    the_active_listener_dials_frr_ibgp_local_pref_change_withdraw_receive_only(Transport::V4);
}

#[test]
fn the_active_listener_dials_frr_over_ipv6() {
    the_active_listener_dials_frr_ibgp_local_pref_change_withdraw_receive_only(Transport::V6);
}

fn the_active_listener_dials_frr_ibgp_local_pref_change_withdraw_receive_only(t: Transport) {
    let mut lab = frr_lab("fra");
    start_bgpd(&mut lab, &active_conf(t));
    lab.start_capture();
    let mut w = lab.watch(&t.active_args("65001", "65001"));
    let est = w.events.wait("session established", |e| {
        e["type"] == "session_established"
    });
    assert_eq!(est["peer"], t.router);
    assert_eq!(est["families"], json!(["ipv4-unicast", "ipv6-unicast"]));
    assert_eq!(
        est["add_path"],
        json!(["ipv4-unicast", "ipv6-unicast"]),
        "FRR 8.4 advertises ADD-PATH send for every family it carries"
    );
    wait_initial(
        &mut w,
        &[
            "198.19.1.0/24",
            "198.19.3.0/24",
            "2001:2:0:a::/64",
            "2001:2:0:b::/64",
        ],
    );
    let ev = w.events.seen.clone();
    let a1 = find(&ev, "announce", "198.19.1.0/24");
    assert_eq!(a1["peer"], t.router);
    assert_eq!(
        a1["as_path"], "",
        "iBGP: FRR's own routes have an empty path"
    );
    assert_eq!(a1["local_pref"], 200);
    assert_eq!(a1["med"], 10);
    assert_eq!(a1["next_hop"], ROUTER_V4);
    assert!(
        a1["path_id"].as_u64().is_some(),
        "ADD-PATH: FRR's v4 paths carry a path id: {a1}"
    );
    find(&ev, "announce", "198.19.3.0/24");
    let v6 = find(&ev, "announce", "2001:2:0:a::/64");
    assert_eq!(v6["local_pref"], 200);
    assert_eq!(v6["next_hop"], ROUTER_V6);
    assert_eq!(
        v6["extended_communities"],
        json!(["0002fde900000007"]),
        "route target 65001:7"
    );
    assert!(
        v6["path_id"].as_u64().is_some(),
        "ADD-PATH: FRR's v6 paths carry a path id: {v6}"
    );
    find(&ev, "announce", "2001:2:0:b::/64");
    let mark = w.events.seen.len();

    vtysh(
        &lab,
        &[
            "configure terminal",
            "route-map OUT4 permit 10",
            "set local-preference 300",
            "set as-path prepend 65001",
            "exit",
            "route-map OUT6 permit 10",
            "set local-preference 50",
            "exit",
            "router bgp 65001",
            "address-family ipv4 unicast",
            "no network 198.19.3.0/24",
            "exit-address-family",
            "address-family ipv6 unicast",
            "no network 2001:2:0:b::/64",
            "end",
            &format!("clear bgp ipv4 unicast {} soft out", t.listener),
            &format!("clear bgp ipv6 unicast {} soft out", t.listener),
        ],
    );
    assert_dual_stack_changes(&mut w.events, mark, "65001");

    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
    std::thread::sleep(Duration::from_millis(500));
    assert_frr_received_no_update(&lab, t.listener);
    let pcap = lab.stop_capture();
    let sent = assert_receive_only(&pcap, t.listener_ip(), t.router_ip());
    assert_eq!(sent.last(), Some(&3), "ends with our Cease: {sent:?}");
    assert_eq!(
        sent.iter().filter(|t| **t == 3).count(),
        1,
        "one NOTIFICATION: {sent:?}"
    );
}

const SECURED_CONF: &str = r#"
router bgp 65001
 bgp router-id 198.18.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 no bgp default ipv4-unicast
 neighbor 198.18.0.2 remote-as 65002
 neighbor 198.18.0.2 password fe-md5-secret
 neighbor 198.18.0.2 ttl-security hops 1
 neighbor 198.18.0.2 timers connect 1
 !
 address-family ipv4 unicast
  network 198.19.1.0/24
  neighbor 198.18.0.2 activate
 exit-address-family
exit
"#;

/// Watches for a few seconds (FRR dials every second, so several attempts fail in this time),
/// stops, and asserts that no session came up.
fn assert_no_session(mut w: Watch, what: &str) {
    w.events.settle(Duration::from_secs(6));
    w.stop();
    assert!(
        !w.events
            .seen
            .iter()
            .any(|e| e["type"] == "session_established"),
        "{what}: no session expected, saw {:#?}",
        w.events.seen
    );
}

/// A kernel TCP counter (`nstat`, absolute, history untouched) in a namespace: counters are per
/// namespace, so each lab starts from zero.
fn tcp_counter(ns: &str, name: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nstat", "-saz", name])
        .output()
        .expect("nstat (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(name)).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no counter {name} in nstat output"))
}

/// TCP MD5 (RFC 2385) and GTSM (RFC 5082) against FRR configured with `password` and
/// `ttl-security hops 1`, the listener passive, then active. Each wrong setting is refused by a kernel (seen in
/// that namespace's counters) and gives no session; the right ones give the session and routes.
#[test]
fn md5_and_gtsm_with_frr_wrong_settings_are_refused_by_the_kernel_right_ones_peer() {
    let mut lab = frr_lab("frs");
    let good = lab.path("good.md5");
    std::fs::write(&good, "fe-md5-secret\n").expect("write key");
    let bad = lab.path("bad.md5");
    std::fs::write(&bad, "not-the-secret\n").expect("write key");
    let (good, bad) = (good.display().to_string(), bad.display().to_string());
    start_bgpd(&mut lab, SECURED_CONF);
    let base = [
        "--local-as",
        "65002",
        "--peer",
        ROUTER_V4,
        "--remote-as",
        "65001",
        "--listen",
        LISTENER_V4,
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let quiet = |lab: &Lab, args: Vec<String>, what: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_no_session(lab.watch(&args), what);
    };

    // 1. Wrong password (TTL right): our kernel drops FRR's signed SYNs.
    quiet(
        &lab,
        with(&["--md5-password-file", &bad, "--ttl-security", "1"]),
        "wrong MD5 password",
    );
    assert!(
        tcp_counter(&lab.ns_lst, "TcpExtTCPMD5Failure") > 0,
        "the listener's kernel saw no MD5 failure"
    );

    // 2. Right password, no GTSM: we send with the default TTL (64), FRR requires 255.
    let drops = tcp_counter(&lab.ns_router, "TcpExtTCPMinTTLDrop");
    quiet(
        &lab,
        with(&["--md5-password-file", &good]),
        "without --ttl-security",
    );
    assert!(
        tcp_counter(&lab.ns_router, "TcpExtTCPMinTTLDrop") > drops,
        "FRR's kernel dropped none of our low-TTL segments"
    );

    // 3. Both right: the session comes up, signed and at TTL 255 both ways.
    let args = with(&["--md5-password-file", &good, "--ttl-security", "1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut w = lab.watch(&args);
    w.events.wait("session established", |e| {
        e["type"] == "session_established"
    });
    w.events
        .wait("announce", |e| is(e, "announce", "198.19.1.0/24"));
    let st = vtysh(&lab, &["show bgp neighbor 198.18.0.2 json"]);
    let st: Value = serde_json::from_str(&st).expect("vtysh json");
    assert_eq!(st["198.18.0.2"]["bgpState"], "Established", "{st}");
    w.stop();

    // 4. The same from the active side: the key and TTL 255 are on the socket before the SYN.
    let mut w = lab.watch(&[
        "--local-as",
        "65002",
        "--peer",
        ROUTER_V4,
        "--remote-as",
        "65001",
        "--connect",
        "--router-id",
        LISTENER_V4,
        "--md5-password-file",
        &good,
        "--ttl-security",
        "1",
    ]);
    w.events.wait("active session established", |e| {
        e["type"] == "session_established"
    });
    w.events
        .wait("announce (active)", |e| is(e, "announce", "198.19.1.0/24"));
    w.stop();
}

/// GTSM on our side against a peer that does not use it: FRR's directly connected eBGP sends
/// with TTL 1, so our kernel drops its segments and no session comes up.
#[test]
fn gtsm_refuses_a_peer_that_sends_with_a_low_ttl() {
    let mut lab = frr_lab("frg");
    let conf = SECURED_CONF
        .replace(" neighbor 198.18.0.2 password fe-md5-secret\n", "")
        .replace(" neighbor 198.18.0.2 ttl-security hops 1\n", "");
    start_bgpd(&mut lab, &conf);
    let w = lab.watch(&[
        "--local-as",
        "65002",
        "--peer",
        ROUTER_V4,
        "--remote-as",
        "65001",
        "--listen",
        LISTENER_V4,
        "--ttl-security",
        "1",
    ]);
    assert_no_session(w, "GTSM should refuse TTL-1 segments");
    assert!(
        tcp_counter(&lab.ns_lst, "TcpExtTCPMinTTLDrop") > 0,
        "our kernel dropped nothing"
    );
}

/// `--max-prefixes-teardown` against FRR: FRR's three IPv4 prefixes cross a limit of 2, the
/// listener sends Cease/1 and then, for the idle hold, refuses FRR's reconnections (FRR dials
/// every second here) with Cease/5 instead of taking the table again; after the hold FRR gets
/// back in (and crosses the limit again).
#[test]
fn max_prefix_teardown_holds_frr_off_for_the_idle_hold() {
    let mut lab = frr_lab("frm");
    let mut w = lab.watch(&[
        "--local-as",
        "65002",
        "--peer",
        ROUTER_V4,
        "--remote-as",
        "65001",
        "--listen",
        LISTENER_V4,
        "--max-prefixes",
        "2",
        "--max-prefixes-teardown",
        "--max-prefixes-idle-hold",
        "8",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    start_bgpd(&mut lab, &passive_conf(Transport::V4));
    w.events.wait("session established", |e| {
        e["type"] == "session_established"
    });
    let lim = w
        .events
        .wait("prefix_limit", |e| e["type"] == "prefix_limit");
    assert_eq!(lim["teardown"], true, "{lim}");
    let mark = w.events.seen.len();
    w.events
        .wait_from(mark - 1, Duration::from_secs(30), "session_down", |e| {
            e["type"] == "session_down"
        });
    let down_at = std::time::Instant::now();
    let mark = w.events.seen.len();
    w.events.wait_from(
        mark,
        Duration::from_secs(60),
        "established again after the hold",
        |e| e["type"] == "session_established",
    );
    let held = down_at.elapsed();
    assert!(
        held >= Duration::from_secs(7),
        "FRR got back in after {held:?}, inside the 8 s idle hold"
    );
    // FRR tried meanwhile and was turned away with NOTIFICATIONs (Cease/5), not silence.
    let stats = frr_message_stats(&lab, LISTENER_V4);
    assert!(
        stats["notificationsRecv"].as_u64().is_some_and(|n| n >= 3),
        "FRR received the max-prefix Cease and at least two refusals: {stats}"
    );
    w.stop();
}
