//! Interop with a real GoBGP (`gobgpd` and the `gobgp` CLI, Debian `gobgpd`) in a network
//! namespace, over a veth pair.
//!
//! Two kinds of session, each run over an IPv4 and over an IPv6 transport, each one gobgpd start-up
//! covering IPv4 and IPv6 unicast together, ADD-PATH (`send-max`) for both families:
//! - passive listener, eBGP, GoBGP dials;
//! - active listener, iBGP (so LOCAL_PREF is sent), the listener dials GoBGP.
//!
//! Routes are added, changed (MED, communities, large communities, LOCAL_PREF, AS path) and
//! deleted with `gobgp global rib add/del` on gobgpd's gRPC port inside the router namespace (each
//! namespace has its own loopback, so parallel instances never share a port). Receive-only proof
//! from GoBGP's side: `gobgp neighbor X -j` counts 0 UPDATEs received (and some sent), and a
//! tcpdump capture of the listener's TCP payload holds only message types 1, 3 and 4.

mod common;

use std::time::Duration;

use common::lab::*;
use serde_json::{Value, json};

fn gobgp_lab(tag: &str) -> Lab {
    need("gobgpd", "gobgpd");
    need("gobgp", "gobgpd");
    need("tcpdump", "tcpdump");
    let mut lab = Lab::new(tag);
    lab.keep_log(lab.path("gobgpd.log"));
    lab
}

/// gobgpd's gRPC port inside the router namespace.
const API_PORT: &str = "50071";

fn start_gobgpd(lab: &mut Lab, conf: &str) {
    std::fs::write(lab.path("gobgpd.toml"), conf).expect("write gobgpd.toml");
    let log = std::fs::File::create(lab.path("gobgpd.log")).expect("log");
    let mut cmd = lab.in_router("gobgpd");
    cmd.arg("-f")
        .arg(lab.path("gobgpd.toml"))
        .args([
            "--api-hosts",
            &format!("127.0.0.1:{API_PORT}"),
            "--pprof-disable",
            "--log-plain",
            "--log-level",
            "debug",
        ])
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    lab.spawn_router("gobgpd", cmd);
    // The gRPC API answers once gobgpd has read its config.
    let t0 = std::time::Instant::now();
    loop {
        let ok = lab
            .in_router("gobgp")
            .args(["-p", API_PORT, "global"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "gobgpd's API did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `gobgp -p PORT args...` in the router namespace; fails the test if it fails.
fn gobgp(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["-p", API_PORT];
    all.extend_from_slice(args);
    lab.router_output("gobgp", &all)
}

fn rib_add(lab: &Lab, family: &str, prefix: &str, attrs: &str) {
    let mut args = vec!["global", "rib", "-a", family, "add", prefix];
    args.extend(attrs.split_whitespace());
    gobgp(lab, &args);
}

/// GoBGP's message counters for `neighbor` (`state.messages`); zero counters are left out of
/// its JSON, so a missing field reads as 0.
fn assert_gobgp_received_no_update(lab: &Lab, neighbor: &str) {
    let out = gobgp(lab, &["neighbor", neighbor, "-j"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("gobgp JSON ({e}): {out}"));
    let m = &v["state"]["messages"];
    let n = |dir: &str, kind: &str| m[dir][kind].as_u64().unwrap_or(0);
    assert!(n("sent", "update") > 0, "GoBGP's counters are live: {m}");
    assert!(
        n("received", "keepalive") > 0 && n("received", "open") > 0,
        "GoBGP counted the listener's OPEN and KEEPALIVEs: {m}"
    );
    assert_eq!(
        n("received", "update"),
        0,
        "GoBGP received an UPDATE from the listener: {m}"
    );
    assert_eq!(
        n("received", "refresh"),
        0,
        "GoBGP received a ROUTE-REFRESH from the listener: {m}"
    );
}

/// Over an IPv6 transport GoBGP (3.10) rewrites an eBGP next hop to its IPv6 session address for
/// IPv4 routes too and sends them in MP_REACH_NLRI with an IPv6 next hop, although RFC 8950
/// (extended next hop) was not negotiated; the listener takes it as an unusable MP_REACH_NLRI
/// (`update_error` "MP_REACH_NLRI next hop length", AFI/SAFI disable for IPv4). The global export
/// policy sets GoBGP's IPv4 address as the IPv4 next hop, which it uses over an IPv4 transport
/// anyway.
const PASSIVE_CONF: &str = r#"
[global.config]
  as = 65001
  router-id = "198.18.0.1"
  port = 179
  local-address-list = ["198.18.0.1", "2001:2::1"]
[global.apply-policy.config]
  export-policy-list = ["v4-next-hop"]
  default-export-policy = "accept-route"

[[policy-definitions]]
  name = "v4-next-hop"
  [[policy-definitions.statements]]
    name = "v4"
    [policy-definitions.statements.conditions.bgp-conditions]
      afi-safi-in-list = ["ipv4-unicast"]
    [policy-definitions.statements.actions]
      route-disposition = "accept-route"
    [policy-definitions.statements.actions.bgp-actions]
      set-next-hop = "198.18.0.1"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.0.2"
    peer-as = 65002
  [neighbors.timers.config]
    connect-retry = 1
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [neighbors.add-paths.config]
    send-max = 8
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
"#;

#[test]
fn gobgp_dials_the_passive_listener_over_ipv4() {
    gobgp_dials_the_passive_listener_ebgp_addpath_change_withdraw_receive_only(Transport::V4);
}

#[test]
fn gobgp_dials_the_passive_listener_over_ipv6() {
    gobgp_dials_the_passive_listener_ebgp_addpath_change_withdraw_receive_only(Transport::V6);
}

fn gobgp_dials_the_passive_listener_ebgp_addpath_change_withdraw_receive_only(t: Transport) {
    let mut lab = gobgp_lab("gbp");
    lab.start_capture();
    let mut w = lab.watch(&t.passive_args("65002", "65001"));
    start_gobgpd(&mut lab, &PASSIVE_CONF.replace(LISTENER_V4, t.listener));
    // Routes go in before the session comes up (GoBGP dials within a second or so), so the
    // initial transfer carries them; later changes are live UPDATEs.
    rib_add(
        &lab,
        "ipv4",
        "198.19.1.0/24",
        "origin igp community 65001:100 large-community 65001:1:2",
    );
    rib_add(&lab, "ipv4", "198.19.2.0/24", "med 20 community 65001:200");
    rib_add(&lab, "ipv4", "198.19.3.0/24", "");
    rib_add(
        &lab,
        "ipv6",
        "2001:2:0:a::/64",
        "nexthop 2001:2::1 community 65001:600",
    );
    rib_add(&lab, "ipv6", "2001:2:0:b::/64", "nexthop 2001:2::1");
    // Two paths for one prefix: with ADD-PATH both reach the listener, each under its path id.
    rib_add(&lab, "ipv4", "198.19.5.0/24", "identifier 10 med 1");
    rib_add(&lab, "ipv4", "198.19.5.0/24", "identifier 20 med 2");

    let est = w.events.wait("session established", |e| {
        e["type"] == "session_established"
    });
    assert_eq!(est["peer"], t.router);
    assert_eq!(est["peer_as"], 65001);
    assert_eq!(est["families"], json!(["ipv4-unicast", "ipv6-unicast"]));
    assert_eq!(
        est["add_path"],
        json!(["ipv4-unicast", "ipv6-unicast"]),
        "GoBGP sends paths for both families"
    );
    for p in [
        "198.19.1.0/24",
        "198.19.2.0/24",
        "198.19.3.0/24",
        "2001:2:0:a::/64",
        "2001:2:0:b::/64",
    ] {
        w.events
            .wait(&format!("announce {p}"), |e| is(e, "announce", p));
    }
    let ev = w.events.seen.clone();
    let a1 = find(&ev, "announce", "198.19.1.0/24");
    assert_eq!(a1["as_path"], "65001");
    assert_eq!(a1["next_hop"], ROUTER_V4);
    assert_eq!(a1["origin"], "igp");
    assert_eq!(a1["communities"], json!(["65001:100"]));
    assert_eq!(a1["large_communities"], json!(["65001:1:2"]));
    assert!(a1["path_id"].as_u64().is_some(), "ADD-PATH path id: {a1}");
    let a2 = find(&ev, "announce", "198.19.2.0/24");
    assert_eq!(a2["med"], 20);
    let v6 = find(&ev, "announce", "2001:2:0:a::/64");
    assert_eq!(v6["afi_safi"], "ipv6-unicast");
    assert_eq!(v6["next_hop"], ROUTER_V6);
    assert_eq!(v6["communities"], json!(["65001:600"]));
    assert!(v6["path_id"].as_u64().is_some(), "ADD-PATH path id: {v6}");
    for fam in ["ipv4-unicast", "ipv6-unicast"] {
        w.events.wait(&format!("End-of-RIB {fam}"), |e| {
            e["type"] == "end_of_rib" && e["afi_safi"] == fam
        });
    }
    for m in [1, 2] {
        w.events.wait(&format!("path with MED {m}"), |e| {
            is(e, "announce", "198.19.5.0/24") && e["med"] == m
        });
    }
    let paths: Vec<&Value> = w
        .events
        .seen
        .iter()
        .filter(|e| is(e, "announce", "198.19.5.0/24"))
        .collect();
    assert_eq!(paths.len(), 2, "two paths, two announces: {paths:#?}");
    assert_ne!(paths[0]["path_id"], paths[1]["path_id"], "{paths:#?}");
    let path_med1 = paths
        .iter()
        .find(|e| e["med"] == 1)
        .map(|e| e["path_id"].clone())
        .expect("MED 1 path");
    let mark = w.events.seen.len();

    // Re-adding a prefix replaces GoBGP's path: new MED, community, and a prepended AS path.
    rib_add(
        &lab,
        "ipv4",
        "198.19.2.0/24",
        "med 30 community 65001:201 aspath 65001,65001",
    );
    gobgp(
        &lab,
        &["global", "rib", "-a", "ipv4", "del", "198.19.3.0/24"],
    );
    gobgp(
        &lab,
        &["global", "rib", "-a", "ipv6", "del", "2001:2:0:b::/64"],
    );
    gobgp(
        &lab,
        &[
            "global",
            "rib",
            "-a",
            "ipv4",
            "del",
            "198.19.5.0/24",
            "identifier",
            "10",
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
    let gone = w
        .events
        .wait_from(mark, Duration::from_secs(60), "one path withdrawn", |e| {
            is(e, "withdraw", "198.19.5.0/24")
        });
    assert_eq!(gone["path_id"], path_med1, "only the deleted path goes");
    assert_eq!(ch["as_path"], "65001 65001 65001");
    assert_eq!(ch["med"], 30);
    assert_eq!(ch["communities"], json!(["65001:201"]));
    assert_eq!(ch["previous"]["med"], 20);
    assert_eq!(ch["path_id"], a2["path_id"], "the same path changed");
    assert_withdrawn(&mut w.events, mark);
    assert!(
        w.events.seen.iter().all(|e| e["type"] != "session_down"),
        "one session throughout: {:#?}",
        w.events.seen
    );
    assert_eq!(
        w.events
            .seen
            .iter()
            .filter(|e| is(e, "withdraw", "198.19.5.0/24"))
            .count(),
        1,
        "the other path stays"
    );

    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
    std::thread::sleep(Duration::from_millis(500));
    assert_gobgp_received_no_update(&lab, t.listener);
    let pcap = lab.stop_capture();
    let sent = assert_receive_only(&pcap, t.listener_ip(), t.router_ip());
    assert_eq!(sent.last(), Some(&3), "ends with our Cease: {sent:?}");
}

const ACTIVE_CONF: &str = r#"
[global.config]
  as = 65001
  router-id = "198.18.0.1"
  port = 179
  local-address-list = ["198.18.0.1", "2001:2::1"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "2001:2::2"
    peer-as = 65001
  [neighbors.transport.config]
    passive-mode = true
  [neighbors.add-paths.config]
    send-max = 8
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#;

#[test]
fn the_active_listener_dials_gobgp_over_ipv4() {
    the_active_listener_dials_gobgp_ibgp_addpath_local_pref_change_withdraw_receive_only(
        Transport::V4,
    );
}

#[test]
fn the_active_listener_dials_gobgp_over_ipv6() {
    the_active_listener_dials_gobgp_ibgp_addpath_local_pref_change_withdraw_receive_only(
        Transport::V6,
    );
}

fn the_active_listener_dials_gobgp_ibgp_addpath_local_pref_change_withdraw_receive_only(
    t: Transport,
) {
    let mut lab = gobgp_lab("gba");
    start_gobgpd(&mut lab, &ACTIVE_CONF.replace(LISTENER_V6, t.listener));
    rib_add(
        &lab,
        "ipv4",
        "198.19.1.0/24",
        "nexthop 198.18.0.1 local-pref 200 med 10",
    );
    rib_add(&lab, "ipv4", "198.19.3.0/24", "nexthop 198.18.0.1");
    rib_add(
        &lab,
        "ipv6",
        "2001:2:0:a::/64",
        "nexthop 2001:2::1 local-pref 200",
    );
    rib_add(&lab, "ipv6", "2001:2:0:b::/64", "nexthop 2001:2::1");
    lab.start_capture();
    let mut args = t.active_args("65001", "65001");
    args.push("--no-graceful-restart");
    let mut w = lab.watch(&args);
    let est = w.events.wait("session established", |e| {
        e["type"] == "session_established"
    });
    assert_eq!(est["peer"], t.router);
    assert_eq!(est["families"], json!(["ipv4-unicast", "ipv6-unicast"]));
    assert_eq!(
        est["add_path"],
        json!(["ipv4-unicast", "ipv6-unicast"]),
        "GoBGP sends paths for both families"
    );
    for p in [
        "198.19.1.0/24",
        "198.19.3.0/24",
        "2001:2:0:a::/64",
        "2001:2:0:b::/64",
    ] {
        w.events
            .wait(&format!("announce {p}"), |e| is(e, "announce", p));
    }
    let ev = w.events.seen.clone();
    let a1 = find(&ev, "announce", "198.19.1.0/24");
    assert_eq!(a1["peer"], t.router);
    assert_eq!(
        a1["as_path"], "",
        "iBGP: GoBGP's own routes have an empty path"
    );
    assert_eq!(a1["local_pref"], 200);
    assert_eq!(a1["med"], 10);
    assert_eq!(a1["next_hop"], ROUTER_V4);
    assert!(a1["path_id"].as_u64().is_some(), "ADD-PATH path id: {a1}");
    let v6 = find(&ev, "announce", "2001:2:0:a::/64");
    assert_eq!(v6["local_pref"], 200);
    assert_eq!(v6["next_hop"], ROUTER_V6);
    assert!(v6["path_id"].as_u64().is_some(), "ADD-PATH path id: {v6}");
    let mark = w.events.seen.len();

    rib_add(
        &lab,
        "ipv4",
        "198.19.1.0/24",
        "nexthop 198.18.0.1 local-pref 300 med 10 aspath 65010",
    );
    rib_add(
        &lab,
        "ipv6",
        "2001:2:0:a::/64",
        "nexthop 2001:2::1 local-pref 50",
    );
    gobgp(
        &lab,
        &["global", "rib", "-a", "ipv4", "del", "198.19.3.0/24"],
    );
    gobgp(
        &lab,
        &["global", "rib", "-a", "ipv6", "del", "2001:2:0:b::/64"],
    );
    assert_dual_stack_changes(&mut w.events, mark, "65010");
    assert!(
        w.events.seen.iter().all(|e| e["type"] != "session_down"),
        "one session throughout: {:#?}",
        w.events.seen
    );

    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
    std::thread::sleep(Duration::from_millis(500));
    assert_gobgp_received_no_update(&lab, t.listener);
    let pcap = lab.stop_capture();
    let sent = assert_receive_only(&pcap, t.listener_ip(), t.router_ip());
    assert_eq!(sent.last(), Some(&3), "ends with our Cease: {sent:?}");
}
