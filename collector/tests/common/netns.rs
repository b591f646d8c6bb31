//! A network namespace joined to the root namespace by a veth pair, with 198.18.N.1/24 inside
//! and 198.18.N.2/24 on the root side: a non-loopback address of this host (the root end) and a
//! non-loopback client (the namespace) for tests that must not be on loopback. Removed on drop.

use std::process::Command;

use super::bird::{need, sh};

pub struct VethNs {
    pub ns: String,
    veth: String,
    pub net: u8,
}

impl VethNs {
    /// `tag` (a few letters) names the namespace and links; `net` is the third octet, unique per
    /// test so tests can run at once.
    pub fn new(tag: &str, net: u8) -> Self {
        need("ip", "iproute2");
        let id = std::process::id() % 100_000;
        let lab = VethNs {
            ns: format!("alert5-{tag}-{id}"),
            // Interface names are at most 15 bytes.
            veth: format!("a5{tag}{id}r"),
            net,
        };
        let inner = format!("a5{tag}{id}n");
        let _ = Command::new("ip").args(["netns", "del", &lab.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &lab.veth]).output();
        sh(&["ip", "netns", "add", &lab.ns]);
        sh(&[
            "ip", "link", "add", &lab.veth, "type", "veth", "peer", "name", &inner, "netns",
            &lab.ns,
        ]);
        sh(&["ip", "-n", &lab.ns, "link", "set", "lo", "up"]);
        let inside = format!("{}/24", lab.inside());
        sh(&["ip", "-n", &lab.ns, "addr", "add", &inside, "dev", &inner]);
        sh(&["ip", "-n", &lab.ns, "link", "set", &inner, "up"]);
        let root = format!("{}/24", lab.root());
        sh(&["ip", "addr", "add", &root, "dev", &lab.veth]);
        sh(&["ip", "link", "set", &lab.veth, "up"]);
        lab
    }

    /// The namespace's address.
    pub fn inside(&self) -> String {
        format!("198.18.{}.1", self.net)
    }

    /// The root namespace's address on the link: one of this host's interface addresses.
    pub fn root(&self) -> String {
        format!("198.18.{}.2", self.net)
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }
}

impl Drop for VethNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
    }
}
