//! A BIRD 2 router in a network namespace, for tests that need a real BGP peer (shared by
//! `listener.rs` and `alerts.rs`). Needs root, `bird2` and `iproute2`.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{Collector, Proc};

pub fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false);
    assert!(found, "`{tool}` not found: apt-get install -y {package}");
}

pub fn sh(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace holding BIRD, joined to the root namespace (where the listener and collector run)
/// by a veth pair. Removed on drop.
pub struct BirdLab {
    pub ns: String,
    pub veth: String,
    pub dir: std::path::PathBuf,
    bird: Option<Child>,
    /// Third octet of 198.19.N.0/24, the veth subnet (BIRD .1, root namespace .2): tests that run
    /// at the same time use different ones.
    pub net: u8,
}

impl BirdLab {
    pub fn new(dir: &Path, net: u8) -> Self {
        need("bird", "bird2");
        need("ip", "iproute2");
        let id = (std::process::id() % 10_000) * 100 + u32::from(net);
        let bird_v4 = format!("198.19.{net}.1");
        let lst_v4 = format!("198.19.{net}.2");
        let lab = BirdLab {
            ns: format!("felc{id}"),
            veth: format!("felcr{id}"),
            dir: dir.to_path_buf(),
            bird: None,
            net,
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
        let v6 = |h: u8| format!("2001:db8:{net}::{h}/64");
        let ns_cmds: [&[&str]; 3] = [
            &["addr", "add", &format!("{bird_v4}/24"), "dev", &inner],
            &["addr", "add", &v6(1), "dev", &inner, "nodad"],
            &["link", "set", &inner, "up"],
        ];
        for c in ns_cmds {
            let mut v = vec!["ip", "-n", &lab.ns];
            v.extend_from_slice(c);
            sh(&v);
        }
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{lst_v4}/24"),
            "dev",
            &lab.veth,
        ]);
        sh(&["ip", "addr", "add", &v6(2), "dev", &lab.veth, "nodad"]);
        sh(&["ip", "link", "set", &lab.veth, "up"]);
        lab
    }

    pub fn write_conf(&self, routes4: &str, routes6: &str) {
        let net = self.net;
        let (bird_v4, lst_v4) = (format!("198.19.{net}.1"), format!("198.19.{net}.2"));
        let conf = format!(
            r#"
router id {bird_v4};
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
    local {bird_v4} as 65001;
    neighbor {lst_v4} as 65002;
    hold time 30;
    connect retry time 1;
    ipv4 {{ import all; export all; }};
    ipv6 {{ import all; export all; next hop address 2001:db8:{net}::1; }};
}}
"#,
            log = self.dir.join("bird.log").display(),
        );
        std::fs::write(self.dir.join("bird.conf"), conf).unwrap();
    }

    pub fn start(&mut self) {
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

    pub fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "birdc", "-s"])
            .arg(self.dir.join("bird.ctl"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// BIRD's `show protocols` line for the session with the listener (name, proto, table,
    /// state, since, info): the same since-time means the same session, never reset.
    ///
    /// `birdc` (through `ip netns exec`) can come back empty while other tests add and delete
    /// namespaces on a loaded machine, so an answer without the line is asked again; after that
    /// the answer itself (with `birdc`'s stderr) is returned, so a comparison that fails shows why.
    pub fn session_line(&self) -> String {
        let mut last = String::new();
        for _ in 0..20 {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.ns, "birdc", "-s"])
                .arg(self.dir.join("bird.ctl"))
                .args(["show", "protocols", "fe"])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            if let Some(l) = stdout.lines().find(|l| l.starts_with("fe ")) {
                return l.to_string();
            }
            last = format!(
                "no `fe` line from birdc ({}): {stdout} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        last
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

/// Enrolls a BGP listener into `org`/`team` and runs it against the lab's BIRD (the root-namespace
/// end of the veth, AS 65002, BIRD at AS 65001).
pub fn start_listener(c: &Collector, root: &Path, net: u8, org: &str, team: &str) -> Proc {
    super::start_listener(
        c,
        root,
        org,
        team,
        &format!(
            "local_as = 65002\nrouter_id = \"198.19.{net}.2\"\n[[peer]]\naddress = \"198.19.{net}.1\"\nremote_as = 65001\nlisten = \"198.19.{net}.2\"\n"
        ),
    )
}

/// [`start_listener`] for a lab: state and config in the lab's directory.
pub fn run_listener(c: &Collector, lab: &BirdLab, org: &str, team: &str) -> Proc {
    start_listener(c, &lab.dir, lab.net, org, team)
}
