//! End to end with a real BGP peer: a BIRD 2 router in a network namespace peers with
//! `foureyes-bgp-listener run` (enrolled like a node), whose route events reach the collector,
//! which keeps them per tenant and serves `/api/v1/route-events` and `/api/v1/routes`.
//!
//! Needs root (namespaces), `bird2` and `iproute2`, and the built binaries (`cargo build --bins`).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Api, Collector, Proc, bin, listening_sockets, wait_until};
use serde_json::Value;

fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false);
    assert!(found, "`{tool}` not found: apt-get install -y {package}");
}

fn sh(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const BIRD_V4: &str = "198.19.77.1";
const LST_V4: &str = "198.19.77.2";

/// A namespace holding BIRD, joined to the root namespace (where the listener and collector run)
/// by a veth pair. Removed on drop.
struct BirdLab {
    ns: String,
    veth: String,
    dir: std::path::PathBuf,
    bird: Option<Child>,
}

impl BirdLab {
    fn new(dir: &Path) -> Self {
        need("bird", "bird2");
        need("ip", "iproute2");
        let id = std::process::id() % 100_000;
        let lab = BirdLab {
            ns: format!("felc{id}"),
            veth: format!("felcr{id}"),
            dir: dir.to_path_buf(),
            bird: None,
        };
        let inner = format!("felcb{id}");
        let _ = Command::new("ip").args(["netns", "del", &lab.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &lab.veth]).output();
        sh(&["ip", "netns", "add", &lab.ns]);
        sh(&[
            "ip", "link", "add", &lab.veth, "type", "veth", "peer", "name", &inner, "netns",
            &lab.ns,
        ]);
        sh(&["ip", "-n", &lab.ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &lab.ns,
            "addr",
            "add",
            &format!("{BIRD_V4}/24"),
            "dev",
            &inner,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.ns,
            "addr",
            "add",
            "2001:db8:77::1/64",
            "dev",
            &inner,
            "nodad",
        ]);
        sh(&["ip", "-n", &lab.ns, "link", "set", &inner, "up"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{LST_V4}/24"),
            "dev",
            &lab.veth,
        ]);
        sh(&[
            "ip",
            "addr",
            "add",
            "2001:db8:77::2/64",
            "dev",
            &lab.veth,
            "nodad",
        ]);
        sh(&["ip", "link", "set", &lab.veth, "up"]);
        lab
    }

    fn write_conf(&self, routes4: &str, routes6: &str) {
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
    neighbor {LST_V4} as 65002;
    hold time 30;
    connect retry time 1;
    ipv4 {{ import all; export all; }};
    ipv6 {{ import all; export all; next hop address 2001:db8:77::1; }};
}}
"#,
            log = self.dir.join("bird.log").display(),
        );
        std::fs::write(self.dir.join("bird.conf"), conf).unwrap();
    }

    fn start(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "bird", "-f", "-c"])
            .arg(self.dir.join("bird.conf"))
            .arg("-s")
            .arg(self.dir.join("bird.ctl"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.bird = Some(child);
    }

    fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "birdc", "-s"])
            .arg(self.dir.join("bird.ctl"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for BirdLab {
    fn drop(&mut self) {
        if let Some(mut c) = self.bird.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
    }
}

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
    let mut lab = BirdLab::new(root);
    let c = Collector::start(root, 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let other = Api::new(&c.api, &c.tenant("other", "ops"));

    // Enroll a listener with a listener token.
    let token = c.admin(&[
        "token", "create", "--org", "acme", "--team", "noc", "--ttl", "10m", "--kind", "listener",
    ]);
    let state = root.join("listener");
    let out = Command::new(bin("foureyes-bgp-listener"))
        .args(["enroll", "--collector", &c.node_addr, "--state-dir"])
        .arg(&state)
        .env("FOUREYES_ENROLL_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let conf = root.join("listener.toml");
    std::fs::write(
        &conf,
        format!(
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
    )
    .unwrap();
    let mut cmd = Command::new(bin("foureyes-bgp-listener"));
    cmd.args(["run", "--config"])
        .arg(&conf)
        .arg("--state-dir")
        .arg(&state)
        .env("RUST_LOG", "info");
    let mut listener = Proc::spawn(cmd, root.join("listener.log"));

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
