//! After the listener's spool overflowed, the collector's copy of the peer's table is resynced
//! from the listener's Adj-RIB-In, without resetting the BGP session.
//!
//! A real `foureyes-bgp-listener run` with a tiny `[spool] max_records` peers with BIRD 2 in a
//! namespace. The collector is stopped; BIRD withdraws a prefix and changes another's MED, then
//! announces and withdraws enough routes to overflow the spool, so those two changes are among
//! the dropped records. The collector comes back (same data, same agent port): the gap is
//! recorded, `/api/v1/routes` ends up exactly BIRD's table, the withdraw and the change are
//! stored as events with reason "resync", BIRD's session since-time is unchanged, there is no
//! `session_down` and no correlation from the resync (while a live withdraw afterwards is
//! correlated, so the correlator is awake), and `/metrics` counts the applied resync.
//!
//! The second test repairs session events the overflow swallowed (one BIRD disabled for good,
//! another disabled and enabled again, a third peer removed by SIGHUP): `/api/v1/peers`, the
//! session_down rule and `/metrics` show the listener's real state afterwards.
//!
//! Needs root (namespaces), `bird2` and `iproute2`, and the built binaries (`cargo build --bins`).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::bird::BirdLab;
use common::{Api, Collector, free_port, wait_until};
use serde_json::{Value, json};

const NET: u8 = 97;
const FILLER: usize = 40;
const CHURN: usize = 150;
const MAX_RECORDS: usize = 120;

fn events(api: &Api, query: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/route-events?page_size=1000&{query}"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `prefix med` of every route the collector holds for the tenant.
fn table(api: &Api) -> BTreeSet<String> {
    ["0.0.0.0/0", "::/0"]
        .iter()
        .flat_map(|p| {
            api.get(&format!("/api/v1/routes?prefix={p}&match=within"))["routes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|r| {
            format!(
                "{} {}",
                r["prefix"].as_str().unwrap_or_default(),
                r["attributes"]["med"].as_u64().unwrap_or(0)
            )
        })
        .collect()
}

/// BIRD's static routes (`extra` appended) and the table they should give, as `prefix med`.
fn routes(with_x: bool, y_med: u32, extra: &str) -> (String, BTreeSet<String>) {
    let mut conf = String::new();
    let mut want = BTreeSet::new();
    let mut add = |prefix: String, med: u32| {
        if med > 0 {
            conf.push_str(&format!(
                "    route {prefix} blackhole {{ bgp_med = {med}; }};\n"
            ));
        } else {
            conf.push_str(&format!("    route {prefix} blackhole;\n"));
        }
        want.insert(format!("{prefix} {med}"));
    };
    if with_x {
        add("198.51.100.0/24".into(), 0);
    }
    add("198.51.101.0/24".into(), y_med);
    add("198.51.102.0/24".into(), 0);
    for i in 0..FILLER {
        add(format!("10.50.{i}.0/24"), 0);
    }
    conf.push_str(extra);
    (conf, want)
}

const ROUTES6: &str =
    "    route 2001:db8:100::/48 blackhole;\n    route 2001:db8:101::/48 blackhole;\n";
const WANT6: [&str; 2] = ["2001:db8:100::/48 0", "2001:db8:101::/48 0"];

fn with6(mut v: BTreeSet<String>) -> BTreeSet<String> {
    v.extend(WANT6.iter().map(|s| s.to_string()));
    v
}

#[test]
fn a_spool_overflow_is_repaired_from_the_listeners_table_without_a_session_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut lab = BirdLab::new(root, NET);
    let node_port = free_port();
    let c = Collector::start(root, node_port, "", &[]);
    let token = c.tenant("acme", "noc");
    let api = Api::new(&c.api, &token);
    // Tests whose targets lie in X (withdrawn inside the gap) and Z (withdrawn live later).
    for (name, host) in [("x", "198.51.100.9"), ("z", "198.51.102.9")] {
        api.post(
            "/api/v1/tests",
            json!({"name": name, "intervalMs": 60000, "timeoutMs": 400, "count": 1,
                   "config": {"icmp": {"host": host}}}),
        );
    }
    let mut listener = common::start_listener(
        &c,
        root,
        "acme",
        "noc",
        &format!(
            "local_as = 65002\nrouter_id = \"198.19.{NET}.2\"\nhold_time = 30\n[[peer]]\naddress = \"198.19.{NET}.1\"\nremote_as = 65001\nlisten = \"198.19.{NET}.2\"\n[spool]\nmax_records = {MAX_RECORDS}\n"
        ),
    );
    let (conf, want) = routes(true, 1, "");
    lab.write_conf(&conf, ROUTES6);
    lab.start();
    let want = with6(want);
    wait_until("the initial table", Duration::from_secs(90), || {
        assert!(listener.is_running(), "{}", listener.log_text());
        (table(&api) == want).then_some(())
    });
    let session = lab.session_line();
    assert!(session.contains("Established"), "{session}");

    // The collector goes away; BIRD withdraws X and changes Y's MED, then churns enough routes
    // through the listener to overflow its spool.
    let mut c = c;
    c.proc.kill9();
    let reconfigure = |routes: &str| {
        lab.write_conf(routes, ROUTES6);
        let reply = lab.birdc(&["configure"]);
        assert!(reply.to_lowercase().contains("reconfigured"), "{reply}");
    };
    let (conf, want) = routes(false, 2, "");
    reconfigure(&conf);
    std::thread::sleep(Duration::from_secs(2));
    let churn: String = (0..CHURN)
        .map(|i| format!("    route 10.60.{}.{}/32 blackhole;\n", i / 200, i % 200))
        .collect();
    reconfigure(&routes(false, 2, &churn).0);
    std::thread::sleep(Duration::from_secs(2));
    reconfigure(&conf);
    wait_until("the spool to drop records", Duration::from_secs(60), || {
        listener
            .log_text()
            .contains("spool full: dropped oldest records")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let want = with6(want);

    // The collector comes back on the same agent port and data.
    let c2 = Collector::start(root, node_port, "", &[]);
    let api = Api::new(&c2.api, &token);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while table(&api) != want {
        assert!(listener.is_running(), "{}", listener.log_text());
        if std::time::Instant::now() > deadline {
            let interesting = |log: String| {
                log.lines()
                    .filter(|l| !l.contains("DEBUG"))
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "the collector's table never equalled BIRD's:\nhave {:?}\nwant {want:?}\nlistener:\n{}\ncollector:\n{}",
                table(&api),
                interesting(listener.log_text()),
                interesting(c2.proc.log_text()),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The gap was recorded.
    let gaps = api.get("/api/v1/results?page_size=10")["gaps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!gaps.is_empty(), "no gap recorded");
    // The two changes the gap swallowed came back as resync events.
    let resync = |kind: &str, prefix: &str| {
        events(&api, &format!("type={kind}&prefix={prefix}&match=exact"))
            .into_iter()
            .filter(|e| e["reason"] == "resync")
            .count()
    };
    assert_eq!(resync("withdraw", "198.51.100.0/24"), 1);
    assert_eq!(resync("attribute_change", "198.51.101.0/24"), 1);
    let change = events(
        &api,
        "type=attribute_change&prefix=198.51.101.0/24&match=exact",
    );
    let change = change.iter().find(|e| e["reason"] == "resync").unwrap();
    assert_eq!(change["changed"], json!(["med"]));
    assert_eq!(change["previous"]["med"], 1);
    // Identical routes gave no event: nothing from the resync names a filler prefix.
    let all = events(&api, "");
    assert!(
        !all.iter()
            .any(|e| e["reason"] == "resync"
                && e["prefix"].as_str().unwrap_or("").starts_with("10.50.")),
        "an unchanged route produced a resync event"
    );
    let ends: Vec<&Value> = all
        .iter()
        .filter(|e| e["type"] == "ROUTE_EVENT_TYPE_RESYNC_END")
        .collect();
    assert!(
        ends.iter().any(|e| e["resync"]["applied"] == true),
        "{ends:?}"
    );

    // No session reset: the same BIRD session, one session_up, no session_down.
    assert_eq!(lab.session_line(), session, "BIRD's session was reset");
    assert_eq!(events(&api, "type=session_up").len(), 1);
    assert!(events(&api, "type=session_down").is_empty());

    // A live withdraw of Z is correlated (test z); the resync's withdraw of X was not (test x).
    let (conf, _) = routes(false, 2, "");
    reconfigure(&conf.replace("    route 198.51.102.0/24 blackhole;\n", ""));
    let corrs = wait_until(
        "a correlation for the live withdraw",
        Duration::from_secs(60),
        || {
            let v = api.get("/api/v1/correlations?page_size=100")["correlations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (!v.is_empty()).then_some(v)
        },
    );
    for corr in &corrs {
        let prefixes = corr["prefixes"].as_array().cloned().unwrap_or_default();
        assert!(
            !prefixes.iter().any(|p| p == "198.51.100.0/24"),
            "the resync was correlated: {corr}"
        );
    }

    // Both sides say so.
    let metrics = api.call("GET", "/metrics", None).1;
    let metrics = metrics.as_str().unwrap_or_default();
    let applied = metrics
        .lines()
        .find(|l| l.starts_with("foureyes_route_resyncs_total{outcome=\"applied\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(applied >= 1, "{metrics}");
    let log = listener.log_text();
    assert!(log.contains("resync snapshot sent"), "{log}");
    listener.child.kill().ok();
}

/// `address state lastError` of the tenant's listener peers.
fn peer_states(api: &Api) -> BTreeSet<String> {
    api.get("/api/v1/peers")["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p["peer"]["address"].as_str().unwrap_or_default(),
                p["state"].as_str().unwrap_or_default(),
                p["lastError"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Waits for BIRD's session `fe` to be in a state whose `show protocols` line contains `what`.
fn wait_bird(lab: &BirdLab, what: &str) {
    wait_until(
        &format!("BIRD's session {what}"),
        Duration::from_secs(60),
        || lab.session_line().contains(what).then_some(()),
    );
}

/// Session events lost in a spool overflow are repaired by the resync: one BIRD's session is
/// taken down (`birdc disable`) and stays down, another goes down and comes back, and a third
/// peer is removed from listener.toml (SIGHUP), all while the collector is away, and then the
/// spool overflows (churn through the second), so the collector never hears of any of it. When
/// it returns, `/api/v1/peers` shows the first down and the second up with reason "resync" (a
/// session_down and a session_up from the resync, in that order) and the third down as no longer
/// configured, the routes table is the second BIRD's alone, the session_down rule fires for the
/// first, and `/metrics` counts the repaired events.
#[test]
fn session_events_lost_in_a_spool_overflow_are_repaired_by_the_resync() {
    const NET_A: u8 = 95;
    const NET_B: u8 = 96;
    const NET_C: u8 = 94;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (dir_a, dir_b, dir_c) = (root.join("a"), root.join("b"), root.join("c"));
    for d in [&dir_a, &dir_b, &dir_c] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut lab_a = BirdLab::new(&dir_a, NET_A);
    let mut lab_b = BirdLab::new(&dir_b, NET_B);
    let mut lab_c = BirdLab::new(&dir_c, NET_C);
    let node_port = free_port();
    let c = Collector::start(root, node_port, "", &[]);
    let token = c.tenant("acme", "noc");
    let api = Api::new(&c.api, &token);
    // A state-based session_down rule: it must fire for the peer the resync finds down.
    let rule = api.post(
        "/api/v1/alert-rules",
        json!({"name": "session", "sessionDown": {}}),
    );
    let rule = rule["id"].as_str().unwrap().to_string();
    let peer_conf = |net: u8| {
        format!(
            "[[peer]]\naddress = \"198.19.{net}.1\"\nremote_as = 65001\nlisten = \"198.19.{net}.2\"\n"
        )
    };
    let config = |peers: &[u8]| {
        format!(
            "local_as = 65002\nrouter_id = \"198.19.{NET_A}.2\"\nhold_time = 30\n{}[spool]\nmax_records = {MAX_RECORDS}\n",
            peers.iter().map(|n| peer_conf(*n)).collect::<String>()
        )
    };
    let mut listener =
        common::start_listener(&c, root, "acme", "noc", &config(&[NET_A, NET_B, NET_C]));
    let (a, b) = (format!("198.19.{NET_A}.1"), format!("198.19.{NET_B}.1"));
    let c_addr = format!("198.19.{NET_C}.1");
    lab_a.write_conf("    route 198.51.110.0/24 blackhole;\n", "");
    lab_a.start();
    lab_c.write_conf("    route 198.51.120.0/24 blackhole;\n", "");
    lab_c.start();
    let (conf_b, want_b) = routes(true, 1, "");
    lab_b.write_conf(&conf_b, ROUTES6);
    lab_b.start();
    let want_b = with6(want_b);
    let mut want = want_b.clone();
    want.insert("198.51.110.0/24 0".into());
    want.insert("198.51.120.0/24 0".into());
    wait_until(
        "the sessions up with their tables",
        Duration::from_secs(90),
        || {
            assert!(listener.is_running(), "{}", listener.log_text());
            let up: BTreeSet<String> = [
                format!("{a} up "),
                format!("{b} up "),
                format!("{c_addr} up "),
            ]
            .into();
            (table(&api) == want && peer_states(&api) == up).then_some(())
        },
    );

    // The collector goes away. A's session goes down for good; B's goes down and comes back;
    // then B churns enough routes to overflow the spool, so all of that is dropped.
    let mut c = c;
    c.proc.kill9();
    let reply = lab_a.birdc(&["disable", "fe"]);
    assert!(reply.contains("disabled"), "{reply}");
    let reply = lab_b.birdc(&["disable", "fe"]);
    assert!(reply.contains("disabled"), "{reply}");
    wait_bird(&lab_a, " down ");
    wait_bird(&lab_b, " down ");
    std::thread::sleep(Duration::from_secs(2));
    let reply = lab_b.birdc(&["enable", "fe"]);
    assert!(reply.contains("enabled"), "{reply}");
    wait_bird(&lab_b, "Established");
    // C is removed from the config: the listener stops its session (its session_down is spooled,
    // and dropped with the rest).
    std::fs::write(root.join("listener.toml"), config(&[NET_A, NET_B])).unwrap();
    let st = std::process::Command::new("kill")
        .args(["-HUP", &listener.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    wait_until("C's session stopped", Duration::from_secs(60), || {
        listener
            .log_text()
            .contains("stopping the session (removed or changed)")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let reconfigure = |routes: &str| {
        lab_b.write_conf(routes, ROUTES6);
        let reply = lab_b.birdc(&["configure"]);
        assert!(reply.to_lowercase().contains("reconfigured"), "{reply}");
    };
    let churn: String = (0..CHURN)
        .map(|i| format!("    route 10.60.{}.{}/32 blackhole;\n", i / 200, i % 200))
        .collect();
    reconfigure(&routes(true, 1, &churn).0);
    std::thread::sleep(Duration::from_secs(2));
    reconfigure(&conf_b);
    wait_until("the spool to drop records", Duration::from_secs(60), || {
        listener
            .log_text()
            .contains("spool full: dropped oldest records")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let session_b = lab_b.session_line();
    assert!(session_b.contains("Established"), "{session_b}");

    // The collector comes back: the resync repairs both peers' state.
    let c2 = Collector::start(root, node_port, "", &[]);
    let api = Api::new(&c2.api, &token);
    let want_states: BTreeSet<String> = [
        format!("{a} down resync"),
        format!("{b} up resync"),
        format!("{c_addr} down resync: peer no longer configured on the listener"),
    ]
    .into();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while peer_states(&api) != want_states || table(&api) != want_b {
        assert!(listener.is_running(), "{}", listener.log_text());
        if std::time::Instant::now() > deadline {
            let interesting = |log: String| {
                log.lines()
                    .filter(|l| l.contains("resync") || l.contains("spool"))
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "the peers never showed the listener's state:\nhave {:?} / {:?}\nwant {want_states:?} / {want_b:?}\nlistener:\n{}\ncollector:\n{}",
                peer_states(&api),
                table(&api),
                interesting(listener.log_text()),
                interesting(c2.proc.log_text()),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // B: one session_down and one session_up from the resync, the down first (events are
    // listed oldest first); the up carries the new session's parameters.
    let resync_of = |addr: &str| -> Vec<String> {
        events(&api, &format!("type=session_up,session_down&peer={addr}"))
            .into_iter()
            .filter(|e| e["reason"] == "resync")
            .map(|e| e["type"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        resync_of(&b),
        vec![
            "ROUTE_EVENT_TYPE_SESSION_DOWN".to_string(),
            "ROUTE_EVENT_TYPE_SESSION_UP".to_string()
        ]
    );
    assert_eq!(
        resync_of(&a),
        vec!["ROUTE_EVENT_TYPE_SESSION_DOWN".to_string()]
    );
    let up = events(&api, &format!("type=session_up&peer={b}"));
    let up = up.iter().find(|e| e["reason"] == "resync").unwrap();
    assert_eq!(up["session"]["holdTime"], 30, "{up}");
    // The collector logged it and counts it.
    let log = c2.proc.log_text();
    assert!(log.contains("the stored session state was wrong"), "{log}");
    let counts = || {
        let metrics = api.call("GET", "/metrics", None).1;
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        let count = |event: &str| {
            let head = format!("foureyes_session_resyncs_total{{event=\"{event}\"}} ");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&head))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (
            count("session_down"),
            count("session_up"),
            count("peer_gone"),
        )
    };
    // The session_down rule fires for A, saying a resync found it; B (up again) does not.
    let firing = |addr: &str| {
        api.get(&format!(
            "/api/v1/alerts?page_size=100&rule_id={rule}&state=firing"
        ))["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|x| {
                x["subject"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with(&format!("/{addr}"))
            })
    };
    let alert = wait_until(
        "the session_down alert for A",
        Duration::from_secs(60),
        || firing(&a),
    );
    assert!(
        alert["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("found by a listener resync"),
        "{alert}"
    );
    assert!(firing(&b).is_none(), "{:?}", firing(&b));
    // The correlator counts them as it reads the stored events: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while counts() != (2, 1, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "foureyes_session_resyncs_total: {:?}",
            counts()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    listener.child.kill().ok();
}
