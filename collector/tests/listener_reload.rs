//! `foureyes-bgp-listener run` reloads listener.toml on SIGHUP: a second BIRD peer is added and
//! later removed while the first BIRD session stays Established throughout (no flap: BIRD's own
//! `show protocols` since-time for the session is unchanged, and the collector holds one
//! `session_up` and no `session_down` for it); a file with an error changes nothing.
//!
//! Needs root (namespaces), `bird2` and `iproute2`, and the built binaries (`cargo build --bins`).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::bird::BirdLab;
use common::{Api, Collector, wait_until};
use serde_json::Value;

const NET_A: u8 = 91;
const NET_B: u8 = 92;

fn events(api: &Api, query: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/route-events?page_size=1000&{query}"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn of_peer(api: &Api, kind: &str, net: u8) -> usize {
    let addr = format!("198.19.{net}.1");
    events(api, &format!("type={kind}"))
        .iter()
        .filter(|e| e["peer"]["address"] == addr.as_str())
        .count()
}

fn bird_session(lab: &BirdLab) -> String {
    lab.session_line()
}

fn peer_toml(net: u8) -> String {
    format!(
        "[[peer]]\nname = \"bird{net}\"\naddress = \"198.19.{net}.1\"\nremote_as = 65001\nlisten = \"198.19.{net}.2\"\n"
    )
}

fn hup(pid: u32) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn sighup_adds_and_removes_a_peer_without_touching_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (dir_a, dir_b) = (root.join("a"), root.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let mut lab_a = BirdLab::new(&dir_a, NET_A);
    let mut lab_b = BirdLab::new(&dir_b, NET_B);
    let c = Collector::start(root, 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));

    let head = format!("local_as = 65002\nrouter_id = \"198.19.{NET_A}.2\"\nhold_time = 30\n");
    let only_a = format!("{head}{}", peer_toml(NET_A));
    let mut listener = common::start_listener(&c, root, "acme", "noc", &only_a);
    let conf = root.join("listener.toml");
    let routes4 = "    route 198.51.100.0/24 blackhole;";
    let routes6 = "    route 2001:db8:100::/48 blackhole;";
    lab_a.write_conf(routes4, routes6);
    lab_a.start();
    lab_b.write_conf(routes4, routes6);
    lab_b.start();

    let running = |l: &mut common::Proc| {
        assert!(l.is_running(), "listener exited:\n{}", l.log_text());
    };
    wait_until("BIRD A up", Duration::from_secs(60), || {
        running(&mut listener);
        (of_peer(&api, "session_up", NET_A) == 1 && bird_session(&lab_a).contains("Established"))
            .then_some(())
    });
    let a_line = bird_session(&lab_a);
    assert!(
        !bird_session(&lab_b).contains("Established"),
        "B is not configured yet"
    );

    // Add B.
    std::fs::write(&conf, format!("{only_a}{}", peer_toml(NET_B))).unwrap();
    hup(listener.pid());
    wait_until("BIRD B up after SIGHUP", Duration::from_secs(90), || {
        running(&mut listener);
        (of_peer(&api, "session_up", NET_B) == 1 && bird_session(&lab_b).contains("Established"))
            .then_some(())
    });

    // A file with an error: logged with its line, nothing changes.
    std::fs::write(&conf, format!("{only_a}[[peer]]\naddress = 7\n")).unwrap();
    hup(listener.pid());
    wait_until(
        "the refused reload in the log",
        Duration::from_secs(30),
        || {
            let log = listener.log_text();
            (log.contains("reload refused") && log.contains("line")).then_some(())
        },
    );
    running(&mut listener);
    assert!(bird_session(&lab_b).contains("Established"), "B kept");

    // Remove B: its session ends (Cease), A's does not.
    std::fs::write(&conf, &only_a).unwrap();
    hup(listener.pid());
    wait_until("B down after SIGHUP", Duration::from_secs(60), || {
        running(&mut listener);
        (of_peer(&api, "session_down", NET_B) == 1 && !bird_session(&lab_b).contains("Established"))
            .then_some(())
    });

    // A never flapped: same BIRD since-time, one session_up, no session_down.
    assert_eq!(
        bird_session(&lab_a),
        a_line,
        "BIRD A's session is the same one; BIRD's log:\n{}\nthe listener's log:\n{}",
        std::fs::read_to_string(dir_a.join("bird.log")).unwrap_or_default(),
        listener.log_text()
    );
    assert!(a_line.contains("Established"), "{a_line}");
    assert_eq!(of_peer(&api, "session_up", NET_A), 1);
    assert_eq!(of_peer(&api, "session_down", NET_A), 0);
    // B stays away: the listener no longer listens on B's address.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!bird_session(&lab_b).contains("Established"));
    assert_eq!(of_peer(&api, "session_up", NET_B), 1);
    listener.child.kill().ok();
}
