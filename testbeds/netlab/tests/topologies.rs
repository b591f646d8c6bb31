//! The containerlab topologies shipped in `testbeds/` deployed as they are (their YAML, their
//! router configs, the README's commands) with network namespaces, the way CI runs them: each
//! router peers with `foureyes-bgp-listener watch` in the listener node, in passive and in active
//! mode, and the README's example changes on the router show up as the events it promises.
//!
//! Needs root, `frr`, `bird2`, `gobgpd` and `iproute2`, and the built listener binary
//! (`cargo build --bins`).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use foureyes_netlab::{Lab, Options};
use serde_json::Value;

fn testbeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The workspace's build dir holding this test (…/debug/deps/topologies-…): the listener binary is
/// in its parent.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(
        dir.join("foureyes-bgp-listener").exists(),
        "{} has no foureyes-bgp-listener: run `cargo build --bins` first",
        dir.display()
    );
    dir
}

fn deploy(file: &str, state: &Path) -> Lab {
    let opts = Options {
        prefix: format!("nl{}-", std::process::id()),
        bind_sources: vec![(testbeds().join("../target/release"), build_dir())],
        state_dir: state.to_path_buf(),
    };
    Lab::deploy(&testbeds().join(file), &opts).unwrap()
}

/// `watch` in the listener node, its JSON lines read on a thread.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Watch {
    fn start(lab: &Lab, args: &[&str]) -> Watch {
        let mut argv = vec!["foureyes-bgp-listener", "watch", "--format", "jsonl"];
        argv.extend_from_slice(args);
        let mut child = lab
            .command("listener", &argv)
            .unwrap()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&l)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Watch {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an event matching `pred`; fails with everything seen (and the router's view).
    fn wait(
        &mut self,
        what: &str,
        lab: &Lab,
        router: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        while Instant::now() < deadline {
            if let Ok(v) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(v.clone());
                if pred(&v) {
                    return v;
                }
            }
        }
        panic!(
            "no {what} within 90 s; events: {:#?}\nrouter log:\n{}",
            self.seen,
            lab.log(router)
        );
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn announce<'a>(prefix: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v| v["type"] == "announce" && v["prefix"] == prefix
}

const PASSIVE: &[&str] = &[
    "--local-as",
    "65002",
    "--peer",
    "198.18.0.1",
    "--remote-as",
    "65001",
    "--listen",
    "198.18.0.2",
];
const ACTIVE: &[&str] = &[
    "--local-as",
    "65002",
    "--peer",
    "198.18.0.1",
    "--remote-as",
    "65001",
    "--connect",
    "--router-id",
    "198.18.0.2",
    "--exit-on-eor",
];

fn sh(lab: &Lab, node: &str, argv: &[&str]) -> String {
    let out = lab.exec(node, argv).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{argv:?} in {node}: {text}");
    text
}

/// The active listener dials the router (the README: "all three routers also listen") and
/// receives the table up to End-of-RIB (or the quiet period), then exits by itself.
fn active_session_gets(lab: &Lab, router: &str, prefix: &str) {
    let mut w = Watch::start(lab, ACTIVE);
    w.wait("session_established (active)", lab, router, |v| {
        v["type"] == "session_established"
    });
    w.wait("the table (active)", lab, router, announce(prefix));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = w.child.try_wait().unwrap() {
            assert!(st.success(), "watch --connect --exit-on-eor: {st}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watch --exit-on-eor did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn frr_topology_peers_and_the_readme_route_map_change_arrives() {
    let state = tempfile::tempdir().unwrap();
    let lab = deploy("listener-frr.clab.yml", state.path());
    let mut w = Watch::start(&lab, PASSIVE);
    let up = w.wait("session_established", &lab, "frr", |v| {
        v["type"] == "session_established"
    });
    assert_eq!(
        up["families"],
        serde_json::json!(["ipv4-unicast", "ipv6-unicast"])
    );
    let p2 = w.wait("198.19.2.0/24", &lab, "frr", announce("198.19.2.0/24"));
    assert_eq!(p2["med"], 20, "{p2}");
    w.wait("2001:2:0:a::/64", &lab, "frr", announce("2001:2:0:a::/64"));
    // The README's example: MED 30 on everything OUT4's first entry matches.
    sh(
        &lab,
        "frr",
        &[
            "vtysh",
            "-c",
            "conf t",
            "-c",
            "route-map OUT4 permit 10",
            "-c",
            "set metric 30",
            "-c",
            "end",
            "-c",
            "clear bgp ipv4 unicast 198.18.0.2 soft out",
        ],
    );
    let ch = w.wait("the MED change", &lab, "frr", |v| {
        v["type"] == "attribute_change" && v["prefix"] == "198.19.2.0/24"
    });
    assert_eq!(ch["med"], 30, "{ch}");
    assert_eq!(ch["changed"], serde_json::json!(["med"]), "{ch}");
    drop(w);
    active_session_gets(&lab, "frr", "198.19.2.0/24");
}

#[test]
fn gobgp_topology_peers_and_the_readme_cli_routes_come_and_go() {
    let state = tempfile::tempdir().unwrap();
    let lab = deploy("listener-gobgp.clab.yml", state.path());
    let mut w = Watch::start(&lab, PASSIVE);
    w.wait("session_established", &lab, "gobgp", |v| {
        v["type"] == "session_established"
    });
    // The README: GoBGP starts empty; add routes with its CLI.
    let add4 = [
        "gobgp",
        "global",
        "rib",
        "-a",
        "ipv4",
        "add",
        "198.19.1.0/24",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    // gobgpd's API may take a moment after the session is up.
    while !lab
        .exec("gobgp", &[&add4[..], &["community", "65001:100"]].concat())
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "gobgp CLI never answered");
        std::thread::sleep(Duration::from_millis(300));
    }
    sh(
        &lab,
        "gobgp",
        &[
            "gobgp",
            "global",
            "rib",
            "-a",
            "ipv6",
            "add",
            "2001:2:0:a::/64",
            "nexthop",
            "2001:2::1",
        ],
    );
    let a = w.wait("198.19.1.0/24", &lab, "gobgp", announce("198.19.1.0/24"));
    assert_eq!(a["communities"], serde_json::json!(["65001:100"]), "{a}");
    let a6 = w.wait(
        "2001:2:0:a::/64",
        &lab,
        "gobgp",
        announce("2001:2:0:a::/64"),
    );
    assert_eq!(a6["next_hop"], "2001:2::1", "{a6}");
    sh(
        &lab,
        "gobgp",
        &[
            "gobgp",
            "global",
            "rib",
            "-a",
            "ipv4",
            "del",
            "198.19.1.0/24",
        ],
    );
    w.wait("the withdraw", &lab, "gobgp", |v| {
        v["type"] == "withdraw" && v["prefix"] == "198.19.1.0/24"
    });
    drop(w);
    active_session_gets(&lab, "gobgp", "2001:2:0:a::/64");
}

#[test]
fn bird_topology_peers_and_birdc_works_as_the_readme_says() {
    let state = tempfile::tempdir().unwrap();
    let lab = deploy("listener-bird.clab.yml", state.path());
    let mut w = Watch::start(&lab, PASSIVE);
    w.wait("session_established", &lab, "bird", |v| {
        v["type"] == "session_established"
    });
    let a = w.wait("198.19.1.0/24", &lab, "bird", announce("198.19.1.0/24"));
    assert_eq!(
        a["large_communities"],
        serde_json::json!(["65001:1:2"]),
        "{a}"
    );
    w.wait("2001:2:0:b::/64", &lab, "bird", announce("2001:2:0:b::/64"));
    // The README's birdc command, on the control socket the topology's cmd names.
    let proto = sh(
        &lab,
        "bird",
        &[
            "birdc",
            "-s",
            "/run/bird/bird.ctl",
            "show",
            "protocols",
            "all",
            "fe",
        ],
    );
    assert!(proto.contains("Established"), "{proto}");
    drop(w);
    active_session_gets(&lab, "bird", "198.19.3.0/24");
}

#[test]
fn a_topology_netlab_does_not_understand_is_refused_by_name_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.clab.yml");
    std::fs::write(
        &f,
        "name: bad\ntopology:\n  nodes:\n    r:\n      kind: linux\n      image: foureyes-lab-frr\n      env: {A: b}\n",
    )
    .unwrap();
    let opts = Options {
        state_dir: dir.path().to_path_buf(),
        prefix: format!("nl{}-", std::process::id()),
        ..Options::default()
    };
    let e = Lab::deploy(&f, &opts).unwrap_err().to_string();
    assert!(e.contains("env"), "{e}");
    std::fs::write(
        &f,
        "name: bad\ntopology:\n  nodes:\n    r:\n      kind: linux\n      image: foureyes-lab-frr\n      binds: [\"nothere:/etc/x\"]\n",
    )
    .unwrap();
    let e = Lab::deploy(&f, &opts).unwrap_err().to_string();
    assert!(e.contains("nothere") && e.contains("does not exist"), "{e}");
    // A failing exec step: the error names it, and the namespaces are gone again.
    std::fs::write(
        &f,
        "name: bad\ntopology:\n  nodes:\n    r:\n      kind: linux\n      image: foureyes-lab-listener\n      exec: [\"ip addr add 198.18.0.1/24 dev eth9\"]\n",
    )
    .unwrap();
    let e = Lab::deploy(&f, &opts).unwrap_err().to_string();
    assert!(e.contains("eth9"), "{e}");
    let ns = foureyes_netlab::ns_name(&opts, "bad", "r");
    assert!(
        !Path::new("/run/netns").join(&ns).exists(),
        "{ns} left behind"
    );
}
