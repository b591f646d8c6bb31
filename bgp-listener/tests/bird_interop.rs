//! Interop with a real BIRD 2 peer, in two network namespaces joined by a veth pair.
//!
//! Needs root, `bird2` and `tcpdump` (Debian packages) and the built binary (`cargo build --bins`,
//! which `cargo test` does for integration tests). Addresses are in 198.18.0.0/15 and 2001:2::/48
//! and live only inside the test's own namespaces; names carry the test's pid and a counter, and
//! everything is torn down on drop, also after a panic.
//!
//! Receive-only proof: tcpdump captures the listener's side of the veth; the test reassembles the
//! listener→BIRD TCP stream, frames it with the listener's own framer, and asserts it holds only
//! message types 1, 3 and 4 (BIRD's counters count routes, not messages, so the capture is the
//! proof for BIRD, as issue 4 says).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use foureyes_bgp_listener::wire::Framer;
use serde_json::Value;

const BIRD_V4: &str = "198.18.0.1";
const LISTENER_V4: &str = "198.18.0.2";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn listener_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/debug/deps");
    let bin = dir.join("foureyes-bgp-listener");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` first",
        bin.display()
    );
    bin
}

fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false);
    assert!(found, "`{tool}` not found: apt-get install -y {package}");
}

/// Whether a static-route line announces an IPv6 (`v6`) or IPv4 prefix.
fn is_route(line: &str, v6: bool) -> bool {
    let mut words = line.split_whitespace();
    words.next() == Some("route") && words.next().is_some_and(|p| p.contains(':') == v6)
}

/// Two namespaces (BIRD side, listener side), a veth pair, BIRD, tcpdump; all removed on drop.
struct Lab {
    ns_bird: String,
    ns_lst: String,
    veth_lst: String,
    dir: tempfile::TempDir,
    bird: Option<Child>,
    tcpdump: Option<Child>,
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
            ns_bird: format!("febird{id}"),
            ns_lst: format!("felst{id}"),
            veth_lst: format!("fel{id}"),
            dir: tempfile::tempdir().expect("tempdir"),
            bird: None,
            tcpdump: None,
        };
        let veth_bird = format!("feb{id}");
        run(&["ip", "netns", "add", &lab.ns_bird]);
        run(&["ip", "netns", "add", &lab.ns_lst]);
        run(&[
            "ip",
            "link",
            "add",
            &veth_bird,
            "netns",
            &lab.ns_bird,
            "type",
            "veth",
            "peer",
            "name",
            &lab.veth_lst,
            "netns",
            &lab.ns_lst,
        ]);
        for (ns, dev, v4, v6) in [
            (&lab.ns_bird, &veth_bird, "198.18.0.1/24", "2001:2::1/64"),
            (&lab.ns_lst, &lab.veth_lst, "198.18.0.2/24", "2001:2::2/64"),
        ] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_bird_conf(&self, routes: &str, passive: bool) {
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
    neighbor {LISTENER_V4} as 65002;
    {passive}
    hold time 30;
    connect retry time 1;
    ipv4 {{ import all; export all; add paths tx; }};
    ipv6 {{ import all; export all; next hop address 2001:2::1; }};
}}
"#,
            log = self.path("bird.log").display(),
            routes4 = routes
                .lines()
                .filter(|l| is_route(l, false))
                .collect::<Vec<_>>()
                .join("\n"),
            routes6 = routes
                .lines()
                .filter(|l| is_route(l, true))
                .collect::<Vec<_>>()
                .join("\n"),
            passive = if passive { "passive on;" } else { "" },
        );
        std::fs::write(self.path("bird.conf"), conf).expect("write bird.conf");
    }

    fn start_bird(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_bird, "bird", "-f", "-c"])
            .arg(self.path("bird.conf"))
            .arg("-s")
            .arg(self.path("bird.ctl"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bird");
        self.bird = Some(child);
        std::thread::sleep(Duration::from_millis(200));
        if let Some(st) = self.bird.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!("bird exited at start ({st}); see its stderr above");
        }
    }

    fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_bird, "birdc", "-s"])
            .arg(self.path("bird.ctl"))
            .args(args)
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start_capture(&mut self) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_lst,
                "tcpdump",
                "-i",
                &self.veth_lst,
                "-U",
                "--immediate-mode",
                "-n",
                "-s",
                "0",
                "-w",
            ])
            .arg(self.path("cap.pcap"))
            .arg("tcp port 179")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        self.tcpdump = Some(child);
        // tcpdump says "listening on ..." once the capture is live.
        let stderr = self
            .tcpdump
            .as_mut()
            .and_then(|c| c.stderr.take())
            .expect("stderr");
        let mut line = String::new();
        let _ = BufReader::new(stderr).read_line(&mut line);
        assert!(line.contains("listening"), "tcpdump: {line}");
    }

    /// Stops tcpdump and returns the pcap bytes.
    fn stop_capture(&mut self) -> Vec<u8> {
        if let Some(mut c) = self.tcpdump.take() {
            // tcpdump runs under `ip netns exec`, which execs it: the pid is tcpdump's own.
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        std::fs::read(self.path("cap.pcap")).expect("read capture")
    }

    fn listener(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_lst])
            .arg(listener_bin())
            .args(args)
            .env("RUST_LOG", "info");
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in [self.tcpdump.take(), self.bird.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_bird])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_lst])
            .status();
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("{}.pcap", self.ns_lst));
            if std::fs::copy(self.path("cap.pcap"), &keep).is_ok() {
                eprintln!("capture kept in {}", keep.display());
            }
            if let Ok(log) = std::fs::read_to_string(self.path("bird.log")) {
                eprintln!("--- bird.log ---\n{log}");
            }
        }
    }
}

/// Reassembles the TCP payload sent from `src` (IPv4, Ethernet link type) in a pcap file.
fn tcp_stream_from(pcap: &[u8], src: [u8; 4]) -> Vec<u8> {
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
    assert_eq!(rd32(&pcap[20..24]), 1, "link type Ethernet");
    let mut segs: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut isn: Option<u32> = None;
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
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[9] != 6 || ip[12..16] != src || ip.len() < total {
            continue;
        }
        let tcp = &ip[ihl..total];
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let doff = usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        if flags & 0x02 != 0 {
            isn = Some(seq.wrapping_add(1));
        }
        let payload = &tcp[doff..];
        if !payload.is_empty() {
            segs.push((seq, payload.to_vec()));
        }
    }
    let start = isn.expect("the capture holds the listener's SYN or SYN-ACK");
    segs.sort_by_key(|(s, _)| s.wrapping_sub(start));
    let mut stream = Vec::new();
    for (seq, p) in segs {
        let rel = seq.wrapping_sub(start) as usize;
        if rel + p.len() <= stream.len() {
            continue; // retransmission
        }
        assert!(rel <= stream.len(), "gap in the captured stream");
        stream.extend_from_slice(&p[stream.len() - rel..]);
    }
    stream
}

fn message_types(stream: &[u8]) -> Vec<u8> {
    let mut f = Framer::new();
    f.push(stream);
    let mut types = Vec::new();
    while let Some(fr) = f.next_frame().expect("the listener's bytes frame cleanly") {
        types.push(fr.kind);
    }
    assert_eq!(f.buffered(), 0, "no partial message at the end");
    types
}

fn assert_receive_only(pcap: &[u8]) {
    let sent = message_types(&tcp_stream_from(pcap, [198, 18, 0, 2]));
    let received = message_types(&tcp_stream_from(pcap, [198, 18, 0, 1]));
    assert!(
        received.contains(&2),
        "capture sanity: BIRD's UPDATEs are in it: {received:?}"
    );
    assert!(!sent.is_empty());
    assert_eq!(
        sent.first(),
        Some(&1),
        "the listener starts with OPEN: {sent:?}"
    );
    assert!(sent.contains(&4), "and sends KEEPALIVE: {sent:?}");
    assert!(
        sent.iter().all(|t| matches!(t, 1 | 3 | 4)),
        "the listener sent something other than OPEN/NOTIFICATION/KEEPALIVE: {sent:?}"
    );
}

const ROUTES: &str = r#"
    route 198.19.1.0/24 blackhole { bgp_community.add((65001,100)); bgp_large_community.add((65001,1,2)); };
    route 198.19.2.0/24 blackhole { bgp_community.add((65001,200)); };
    route 198.19.3.0/24 blackhole;
    route 2001:2:0:a::/64 blackhole { bgp_community.add((65001,600)); };
    route 2001:2:0:b::/64 blackhole;
"#;

fn parse_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn find<'a>(events: &'a [Value], kind: &str, prefix: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == kind && e["prefix"] == prefix)
        .unwrap_or_else(|| panic!("no {kind} for {prefix} in {events:#?}"))
}

/// A child process killed on drop (so a failing assertion never leaves a listener running).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("listener did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bird_passive_session_exit_on_eor_ipv4_ipv6_and_receive_only_capture() {
    let mut lab = Lab::new();
    lab.write_bird_conf(ROUTES, false);
    lab.start_capture();
    let mut child = lab
        .listener(&[
            "watch",
            "--local-as",
            "65002",
            "--peer",
            BIRD_V4,
            "--remote-as",
            "65001",
            "--listen",
            "198.18.0.2:179",
            "--format",
            "jsonl",
            "--exit-on-eor",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Proc)
        .expect("spawn listener");
    let child = &mut child.0;
    // Give the listener a moment to bind before BIRD dials.
    std::thread::sleep(Duration::from_millis(300));
    lab.start_bird();
    let status = wait_with_timeout(child, Duration::from_secs(60));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    assert!(
        status.success(),
        "listener exited with {status}; output:\n{out}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    let pcap = lab.stop_capture();

    let events = parse_lines(&out);
    let est = events
        .iter()
        .find(|e| e["type"] == "session_established")
        .expect("established");
    assert_eq!(est["peer_as"], 65001);
    assert_eq!(
        est["families"],
        serde_json::json!(["ipv4-unicast", "ipv6-unicast"])
    );
    assert_eq!(est["graceful_restart"], true);
    assert_eq!(est["four_octet_as"], true);
    assert_eq!(
        est["add_path"],
        serde_json::json!(["ipv4-unicast"]),
        "BIRD sends paths for v4 only"
    );

    let a = find(&events, "announce", "198.19.1.0/24");
    assert_eq!(a["peer"], BIRD_V4);
    assert_eq!(a["afi_safi"], "ipv4-unicast");
    assert_eq!(a["as_path"], "65001");
    assert_eq!(a["next_hop"], BIRD_V4);
    assert_eq!(a["communities"], serde_json::json!(["65001:100"]));
    assert_eq!(a["large_communities"], serde_json::json!(["65001:1:2"]));
    assert!(
        a["path_id"].as_u64().is_some(),
        "ADD-PATH: v4 events carry BIRD's path id: {a}"
    );
    assert!(a["received"].as_str().is_some_and(|s| s.starts_with("20")));
    assert_eq!(
        find(&events, "announce", "198.19.2.0/24")["communities"],
        serde_json::json!(["65001:200"])
    );
    find(&events, "announce", "198.19.3.0/24");
    let v6 = find(&events, "announce", "2001:2:0:a::/64");
    assert_eq!(v6["afi_safi"], "ipv6-unicast");
    assert_eq!(v6["communities"], serde_json::json!(["65001:600"]));
    assert_eq!(v6["next_hop"], "2001:2::1");
    assert!(v6["path_id"].is_null(), "no ADD-PATH for v6: {v6}");
    find(&events, "announce", "2001:2:0:b::/64");
    for fam in ["ipv4-unicast", "ipv6-unicast"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "end_of_rib" && e["afi_safi"] == fam),
            "End-of-RIB for {fam}"
        );
    }
    let last = events.last().expect("output");
    assert_eq!(last["type"], "transfer_complete", "last line: {last}");
    assert_eq!(last["rule"], "end-of-rib");
    assert_eq!(
        last["prefixes"],
        serde_json::json!({"ipv4-unicast": 3, "ipv6-unicast": 2})
    );
    assert!(
        last["seconds_established_to_last_eor"]
            .as_f64()
            .is_some_and(|s| (0.0..30.0).contains(&s))
    );

    assert_receive_only(&pcap);
    let sent = message_types(&tcp_stream_from(&pcap, [198, 18, 0, 2]));
    assert_eq!(
        sent.last(),
        Some(&3),
        "the listener ends with a Cease NOTIFICATION: {sent:?}"
    );
}

#[test]
fn bird_active_session_sees_change_and_withdraw_and_stays_receive_only() {
    let mut lab = Lab::new();
    lab.write_bird_conf(ROUTES, true);
    lab.start_bird();
    lab.start_capture();
    let mut child = lab
        .listener(&[
            "watch",
            "--local-as",
            "65002",
            "--peer",
            BIRD_V4,
            "--remote-as",
            "65001",
            "--connect",
            "--router-id",
            "198.18.0.2",
            "--format",
            "jsonl",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Proc)
        .expect("spawn listener");
    let child = &mut child.0;
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |pred: &dyn Fn(&Value) -> bool, what: &str| {
        let t0 = Instant::now();
        loop {
            if seen.iter().any(pred) {
                return;
            }
            match rx.recv_timeout(Duration::from_secs(30).saturating_sub(t0.elapsed())) {
                Ok(v) => seen.push(v),
                Err(_) => panic!("timed out waiting for {what}; saw {seen:#?}"),
            }
        }
    };
    wait_for(
        &|e| e["type"] == "end_of_rib" && e["afi_safi"] == "ipv6-unicast",
        "End-of-RIB v6",
    );
    wait_for(
        &|e| e["type"] == "end_of_rib" && e["afi_safi"] == "ipv4-unicast",
        "End-of-RIB v4",
    );

    // Change a community and drop a prefix, then reconfigure BIRD.
    let changed = ROUTES
        .replace(
            "bgp_community.add((65001,200));",
            "bgp_community.add((65001,201));",
        )
        .replace("    route 198.19.3.0/24 blackhole;\n", "");
    lab.write_bird_conf(&changed, true);
    let reply = lab.birdc(&["configure"]);
    assert!(
        reply.contains("Reconfigured") || reply.contains("reconfigured"),
        "birdc: {reply}"
    );
    wait_for(
        &|e| e["type"] == "withdraw" && e["prefix"] == "198.19.3.0/24",
        "withdraw",
    );
    wait_for(
        &|e| e["type"] == "attribute_change" && e["prefix"] == "198.19.2.0/24",
        "attribute change",
    );
    let ch = seen
        .iter()
        .find(|e| e["type"] == "attribute_change")
        .expect("change");
    assert_eq!(ch["changed"], serde_json::json!(["communities"]));
    assert_eq!(ch["communities"], serde_json::json!(["65001:201"]));
    assert_eq!(
        ch["previous"]["communities"],
        serde_json::json!(["65001:200"])
    );

    // SIGINT: the listener sends Cease and exits.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = wait_with_timeout(child, Duration::from_secs(10));
    assert!(status.success(), "listener exit: {status}");
    let _ = reader.join();
    std::thread::sleep(Duration::from_millis(1000));
    let proto = lab.birdc(&["show", "protocols", "all", "fe"]);
    let pcap = lab.stop_capture();
    assert_receive_only(&pcap);
    // BIRD's view agrees that nothing was imported from the listener.
    assert!(
        proto
            .lines()
            .all(|l| !l.trim_start().starts_with("Routes:") || l.contains(" 0 imported")),
        "BIRD imported routes from the listener:\n{proto}"
    );
}

/// With graceful restart not advertised, BIRD 2.0.12 still sends End-of-RIB (RFC 4724 lets a
/// speaker send it to any peer), so the End-of-RIB rule ends the transfer even though the listener
/// did not ask for it; the quiet-period rule is covered by `watch_loopback.rs`.
#[test]
fn bird_sends_end_of_rib_even_without_graceful_restart() {
    let mut lab = Lab::new();
    lab.write_bird_conf(ROUTES, false);
    let mut child = lab
        .listener(&[
            "watch",
            "--local-as",
            "65002",
            "--peer",
            BIRD_V4,
            "--remote-as",
            "65001",
            "--listen",
            "198.18.0.2",
            "--format",
            "jsonl",
            "--exit-on-eor",
            "--no-graceful-restart",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Proc)
        .expect("spawn listener");
    let child = &mut child.0;
    std::thread::sleep(Duration::from_millis(300));
    lab.start_bird();
    let status = wait_with_timeout(child, Duration::from_secs(60));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    assert!(
        status.success(),
        "listener exited with {status}; output:\n{out}"
    );
    let events = parse_lines(&out);
    let est = events
        .iter()
        .find(|e| e["type"] == "session_established")
        .expect("established");
    assert_eq!(est["graceful_restart"], false);
    let last = events.last().expect("output");
    assert_eq!(last["type"], "transfer_complete");
    assert_eq!(last["rule"], "end-of-rib", "{last}");
    assert_eq!(
        events.iter().filter(|e| e["type"] == "end_of_rib").count(),
        2
    );
    assert_eq!(
        last["prefixes"],
        serde_json::json!({"ipv4-unicast": 3, "ipv6-unicast": 2})
    );
}
