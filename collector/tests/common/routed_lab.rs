//! A routed testbed: forwarding that follows BGP.
//!
//! ```text
//!  root namespace                 router namespace (FRR zebra + bgpd)      upstream namespace (BIRD)
//!  collector, node, listener      AS 65001                                AS 65010
//!  198.19.N.2 ───── veth ───── 198.19.N.1      198.19.N+1.1 ───── veth ───── 198.19.N+1.2
//!                                                                         targets on lo: 198.19.T.0/24
//! ```
//!
//! A traceroute from the root namespace to a target answers from the router's address on the
//! root link (hop 1, in [`RoutedLab::link_prefix`]) and then from the target (hop 2); the
//! upstream can announce the link prefix too ([`route_with_path`]), so both hops map to ASes in
//! the listener's table.
//!
//! The root namespace reaches the targets' /24 through the router (a static route, like a
//! default gateway). The router learns the targets' prefixes over BGP from the upstream and zebra
//! installs them in its kernel table, so withdrawing a prefix upstream makes the router drop the
//! node's probes: nothing is removed by hand. The router also peers with the listener (passive,
//! in the root namespace) and sends it what it learned.
//!
//! zebra runs as Debian's `frr` user (it refuses root without the `frrvty` group), so the lab's
//! directory is made world-writable; bgpd runs as root (`-S`) and reaches zebra over a socket in
//! that directory, so parallel labs never share a path.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use super::bird::{need, sh};

const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";

pub fn need_file(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "`{path}` not found: apt-get install -y {package}"
    );
}

pub struct RoutedLab {
    pub router_ns: String,
    pub upstream_ns: String,
    veth_root: String,
    dir: PathBuf,
    /// Third octet of the root–router link; the router–upstream link is `net + 1`.
    pub net: u8,
    /// Third octet of the targets' /24.
    pub targets: u8,
    children: Vec<Child>,
    /// Set before [`RoutedLab::start`]: bgpd loads its `bmp` module and streams BMP (IPv4
    /// unicast, pre- and post-policy) to this station `(address, port)`, and originates the
    /// root link's prefix itself, so the listener's direct session holds a route that does not
    /// come from the upstream.
    pub bmp_station: Option<(String, u16)>,
}

impl RoutedLab {
    /// Builds the namespaces and links; routers are started by [`RoutedLab::start`].
    pub fn new(dir: &Path, net: u8, targets: u8) -> Self {
        need("ip", "iproute2");
        need("bird", "bird2");
        need("birdc", "bird2");
        need("vtysh", "frr");
        need_file(ZEBRA, "frr");
        need_file(BGPD, "frr");
        let id = (std::process::id() % 10_000) * 100 + u32::from(net);
        let dir = dir.join(format!("routed{net}"));
        std::fs::create_dir_all(&dir).unwrap();
        // zebra runs as `frr` and writes its pid, socket and log here.
        sh(&["chmod", "0777", dir.to_str().unwrap()]);
        let lab = RoutedLab {
            router_ns: format!("ferr{id}"),
            upstream_ns: format!("feru{id}"),
            veth_root: format!("fert{id}"),
            dir,
            net,
            targets,
            children: Vec::new(),
            bmp_station: None,
        };
        let (r, u) = (&lab.router_ns, &lab.upstream_ns);
        let (vr, vu, vru) = (
            format!("fertr{id}"),
            format!("fertu{id}"),
            format!("fertx{id}"),
        );
        for ns in [r, u] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &lab.veth_root])
            .output();
        sh(&["ip", "netns", "add", r]);
        sh(&["ip", "netns", "add", u]);
        sh(&[
            "ip",
            "link",
            "add",
            &lab.veth_root,
            "type",
            "veth",
            "peer",
            "name",
            &vr,
            "netns",
            r,
        ]);
        sh(&[
            "ip", "-n", r, "link", "add", &vru, "type", "veth", "peer", "name", &vu, "netns", u,
        ]);
        let (n, n1) = (net, net + 1);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("198.19.{n}.2/24"),
            "dev",
            &lab.veth_root,
        ]);
        sh(&["ip", "link", "set", &lab.veth_root, "up"]);
        for (ns, dev, addr) in [
            (r, &vr, format!("198.19.{n}.1/24")),
            (r, &vru, format!("198.19.{n1}.1/24")),
            (u, &vu, format!("198.19.{n1}.2/24")),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        for ns in [r, u] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for h in [1, 2] {
            sh(&[
                "ip",
                "-n",
                u,
                "addr",
                "add",
                &format!("198.19.{targets}.{h}/32"),
                "dev",
                "lo",
            ]);
        }
        sh(&[
            "ip",
            "-n",
            u,
            "route",
            "add",
            "default",
            "via",
            &format!("198.19.{n1}.1"),
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        sh(&[
            "ip",
            "route",
            "replace",
            &format!("198.19.{targets}.0/24"),
            "via",
            &format!("198.19.{n}.1"),
        ]);
        lab
    }

    pub fn target(&self, host: u8) -> String {
        format!("198.19.{}.{host}", self.targets)
    }

    /// The listener's address (root namespace) and the router's, for `listener.toml`.
    pub fn listener_addr(&self) -> String {
        format!("198.19.{}.2", self.net)
    }

    pub fn router_addr(&self) -> String {
        format!("198.19.{}.1", self.net)
    }

    /// The root–router link's prefix (the router's hop address is inside it).
    pub fn link_prefix(&self) -> String {
        format!("198.19.{}.0/24", self.net)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes the upstream's BIRD config announcing `routes` (BIRD `route ...;` lines).
    pub fn announce(&self, routes: &str) {
        let n1 = self.net + 1;
        let conf = format!(
            r#"
router id 198.19.{n1}.2;
log "{log}" all;
protocol device {{ }}
protocol static s4 {{
    ipv4;
{routes}
}}
protocol bgp up {{
    local 198.19.{n1}.2 as 65010;
    neighbor 198.19.{n1}.1 as 65001;
    hold time 30;
    connect retry time 1;
    ipv4 {{ import none; export all; }};
}}
"#,
            log = self.path("bird.log").display(),
        );
        std::fs::write(self.path("bird.conf"), conf).unwrap();
    }

    /// Starts zebra and bgpd in the router namespace and BIRD upstream (after [`announce`]).
    pub fn start(&mut self) {
        let (n, n1) = (self.net, self.net + 1);
        std::fs::write(
            self.path("zebra.conf"),
            format!(
                "hostname fe-r\nlog file {}\n",
                self.path("zebra.log").display()
            ),
        )
        .unwrap();
        std::fs::write(
            self.path("bgpd.conf"),
            format!(
                "frr defaults traditional\nhostname fe-r\nlog file {log}\n!\n\
                 router bgp 65001\n bgp router-id 198.19.{n}.1\n no bgp ebgp-requires-policy\n\
                 \x20neighbor 198.19.{n1}.2 remote-as 65010\n neighbor 198.19.{n1}.2 timers connect 1\n\
                 \x20neighbor 198.19.{n}.2 remote-as 65002\n neighbor 198.19.{n}.2 timers connect 1\n\
                 \x20neighbor 198.19.{n}.2 shutdown\n{bmp}\
                 exit\n",
                log = self.path("bgpd.log").display(),
                bmp = self.bmp_conf(),
            ),
        )
        .unwrap();
        let zserv = self.path("zserv.api");
        let mut z = Command::new("ip");
        z.args(["netns", "exec", &self.router_ns, ZEBRA, "-P", "0", "-z"])
            .arg(&zserv)
            .arg("-f")
            .arg(self.path("zebra.conf"))
            .arg("-i")
            .arg(self.path("zebra.pid"))
            .arg("--vty_socket")
            .arg(&self.dir);
        self.spawn(z);
        // bgpd connects to zebra's socket once it exists.
        let t0 = std::time::Instant::now();
        while !zserv.exists() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "zebra did not start: {}",
                std::fs::read_to_string(self.path("zebra.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let mut b = Command::new("ip");
        b.args([
            "netns",
            "exec",
            &self.router_ns,
            BGPD,
            "-S",
            "-P",
            "0",
            "-z",
        ])
        .arg(&zserv)
        .args([
            "-l",
            &format!("198.19.{n}.1"),
            "-l",
            &format!("198.19.{n1}.1"),
        ])
        .args(if self.bmp_station.is_some() {
            &["-M", "bmp"][..]
        } else {
            &[]
        })
        .arg("-f")
        .arg(self.path("bgpd.conf"))
        .arg("-i")
        .arg(self.path("bgpd.pid"))
        .arg("--vty_socket")
        .arg(&self.dir);
        self.spawn(b);
        let mut bird = Command::new("ip");
        bird.args(["netns", "exec", &self.upstream_ns, "bird", "-f", "-c"])
            .arg(self.path("bird.conf"))
            .arg("-s")
            .arg(self.path("bird.ctl"));
        self.spawn(bird);
        // The listener's session opens only once the router holds every announced route, so
        // they all come in its initial transfer: which changes count as changes (correlated,
        // bursting) must not depend on which of the router's two sessions came up first.
        let conf = std::fs::read_to_string(self.path("bird.conf")).unwrap();
        let prefixes: Vec<&str> = conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("route "))
            .filter_map(|l| l.split_whitespace().next())
            // `ip route` prints host routes without their length.
            .map(|p| p.strip_suffix("/32").unwrap_or(p))
            .collect();
        let t0 = std::time::Instant::now();
        while !prefixes.iter().all(|p| self.router_fib().contains(p)) {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "the router did not learn {prefixes:?} from upstream:\n{}",
                self.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let out = Command::new("ip")
            .args(["netns", "exec", &self.router_ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args([
                "-c",
                "configure terminal",
                "-c",
                "router bgp 65001",
                "-c",
                &format!("no neighbor 198.19.{n}.2 shutdown"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vtysh: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// bgpd's `router bgp` lines for [`RoutedLab::bmp_station`]. Pre-policy monitoring reads
    /// the Adj-RIB-In, which FRR 8.4 keeps only with soft-reconfiguration inbound
    /// (FRRouting/frr#10240).
    fn bmp_conf(&self) -> String {
        let Some((addr, port)) = &self.bmp_station else {
            return String::new();
        };
        let (n, n1) = (self.net, self.net + 1);
        format!(
            " address-family ipv4 unicast\n  network 198.19.{n}.0/24\n\
             \x20 neighbor 198.19.{n1}.2 soft-reconfiguration inbound\n exit-address-family\n\
             \x20bmp targets fe\n  bmp connect {addr} port {port} min-retry 100 max-retry 1000\n\
             \x20 bmp monitor ipv4 unicast pre-policy\n  bmp monitor ipv4 unicast post-policy\n\
             \x20exit\n"
        )
    }

    fn spawn(&mut self, mut cmd: Command) {
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        self.children.push(cmd.spawn().unwrap());
    }

    /// Re-reads the upstream's config after [`announce`] (BIRD sends the differences).
    pub fn reconfigure(&self, routes: &str) {
        self.announce(routes);
        let reply = self.upstream_birdc(&["configure"]).to_lowercase();
        assert!(reply.contains("reconfigured"), "{reply}");
    }

    /// Runs `birdc ARGS` against the upstream's BIRD (e.g. `disable up` to end its session with
    /// the router); returns the reply.
    pub fn upstream_birdc(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.upstream_ns, "birdc", "-s"])
            .arg(self.path("bird.ctl"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The router's kernel routes (what zebra installed).
    pub fn router_fib(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.router_ns, "route", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn logs(&self) -> String {
        ["zebra.log", "bgpd.log", "bird.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(self.path(f)).unwrap_or_default()
                )
            })
            .collect()
    }
}

/// A BIRD static route line for [`RoutedLab::announce`] whose AS_PATH, once the upstream (AS
/// 65010) exports it, is `65010 path...`: the last AS of `path` is the origin.
pub fn route_with_path(prefix: &str, path: &[u32]) -> String {
    let prepends: String = path
        .iter()
        .rev()
        .map(|a| format!(" bgp_path.prepend({a});"))
        .collect();
    format!("    route {prefix} blackhole {{{prepends} }};\n")
}

impl Drop for RoutedLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // zebra forks nothing, but `ip netns exec` execs the daemon: the pids above are theirs.
        let _ = Command::new("ip")
            .args(["route", "del", &format!("198.19.{}.0/24", self.targets)])
            .output();
        for ns in [&self.router_ns, &self.upstream_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth_root])
            .output();
    }
}
