//! Traceroute in probe bursts, and traceroute vs AS path, end to end in the routed lab
//! (`common/routed_lab.rs`): a real node traces through the FRR router toward a target whose
//! prefix the BIRD upstream announces with chosen AS paths, and the listener peered with the
//! router feeds the collector's route table.
//!
//! - No traceroute during the session's initial table transfer; after it, a route change covering
//!   the test's target makes the burst trace toward the target, stored under the derived test id
//!   `<test>#traceroute` (the parent's own results stay traceroute-free).
//! - Traceroute vs AS path: the router's hop maps to the link prefix's origin AS and the target to
//!   its /24's; while the /24's AS_PATH lacks the link's AS, a `path_mismatch` rule fires and
//!   `/api/v1/tests/{id}/path-check` shows the mapped hops, the AS_PATH and the mismatch; once
//!   the upstream announces the /24 through that AS, the comparison agrees and the alert resolves.
//!
//! Needs root, `frr`, `bird2`, `iproute2` and the built binaries (`cargo build --bins`).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::routed_lab::{RoutedLab, route_with_path};
use common::{Api, Collector, start_listener, wait_until};
use serde_json::Value;

const NET: u8 = 88;
const TARGETS: u8 = 98;
/// Where the upstream's link prefix originates: the router's hop maps here.
const LINK_AS: u32 = 65020;
/// Where the targets' /24 originates.
const TARGET_AS: u32 = 65030;

fn results(api: &Api, test_id: &str) -> Vec<Value> {
    api.get(&format!(
        "/api/v1/results?page_size=1000&test_id={}",
        test_id.replace('#', "%23")
    ))["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn routes_of(api: &Api, prefix: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/routes?prefix={prefix}&match=exact"))["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The flattened AS_PATH the listener holds for `prefix`, if any.
fn path_of(api: &Api, prefix: &str) -> Option<Vec<u64>> {
    let r = routes_of(api, prefix).into_iter().next()?;
    Some(
        r["attributes"]["asPath"]
            .as_array()?
            .iter()
            .flat_map(|s| s["asns"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_u64())
            .collect(),
    )
}

#[test]
fn a_route_change_traces_toward_the_target_and_the_path_is_checked_against_bgp() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut lab = RoutedLab::new(root, NET, TARGETS);
    let c = Collector::start_args(
        root,
        0,
        "127.0.0.1:0",
        "[correlation]\nbefore = \"20s\"\nafter = \"6s\"\nincident_gap = \"2s\"\n",
        &[("RUST_LOG", "info,foureyes_collector::correlator=debug")],
        &[],
    );
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let t = api.post(
        "/api/v1/tests",
        serde_json::json!({"name": "a", "intervalMs": 1000, "timeoutMs": 400, "count": 1,
                           "config": {"icmp": {"host": lab.target(1)}}}),
    );
    let id = t["id"].as_str().unwrap().to_string();
    let trace_id = format!("{id}#traceroute");
    let node_state = common::enroll_node(&c, root, "acme", "noc");
    let _node = common::run_node(&node_state, root.join("node.log"));
    let link = lab.link_prefix();
    let t24 = format!("198.19.{TARGETS}.0/24");
    let link_route = route_with_path(&link, &[LINK_AS]);
    // The /24 as the router and listener see it: 65001 65010 65030, without the link's AS.
    let disagree = format!("{link_route}{}", route_with_path(&t24, &[TARGET_AS]));
    lab.announce(&disagree);
    // `start` returns once the router holds the upstream's routes in its FIB and has opened its
    // session toward the listener, so they reach the listener in the initial transfer (before
    // End-of-RIB) rather than as changes after it.
    lab.start();
    let _listener = start_listener(
        &c,
        root,
        "acme",
        "noc",
        &format!(
            "local_as = 65002\nrouter_id = \"{l}\"\n[[peer]]\naddress = \"{r}\"\nremote_as = 65001\nlisten = \"{l}\"\n",
            l = lab.listener_addr(),
            r = lab.router_addr()
        ),
    );

    wait_until(
        "both prefixes at the collector",
        Duration::from_secs(60),
        || {
            (path_of(&api, &t24)? == [65001, 65010, u64::from(TARGET_AS)]
                && path_of(&api, &link)? == [65001, 65010, u64::from(LINK_AS)])
            .then_some(())
        },
    );
    wait_until("the target answering", Duration::from_secs(60), || {
        results(&api, &id)
            .last()
            .is_some_and(|r| r["status"] == "STATUS_OK")
            .then_some(())
    });

    // The routes came in the initial transfer: no correlation, no burst, no traceroute.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        results(&api, &trace_id).is_empty(),
        "a traceroute during the initial transfer"
    );

    let rule = api.post(
        "/api/v1/alert-rules",
        serde_json::json!({"name": "a path", "severity": "SEVERITY_WARNING",
                           "pathMismatch": {"testId": id}, "fireAfter": 1, "clearAfter": 1}),
    );
    let rule_id = rule["id"].as_str().unwrap().to_string();

    // A change covering the target after the transfer: the burst traces toward it.
    let changed = format!(
        "{link_route}    route {t24} blackhole {{ bgp_path.prepend({TARGET_AS}); bgp_community.add((65010, 7)); }};\n"
    );
    lab.reconfigure(&changed);
    let trace = wait_until("the burst's traceroute", Duration::from_secs(60), || {
        results(&api, &trace_id).into_iter().next()
    });
    let hops: Vec<String> = trace["traceroute"]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["address"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(hops, [lab.router_addr(), lab.target(1)], "{trace}");
    assert_eq!(trace["traceroute"]["reached"], true, "{trace}");
    assert_eq!(trace["status"], "STATUS_OK", "{trace}");
    assert!(
        results(&api, &id)
            .iter()
            .all(|r| r.get("traceroute").is_none()),
        "a traceroute among the parent test's own results"
    );

    // Traceroute vs AS path: hop 1 (the router, in the link prefix) maps to LINK_AS, the target
    // to TARGET_AS; the /24's AS_PATH has no LINK_AS.
    let check_of = || api.get(&format!("/api/v1/tests/{id}/path-check"))["checks"][0].clone();
    let check = wait_until("a mismatch", Duration::from_secs(30), || {
        let c = check_of();
        (c["verdict"] == "PATH_VERDICT_MISMATCH").then_some(c)
    });
    let mapped: Vec<(String, String, u64)> = check["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["address"].as_str().unwrap().to_string(),
                h["prefix"].as_str().unwrap().to_string(),
                h["asn"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mapped,
        [
            (lab.router_addr(), link.clone(), u64::from(LINK_AS)),
            (lab.target(1), t24.clone(), u64::from(TARGET_AS)),
        ],
        "{check}"
    );
    assert_eq!(
        check["tracedAsns"],
        serde_json::json!([LINK_AS, TARGET_AS]),
        "{check}"
    );
    assert_eq!(
        check["asPaths"][0]["asns"],
        serde_json::json!([65001, 65010, TARGET_AS]),
        "{check}"
    );
    assert_eq!(check["testId"], id.as_str());
    assert_eq!(check["traceTestId"], trace_id.as_str());
    assert!(
        check["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("AS{LINK_AS} is not on the AS_PATH")),
        "{check}"
    );
    let alerts = |state: &str| -> Option<Value> {
        api.get(&format!("/api/v1/alerts?rule_id={rule_id}&state={state}"))["alerts"]
            .as_array()?
            .first()
            .cloned()
    };
    let firing = wait_until("the path_mismatch alert", Duration::from_secs(30), || {
        alerts("firing")
    });
    assert_eq!(firing["kind"], "path_mismatch", "{firing}");
    assert_eq!(firing["subject"], id.as_str(), "{firing}");

    // The upstream now announces the /24 through LINK_AS: the same traceroute agrees with the
    // new AS_PATH, and the alert resolves without waiting for another trace.
    let agree = format!(
        "{link_route}{}",
        route_with_path(&t24, &[LINK_AS, TARGET_AS])
    );
    lab.reconfigure(&agree);
    wait_until("the new AS_PATH", Duration::from_secs(30), || {
        (path_of(&api, &t24)? == [65001, 65010, u64::from(LINK_AS), u64::from(TARGET_AS)])
            .then_some(())
    });
    let ok = wait_until("agreement", Duration::from_secs(30), || {
        let c = check_of();
        (c["verdict"] == "PATH_VERDICT_AGREE").then_some(c)
    });
    assert_eq!(
        ok["tracedAsns"],
        serde_json::json!([LINK_AS, TARGET_AS]),
        "{ok}"
    );
    let resolved = wait_until("the all-clear", Duration::from_secs(30), || {
        alerts("resolved")
    });
    assert_eq!(resolved["id"], firing["id"], "{resolved}");
}
