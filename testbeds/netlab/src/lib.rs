//! Deploys the containerlab topologies in `testbeds/` with network namespaces, veth pairs and the
//! host's own FRR, BIRD and GoBGP, so that CI (which has no Docker engine) runs the very files users
//! get, and a user without Docker can run them too.
//!
//! A node is a network namespace plus a mount namespace held by the node's command: `/run` is a
//! fresh tmpfs (as in a container), binds are bind mounts, and a bind target missing on the host
//! is made inside an overlay private to the node, so deploying never writes to the host's `/etc`
//! or `/usr`. Images are the host with that image's package installed ([`image`]). Namespaces are
//! named like containerlab's containers, `clab-<lab>-<node>`, unless a prefix says otherwise.
//!
//! Written here rather than taken from a crate: nothing on crates.io runs containerlab files
//! without a container engine, and the part we need is small.

pub mod image;
pub mod topology;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use topology::{Bind, Topology, parse_bind, parse_endpoint};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {msg}", file.display())]
    Topology { file: PathBuf, msg: String },
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("{what} failed ({status}): {output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },
    #[error("{0}")]
    Deploy(String),
}

/// How a topology is deployed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespace names are `<prefix><lab>-<node>`.
    pub prefix: String,
    /// Bind sources rewritten by path prefix, after they are resolved against the topology's
    /// folder: e.g. the topologies bind `../target/release/foureyes-bgp-listener`, and a build
    /// elsewhere (`CARGO_TARGET_DIR`, a debug build) is given as `testbeds/../target/release` →
    /// `$CARGO_TARGET_DIR/debug`.
    pub bind_sources: Vec<(PathBuf, PathBuf)>,
    /// Pid files and the nodes' logs (their command's stdout and stderr).
    pub state_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prefix: "clab-".into(),
            bind_sources: Vec::new(),
            state_dir: PathBuf::from("/run/foureyes-netlab"),
        }
    }
}

/// A deployed topology. Dropping it destroys it (every process in its namespaces is killed and
/// the namespaces deleted) unless it was [`Lab::detach`]ed.
#[derive(Debug)]
pub struct Lab {
    pub name: String,
    nodes: BTreeMap<String, NodeRt>,
    state_dir: PathBuf,
    detached: bool,
}

#[derive(Debug)]
struct NodeRt {
    ns: String,
    pid: Option<u32>,
    child: Option<Child>,
}

fn run(what: &str, cmd: &mut Command) -> Result<Output, Error> {
    let out = cmd.output().map_err(|e| Error::Io {
        what: format!("starting {what}"),
        err: e,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            what: what.to_string(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

fn ip(args: &[&str]) -> Result<Output, Error> {
    run(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args),
    )
}

/// `s` as one single-quoted shell word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// The namespace name of `node` in `lab`.
pub fn ns_name(opts: &Options, lab: &str, node: &str) -> String {
    format!("{}{lab}-{node}", opts.prefix)
}

fn pid_file(opts_dir: &Path, ns: &str) -> PathBuf {
    opts_dir.join(format!("{ns}.pid"))
}

/// The log of a node's command.
pub fn log_file(state_dir: &Path, ns: &str) -> PathBuf {
    state_dir.join(format!("{ns}.log"))
}

impl Lab {
    /// Deploys `file`: namespaces, links, each node's command, then its `exec` steps (in that
    /// order, as containerlab runs them). Fails, leaving nothing behind, if the topology is not
    /// understood, an image's package or a bind source is missing, the lab is already deployed,
    /// or a step fails.
    pub fn deploy(file: &Path, opts: &Options) -> Result<Lab, Error> {
        let topo = Topology::load(file)?;
        let file = std::path::absolute(file).map_err(|e| Error::Io {
            what: format!("resolving {}", file.display()),
            err: e,
        })?;
        let base = file.parent().unwrap_or(Path::new("/"));
        let mut plans = BTreeMap::new();
        for (name, node) in &topo.topology.nodes {
            let img = image::Image::find(&node.image).map_err(Error::Deploy)?;
            img.check_host()
                .map_err(|m| Error::Deploy(format!("node {name}: {m}")))?;
            let mut binds = Vec::new();
            for b in &node.binds {
                let mut b = parse_bind(b, base).map_err(Error::Deploy)?;
                b.source = rewrite(&b.source, &opts.bind_sources);
                if !b.source.exists() {
                    return Err(Error::Deploy(format!(
                        "node {name}: bind source {} does not exist{}",
                        b.source.display(),
                        if b.source.to_string_lossy().contains("target/") {
                            " (build it first, or map it with a bind-source rewrite)"
                        } else {
                            ""
                        }
                    )));
                }
                binds.push(b);
            }
            let cmd = node.cmd.clone().unwrap_or_else(|| img.default_cmd.into());
            plans.insert(name.clone(), (init_script(img, &binds)?, cmd));
        }
        for name in topo.topology.nodes.keys() {
            let ns = ns_name(opts, &topo.name, name);
            if ns_exists(&ns) {
                return Err(Error::Deploy(format!(
                    "namespace {ns} exists: is {} already deployed? destroy it first",
                    topo.name
                )));
            }
        }
        std::fs::create_dir_all(&opts.state_dir).map_err(|e| Error::Io {
            what: format!("creating {}", opts.state_dir.display()),
            err: e,
        })?;
        let mut lab = Lab {
            name: topo.name.clone(),
            nodes: BTreeMap::new(),
            state_dir: opts.state_dir.clone(),
            detached: false,
        };
        for name in topo.topology.nodes.keys() {
            let ns = ns_name(opts, &topo.name, name);
            ip(&["netns", "add", &ns])?;
            lab.nodes.insert(
                name.clone(),
                NodeRt {
                    ns: ns.clone(),
                    pid: None,
                    child: None,
                },
            );
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        for l in &topo.topology.links {
            let a = parse_endpoint(&l.endpoints[0]).map_err(Error::Deploy)?;
            let b = parse_endpoint(&l.endpoints[1]).map_err(Error::Deploy)?;
            let (na, nb) = (&lab.nodes[&a.node].ns, &lab.nodes[&b.node].ns);
            // Created straight inside the two namespaces, so the names cannot clash with the
            // host's interfaces or another lab's.
            ip(&[
                "link", "add", &a.iface, "netns", na, "type", "veth", "peer", "name", &b.iface,
                "netns", nb,
            ])?;
            ip(&["-n", na, "link", "set", &a.iface, "up"])?;
            ip(&["-n", nb, "link", "set", &b.iface, "up"])?;
        }
        for (name, (script, cmd)) in &plans {
            lab.start_node(name, script, cmd)?;
        }
        for (name, node) in &topo.topology.nodes {
            for step in &node.exec {
                // A step that hangs (a command waiting for input, a daemon run in the
                // foreground by mistake) fails the deploy instead of hanging it.
                let out = lab.exec(name, &["timeout", "120", "sh", "-c", step])?;
                if !out.status.success() {
                    return Err(Error::Command {
                        what: format!("node {name}: exec {step:?}"),
                        status: out.status.to_string(),
                        output: format!(
                            "{}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ),
                    });
                }
            }
        }
        Ok(lab)
    }

    fn start_node(&mut self, name: &str, script: &str, cmd: &str) -> Result<(), Error> {
        let state_dir = self.state_dir.clone();
        let Some(node) = self.nodes.get_mut(name) else {
            return Err(Error::Deploy(format!("no node {name}")));
        };
        let log_path = log_file(&state_dir, &node.ns);
        let log = File::create(&log_path).map_err(|e| Error::Io {
            what: format!("creating {}", log_path.display()),
            err: e,
        })?;
        let log2 = log.try_clone().map_err(|e| Error::Io {
            what: "duplicating the log file".into(),
            err: e,
        })?;
        let full = format!("{script}exec sh -c {}\n", sh_quote(cmd));
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns, "sh", "-c", &full])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C meant for `deploy` does not reach the nodes.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::Io {
                what: format!("starting node {name}"),
                err: e,
            })?;
        // `ip netns exec` execs the shell in place, so the child's pid holds the node's
        // namespaces for as long as the node runs.
        let pid = child.id();
        node.pid = Some(pid);
        node.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = Command::new("nsenter")
                .args([
                    "-t",
                    &pid.to_string(),
                    "-m",
                    "test",
                    "-e",
                    "/run/.netlab/ready",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            let exited = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                return Err(Error::Deploy(format!(
                    "node {name} did not come up ({}); its log:\n{}",
                    exited.map_or("timed out".into(), |s| s.to_string()),
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::write(pid_file(&state_dir, &node.ns), pid.to_string()).map_err(|e| Error::Io {
            what: "writing the pid file".into(),
            err: e,
        })?;
        Ok(())
    }

    /// A command that runs `argv` inside `node` (its network and mount namespaces), like
    /// `docker exec`.
    pub fn command(&self, node: &str, argv: &[&str]) -> Result<Command, Error> {
        let pid = self.nodes.get(node).and_then(|n| n.pid).ok_or_else(|| {
            Error::Deploy(format!("lab {} has no running node {node}", self.name))
        })?;
        Ok(node_command(pid, argv))
    }

    /// Runs `argv` in `node` and returns its output (whatever its exit status).
    pub fn exec(&self, node: &str, argv: &[&str]) -> Result<Output, Error> {
        self.command(node, argv)?.output().map_err(|e| Error::Io {
            what: format!("running {argv:?} in {node}"),
            err: e,
        })
    }

    /// The namespace of `node`.
    pub fn ns(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).map(|n| n.ns.as_str())
    }

    /// What `node`'s command printed so far.
    pub fn log(&self, node: &str) -> String {
        self.nodes
            .get(node)
            .map(|n| std::fs::read_to_string(log_file(&self.state_dir, &n.ns)).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Leaves the lab running after this value is gone (`deploy` on the command line).
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        for n in self.nodes.values_mut() {
            kill_ns(&n.ns);
            if let Some(c) = n.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = Command::new("ip").args(["netns", "del", &n.ns]).output();
            let _ = std::fs::remove_file(pid_file(&self.state_dir, &n.ns));
        }
    }
}

fn node_command(pid: u32, argv: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &pid.to_string(), "-m", "-n", "--"])
        .args(argv);
    c
}

/// Kills every process in `ns` (a node's command and whatever it started, e.g. FRR's daemons).
fn kill_ns(ns: &str) {
    for _ in 0..50 {
        let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
            return;
        };
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill").arg("-KILL").args(&pids).output();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rewrite(p: &Path, map: &[(PathBuf, PathBuf)]) -> PathBuf {
    let norm = normalize(p);
    for (from, to) in map {
        if let Ok(rest) = norm.strip_prefix(normalize(from)) {
            return to.join(rest);
        }
    }
    norm
}

/// Removes `.` and `..` lexically (bind sources like `testbeds/../target/...` name files that
/// may not exist yet, so no canonicalize).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The shell that prepares a node's mount namespace before its command: a private `/run` with
/// the image's directories, then the binds. A bind target the host lacks is created inside an
/// overlay on its nearest existing folder, private to the node.
fn init_script(img: &image::Image, binds: &[Bind]) -> Result<String, Error> {
    let mut s = String::from("set -e\nmount -t tmpfs -o mode=0755 netlab-run /run\n");
    s.push_str("mkdir -p /run/.netlab /run/lock\n");
    for d in img.run_dirs {
        s.push_str(&format!("mkdir -p {}\n", sh_quote(d)));
    }
    let mut overlays: Vec<PathBuf> = Vec::new();
    for b in binds {
        let src_dir = b.source.is_dir();
        let tgt = &b.target;
        let q = |p: &Path| sh_quote(&p.to_string_lossy());
        let make = |s: &mut String| {
            if src_dir {
                s.push_str(&format!("mkdir -p {}\n", q(tgt)));
            } else {
                if let Some(parent) = tgt.parent() {
                    s.push_str(&format!("mkdir -p {}\n", q(parent)));
                }
                s.push_str(&format!("touch {}\n", q(tgt)));
            }
        };
        if tgt.starts_with("/run") {
            make(&mut s);
        } else if tgt.exists() {
            if tgt.is_dir() != src_dir {
                return Err(Error::Deploy(format!(
                    "bind {} → {}: one is a folder, the other is not",
                    b.source.display(),
                    tgt.display()
                )));
            }
        } else {
            let mut anc = tgt.as_path();
            while let Some(p) = anc.parent() {
                anc = p;
                if anc.is_dir() {
                    break;
                }
            }
            if anc == Path::new("/") {
                return Err(Error::Deploy(format!(
                    "bind target {}: its top folder does not exist on the host",
                    tgt.display()
                )));
            }
            if !overlays.iter().any(|o| o == anc) {
                let i = overlays.len();
                s.push_str(&format!(
                    "mkdir -p /run/.netlab/ovl{i}/u /run/.netlab/ovl{i}/w\n\
                     mount -t overlay netlab-ovl -o lowerdir={a},upperdir=/run/.netlab/ovl{i}/u,workdir=/run/.netlab/ovl{i}/w {a}\n",
                    a = q(anc)
                ));
                overlays.push(anc.to_path_buf());
            }
            make(&mut s);
        }
        s.push_str(&format!("mount --bind {} {}\n", q(&b.source), q(tgt)));
        if b.read_only {
            s.push_str(&format!("mount -o remount,bind,ro {}\n", q(tgt)));
        }
    }
    s.push_str("touch /run/.netlab/ready\n");
    Ok(s)
}

/// Destroys a lab deployed earlier (by another process): kills every process in its
/// namespaces and deletes them. Returns the namespaces it removed.
pub fn destroy(file: &Path, opts: &Options) -> Result<Vec<String>, Error> {
    let topo = Topology::load(file)?;
    let mut gone = Vec::new();
    for node in topo.topology.nodes.keys() {
        let ns = ns_name(opts, &topo.name, node);
        if ns_exists(&ns) {
            kill_ns(&ns);
            ip(&["netns", "del", &ns])?;
            gone.push(ns.clone());
        }
        let _ = std::fs::remove_file(pid_file(&opts.state_dir, &ns));
    }
    Ok(gone)
}

/// A command that runs `argv` in `node` of a lab deployed earlier (by another process).
pub fn exec_command(
    file: &Path,
    opts: &Options,
    node: &str,
    argv: &[&str],
) -> Result<Command, Error> {
    let topo = Topology::load(file)?;
    if !topo.topology.nodes.contains_key(node) {
        return Err(Error::Deploy(format!("{} has no node {node}", topo.name)));
    }
    let ns = ns_name(opts, &topo.name, node);
    let pf = pid_file(&opts.state_dir, &ns);
    let pid: u32 = std::fs::read_to_string(&pf)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            Error::Deploy(format!(
                "node {node} of {} is not running (no {})",
                topo.name,
                pf.display()
            ))
        })?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Error::Deploy(format!(
            "node {node} of {} is not running (its command exited; see {})",
            topo.name,
            log_file(&opts.state_dir, &ns).display()
        )));
    }
    Ok(node_command(pid, argv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_sources_are_rewritten_by_prefix() {
        let map = vec![(
            PathBuf::from("/repo/testbeds/../target/release"),
            PathBuf::from("/cache/t/debug"),
        )];
        assert_eq!(
            rewrite(
                Path::new("/repo/testbeds/../target/release/foureyes-bgp-listener"),
                &map
            ),
            PathBuf::from("/cache/t/debug/foureyes-bgp-listener")
        );
        assert_eq!(
            rewrite(Path::new("/repo/testbeds/./frr/frr.conf"), &map),
            PathBuf::from("/repo/testbeds/frr/frr.conf")
        );
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }
}
