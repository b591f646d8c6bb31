//! BMP end to end: a real FRR router streams BMP to the station of an enrolled
//! `foureyes-bgp-listener run --config` (which also peers with the same router over BGP), and the
//! collector keeps every monitored peer and view as its own peer of the tenant.
//!
//! The routed testbed (`common/routed_lab.rs`): BIRD upstream (AS 65010) announces routes to FRR
//! (AS 65001, bgpd with its `bmp` module), which monitors its upstream peer pre- and post-policy
//! and sends the BMP feed to the station on the root-namespace end of the link; FRR also sends its
//! best routes, plus one prefix of its own, over a BGP session with the listener (AS 65002).
//! FRR 8.4 has no Loc-RIB monitoring; the GoBGP Loc-RIB view is covered at the listener's level
//! (`bgp-listener/tests/bmp_interop.rs`).
//!
//! Needs root (namespaces), `bird2`, `frr` and `iproute2`, and the built binaries
//! (`cargo build --bins`).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::routed_lab::RoutedLab;
use common::{Api, Collector, wait_until};
use serde_json::Value;

const NET: u8 = 123;
const TARGETS: u8 = 125;
const BMP_PORT: u16 = 11123;

const PRE: &str = "ROUTE_SOURCE_BMP_PRE_POLICY";
const POST: &str = "ROUTE_SOURCE_BMP_POST_POLICY";
const SESSION: &str = "ROUTE_SOURCE_SESSION";

/// FRR 8.4 sends its locally originated routes as post-policy Route Monitoring of a peer with
/// address 0.0.0.0 and no Peer Up (its internal "self" peer); the station accepts Route Monitoring
/// without a Peer Up, so that peer holds the router's own prefix.
const FRR_SELF: &str = "0.0.0.0";

const ROUTES: &str = "
    route 198.51.100.0/24 blackhole { bgp_community.add((65010,100)); };
    route 198.51.100.128/25 blackhole { bgp_med = 7; };
    route 203.0.113.0/24 blackhole;
";

fn list(api: &Api, path: &str, key: &str) -> Vec<Value> {
    api.get(path)[key].as_array().cloned().unwrap_or_default()
}

fn events(api: &Api, query: &str) -> Vec<Value> {
    list(
        api,
        &format!("/api/v1/route-events?page_size=1000&{query}"),
        "events",
    )
}

fn all_routes(api: &Api) -> Vec<Value> {
    list(
        api,
        "/api/v1/routes?prefix=0.0.0.0/0&match=within",
        "routes",
    )
}

/// The sorted prefixes held per (source, peer address).
fn table(api: &Api) -> BTreeMap<(String, String), Vec<String>> {
    let mut t: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in all_routes(api) {
        let key = (
            r["peer"]["source"].as_str().unwrap_or_default().to_string(),
            r["peer"]["address"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        t.entry(key)
            .or_default()
            .push(r["prefix"].as_str().unwrap_or_default().to_string());
    }
    for v in t.values_mut() {
        v.sort();
    }
    t
}

fn of<'a>(events: &'a [Value], source: &str, peer: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["peer"]["source"] == source && e["peer"]["address"] == peer)
        .collect()
}

/// A proto3 JSON uint64 (a string) or a number; absent is 0.
fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn peer_state<'a>(peers: &'a [Value], source: &str, addr: &str) -> Option<&'a Value> {
    peers
        .iter()
        .find(|p| p["peer"]["source"] == source && p["peer"]["address"] == addr)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_routers_bmp_feed_through_run_keeps_each_peer_and_view_apart_in_the_collector() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let c = Collector::start(root, 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let other = Api::new(&c.api, &c.tenant("other", "ops"));

    let mut lab = RoutedLab::new(root, NET, TARGETS);
    let (router, station) = (lab.router_addr(), lab.listener_addr());
    let upstream = format!("198.19.{}.2", NET + 1);
    let own = lab.link_prefix();
    lab.bmp_station = Some((station.clone(), BMP_PORT));
    lab.announce(ROUTES);
    let mut listener = common::start_listener(
        &c,
        root,
        "acme",
        "noc",
        &format!(
            r#"
local_as = 65002
router_id = "{station}"
hold_time = 30
[[peer]]
name = "frr"
address = "{router}"
remote_as = 65001
listen = "{station}"
[bmp]
listen = "{station}:{BMP_PORT}"
allow = ["{router}"]
"#
        ),
    );
    lab.start();

    // The table: FRR's best routes over the session, and the upstream's routes once per view.
    let upstream_routes = strings(&["198.51.100.0/24", "198.51.100.128/25", "203.0.113.0/24"]);
    let mut session_routes = upstream_routes.clone();
    session_routes.push(own.clone());
    session_routes.sort();
    let key = |s: &str, a: &str| (s.to_string(), a.to_string());
    let full = wait_until(
        "the session's and both BMP views' routes in the collector",
        Duration::from_secs(120),
        || {
            if !listener.is_running() {
                panic!("listener exited:\n{}", listener.log_text());
            }
            let t = table(&api);
            (t.get(&key(SESSION, &router)) == Some(&session_routes)
                && t.get(&key(PRE, &upstream)) == Some(&upstream_routes)
                && t.get(&key(POST, &upstream)) == Some(&upstream_routes))
            .then_some(t)
        },
    );
    // Whether FRR's own route came yet depends on when bgpd originated it; if it did, it is the
    // only route of that peer.
    let frr_self = full.get(&key(POST, FRR_SELF)).cloned();
    if let Some(r) = &frr_self {
        assert_eq!(r, &vec![own.clone()]);
    }
    // Nothing else: the listener's own session with FRR, which FRR monitors too, carries no routes.
    assert_eq!(full.len(), 3 + usize::from(frr_self.is_some()), "{full:?}");

    let routes = all_routes(&api);
    for r in &routes {
        let source = r["peer"]["source"].as_str().unwrap();
        if r["peer"]["address"] == FRR_SELF {
            assert_eq!(r["peer"]["bmpRouter"], router, "{r}");
            continue;
        }
        if source == SESSION {
            assert_eq!(r["peer"]["bmpRouter"], "", "{r}");
            assert_eq!(r["peer"]["asn"], 65001, "{r}");
            continue;
        }
        // Each BMP view is the upstream peer as the router saw it, named by the router.
        assert_eq!(r["peer"]["bmpRouter"], router, "{r}");
        assert_eq!(r["peer"]["asn"], 65010, "{r}");
        assert_eq!(r["attributes"]["originAs"], 65010, "{r}");
        assert_eq!(r["attributes"]["nextHop"], upstream, "{r}");
        assert!(r["agentId"].as_str().unwrap().starts_with('l'), "{r}");
    }
    for source in [PRE, POST] {
        let at = |prefix: &str| {
            routes
                .iter()
                .find(|r| r["peer"]["source"] == source && r["prefix"] == prefix)
                .unwrap()
        };
        assert_eq!(
            at("198.51.100.0/24")["attributes"]["communities"],
            serde_json::json!([(65010u64 << 16) | 100])
        );
        assert_eq!(at("198.51.100.128/25")["attributes"]["med"], 7);
    }
    // Longest match per peer keeps the views apart: one /25 per view and the session's.
    let lpm = list(&api, "/api/v1/routes?prefix=198.51.100.200", "routes");
    let mut sources: Vec<&str> = lpm
        .iter()
        .map(|r| {
            assert_eq!(r["prefix"], "198.51.100.128/25", "{r}");
            r["peer"]["source"].as_str().unwrap()
        })
        .collect();
    sources.sort();
    assert_eq!(sources, vec![POST, PRE, SESSION]);

    // Events: each view's peer came up and announced, marked BMP, with the router's timestamp.
    let ev = events(&api, "");
    for source in [PRE, POST] {
        let up: Vec<_> = of(&ev, source, &upstream)
            .into_iter()
            .filter(|e| e["type"] == "ROUTE_EVENT_TYPE_SESSION_UP")
            .collect();
        assert_eq!(up.len(), 1, "{up:?}");
        assert_eq!(up[0]["peer"]["bmpRouter"], router);
        assert_eq!(up[0]["peer"]["asn"], 65010);
        let mut announced: Vec<String> = of(&ev, source, &upstream)
            .into_iter()
            .filter(|e| e["type"] == "ROUTE_EVENT_TYPE_ANNOUNCE")
            .map(|e| {
                assert!(
                    e["sourceTime"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("20")),
                    "BMP per-peer header time: {e}"
                );
                e["prefix"].as_str().unwrap().to_string()
            })
            .collect();
        announced.sort();
        assert_eq!(announced, upstream_routes, "{source}");
    }

    // The BMP peers are peers of the tenant, with their counts.
    let peers = list(&api, "/api/v1/peers", "peers");
    for source in [PRE, POST] {
        let p = peer_state(&peers, source, &upstream)
            .unwrap_or_else(|| panic!("no {source} peer: {peers:?}"));
        assert_eq!(p["state"], "up", "{p}");
        assert_eq!(num(&p["prefixesV4"]), 3, "{p}");
        assert_eq!(p["peer"]["bmpRouter"], router, "{p}");
    }
    let s = peer_state(&peers, SESSION, &router).unwrap();
    assert_eq!(
        (s["state"].as_str(), num(&s["prefixesV4"])),
        (Some("up"), 4)
    );

    // Upstream changes a community and withdraws the /25: each view reports both.
    lab.reconfigure(&ROUTES.replace("(65010,100)", "(65010,101)").replace(
        "    route 198.51.100.128/25 blackhole { bgp_med = 7; };\n",
        "",
    ));
    let w = wait_until(
        "the withdraw in every view",
        Duration::from_secs(60),
        || {
            let w = events(&api, "type=withdraw&prefix=198.51.100.128/25&match=exact");
            (w.len() == 3).then_some(w)
        },
    );
    for source in [PRE, POST, SESSION] {
        let mine = w.iter().filter(|e| e["peer"]["source"] == source).count();
        assert_eq!(mine, 1, "{source}: {w:?}");
    }
    // The MED stays in the router's views; FRR does not pass it on to another AS.
    for e in w.iter().filter(|e| e["peer"]["source"] != SESSION) {
        assert_eq!(e["previous"]["med"], 7, "{e}");
    }
    let ch = wait_until(
        "the attribute change in both views",
        Duration::from_secs(60),
        || {
            let ch = events(
                &api,
                "type=attribute_change&prefix=198.51.100.0/24&match=exact",
            );
            let bmp: Vec<Value> = ch
                .into_iter()
                .filter(|e| e["peer"]["source"] != SESSION)
                .collect();
            (bmp.len() == 2).then_some(bmp)
        },
    );
    for e in &ch {
        assert_eq!(e["changed"], serde_json::json!(["communities"]), "{e}");
        assert_eq!(
            e["attributes"]["communities"],
            serde_json::json!([(65010u64 << 16) | 101])
        );
    }
    let two = strings(&["198.51.100.0/24", "203.0.113.0/24"]);
    wait_until(
        "the tables after the change",
        Duration::from_secs(60),
        || {
            let t = table(&api);
            (t.get(&key(PRE, &upstream)) == Some(&two)
                && t.get(&key(POST, &upstream)) == Some(&two))
            .then_some(())
        },
    );

    // Another organisation sees none of it.
    assert!(events(&other, "").is_empty());
    assert!(all_routes(&other).is_empty());
    assert!(list(&other, "/api/v1/peers", "peers").is_empty());
    assert!(list(&other, "/api/v1/routes?prefix=198.51.100.200", "routes").is_empty());

    // The upstream session ends: FRR reports a BMP Peer Down, and each view of that peer loses
    // its routes in one session_down with the count, not a withdraw per route. The router's own
    // prefix stays on the listener's session.
    let reply = lab.upstream_birdc(&["disable", "up"]);
    assert!(reply.contains("disabled"), "birdc: {reply}");
    let down = wait_until("the BMP peer down", Duration::from_secs(60), || {
        let d = events(&api, "type=session_down");
        [PRE, POST]
            .iter()
            .all(|s| !of(&d, s, &upstream).is_empty())
            .then_some(d)
    });
    for source in [PRE, POST] {
        let d = of(&down, source, &upstream);
        assert_eq!(d.len(), 1, "{down:?}");
        assert_eq!(num(&d[0]["routesLost"]), 2, "{}", d[0]);
        assert_eq!(d[0]["peer"]["bmpRouter"], router);
        assert!(
            d[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("NOTIFICATION 6/")),
            "BIRD's Cease as the router reports it: {}",
            d[0]
        );
    }
    let only_own = vec![own.clone()];
    let after = wait_until(
        "the session's withdraws after the upstream went",
        Duration::from_secs(60),
        || {
            let t = table(&api);
            (t.get(&key(SESSION, &router)) == Some(&only_own)).then_some(t)
        },
    );
    // The upstream's views are empty; the router's own post-policy routes stay.
    let self_now = after.get(&key(POST, FRR_SELF));
    if frr_self.is_some() {
        assert_eq!(self_now, Some(&only_own), "{after:?}");
    }
    assert_eq!(
        after.len(),
        1 + usize::from(self_now.is_some()),
        "{after:?}"
    );
    let ev = events(&api, "type=withdraw");
    for source in [PRE, POST] {
        assert_eq!(
            of(&ev, source, &upstream).len(),
            1,
            "{source}: only the /25's withdraw: {ev:?}"
        );
    }
    // The router's session stays up; both views of the upstream are down with the reason.
    let peers = list(&api, "/api/v1/peers", "peers");
    for source in [PRE, POST] {
        let p = peer_state(&peers, source, &upstream).unwrap();
        assert_eq!(p["state"], "down", "{p}");
        assert_eq!(num(&p["prefixesV4"]), 0, "{p}");
        assert!(
            p["lastError"].as_str().is_some_and(|e| !e.is_empty()),
            "{p}"
        );
    }
    let s = peer_state(&peers, SESSION, &router).unwrap();
    assert_eq!(
        (s["state"].as_str(), num(&s["prefixesV4"])),
        (Some("up"), 1)
    );
    // FRR's other monitored peer, the listener itself, stays up: its pre-policy view (it sends
    // no routes, so no post-policy view ever starts).
    let kept: Vec<&Value> = peers
        .iter()
        .filter(|p| p["peer"]["address"] == station && p["peer"]["source"] != SESSION)
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["peer"]["source"], PRE, "{kept:?}");
    assert_eq!(kept[0]["peer"]["asn"], 65002, "{kept:?}");
    assert_eq!(kept[0]["state"], "up", "{kept:?}");
    assert!(
        events(&api, "type=session_down")
            .iter()
            .all(|e| e["peer"]["source"] != SESSION)
    );

    // The upstream comes back: a new BMP Peer Up refills both views.
    let reply = lab.upstream_birdc(&["enable", "up"]);
    assert!(reply.contains("enabled"), "birdc: {reply}");
    wait_until("the views refilled", Duration::from_secs(90), || {
        let t = table(&api);
        (t.get(&key(PRE, &upstream)) == Some(&two) && t.get(&key(POST, &upstream)) == Some(&two))
            .then_some(())
    });
    let peers = list(&api, "/api/v1/peers", "peers");
    for source in [PRE, POST] {
        assert_eq!(
            peer_state(&peers, source, &upstream).unwrap()["state"],
            "up"
        );
    }
    assert!(list(&other, "/api/v1/peers", "peers").is_empty());
    assert!(listener.is_running(), "{}", listener.log_text());
}
