//! The BMP station against real routers: FRR bgpd (with its bmp module) and GoBGP, each peering
//! with a BIRD 2 speaker that announces static routes, and each streaming BMP to the station.
//!
//! Topology, three network namespaces joined by two veth pairs:
//! `BIRD 198.18.10.1 ── 198.18.10.2 router 198.18.11.1 ── 198.18.11.2 station`.
//! Needs root and the Debian packages `bird2`, `frr`, `gobgpd`, `tcpdump`, and the built binary
//! (`cargo build --bins`; `cargo test` builds it). Addresses exist only inside the test's own
//! namespaces, whose names start with `bmp` and carry the pid and a counter; everything is torn
//! down on drop, also after a panic.
//!
//! Read-only proof: tcpdump on the station's veth; the station→router direction must carry zero
//! TCP payload bytes while the router→station direction carries the feed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::lab::{Proc, listener_bin, need, run};

const BIRD: &str = "198.18.10.1";
const ROUTER_UP: &str = "198.18.10.2";
const ROUTER: &str = "198.18.11.1";
const STATION: &str = "198.18.11.2";
const BMP_PORT: &str = "11019";

static COUNTER: AtomicU32 = AtomicU32::new(0);

const FRR_BGPD: &str = "/usr/lib/frr/bgpd";

fn is_route(line: &str, v6: bool) -> bool {
    let mut words = line.split_whitespace();
    words.next() == Some("route") && words.next().is_some_and(|p| p.contains(':') == v6)
}

const ROUTES: &str = r#"
    route 198.19.1.0/24 blackhole { bgp_community.add((65001,100)); };
    route 198.19.2.0/24 blackhole { bgp_community.add((65001,200)); };
    route 198.19.3.0/24 blackhole;
    route 2001:2:0:a::/64 blackhole { bgp_community.add((65001,600)); };
"#;

struct Lab {
    ns_up: String,
    ns_rt: String,
    ns_st: String,
    veth_st: String,
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    tcpdump: Option<Child>,
    station: Option<Child>,
    events: Option<mpsc::Receiver<Value>>,
    seen: Vec<Value>,
}

impl Lab {
    fn new() -> Lab {
        need("bird", "bird2");
        need("tcpdump", "tcpdump");
        need("ip", "iproute2");
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lab = Lab {
            ns_up: format!("bmpu{id}"),
            ns_rt: format!("bmpr{id}"),
            ns_st: format!("bmps{id}"),
            veth_st: format!("bmps{id}"),
            dir: tempfile::tempdir().expect("tempdir"),
            procs: Vec::new(),
            tcpdump: None,
            station: None,
            events: None,
            seen: Vec::new(),
        };
        for ns in [&lab.ns_up, &lab.ns_rt, &lab.ns_st] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (vu, vr1, vr2) = (
            format!("bmpu{id}"),
            format!("bmpr{id}a"),
            format!("bmpr{id}b"),
        );
        run(&[
            "ip", "link", "add", &vu, "netns", &lab.ns_up, "type", "veth", "peer", "name", &vr1,
            "netns", &lab.ns_rt,
        ]);
        run(&[
            "ip",
            "link",
            "add",
            &vr2,
            "netns",
            &lab.ns_rt,
            "type",
            "veth",
            "peer",
            "name",
            &lab.veth_st,
            "netns",
            &lab.ns_st,
        ]);
        for (ns, dev, addrs) in [
            (&lab.ns_up, &vu, &["198.18.10.1/24", "2001:2:10::1/64"][..]),
            (&lab.ns_rt, &vr1, &["198.18.10.2/24", "2001:2:10::2/64"][..]),
            (&lab.ns_rt, &vr2, &["198.18.11.1/24"][..]),
            (&lab.ns_st, &lab.veth_st, &["198.18.11.2/24"][..]),
        ] {
            for a in addrs {
                if a.contains(':') {
                    run(&["ip", "-n", ns, "addr", "add", a, "dev", dev, "nodad"]);
                } else {
                    run(&["ip", "-n", ns, "addr", "add", a, "dev", dev]);
                }
            }
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn_in(&mut self, ns: &str, args: &[&str], what: &str) {
        let log = std::fs::File::create(self.path(&format!("{what}.out"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        self.procs.push(Proc(child));
        std::thread::sleep(Duration::from_millis(300));
        if let Some(st) = self
            .procs
            .last_mut()
            .and_then(|p| p.0.try_wait().ok().flatten())
        {
            let out =
                std::fs::read_to_string(self.path(&format!("{what}.out"))).unwrap_or_default();
            panic!("{what} exited at start ({st}):\n{out}");
        }
    }

    /// BIRD announces `routes` to the router (AS 65001 → `router_as`). `multihop` keeps BIRD from
    /// adding a link-local IPv6 next hop, which a zebra-less FRR cannot resolve.
    fn write_bird_conf(&self, routes: &str, router_as: u32) {
        let conf = format!(
            r#"
router id {BIRD};
log "{log}" all;
protocol device {{ }}
protocol static s4 {{ ipv4;
{r4}
}}
protocol static s6 {{ ipv6;
{r6}
}}
protocol bgp up {{
    local {BIRD} as 65001;
    neighbor {ROUTER_UP} as {router_as};
    multihop 2;
    hold time 30;
    connect retry time 1;
    ipv4 {{ import none; export all; }};
    ipv6 {{ import none; export all; next hop address 2001:2:10::1; }};
}}
"#,
            log = self.path("bird.log").display(),
            r4 = routes
                .lines()
                .filter(|l| is_route(l, false))
                .collect::<Vec<_>>()
                .join("\n"),
            r6 = routes
                .lines()
                .filter(|l| is_route(l, true))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        std::fs::write(self.path("bird.conf"), conf).expect("write bird.conf");
    }

    fn start_bird(&mut self) {
        let conf = self.path("bird.conf").display().to_string();
        let ctl = self.path("bird.ctl").display().to_string();
        let ns = self.ns_up.clone();
        self.spawn_in(&ns, &["bird", "-f", "-c", &conf, "-s", &ctl], "bird");
    }

    fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_up, "birdc", "-s"])
            .arg(self.path("bird.ctl"))
            .args(args)
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start_capture(&mut self) {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_st,
                "tcpdump",
                "-i",
                &self.veth_st,
                "-U",
                "--immediate-mode",
                "-n",
                "-s",
                "0",
                "-w",
            ])
            .arg(self.path("cap.pcap"))
            .arg(format!("tcp port {BMP_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let stderr = child.stderr.take().expect("stderr");
        let mut line = String::new();
        let _ = BufReader::new(stderr).read_line(&mut line);
        assert!(line.contains("listening"), "tcpdump: {line}");
        self.tcpdump = Some(child);
    }

    fn stop_capture(&mut self) -> Vec<u8> {
        if let Some(mut c) = self.tcpdump.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        std::fs::read(self.path("cap.pcap")).expect("read capture")
    }

    fn start_station(&mut self) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns_st])
            .arg(listener_bin())
            .args([
                "bmp",
                "--listen",
                &format!("{STATION}:{BMP_PORT}"),
                "--allow",
                ROUTER,
                "--format",
                "jsonl",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn station");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        self.station = Some(child);
        self.events = Some(rx);
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Waits (generously: a loaded CI machine) until an event matching `pred` arrives.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(v) = self.seen.iter().find(|v| pred(v)) {
                return v.clone();
            }
            let rx = self.events.as_ref().expect("station started");
            match rx.recv_timeout(Duration::from_secs(90).saturating_sub(t0.elapsed())) {
                Ok(v) => self.seen.push(v),
                Err(_) => panic!("timed out waiting for {what}; saw {:#?}", self.seen),
            }
        }
    }

    /// SIGINT: the station exits cleanly.
    fn stop_station(&mut self) {
        let mut c = self.station.take().expect("station");
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let t0 = Instant::now();
        loop {
            if let Some(st) = c.try_wait().expect("try_wait") {
                assert!(st.success(), "station exit: {st}");
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "station did not exit on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn in_rt(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_rt])
            .args(args)
            .output()
            .expect("command in router namespace");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in [self.tcpdump.take(), self.station.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        self.procs.clear();
        for ns in [&self.ns_up, &self.ns_rt, &self.ns_st] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::thread::panicking() {
            for f in ["bird.log", "bgpd.log", "gobgpd.out", "bgpd.out"] {
                if let Ok(log) = std::fs::read_to_string(self.path(f)) {
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    eprintln!(
                        "--- {f} (last lines) ---\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
    }
}

/// TCP payload bytes in a pcap (Ethernet, IPv4) sent from `src`.
fn payload_bytes_from(pcap: &[u8], src: [u8; 4]) -> usize {
    assert!(pcap.len() >= 24, "pcap too short");
    let le = pcap[..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let rd32 = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut total = 0;
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let incl = rd32(&pcap[off + 8..off + 12]) as usize;
        let pkt = &pcap[off + 16..(off + 16 + incl).min(pcap.len())];
        off += 16 + incl;
        if pkt.len() < 14 + 20 || pkt[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &pkt[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[9] != 6 || ip[12..16] != src || ip.len() < len {
            continue;
        }
        let doff = usize::from(ip[ihl + 12] >> 4) * 4;
        total += len - ihl - doff;
    }
    total
}

fn assert_station_sent_nothing(pcap: &[u8]) {
    let from_router = payload_bytes_from(pcap, [198, 18, 11, 1]);
    let from_station = payload_bytes_from(pcap, [198, 18, 11, 2]);
    assert!(
        from_router > 0,
        "capture sanity: the router's BMP feed is in it"
    );
    assert_eq!(
        from_station, 0,
        "the station sent {from_station} payload bytes to the router"
    );
}

fn is(v: &Value, kind: &str, source: &str, prefix: &str) -> bool {
    v["type"] == kind && v["source"] == source && v["prefix"] == prefix
}

/// Prefix → (AS path, next hop) of the station's current view, replayed from its events.
fn view_from_events(
    events: &[Value],
    source: &str,
) -> std::collections::BTreeMap<String, (String, String)> {
    let mut m = std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| e["source"] == source) {
        let p = e["prefix"].as_str().unwrap_or_default().to_string();
        match e["type"].as_str() {
            Some("announce" | "attribute_change") => {
                m.insert(
                    p,
                    (
                        e["as_path"].as_str().unwrap_or_default().to_string(),
                        e["next_hop"].as_str().unwrap_or_default().to_string(),
                    ),
                );
            }
            Some("withdraw") => {
                m.remove(&p);
            }
            Some("session_down") => m.clear(),
            _ => {}
        }
    }
    m
}

fn change_and_withdraw(lab: &mut Lab, router_as: u32, source: &str) {
    let changed = ROUTES
        .replace(
            "bgp_community.add((65001,200));",
            "bgp_community.add((65001,201));",
        )
        .replace("    route 198.19.3.0/24 blackhole;\n", "");
    lab.write_bird_conf(&changed, router_as);
    let reply = lab.birdc(&["configure"]);
    assert!(
        reply.to_lowercase().contains("reconfigured"),
        "birdc: {reply}"
    );
    lab.wait_for("withdraw of 198.19.3.0/24", |v| {
        is(v, "withdraw", source, "198.19.3.0/24")
    });
    let ch = lab.wait_for("attribute change of 198.19.2.0/24", |v| {
        is(v, "attribute_change", source, "198.19.2.0/24")
    });
    assert_eq!(ch["changed"], serde_json::json!(["communities"]), "{ch}");
    assert_eq!(ch["communities"], serde_json::json!(["65001:201"]));
    assert_eq!(
        ch["previous"]["communities"],
        serde_json::json!(["65001:200"])
    );
}

/// BIRD disables its session: the router reports the peer down, with what each view held
/// (`None`: the router may withdraw that view's routes one by one first, as GoBGP does for
/// post-policy).
fn upstream_down(lab: &mut Lab, sources: &[(&str, Option<u64>)]) {
    let reply = lab.birdc(&["disable", "up"]);
    assert!(reply.contains("disabled"), "birdc: {reply}");
    for (source, routes) in sources {
        let down = lab.wait_for("peer down", |v| {
            v["type"] == "session_down" && v["source"] == *source && v["peer"] == BIRD
        });
        if let Some(n) = routes {
            assert_eq!(down["routes_lost"], *n, "{down}");
        }
        assert_eq!(down["bmp_router"], ROUTER);
        assert!(
            down["reason"]
                .as_str()
                .is_some_and(|r| r.contains("NOTIFICATION 6/")),
            "BIRD's Cease, as the router reports it: {down}"
        );
    }
}

#[test]
fn frr_bmp_feed_matches_frr_and_follows_changes_withdraws_and_peer_down() {
    need(FRR_BGPD, "frr");
    need("vtysh", "frr");
    let mut lab = Lab::new();
    lab.start_capture();
    lab.start_station();
    lab.write_bird_conf(ROUTES, 65010);
    lab.start_bird();
    // Pre-policy monitoring reads FRR's Adj-RIB-In, which FRR 8.4 keeps only with
    // soft-reconfiguration inbound (FRRouting/frr#10240).
    let conf = format!(
        r#"hostname rt
log file {log} informational
router bgp 65010
 bgp router-id {ROUTER_UP}
 no bgp ebgp-requires-policy
 neighbor {BIRD} remote-as 65001
 neighbor {BIRD} timers connect 1
 address-family ipv4 unicast
  neighbor {BIRD} soft-reconfiguration inbound
 exit-address-family
 address-family ipv6 unicast
  neighbor {BIRD} activate
  neighbor {BIRD} soft-reconfiguration inbound
 exit-address-family
 bmp targets fe
  bmp connect {STATION} port {BMP_PORT} min-retry 100 max-retry 1000
  bmp monitor ipv4 unicast pre-policy
  bmp monitor ipv4 unicast post-policy
  bmp monitor ipv6 unicast pre-policy
  bmp monitor ipv6 unicast post-policy
 exit
"#,
        log = lab.path("bgpd.log").display()
    );
    std::fs::write(lab.path("bgpd.conf"), conf).expect("bgpd.conf");
    let (conf, pid, vty) = (
        lab.path("bgpd.conf").display().to_string(),
        lab.path("bgpd.pid").display().to_string(),
        lab.dir.path().display().to_string(),
    );
    let ns = lab.ns_rt.clone();
    lab.spawn_in(
        &ns,
        &[
            FRR_BGPD,
            "-f",
            &conf,
            "-i",
            &pid,
            "--vty_socket",
            &vty,
            "-Z",
            "-n",
            "-S",
            "-M",
            "bmp",
            "-l",
            ROUTER_UP,
        ],
        "bgpd",
    );

    for src in ["bmp-pre-policy", "bmp-post-policy"] {
        let up = lab.wait_for("peer up", |v| {
            v["type"] == "session_established" && v["source"] == src && v["peer"] == BIRD
        });
        assert_eq!(up["peer_as"], 65001);
        assert_eq!(up["bmp_router"], ROUTER);
        assert_eq!(
            up["families"],
            serde_json::json!(["ipv4-unicast", "ipv6-unicast"])
        );
        for p in [
            "198.19.1.0/24",
            "198.19.2.0/24",
            "198.19.3.0/24",
            "2001:2:0:a::/64",
        ] {
            lab.wait_for(p, |v| is(v, "announce", src, p));
        }
    }
    let a = lab.wait_for("", |v| is(v, "announce", "bmp-pre-policy", "198.19.1.0/24"));
    assert_eq!(a["communities"], serde_json::json!(["65001:100"]));
    assert!(
        a["source_time"]
            .as_str()
            .is_some_and(|s| s.starts_with("20")),
        "{a}"
    );

    // What FRR holds, from vtysh, against the station's post-policy view. FRR 8.4 prepends its
    // own AS to the AS_PATH it puts in Route Monitoring (fixed upstream in FRRouting/frr#21815),
    // so the station reports "65010 <FRR's path>".
    let vty = lab.dir.path().display().to_string();
    let mut frr = std::collections::BTreeMap::new();
    for fam in ["ipv4", "ipv6"] {
        let out = lab.in_rt(&[
            "vtysh",
            "--vty_socket",
            &vty,
            "-c",
            &format!("show bgp {fam} unicast json"),
        ]);
        let j: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        for (prefix, paths) in j["routes"].as_object().expect("routes") {
            let path = &paths[0];
            let nh = path["nexthops"][0]["ip"].as_str().unwrap_or_default();
            let asp = path["path"].as_str().unwrap_or_default();
            frr.insert(prefix.clone(), (format!("65010 {asp}"), nh.to_string()));
        }
    }
    assert_eq!(frr.len(), 4, "FRR holds the four routes: {frr:?}");
    assert_eq!(view_from_events(&lab.seen, "bmp-post-policy"), frr);

    change_and_withdraw(&mut lab, 65010, "bmp-post-policy");
    upstream_down(
        &mut lab,
        &[("bmp-post-policy", Some(3)), ("bmp-pre-policy", Some(3))],
    );

    lab.stop_station();
    std::thread::sleep(Duration::from_millis(500));
    let pcap = lab.stop_capture();
    assert_station_sent_nothing(&pcap);
}

/// GoBGP's AS path and next hop of one path in `gobgp ... -j` output.
fn gobgp_path(path: &Value) -> (String, String) {
    let mut asp = String::new();
    let mut nh = String::new();
    for a in path["attrs"].as_array().into_iter().flatten() {
        match a["type"].as_u64() {
            Some(2) => {
                let asns: Vec<String> = a["as_paths"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s["asns"].as_array().cloned().unwrap_or_default())
                    .map(|n| n.to_string())
                    .collect();
                asp = asns.join(" ");
            }
            Some(3) | Some(14) => {
                nh = a["nexthop"].as_str().unwrap_or_default().to_string();
            }
            _ => {}
        }
    }
    (asp, nh)
}

#[test]
fn gobgp_bmp_feed_with_loc_rib_and_statistics_matches_gobgp() {
    need("gobgpd", "gobgpd");
    need("gobgp", "gobgpd");
    let mut lab = Lab::new();
    lab.start_capture();
    lab.start_station();
    lab.write_bird_conf(ROUTES, 65020);
    lab.start_bird();
    let conf = format!(
        r#"[global.config]
  as = 65020
  router-id = "{ROUTER_UP}"
  local-address-list = ["{ROUTER_UP}"]
  port = 179
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{BIRD}"
    peer-as = 65001
  [neighbors.transport.config]
    local-address = "{ROUTER_UP}"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
[[bmp-servers]]
  [bmp-servers.config]
    address = "{STATION}"
    port = {BMP_PORT}
    route-monitoring-policy = "all"
    statistics-timeout = 15
"#
    );
    std::fs::write(lab.path("gobgpd.toml"), conf).expect("gobgpd.toml");
    let conf = lab.path("gobgpd.toml").display().to_string();
    let ns = lab.ns_rt.clone();
    lab.spawn_in(
        &ns,
        &["gobgpd", "-f", &conf, "--api-hosts", "127.0.0.1:50051"],
        "gobgpd",
    );

    for src in ["bmp-pre-policy", "bmp-post-policy", "bmp-loc-rib"] {
        for p in [
            "198.19.1.0/24",
            "198.19.2.0/24",
            "198.19.3.0/24",
            "2001:2:0:a::/64",
        ] {
            lab.wait_for(p, |v| is(v, "announce", src, p));
        }
    }
    let up = lab.wait_for("peer up", |v| {
        v["type"] == "session_established" && v["source"] == "bmp-pre-policy"
    });
    assert_eq!(up["peer"], BIRD);
    assert_eq!(up["peer_as"], 65001);
    let loc = lab.wait_for("", |v| is(v, "announce", "bmp-loc-rib", "198.19.1.0/24"));
    assert_eq!(
        loc["peer_as"], 65020,
        "a Loc-RIB peer carries the router's AS"
    );

    // GoBGP's Loc-RIB and Adj-RIB-In against the station's views.
    let mut rib = std::collections::BTreeMap::new();
    let mut adj_in = std::collections::BTreeMap::new();
    for fam in ["ipv4", "ipv6"] {
        for (cmd, into) in [
            (vec!["global", "rib", "-a", fam, "-j"], &mut rib),
            (
                vec!["neighbor", BIRD, "adj-in", "-a", fam, "-j"],
                &mut adj_in,
            ),
        ] {
            let mut args = vec!["gobgp", "-u", "127.0.0.1", "-p", "50051"];
            args.extend(cmd);
            let out = lab.in_rt(&args);
            let j: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            for (prefix, paths) in j.as_object().expect("prefix map") {
                into.insert(prefix.clone(), gobgp_path(&paths[0]));
            }
        }
    }
    assert_eq!(rib.len(), 4, "GoBGP holds the four routes: {rib:?}");
    assert_eq!(view_from_events(&lab.seen, "bmp-loc-rib"), rib);
    assert_eq!(view_from_events(&lab.seen, "bmp-pre-policy"), adj_in);

    let stats = lab.wait_for("statistics report", |v| v["type"] == "statistics");
    assert!(
        stats["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == "adj_rib_in_routes" && s["value"] == 4),
        "GoBGP reports 4 Adj-RIB-In routes: {stats}"
    );

    change_and_withdraw(&mut lab, 65020, "bmp-pre-policy");
    lab.wait_for("Loc-RIB withdraw", |v| {
        is(v, "withdraw", "bmp-loc-rib", "198.19.3.0/24")
    });
    upstream_down(
        &mut lab,
        &[("bmp-pre-policy", Some(3)), ("bmp-post-policy", None)],
    );

    lab.stop_station();
    std::thread::sleep(Duration::from_millis(500));
    let pcap = lab.stop_capture();
    assert_station_sent_nothing(&pcap);
}
