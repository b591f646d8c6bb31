//! The network-namespace lab the interop tests (BIRD, FRR, GoBGP) and the RFC 7606 table share.
//!
//! Two namespaces, router side and listener side, joined by a veth pair, with 198.18.0.1/24 and
//! 2001:2::1/64 on the router side and 198.18.0.2/24 and 2001:2::2/64 on the listener side. The
//! addresses exist only inside the test's own namespaces; names carry the test's pid and a counter
//! so parallel tests (and other people's tests) never collide; everything the lab started is killed
//! and the namespaces are deleted on drop, also after a panic (then the capture is kept in /tmp
//! and the router logs are printed).
//!
//! Needs root, `iproute2` and `tcpdump`; each test asserts its router binary with `need()` so a
//! missing package fails with the package's name instead of skipping.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use foureyes_bgp_listener::wire::Framer;
use serde_json::Value;

pub const ROUTER_V4: &str = "198.18.0.1";
pub const LISTENER_V4: &str = "198.18.0.2";
pub const ROUTER_V6: &str = "2001:2::1";
pub const LISTENER_V6: &str = "2001:2::2";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The address family a session runs over (the TCP transport), independent of the families the
/// session carries: every interop test runs once per transport, each session carrying IPv4 and
/// IPv6 unicast together.
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    /// The router's end of the veth pair in this family.
    pub router: &'static str,
    /// The listener's end.
    pub listener: &'static str,
}

impl Transport {
    pub const V4: Transport = Transport {
        router: ROUTER_V4,
        listener: LISTENER_V4,
    };
    pub const V6: Transport = Transport {
        router: ROUTER_V6,
        listener: LISTENER_V6,
    };

    pub fn router_ip(self) -> IpAddr {
        ip(self.router)
    }

    pub fn listener_ip(self) -> IpAddr {
        ip(self.listener)
    }

    /// The arguments for a passive listener on this transport (the router id is given because an
    /// IPv6 listen address has no IPv4 address to take it from).
    pub fn passive_args(
        self,
        local_as: &'static str,
        remote_as: &'static str,
    ) -> Vec<&'static str> {
        vec![
            "--local-as",
            local_as,
            "--peer",
            self.router,
            "--remote-as",
            remote_as,
            "--listen",
            self.listener,
            "--router-id",
            LISTENER_V4,
        ]
    }

    /// The arguments for an active listener dialling the router on this transport.
    pub fn active_args(self, local_as: &'static str, remote_as: &'static str) -> Vec<&'static str> {
        vec![
            "--local-as",
            local_as,
            "--peer",
            self.router,
            "--remote-as",
            remote_as,
            "--connect",
            "--router-id",
            LISTENER_V4,
        ]
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The `foureyes-bgp-listener` binary next to the test binary (`cargo test` builds it).
pub fn listener_bin() -> PathBuf {
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

pub fn run(cmd: &[&str]) {
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

/// Asserts that `tool` is installed (on PATH or at an absolute path), naming the apt package.
pub fn need(tool: &str, package: &str) {
    let found = if tool.starts_with('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
    };
    assert!(found, "`{tool}` not found: apt-get install -y {package}");
}

/// Two namespaces, a veth pair, the processes started in them, and an optional tcpdump capture.
pub struct Lab {
    pub ns_router: String,
    pub ns_lst: String,
    pub veth_lst: String,
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
    tcpdump: Option<Child>,
    logs: Vec<PathBuf>,
}

impl Lab {
    /// `tag` (a few letters: "bird", "frr", "gb", "raw") goes into the namespace names.
    pub fn new(tag: &str) -> Lab {
        need("ip", "iproute2");
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lab = Lab {
            ns_router: format!("fe{tag}r{id}"),
            ns_lst: format!("fe{tag}l{id}"),
            veth_lst: format!("fel{id}"),
            dir: tempfile::tempdir().expect("tempdir"),
            children: Vec::new(),
            tcpdump: None,
            logs: Vec::new(),
        };
        let veth_router = format!("fer{id}");
        run(&["ip", "netns", "add", &lab.ns_router]);
        run(&["ip", "netns", "add", &lab.ns_lst]);
        run(&[
            "ip",
            "link",
            "add",
            &veth_router,
            "netns",
            &lab.ns_router,
            "type",
            "veth",
            "peer",
            "name",
            &lab.veth_lst,
            "netns",
            &lab.ns_lst,
        ]);
        for (ns, dev, v4, v6) in [
            (
                &lab.ns_router,
                &veth_router,
                "198.18.0.1/24",
                "2001:2::1/64",
            ),
            (&lab.ns_lst, &lab.veth_lst, "198.18.0.2/24", "2001:2::2/64"),
        ] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The lab's temporary directory (configs, sockets, logs, the capture).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A log file printed if the test fails.
    pub fn keep_log(&mut self, path: PathBuf) {
        self.logs.push(path);
    }

    /// `prog` in the router namespace (`ip netns exec` execs it, so the child's pid is `prog`'s).
    pub fn in_router(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_router]).arg(prog);
        c
    }

    /// Output of `prog args` run to completion in the router namespace.
    pub fn router_output(&self, prog: &str, args: &[&str]) -> String {
        let out = self
            .in_router(prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{prog} {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{prog} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running router process; it is killed on drop. Fails if it exits at once.
    /// Its stdout goes nowhere unless `cmd` says otherwise; stderr is the test's.
    pub fn spawn_router(&mut self, name: &str, mut cmd: Command) {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        std::thread::sleep(Duration::from_millis(300));
        if let Some(st) = child.try_wait().ok().flatten() {
            panic!("{name} exited at start ({st}); see its stderr above");
        }
        self.children.push((name.to_string(), child));
    }

    /// Starts tcpdump on the listener's veth (BGP port only) and waits until it captures.
    pub fn start_capture(&mut self) {
        need("tcpdump", "tcpdump");
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
    pub fn stop_capture(&mut self) -> Vec<u8> {
        if let Some(mut c) = self.tcpdump.take() {
            // tcpdump runs under `ip netns exec`, which execs it: the pid is tcpdump's own.
            sigint(&c);
            let _ = c.wait();
        }
        std::fs::read(self.path("cap.pcap")).expect("read capture")
    }

    /// The listener binary in the listener namespace.
    pub fn listener(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_lst])
            .arg(listener_bin())
            .args(args)
            .env("RUST_LOG", "info");
        c
    }

    /// Starts `watch --format jsonl` with `args`, its stdout read as JSON events.
    pub fn watch(&self, args: &[&str]) -> Watch {
        let mut all = vec!["watch", "--format", "jsonl"];
        all.extend_from_slice(args);
        let mut child = self
            .listener(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn listener");
        let events = Events::read(child.stdout.take().expect("stdout"));
        Watch {
            child: Proc(child),
            events,
        }
    }

    /// A TCP connection made from inside the router namespace (the test plays the router).
    pub fn connect_from_router(&self, to: SocketAddr, limit: Duration) -> TcpStream {
        let ns = self.ns_router.clone();
        std::thread::spawn(move || {
            enter_netns(&ns);
            let t0 = Instant::now();
            loop {
                match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                    Ok(s) => return s,
                    Err(e) if t0.elapsed() < limit => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => panic!("connect to {to} from {ns}: {e}"),
                }
            }
        })
        .join()
        .expect("connect thread")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let children = self
            .tcpdump
            .take()
            .into_iter()
            .chain(self.children.drain(..).map(|(_, c)| c));
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_router])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_lst])
            .status();
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("{}.pcap", self.ns_lst));
            if std::fs::copy(self.path("cap.pcap"), &keep).is_ok() {
                eprintln!("capture kept in {}", keep.display());
            }
            for log in &self.logs {
                if let Ok(text) = std::fs::read_to_string(log) {
                    let tail: Vec<&str> = text.lines().rev().take(80).collect();
                    eprintln!("--- {} (last lines) ---", log.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// Moves the calling thread into the named network namespace (`ip netns add` made it). Network
/// namespaces are per thread, so this leaves the rest of the test process where it was.
pub fn enter_netns(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns {ns}: {e}"));
}

pub fn sigint(child: &Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
}

/// A child process killed on drop (so a failing assertion never leaves a listener running).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// JSON lines from a listener's stdout, read on a thread, kept in arrival order.
pub struct Events {
    rx: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Events {
    pub fn read(stdout: std::process::ChildStdout) -> Events {
        let (tx, rx) = mpsc::channel::<Value>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Events {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first event at index `from` or later that matches, waiting up to `limit` for it.
    pub fn wait_from(
        &mut self,
        from: usize,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(v) = self.seen.iter().skip(from).find(|v| pred(v)) {
                return v.clone();
            }
            match self.rx.recv_timeout(limit.saturating_sub(t0.elapsed())) {
                Ok(v) => self.seen.push(v),
                Err(_) => panic!("timed out waiting for {what}; saw {:#?}", self.seen),
            }
        }
    }

    /// Like `wait_from(0, 60 s, ..)`.
    pub fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_from(0, Duration::from_secs(60), what, pred)
    }

    /// Reads whatever arrives within `d` (to check that something did NOT happen).
    pub fn settle(&mut self, d: Duration) {
        let t0 = Instant::now();
        while let Ok(v) = self.rx.recv_timeout(d.saturating_sub(t0.elapsed())) {
            self.seen.push(v);
        }
    }

    /// Reads until the listener's stdout closes (it exited).
    pub fn drain(&mut self, limit: Duration) {
        let t0 = Instant::now();
        loop {
            match self.rx.recv_timeout(limit.saturating_sub(t0.elapsed())) {
                Ok(v) => self.seen.push(v),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("listener output did not end"),
            }
        }
    }
}

/// A running `watch` and its events.
pub struct Watch {
    pub child: Proc,
    pub events: Events,
}

impl Watch {
    /// SIGINT (the listener sends a Cease), then waits for it to exit and reads the rest.
    pub fn stop(&mut self) -> ExitStatus {
        sigint(&self.child.0);
        let st = wait_with_timeout(&mut self.child.0, Duration::from_secs(20));
        self.events.drain(Duration::from_secs(5));
        st
    }
}

pub fn is(e: &Value, kind: &str, prefix: &str) -> bool {
    e["type"] == kind && e["prefix"] == prefix
}

pub fn parse_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn find<'a>(events: &'a [Value], kind: &str, prefix: &str) -> &'a Value {
    events
        .iter()
        .find(|e| is(e, kind, prefix))
        .unwrap_or_else(|| panic!("no {kind} for {prefix} in {events:#?}"))
}

/// Reassembles the TCP payload sent from `src` (IPv4 or IPv6 over Ethernet) in a pcap file.
pub fn tcp_stream_from(pcap: &[u8], src: IpAddr) -> Vec<u8> {
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
        if pkt.len() < 14 {
            continue;
        }
        let l3 = &pkt[14..];
        // (source, protocol, TCP segment)
        let (from, proto, tcp): (IpAddr, u8, &[u8]) = match [pkt[12], pkt[13]] {
            [0x08, 0x00] if l3.len() >= 20 => {
                let ihl = usize::from(l3[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([l3[2], l3[3]]));
                if l3.len() < total || total < ihl {
                    continue;
                }
                let s = Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]);
                (IpAddr::V4(s), l3[9], &l3[ihl..total])
            }
            [0x86, 0xdd] if l3.len() >= 40 => {
                let plen = usize::from(u16::from_be_bytes([l3[4], l3[5]]));
                if l3.len() < 40 + plen {
                    continue;
                }
                let mut s = [0u8; 16];
                s.copy_from_slice(&l3[8..24]);
                (IpAddr::V6(Ipv6Addr::from(s)), l3[6], &l3[40..40 + plen])
            }
            _ => continue,
        };
        if proto != 6 || from != src || tcp.len() < 20 {
            continue;
        }
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let doff = usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        if flags & 0x02 != 0 {
            isn = Some(seq.wrapping_add(1));
        }
        let payload = &tcp[doff.min(tcp.len())..];
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

/// BGP message types in a byte stream, framed with the listener's own framer.
pub fn message_types(stream: &[u8]) -> Vec<u8> {
    let mut f = Framer::new();
    f.push(stream);
    let mut types = Vec::new();
    while let Some(fr) = f.next_frame().expect("the bytes frame cleanly") {
        types.push(fr.kind);
    }
    assert_eq!(f.buffered(), 0, "no partial message at the end");
    types
}

/// The capture holds the router's UPDATEs and the listener sent only OPEN (first), KEEPALIVE and
/// NOTIFICATION. Returns the listener's message types.
pub fn assert_receive_only(pcap: &[u8], listener: IpAddr, router: IpAddr) -> Vec<u8> {
    let sent = message_types(&tcp_stream_from(pcap, listener));
    let received = message_types(&tcp_stream_from(pcap, router));
    assert!(
        received.contains(&2),
        "capture sanity: the router's UPDATEs are in it: {received:?}"
    );
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
    sent
}

/// The dual-stack change step every interop peer runs after `mark`: 198.19.1.0/24 changes AS path
/// (to `as_path`) and local-pref (200 to 300), 2001:2:0:a::/64 changes local-pref to 50, and
/// 198.19.3.0/24 and 2001:2:0:b::/64 are withdrawn.
pub fn assert_dual_stack_changes(events: &mut Events, mark: usize, as_path: &str) {
    let limit = Duration::from_secs(60);
    let ch = events.wait_from(mark, limit, "v4 change", |e| {
        is(e, "attribute_change", "198.19.1.0/24")
    });
    assert_eq!(
        ch["changed"],
        serde_json::json!(["as_path", "local_pref"]),
        "{ch}"
    );
    assert_eq!(ch["local_pref"], 300);
    assert_eq!(ch["as_path"], as_path);
    assert_eq!(ch["previous"]["local_pref"], 200);
    let ch6 = events.wait_from(mark, limit, "v6 change", |e| {
        is(e, "attribute_change", "2001:2:0:a::/64")
    });
    assert_eq!(ch6["changed"], serde_json::json!(["local_pref"]), "{ch6}");
    assert_eq!(ch6["local_pref"], 50);
    assert_withdrawn(events, mark);
}

/// 198.19.3.0/24 and 2001:2:0:b::/64 are withdrawn after `mark`.
pub fn assert_withdrawn(events: &mut Events, mark: usize) {
    let limit = Duration::from_secs(60);
    events.wait_from(mark, limit, "v4 withdraw", |e| {
        is(e, "withdraw", "198.19.3.0/24")
    });
    events.wait_from(mark, limit, "v6 withdraw", |e| {
        is(e, "withdraw", "2001:2:0:b::/64")
    });
}
