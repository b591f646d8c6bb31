//! End to end with a real BGP peer: a BIRD 2 router in a network namespace peers with
//! `foureyes-bgp-listener run` (enrolled like a node), whose route events reach the collector,
//! which keeps them per tenant and serves `/api/v1/route-events` and `/api/v1/routes`.
//!
//! Needs root (namespaces), `bird2` and `iproute2`, and the built binaries (`cargo build --bins`).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::bird::{BirdLab, sh};
use common::{Api, Collector, listening_sockets, wait_until};
use serde_json::Value;

const BIRD_V4: &str = "198.19.77.1";
const LST_V4: &str = "198.19.77.2";
const NET: u8 = 77;
/// A host name only the collector's own `/etc/hosts` knows (see `Collector::start_with_hosts`).
const HOST_H: &str = "target-h.listener.test";

const ROUTES4: &str = "
    route 203.0.113.0/24 blackhole { bgp_community.add((65001,100)); };
    route 198.51.100.0/24 blackhole;
    route 198.51.100.128/25 blackhole { bgp_med = 7; };
";
const ROUTES6: &str = "
    route 2001:db8:100::/48 blackhole;
";

fn events(api: &Api, query: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/route-events?page_size=1000&{query}"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn routes(api: &Api, query: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/routes?{query}"))["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn as_path(route: &Value) -> Vec<u64> {
    route["attributes"]["asPath"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["asns"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_u64())
        .collect()
}

#[test]
fn a_listener_streams_a_real_peers_routes_into_its_tenants_table() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut lab = BirdLab::new(root, NET);
    let c = Collector::start(root, 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let other = Api::new(&c.api, &c.tenant("other", "ops"));

    // Enroll a listener with a listener token, and run it.
    let mut listener = common::start_listener(
        &c,
        root,
        "acme",
        "noc",
        &format!(
            r#"
local_as = 65002
router_id = "{LST_V4}"
hold_time = 30
[[peer]]
name = "bird"
address = "{BIRD_V4}"
remote_as = 65001
listen = "{LST_V4}"
"#
        ),
    );

    lab.write_conf(ROUTES4, ROUTES6);
    lab.start();

    // The whole table arrives: v4 and v6, with attributes.
    wait_until(
        "the table to reach the collector",
        Duration::from_secs(60),
        || {
            if !listener.is_running() {
                panic!("listener exited:\n{}", listener.log_text());
            }
            (routes(&api, "prefix=0.0.0.0/0&match=within").len() == 3
                && routes(&api, "prefix=2001:db8::/32&match=within").len() == 1)
                .then_some(())
        },
    );
    let up = events(&api, "type=session_up");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["peer"]["address"], BIRD_V4);
    assert_eq!(up[0]["peer"]["asn"], 65001);
    assert_eq!(up[0]["peer"]["source"], "ROUTE_SOURCE_SESSION");
    let agent_id = up[0]["agentId"].as_str().unwrap().to_string();
    assert!(agent_id.starts_with('l'), "{agent_id}");

    // Longest match per peer: an address inside the /25 gets the /25, one outside gets the /24.
    let lpm = routes(&api, "prefix=198.51.100.200");
    assert_eq!(lpm.len(), 1, "{lpm:?}");
    assert_eq!(lpm[0]["prefix"], "198.51.100.128/25");
    assert_eq!(lpm[0]["attributes"]["med"], 7);
    assert_eq!(as_path(&lpm[0]), vec![65001]);
    assert_eq!(lpm[0]["attributes"]["originAs"], 65001);
    assert_eq!(lpm[0]["attributes"]["nextHop"], BIRD_V4);
    let lpm = routes(&api, "prefix=198.51.100.7");
    assert_eq!(lpm[0]["prefix"], "198.51.100.0/24");
    assert_eq!(routes(&api, "prefix=198.51.100.0/24&match=exact").len(), 1);
    assert_eq!(routes(&api, "prefix=198.51.100.0/24&match=within").len(), 2);
    assert_eq!(
        routes(&api, "prefix=198.51.100.130/32&match=covering").len(),
        2
    );
    assert!(routes(&api, "prefix=192.0.2.1").is_empty());
    let c100 = routes(&api, "prefix=203.0.113.0/24&match=exact");
    assert_eq!(
        c100[0]["attributes"]["communities"],
        serde_json::json!([(65001u64 << 16) | 100])
    );
    let v6 = routes(&api, "prefix=2001:db8:100:1::1");
    assert_eq!(v6[0]["prefix"], "2001:db8:100::/48");
    assert_eq!(v6[0]["afiSafi"], "AFI_SAFI_IPV6_UNICAST");

    // The other tenant sees none of it.
    assert!(events_of(&other).is_empty());
    assert!(routes(&other, "prefix=0.0.0.0/0&match=within").is_empty());
    assert!(routes(&other, "prefix=198.51.100.200").is_empty());

    // Change an attribute and withdraw a prefix at the router.
    lab.write_conf(
        &ROUTES4
            .replace(
                "bgp_community.add((65001,100));",
                "bgp_community.add((65001,101));",
            )
            .replace(
                "    route 198.51.100.128/25 blackhole { bgp_med = 7; };\n",
                "",
            ),
        ROUTES6,
    );
    let reply = lab.birdc(&["configure"]);
    assert!(reply.to_lowercase().contains("reconfigured"), "{reply}");
    wait_until(
        "the change and the withdraw",
        Duration::from_secs(30),
        || {
            (routes(&api, "prefix=198.51.100.200")
                .first()
                .map(|r| r["prefix"] == "198.51.100.0/24")
                == Some(true))
            .then_some(())
        },
    );
    let w = events(&api, "type=withdraw&prefix=198.51.100.128/25");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0]["previous"]["med"], 7);
    let ch = wait_until("the attribute change", Duration::from_secs(30), || {
        let e = events(&api, "type=attribute_change&prefix=203.0.113.0/24");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(ch[0]["changed"], serde_json::json!(["communities"]));
    assert_eq!(
        routes(&api, "prefix=203.0.113.0/24&match=exact")[0]["attributes"]["communities"],
        serde_json::json!([(65001u64 << 16) | 101])
    );
    // Covering-prefix event search finds events of the less-specifics of an address.
    let cov = events(&api, "prefix=198.51.100.129&match=covering&type=announce");
    let mut got: Vec<&str> = cov.iter().filter_map(|e| e["prefix"].as_str()).collect();
    got.sort();
    assert_eq!(got, vec!["198.51.100.0/24", "198.51.100.128/25"]);
    // Bad queries are clear 400s, not empty answers.
    for q in [
        "/api/v1/routes",
        "/api/v1/routes?prefix=10.0.0.0/33",
        "/api/v1/routes?prefix=10.0.0.0/8&match=nearest",
        "/api/v1/route-events?type=explode",
        "/api/v1/route-events?peer=bird",
    ] {
        let (s, v) = api.call("GET", q, None);
        assert_eq!(s, 400, "{q}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{q}: {v}"
        );
    }

    // The listener listens on the configured BGP address and nowhere else.
    let socks = listening_sockets(listener.pid());
    assert_eq!(socks.len(), 1, "{socks:?}");
    assert!(socks[0].1.ends_with(":00B3"), "{socks:?}");

    // The router goes away: one session-down event with the count, and the table is emptied.
    lab.birdc(&["disable", "fe"]);
    let down = wait_until("session down", Duration::from_secs(30), || {
        let d = events(&api, "type=session_down");
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(down[0]["routesLost"], "3", "{down:?}");
    assert!(routes(&api, "prefix=0.0.0.0/0&match=within").is_empty());
    assert!(routes(&api, "prefix=::/0&match=within").is_empty());
    // No per-prefix withdraws for a session loss.
    assert_eq!(events(&api, "type=withdraw").len(), 1);

    // The agent appears as a connected listener.
    let agents = api.get("/api/v1/agents");
    assert_eq!(agents["agents"][0]["kind"], "AGENT_KIND_LISTENER");
    listener.child.kill().ok();
}

fn events_of(api: &Api) -> Vec<Value> {
    events(api, "")
}

fn correlations(api: &Api) -> Vec<Value> {
    api.get("/api/v1/correlations?page_size=1000")["correlations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn tests_of(c: &Value) -> Vec<String> {
    let mut v: Vec<String> = c["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["testName"].as_str().map(String::from))
        .collect();
    v.sort();
    v
}

/// Route changes from a real BIRD peer are matched to the tests whose targets they cover (longest
/// match per peer), folded into incidents, and judged from the node's results around them.
///
/// Forwarding here does not follow BGP (the listener installs nothing): the target that goes dark
/// with the withdraw is taken away by hand. The routed testbed, where a withdraw removes the
/// route from a router's forwarding table, is still to come (issue 5).
#[test]
fn route_changes_are_correlated_with_the_tests_they_cover() {
    const N: u8 = 78;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut lab = BirdLab::new(root, N);
    // Targets behind BIRD's namespace: 198.19.90.1 (a), 198.19.90.2 (b) and 198.19.90.3 (h).
    for a in ["198.19.90.1/32", "198.19.90.2/32", "198.19.90.3/32"] {
        sh(&["ip", "-n", &lab.ns, "addr", "add", a, "dev", "lo"]);
    }
    sh(&[
        "ip",
        "route",
        "add",
        "198.19.90.0/24",
        "via",
        &format!("198.19.{N}.1"),
    ]);
    let c = Collector::start_with_hosts(
        root,
        "[correlation]\nbefore = \"20s\"\nafter = \"6s\"\nincident_gap = \"2s\"\n",
        &[("RUST_LOG", "info,foureyes_collector::correlator=debug")],
        &format!("127.0.0.1 localhost\n198.19.90.3 {HOST_H}\n"),
    );
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let other = Api::new(&c.api, &c.tenant("other", "ops"));
    let mut ids = std::collections::HashMap::new();
    // c runs once a minute: only a probe burst gives it results within seconds of a change.
    for (name, host, interval) in [
        ("a", "198.19.90.1", 500),
        ("b", "198.19.90.2", 500),
        ("c", "198.19.90.2", 60_000),
    ] {
        let t = api.post(
            "/api/v1/tests",
            serde_json::json!({"name": name, "intervalMs": interval, "timeoutMs": 400, "count": 1,
                               "config": {"icmp": {"host": host}}}),
        );
        ids.insert(name, t["id"].as_str().unwrap().to_string());
    }
    let results_of = |name: &str| {
        api.get(&format!(
            "/api/v1/results?page_size=1000&test_id={}",
            ids[name]
        ))["results"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    };
    let node_state = common::enroll_node(&c, root, "acme", "noc");
    let _node = common::run_node(&node_state, root.join("node.log"));

    let _listener = common::bird::run_listener(&c, &lab, "acme", "noc");

    // The initial table covers target a: it is not correlated (initial transfer).
    let base = "    route 10.99.0.0/16 blackhole;\n    route 198.19.90.1/32 blackhole;\n";
    lab.write_conf(base, "");
    lab.start();
    wait_until("the initial table", Duration::from_secs(60), || {
        (routes(&api, "prefix=0.0.0.0/0&match=within").len() == 2).then_some(())
    });
    // Results are flowing for both tests.
    wait_until("results for both tests", Duration::from_secs(60), || {
        let r = api.get("/api/v1/results?page_size=1000");
        let names: std::collections::HashSet<String> = r["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["status"] == "STATUS_OK")
            .filter_map(|x| x["testId"].as_str().map(String::from))
            .collect();
        (names.len() == 3).then_some(())
    });
    let reconfigure = |routes: &str| {
        lab.write_conf(routes, "");
        let reply = lab.birdc(&["configure"]);
        assert!(reply.to_lowercase().contains("reconfigured"), "{reply}");
    };

    // Negative control: a prefix covering no target correlates nothing.
    reconfigure(&format!("{base}    route 10.98.0.0/16 blackhole;\n"));
    wait_until("the unrelated announce", Duration::from_secs(30), || {
        (!events(&api, "type=announce&prefix=10.98.0.0/16").is_empty()).then_some(())
    });
    // Past the incident gap, that incident closed without touching a test: no record.
    std::thread::sleep(Duration::from_secs(4));
    assert!(correlations(&api).is_empty(), "{:?}", correlations(&api));
    // A covering /24 touches b but not a: a's /32 is the longer match for a.
    let with24 =
        format!("{base}    route 10.98.0.0/16 blackhole;\n    route 198.19.90.0/24 blackhole;\n");
    reconfigure(&with24);
    let first = wait_until("a correlation for the /24", Duration::from_secs(30), || {
        correlations(&api)
            .into_iter()
            .find(|c| c["prefixes"][0] == "198.19.90.0/24")
    });
    assert_eq!(tests_of(&first), vec!["b", "c"], "{first}");
    assert_eq!(first["verdict"], "VERDICT_PENDING");
    // The change triggered a burst: c, on a one-minute schedule, gets several runs at once.
    let before_burst = results_of("c");
    wait_until("c's probe burst", Duration::from_secs(20), || {
        (results_of("c") >= before_burst + 3).then_some(())
    });
    assert!(
        correlations(&api)
            .iter()
            .all(|c| c["prefixes"][0] != "10.98.0.0/16"),
        "the unrelated prefix was correlated"
    );
    let decided = wait_until("the /24's verdict", Duration::from_secs(40), || {
        api.get(&format!(
            "/api/v1/correlations/{}",
            first["id"].as_str().unwrap()
        ))
        .as_object()
        .filter(|c| c["verdict"] != "VERDICT_PENDING")
        .cloned()
    });
    assert_eq!(decided["verdict"], "VERDICT_NO_EFFECT", "{decided:?}");
    assert!(decided["tests"][0]["before"]["runs"].as_u64().unwrap() > 0);

    // Withdraw a's /32 and take a away: the withdraw touches a only (the /24 still covers it, but
    // the withdrawn /32 was its longest match), and a is unreachable after it.
    std::thread::sleep(Duration::from_secs(3));
    sh(&[
        "ip",
        "-n",
        &lab.ns,
        "addr",
        "del",
        "198.19.90.1/32",
        "dev",
        "lo",
    ]);
    reconfigure(&with24.replace("    route 198.19.90.1/32 blackhole;\n", ""));
    let gone = wait_until(
        "a correlation for the withdraw",
        Duration::from_secs(30),
        || {
            correlations(&api)
                .into_iter()
                .find(|c| c["withdraws"] == "1")
        },
    );
    assert_eq!(tests_of(&gone), vec!["a"], "{gone}");
    assert_eq!(gone["prefixes"], serde_json::json!(["198.19.90.1/32"]));
    let decided = wait_until("the withdraw's verdict", Duration::from_secs(40), || {
        api.get(&format!(
            "/api/v1/correlations/{}",
            gone["id"].as_str().unwrap()
        ))
        .as_object()
        .filter(|c| c["verdict"] != "VERDICT_PENDING")
        .cloned()
    });
    assert_eq!(decided["verdict"], "VERDICT_UNREACHABLE", "{decided:?}");
    assert_eq!(decided["tests"][0]["verdict"], "VERDICT_UNREACHABLE");

    // Filters and tenancy.
    let tid = gone["tests"][0]["testId"].as_str().unwrap();
    let by_test = api.get(&format!("/api/v1/correlations?test_id={tid}"))["correlations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(by_test.len(), 1, "{by_test:?}");
    // Per prefix: the withdrawn /32 exactly, everything covering target a's address, everything
    // inside the /24; the unrelated 10.98.0.0/16 was never correlated.
    let by_prefix = |api: &Api, q: &str| -> Vec<String> {
        let mut v: Vec<String> = api.get(&format!("/api/v1/correlations?{q}"))["correlations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    };
    let mut both = vec![
        first["id"].as_str().unwrap().to_string(),
        gone["id"].as_str().unwrap().to_string(),
    ];
    both.sort();
    let only_gone = vec![gone["id"].as_str().unwrap().to_string()];
    let only_first = vec![first["id"].as_str().unwrap().to_string()];
    assert_eq!(by_prefix(&api, "prefix=198.19.90.1/32"), only_gone);
    assert_eq!(
        by_prefix(&api, "prefix=198.19.90.1/32&match=exact"),
        only_gone
    );
    assert_eq!(
        by_prefix(&api, "prefix=198.19.90.0/24&match=exact"),
        only_first
    );
    assert_eq!(by_prefix(&api, "prefix=198.19.90.1&match=covering"), both);
    assert_eq!(
        by_prefix(&api, "prefix=198.19.90.2&match=covering"),
        only_first
    );
    assert_eq!(by_prefix(&api, "prefix=198.19.90.0/24&match=covered"), both);
    assert!(by_prefix(&api, "prefix=10.0.0.0/8&match=covered").is_empty());
    assert!(by_prefix(&other, "prefix=0.0.0.0/0&match=covered").is_empty());
    let (s, body) = api.call("GET", "/api/v1/correlations?prefix=198.19.90.0/33", None);
    assert_eq!(s, 400, "{body}");
    let (s, body) = api.call(
        "GET",
        "/api/v1/correlations?prefix=198.19.90.0/24&match=nearby",
        None,
    );
    assert_eq!(s, 400, "{body}");
    assert!(correlations(&other).is_empty());
    let (s, _) = other.call(
        "GET",
        &format!("/api/v1/correlations/{}", gone["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(s, 404);

    // A test created right before a route change is matched (the API wakes the correlator; no
    // poll to wait for), and a target named by a host name is matched by its address (the
    // collector's own /etc/hosts names 198.19.90.3, on BIRD's loopback).
    let h = api.post(
        "/api/v1/tests",
        serde_json::json!({"name": "h", "intervalMs": 60_000, "timeoutMs": 400, "count": 1,
                           "config": {"icmp": {"host": HOST_H}}}),
    );
    let with_h = format!(
        "{}    route 198.19.90.3/32 blackhole;\n",
        with24.replace("    route 198.19.90.1/32 blackhole;\n", "")
    );
    reconfigure(&with_h);
    let named = wait_until(
        "a correlation for the name's address",
        Duration::from_secs(30),
        || {
            correlations(&api)
                .into_iter()
                .find(|c| c["prefixes"][0] == "198.19.90.3/32")
        },
    );
    assert_eq!(tests_of(&named), vec!["h"], "{named}");
    assert_eq!(named["tests"][0]["testId"], h["id"], "{named}");
    assert_eq!(named["tests"][0]["target"], "198.19.90.3", "{named}");

    // Pagination: one record a page, in a stable order, every record once, then no token.
    let all: std::collections::BTreeSet<String> = correlations(&api)
        .iter()
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect();
    assert_eq!(all.len(), 3, "{all:?}");
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = api.get(&format!(
            "/api/v1/correlations?page_size=1&page_token={token}"
        ));
        let cs = page["correlations"].as_array().cloned().unwrap_or_default();
        assert!(cs.len() <= 1, "{page}");
        paged.extend(cs.iter().filter_map(|c| c["id"].as_str().map(String::from)));
        token = page["nextPageToken"].as_str().unwrap_or("").to_string();
        if token.is_empty() {
            break;
        }
        assert!(
            paged.len() <= all.len(),
            "pagination does not end: {paged:?}"
        );
    }
    assert_eq!(paged.len(), all.len(), "{paged:?}");
    assert_eq!(
        paged
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        all
    );
    let (s, body) = api.call("GET", "/api/v1/correlations?page_token=%21%21", None);
    assert_eq!(s, 400, "{body}");
    let _ = Command::new("ip")
        .args(["route", "del", "198.19.90.0/24"])
        .output();
}
