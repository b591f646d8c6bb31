//! RPKI origin validation end to end: the real collector binary syncing its VRP table over RTR
//! from a real cache, Debian's `stayrtr`, serving a VRP JSON file this test writes.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

/// A `stayrtr` serving `file` on a loopback port.
fn stayrtr(root: &Path, file: &Path, port: u16, extra: &[&str]) -> Proc {
    let mut cmd = Command::new("stayrtr");
    cmd.arg("-cache")
        .arg(file)
        .arg("-bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-metrics.addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        // The file is ours, not a live feed: no staleness check; re-read it every second.
        .args(["-checktime=false", "-refresh", "1"])
        .args(extra);
    let n = std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0);
    let log = root.join(format!("stayrtr-{n}.log"));
    match std::process::Command::new("stayrtr")
        .arg("-version")
        .output()
    {
        Ok(_) => Proc::spawn(cmd, log),
        Err(e) => panic!("stayrtr is missing ({e}): apt-get install -y stayrtr"),
    }
}

fn write_vrps(path: &Path, roas: &[(&str, u8, u32)]) {
    let roas: Vec<Value> = roas
        .iter()
        .map(|(p, m, a)| json!({"prefix": p, "maxLength": m, "asn": a, "ta": "test"}))
        .collect();
    let body = json!({"metadata": {"buildtime": "2026-01-01T00:00:00Z"}, "roas": roas});
    // Write then rename, so stayrtr never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn validity(api: &Api, prefix: &str, origin: &str) -> Value {
    api.get(&format!(
        "/api/v1/rpki/validity?prefix={prefix}&origin={origin}"
    ))
}

fn state(api: &Api, prefix: &str, origin: &str) -> String {
    validity(api, prefix, origin)["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn metrics(api: &str) -> String {
    ureq::get(&format!("{api}/metrics"))
        .timeout(Duration::from_secs(10))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

const VALID: &str = "RPKI_STATE_VALID";
const INVALID: &str = "RPKI_STATE_INVALID";
const NOT_FOUND: &str = "RPKI_STATE_NOT_FOUND";
const UNKNOWN: &str = "RPKI_STATE_UNKNOWN";

/// RTR version 1: the collector waits for a cache that is not up yet (unknown, not not-found),
/// loads the VRPs, answers RFC 6811 cases, and takes a changed file through Serial Notify and a
/// Serial Query (the cache's refresh interval is an hour, so nothing else could bring it).
#[test]
fn vrps_load_validate_and_follow_the_cache_over_rtr_v1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let port = free_port();
    let file = root.join("vrps.json");
    write_vrps(
        &file,
        &[
            ("192.0.2.0/24", 24, 64496),
            ("198.51.100.0/22", 23, 64497),
            ("203.0.113.0/24", 32, 0),
            ("2001:db8::/32", 48, 64496),
        ],
    );
    let c = Collector::start(
        root,
        0,
        &format!("[rpki]\nrtr_server = \"127.0.0.1:{port}\"\n"),
        &[],
    );
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));

    // No cache yet: unknown, with no VRPs.
    let v = validity(&api, "192.0.2.0/24", "64496");
    assert_eq!(v["state"], UNKNOWN, "{v}");
    assert_eq!(metric(&metrics(&c.api), "foureyes_rpki_table_loaded"), 0.0);

    let _rtr = stayrtr(
        root,
        &file,
        port,
        &[
            "-protocol",
            "1",
            "-rtr.refresh",
            "3600",
            "-rtr.expire",
            "7200",
        ],
    );
    wait_until("the VRPs to load", Duration::from_secs(60), || {
        (state(&api, "192.0.2.0/24", "64496") == VALID).then_some(())
    });

    let v = validity(&api, "192.0.2.0/24", "AS64496");
    assert_eq!(v["matched"][0]["prefix"], "192.0.2.0/24", "{v}");
    assert_eq!(v["matched"][0]["asn"], 64496, "{v}");
    assert_eq!(v["vrpCount"], "4", "{v}");
    // Wrong origin.
    let v = validity(&api, "192.0.2.0/24", "64511");
    assert_eq!(v["state"], INVALID, "{v}");
    assert_eq!(v["unmatchedAs"][0]["asn"], 64496, "{v}");
    // Too long for maxLength, and within it.
    let v = validity(&api, "198.51.100.0/24", "64497");
    assert_eq!(v["state"], INVALID, "{v}");
    assert_eq!(v["unmatchedLength"][0]["maxLength"], 23, "{v}");
    assert_eq!(state(&api, "198.51.100.0/23", "64497"), VALID);
    // AS 0: covered, never valid.
    assert_eq!(state(&api, "203.0.113.0/24", "64496"), INVALID);
    assert_eq!(state(&api, "203.0.113.0/24", "0"), INVALID);
    // Not covered.
    assert_eq!(state(&api, "10.0.0.0/8", "64496"), NOT_FOUND);
    // IPv6.
    assert_eq!(state(&api, "2001:db8:1::/48", "64496"), VALID);
    assert_eq!(state(&api, "2001:db8:1::/49", "64496"), INVALID);
    assert_eq!(state(&api, "2001:db9::/32", "64496"), NOT_FOUND);

    // Bad input is a 400, no credential a 401.
    for q in [
        "prefix=192.0.2.0/24",
        "prefix=192.0.2.0/24&origin=ASx",
        "prefix=192.0.2.0/33&origin=1",
        "prefix=192.0.2.0&origin=1",
        "origin=1",
    ] {
        let (s, v) = api.call("GET", &format!("/api/v1/rpki/validity?{q}"), None);
        assert_eq!(s, 400, "{q}: {v}");
    }
    let (s, _) = Api::new(&c.api, "fea1.bogus").call(
        "GET",
        "/api/v1/rpki/validity?prefix=192.0.2.0/24&origin=1",
        None,
    );
    assert_eq!(s, 401);

    let m = metrics(&c.api);
    assert_eq!(metric(&m, "foureyes_rpki_vrps"), 4.0, "{m}");
    assert_eq!(metric(&m, "foureyes_rpki_table_loaded"), 1.0);
    assert_eq!(metric(&m, "foureyes_rpki_rtr_connected"), 1.0);
    let serial = metric(&m, "foureyes_rpki_serial");
    assert!(metric(&m, "foureyes_rpki_seconds_since_sync") < 3600.0);

    // The cache's file changes: 192.0.2.0/24 moves to another AS, 10.0.0.0/8 appears.
    write_vrps(
        &file,
        &[
            ("192.0.2.0/24", 24, 64500),
            ("198.51.100.0/22", 23, 64497),
            ("203.0.113.0/24", 32, 0),
            ("2001:db8::/32", 48, 64496),
            ("10.0.0.0/8", 8, 64501),
        ],
    );
    wait_until("the update to arrive", Duration::from_secs(60), || {
        (state(&api, "10.0.0.0/8", "64501") == VALID).then_some(())
    });
    assert_eq!(state(&api, "192.0.2.0/24", "64496"), INVALID);
    assert_eq!(state(&api, "192.0.2.0/24", "64500"), VALID);
    let m = metrics(&c.api);
    assert_eq!(metric(&m, "foureyes_rpki_vrps"), 5.0, "{m}");
    assert!(metric(&m, "foureyes_rpki_serial") > serial, "{m}");
    let log = c.proc.log_text();
    assert!(
        !log.contains("RTR session error"),
        "an incremental update failed:\n{log}"
    );
}

/// A version 0 cache (RFC 6810): the collector falls back, syncs, and when the cache goes away
/// keeps the table until the expire interval has passed since the last sync, then says unknown.
#[test]
fn v0_fallback_and_the_table_outlives_the_cache_until_expire() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let port = free_port();
    let file = root.join("vrps.json");
    write_vrps(&file, &[("192.0.2.0/24", 24, 64496)]);
    let mut rtr = stayrtr(root, &file, port, &["-protocol", "0"]);
    let expire = 8.0;
    let c = Collector::start(
        root,
        0,
        &format!(
            "[rpki]\nrtr_server = \"127.0.0.1:{port}\"\nrefresh = \"1s\"\nexpire = \"{expire}s\"\n"
        ),
        &[],
    );
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    wait_until("the VRPs to load", Duration::from_secs(60), || {
        (state(&api, "192.0.2.0/24", "64496") == VALID).then_some(())
    });
    assert_eq!(metric(&metrics(&c.api), "foureyes_rpki_rtr_version"), 0.0);
    // Refreshes keep the data fresh beyond the expire interval while the cache is there.
    std::thread::sleep(Duration::from_secs_f64(expire + 2.0));
    assert_eq!(state(&api, "192.0.2.0/24", "64496"), VALID);

    rtr.kill9();
    let since = metric(&metrics(&c.api), "foureyes_rpki_seconds_since_sync");
    let killed = Instant::now();
    let gone = wait_until("the table to expire", Duration::from_secs(90), || {
        (state(&api, "192.0.2.0/24", "64496") == UNKNOWN).then(|| killed.elapsed())
    });
    // It stayed at least until `expire` after the last sync (a little slack for the poll).
    assert!(
        gone.as_secs_f64() >= expire - since - 0.5,
        "dropped {gone:?} after the kill, {since} s after the last sync"
    );
    let m = metrics(&c.api);
    assert_eq!(metric(&m, "foureyes_rpki_table_loaded"), 0.0, "{m}");
    assert_eq!(metric(&m, "foureyes_rpki_expirations_total"), 1.0, "{m}");
}

fn rule_alerts(api: &Api, rule: &str, state: &str) -> Vec<Value> {
    api.get(&format!(
        "/api/v1/alerts?page_size=1000&rule_id={rule}&state={state}"
    ))["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn prefix_events(api: &Api, prefix: &str) -> usize {
    api.get(&format!(
        "/api/v1/route-events?page_size=1000&prefix={prefix}"
    ))["events"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

/// An `rpki_invalid` rule follows the VRPs, not only the routes: a real BIRD peer announces
/// 203.0.113.0/24 (origin AS 65001) that the cache's ROA makes valid; the ROA moves to another AS
/// (a rewritten VRP file, Serial Notify, Serial Query) and the rule fires although no route
/// changed; the ROA comes back and the alert resolves.
#[test]
fn rpki_invalid_follows_the_vrps_without_a_route_change() {
    const NET: u8 = 113;
    const PREFIX: &str = "203.0.113.0/24";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut lab = common::bird::BirdLab::new(root, NET);
    let port = free_port();
    let file = root.join("vrps.json");
    write_vrps(&file, &[(PREFIX, 24, 65001)]);
    let _rtr = stayrtr(
        root,
        &file,
        port,
        &[
            "-protocol",
            "1",
            "-rtr.refresh",
            "3600",
            "-rtr.expire",
            "7200",
        ],
    );
    let c = Collector::start(
        root,
        0,
        &format!("[rpki]\nrtr_server = \"127.0.0.1:{port}\"\n"),
        &[],
    );
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let rule = api.post(
        "/api/v1/alert-rules",
        json!({"name": "roa", "rpkiInvalid": {"prefix": PREFIX}}),
    );
    let rule = rule["id"].as_str().unwrap().to_string();
    let mut listener = common::bird::start_listener(&c, root, NET, "acme", "noc");
    lab.write_conf(&format!("    route {PREFIX} blackhole;\n"), "");
    lab.start();
    wait_until("the route, valid", Duration::from_secs(60), || {
        if !listener.is_running() {
            panic!("listener exited:\n{}", listener.log_text());
        }
        let r = api.get(&format!("/api/v1/routes?prefix={PREFIX}&match=exact"));
        (r["routes"][0]["rpkiState"] == VALID).then_some(())
    });
    let events = prefix_events(&api, PREFIX);
    assert!(events >= 1);
    assert!(rule_alerts(&api, &rule, "").is_empty());

    // The ROA moves to another AS: the route is now invalid, and nothing about it changed.
    write_vrps(&file, &[(PREFIX, 24, 64999)]);
    let a = wait_until("the rpki_invalid alert", Duration::from_secs(60), || {
        rule_alerts(&api, &rule, "firing").into_iter().next()
    });
    assert_eq!(a["subject"], PREFIX, "{a}");
    assert!(
        a["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("{PREFIX} AS65001")),
        "{a}"
    );
    assert_eq!(state(&api, PREFIX, "65001"), INVALID);

    write_vrps(&file, &[(PREFIX, 24, 65001)]);
    wait_until("the alert to resolve", Duration::from_secs(60), || {
        rule_alerts(&api, &rule, "resolved").into_iter().next()
    });
    assert!(rule_alerts(&api, &rule, "firing").is_empty());
    // Only the VRPs moved: the route feed had nothing new for the prefix.
    assert_eq!(prefix_events(&api, PREFIX), events);
    listener.kill9();
}
