//! Executors across a real routed path: three network namespaces in a chain,
//!
//! ```text
//!   node 198.18.0.1/30 ── 198.18.0.2/30 router 198.18.0.5/30 ── 198.18.0.6/30 target
//! ```
//!
//! with forwarding on in the router, a `blackhole` route (198.18.1.0/24: silence, so TIMEOUT) and an
//! `unreachable` route (198.18.2.0/24: ICMP host unreachable, so UNREACHABLE) on the router, and
//! optional packet loss injected with nftables on the router. The node namespace routes only
//! 198.18.0.0/15 (no default route), so nothing can leave the namespaces.
//!
//! The executors run inside the node namespace through the `foureyes-node probe ... --json`
//! binary, which `cargo test` does not build: run `cargo build --bins` (or `-p foureyes-node`)
//! first, or point `FOUREYES_NODE_BIN` at it. Needs root, `ip` (iproute2) and `nft` (nftables).
//! Nothing here is skipped when something is missing: the test fails and says what to install.
//!
//! Servers inside a namespace and the datagram-ping check are this test binary re-executed under
//! `ip netns exec` running one of the `helper_*` tests, which are `#[ignore]`d so they only run
//! when asked for by name.
// The harness starts `ip`, `nft` and the node binary and serves targets inside namespaces.
#![allow(clippy::disallowed_methods)]
// The helper server signals readiness on stdout, which its parent reads.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const NODE: &str = "198.18.0.1";
const ROUTER_NODE_SIDE: &str = "198.18.0.2";
const ROUTER_TARGET_SIDE: &str = "198.18.0.5";
const TARGET: &str = "198.18.0.6";
const BLACKHOLED: &str = "198.18.1.1";
const UNREACHABLE: &str = "198.18.2.1";
// IPv6: the benchmarking prefix 2001:2::/48 (RFC 5180), the analogue of 198.18.0.0/15.
const NODE6: &str = "2001:2:0:1::1";
const ROUTER6_NODE_SIDE: &str = "2001:2:0:1::2";
const ROUTER6_TARGET_SIDE: &str = "2001:2:0:2::1";
const TARGET6: &str = "2001:2:0:2::2";
const HTTP_PORT: u16 = 8080;
const CLOSED_PORT: u16 = 8081;

// ------------------------------------------------------------------ helpers

fn require_tool(name: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is missing: install it (`apt-get install -y {package}`); this test does not skip"
    );
}

#[track_caller]
fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `run` for a command line without quoted arguments.
#[track_caller]
fn sh(line: &str) -> String {
    let parts: Vec<&str> = line.split_whitespace().collect();
    run(&parts)
}

/// The `foureyes-node` binary next to this test binary (`<target>/debug/deps/netns-*` →
/// `<target>/debug/foureyes-node`), or `FOUREYES_NODE_BIN`.
fn node_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FOUREYES_NODE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary has no grandparent dir");
    let bin = dir.join("foureyes-node");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --bins` first (or set FOUREYES_NODE_BIN)",
        bin.display()
    );
    bin
}

/// Three namespaces in a chain, deleted on drop (also when a test panics).
struct Chain {
    node: String,
    router: String,
    target: String,
    children: Vec<Child>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique_prefix(tag: &str) -> String {
    format!(
        "fe-p-{}-{}-{tag}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

impl Chain {
    fn new(tag: &str) -> Self {
        require_tool("ip", "iproute2");
        let p = unique_prefix(tag);
        let chain = Chain {
            node: format!("{p}-n"),
            router: format!("{p}-r"),
            target: format!("{p}-t"),
            children: Vec::new(),
        };
        // Created one by one so Drop removes whatever exists if a later step fails.
        let mut created = Vec::new();
        for ns in [&chain.node, &chain.router, &chain.target] {
            run(&["ip", "netns", "add", ns]);
            created.push(ns.clone());
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            // No duplicate address detection on the interfaces made below: tentative (link-local)
            // addresses make the first IPv6 probes fail or routers stay silent for a second or two.
            for scope in ["all", "default"] {
                sh(&format!(
                    "ip netns exec {ns} sysctl -qw net.ipv6.conf.{scope}.accept_dad=0"
                ));
            }
        }
        let (n, r, t) = (&chain.node, &chain.router, &chain.target);
        // veth pairs created inside the namespaces: no interface ever appears in the host's.
        sh(&format!(
            "ip -n {n} link add n0 type veth peer name r0 netns {r}"
        ));
        sh(&format!(
            "ip -n {r} link add r1 type veth peer name t0 netns {t}"
        ));
        sh(&format!("ip -n {n} addr add {NODE}/30 dev n0"));
        sh(&format!("ip -n {r} addr add {ROUTER_NODE_SIDE}/30 dev r0"));
        sh(&format!(
            "ip -n {r} addr add {ROUTER_TARGET_SIDE}/30 dev r1"
        ));
        sh(&format!("ip -n {t} addr add {TARGET}/30 dev t0"));
        // nodad: usable at once instead of after duplicate address detection.
        sh(&format!("ip -n {n} addr add {NODE6}/64 dev n0 nodad"));
        sh(&format!(
            "ip -n {r} addr add {ROUTER6_NODE_SIDE}/64 dev r0 nodad"
        ));
        sh(&format!(
            "ip -n {r} addr add {ROUTER6_TARGET_SIDE}/64 dev r1 nodad"
        ));
        sh(&format!("ip -n {t} addr add {TARGET6}/64 dev t0 nodad"));
        for (ns, dev) in [(n, "n0"), (r, "r0"), (r, "r1"), (t, "t0")] {
            sh(&format!("ip -n {ns} link set {dev} up"));
        }
        // Only the lab prefix is routed: no default route, nothing can leave the namespaces.
        sh(&format!(
            "ip -n {n} route add 198.18.0.0/15 via {ROUTER_NODE_SIDE}"
        ));
        sh(&format!(
            "ip -n {t} route add 198.18.0.0/15 via {ROUTER_TARGET_SIDE}"
        ));
        sh(&format!(
            "ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1"
        ));
        sh(&format!(
            "ip -n {n} -6 route add 2001:2::/48 via {ROUTER6_NODE_SIDE}"
        ));
        sh(&format!(
            "ip -n {t} -6 route add 2001:2::/48 via {ROUTER6_TARGET_SIDE}"
        ));
        sh(&format!(
            "ip netns exec {r} sysctl -qw net.ipv6.conf.all.forwarding=1"
        ));
        // ICMPv6 errors have one limiter, tunable: off, so traceroute hops never go silent.
        sh(&format!(
            "ip netns exec {r} sysctl -qw net.ipv6.icmp.ratelimit=0"
        ));
        sh(&format!("ip -n {r} route add blackhole 198.18.1.0/24"));
        sh(&format!("ip -n {r} route add unreachable 198.18.2.0/24"));
        // Linux rate-limits "no route" ICMP errors per source twice, on one shared token bucket:
        // in ip_error (burst 5, then 1/s, not tunable) and in icmp_send (icmp_ratelimit). Take
        // destination unreachable out of icmp_send's limiter (default mask 6168 minus bit 3) so
        // each error costs one token; tests stay at or under 5 errors per chain.
        sh(&format!(
            "ip netns exec {r} sysctl -qw net.ipv4.icmp_ratemask=6160"
        ));
        chain
    }

    /// Drops `percent` % of the packets the router forwards towards the target (one direction
    /// only, so an echo's loss is that share, not 1 - (1 - p)²).
    fn inject_loss(&self, percent: u32) {
        require_tool("nft", "nftables");
        let script = format!(
            "table inet fe {{\n  chain forward_loss {{\n    type filter hook forward priority 0; policy accept;\n    \
             oifname \"r1\" numgen random mod 100 < {percent} drop\n  }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.router, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write nft script");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `foureyes-node probe ARGS --json` inside the node namespace, parsed.
    fn probe(&self, args: &[&str]) -> Value {
        let bin = node_bin();
        let bin = bin.to_str().expect("utf-8 path");
        let mut cmd = vec!["ip", "netns", "exec", &self.node, bin, "probe"];
        cmd.extend_from_slice(args);
        cmd.push("--json");
        let out = run(&cmd);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
    }

    /// This test binary's `helper_http_server` listening in the target namespace.
    fn serve_http_in_target(&mut self) {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.target])
            .arg(exe)
            .args(["--exact", "helper_http_server", "--ignored", "--nocapture"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn helper server");
        let stdout = child.stdout.take().expect("stdout");
        self.children.push(child);
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "helper server never got ready");
            match lines.next() {
                Some(Ok(l)) if l.contains("FE-READY") => break,
                Some(Ok(_)) => {}
                _ => panic!("helper server exited before getting ready"),
            }
        }
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.node, &self.router, &self.target] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("STATUS_UNSPECIFIED")
}

#[track_caller]
fn assert_status(v: &Value, want: &str) {
    assert_eq!(status(v), want, "unexpected result: {v:#}");
}

// ------------------------------------------------------------------ tests

#[test]
fn traceroute_lists_router_then_target() {
    let chain = Chain::new("tr");
    for extra in [&[][..], &["--udp"][..]] {
        let mut args = vec![
            "traceroute",
            TARGET,
            "--timeout-ms",
            "1000",
            "--max-hops",
            "5",
        ];
        args.extend_from_slice(extra);
        let v = chain.probe(&args);
        assert_status(&v, "STATUS_OK");
        let tr = &v["traceroute"];
        assert_eq!(tr["reached"], true, "{v:#}");
        let hops = tr["hops"].as_array().expect("hops");
        let addrs: Vec<&str> = hops
            .iter()
            .map(|h| h["address"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(addrs, [ROUTER_NODE_SIDE, TARGET], "{extra:?}: {v:#}");
        for (i, h) in hops.iter().enumerate() {
            assert_eq!(h["ttl"].as_u64(), Some(i as u64 + 1));
            assert_eq!(h["rttMs"].as_array().map(Vec::len), Some(3), "{v:#}");
        }
    }
}

#[test]
fn ipv6_traceroute_and_echo_across_the_router() {
    let chain = Chain::new("v6");
    // Neighbour discovery on fresh veths takes a moment; the first probes may vanish while it
    // settles. Wait (bounded) until the target answers, then measure.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&chain.probe(&["icmp", TARGET6, "--count", "1", "--timeout-ms", "300"]))
        != "STATUS_OK"
    {
        assert!(Instant::now() < deadline, "IPv6 path never came up");
    }
    for extra in [&[][..], &["--udp"][..]] {
        let mut args = vec![
            "traceroute",
            TARGET6,
            "--timeout-ms",
            "1000",
            "--max-hops",
            "5",
        ];
        args.extend_from_slice(extra);
        let v = chain.probe(&args);
        assert_status(&v, "STATUS_OK");
        let hops = v["traceroute"]["hops"].as_array().expect("hops");
        let addrs: Vec<&str> = hops
            .iter()
            .map(|h| h["address"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(addrs, [ROUTER6_NODE_SIDE, TARGET6], "{extra:?}: {v:#}");
    }
    let v = chain.probe(&["icmp", TARGET6, "--count", "5"]);
    assert_status(&v, "STATUS_OK");
    assert_eq!(v["icmp"]["received"].as_u64(), Some(5), "{v:#}");
}

#[test]
fn icmp_loss_injected_on_router() {
    let chain = Chain::new("loss");
    // Clean path first: the loss seen below is the router's doing.
    let clean = chain.probe(&["icmp", TARGET, "--count", "20"]);
    assert_status(&clean, "STATUS_OK");

    chain.inject_loss(10);
    // 10 % drop, 200 echoes: mean 20 lost, sd ~4.2, so 5–15 % is ±2.4 sd and one honest run
    // falls outside about 1.5 % of the time. Up to three runs must each look like ~10 % loss
    // (2–25 %, which a broken loss count fails), and one of them must land in 5–15 %: a correct
    // executor fails that about three times in a million, never 1.5 % of CI runs.
    let mut v = serde_json::Value::Null;
    let mut losses = Vec::new();
    for _ in 0..3 {
        v = chain.probe(&["icmp", TARGET, "--count", "200", "--timeout-ms", "1000"]);
        let loss = v["loss"].as_f64().unwrap_or(0.0);
        assert_eq!(v["icmp"]["sent"].as_u64(), Some(200));
        assert!(
            (0.02..=0.25).contains(&loss),
            "loss {loss} is not ~10 %: {v:#}"
        );
        assert_status(&v, "STATUS_DEGRADED");
        losses.push(loss);
        if (0.05..=0.15).contains(&loss) {
            break;
        }
    }
    assert!(
        losses.iter().any(|l| (0.05..=0.15).contains(l)),
        "no run within 5-15 % loss: {losses:?}"
    );
    let icmp = &v["icmp"];
    let received = icmp["received"].as_u64().unwrap_or(0);
    assert_eq!(
        icmp["rttMs"].as_array().map(Vec::len),
        Some(received as usize)
    );
}

#[test]
fn error_kinds_across_the_router() {
    let mut chain = Chain::new("err");
    chain.serve_http_in_target();
    let http_port = HTTP_PORT.to_string();
    let closed = CLOSED_PORT.to_string();

    // Reachable.
    assert_status(&chain.probe(&["tcp", TARGET, &http_port]), "STATUS_OK");
    let v = chain.probe(&["http", &format!("http://{TARGET}:{HTTP_PORT}/")]);
    assert_status(&v, "STATUS_OK");
    assert_eq!(v["http"]["statusCode"].as_u64(), Some(200), "{v:#}");
    assert_status(&chain.probe(&["icmp", TARGET, "--count", "3"]), "STATUS_OK");

    // Closed port on the target: RST.
    assert_status(&chain.probe(&["tcp", TARGET, &closed]), "STATUS_REFUSED");
    let v = chain.probe(&["http", &format!("http://{TARGET}:{CLOSED_PORT}/")]);
    assert_status(&v, "STATUS_REFUSED");

    // Blackholed on the router: silence.
    let t = ["--timeout-ms", "600"];
    let mut args = vec!["tcp", BLACKHOLED, "80"];
    args.extend_from_slice(&t);
    assert_status(&chain.probe(&args), "STATUS_TIMEOUT");
    let url = format!("http://{BLACKHOLED}/");
    let mut args = vec!["http", &url];
    args.extend_from_slice(&t);
    assert_status(&chain.probe(&args), "STATUS_TIMEOUT");
    let mut args = vec!["icmp", BLACKHOLED, "--count", "2"];
    args.extend_from_slice(&t);
    assert_status(&chain.probe(&args), "STATUS_TIMEOUT");

    // `unreachable` route on the router: ICMP host unreachable. At most 5 errors in total: see
    // the rate-limit note in `Chain::new`.
    let v = chain.probe(&["tcp", UNREACHABLE, "80"]);
    assert_status(&v, "STATUS_UNREACHABLE");
    let v = chain.probe(&["http", &format!("http://{UNREACHABLE}/")]);
    assert_status(&v, "STATUS_UNREACHABLE");
    let v = chain.probe(&["icmp", UNREACHABLE, "--count", "2"]);
    assert_status(&v, "STATUS_UNREACHABLE");
    assert!(
        v["error"].as_str().unwrap_or("").contains(ROUTER_NODE_SIDE),
        "the error names who said so: {v:#}"
    );

    // No route to the resolver from inside the namespace: a name fails to resolve locally.
    let v = chain.probe(&[
        "tcp",
        "fe-no-such-host.invalid",
        "80",
        "--timeout-ms",
        "1500",
    ]);
    assert_status(&v, "STATUS_DNS_FAILURE");
}

#[test]
fn icmp_datagram_socket_in_namespace() {
    require_tool("ip", "iproute2");
    let ns = format!("{}-d", unique_prefix("dgram"));
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    run(&["ip", "netns", "add", &ns]);
    let _guard = Ns(ns.clone());
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    run(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "sysctl",
        "-qw",
        "net.ipv4.ping_group_range=0 2147483647",
    ]);
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args(["--exact", "helper_dgram_ping", "--ignored", "--nocapture"])
        .output()
        .expect("run helper");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

// ------------------------------------------------------------------ helpers run by name

/// Runs inside a namespace whose ping_group_range is open: echo runs must take the datagram path.
#[test]
#[ignore = "helper: run by icmp_datagram_socket_in_namespace inside its namespace"]
fn helper_dgram_ping() {
    use foureyes_probes::icmp::{SocketKind, available_kind};
    use foureyes_proto::v1::{IcmpConfig, ProbeConfig, Status, Test, probe_config::Kind};
    assert_eq!(available_kind(false).expect("v4"), SocketKind::Datagram);
    assert_eq!(available_kind(true).expect("v6"), SocketKind::Datagram);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for host in ["127.0.0.1", "::1"] {
        let test = Test {
            id: "dgram".into(),
            count: 10,
            config: Some(ProbeConfig {
                kind: Some(Kind::Icmp(IcmpConfig {
                    host: host.into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        let r = rt.block_on(foureyes_probes::run_test(&test));
        assert_eq!(r.status(), Status::Ok, "{host}: {r:?}");
        let Some(foureyes_proto::v1::probe_result::Detail::Icmp(d)) = &r.detail else {
            panic!("no detail")
        };
        assert_eq!((d.sent, d.received), (10, 10), "{host}: {d:?}");
    }
}

/// A minimal HTTP server for the target namespace; stops by itself after 60 s.
#[test]
#[ignore = "helper: run by error_kinds_across_the_router inside the target namespace"]
fn helper_http_server() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind(("0.0.0.0", HTTP_PORT)).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    println!("FE-READY");
    let stop = Instant::now() + Duration::from_secs(60);
    while Instant::now() < stop {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
