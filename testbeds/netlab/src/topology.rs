//! The subset of containerlab's topology file that `testbeds/` uses: `linux` nodes with an image,
//! binds, a command and exec steps, and point-to-point links. Anything else is refused by name
//! rather than ignored, so a topology never deploys differently here than under containerlab
//! without saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub name: String,
    pub topology: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub nodes: BTreeMap<String, Node>,
    #[serde(default)]
    pub links: Vec<Link>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub kind: String,
    pub image: String,
    #[serde(default)]
    pub binds: Vec<String>,
    pub cmd: Option<String>,
    #[serde(default)]
    pub exec: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub endpoints: [String; 2],
}

/// One `binds` entry, `SOURCE:TARGET[:ro|rw]`, with the source resolved against the topology
/// file's folder as containerlab does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// One end of a link: a node and the interface name it sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub node: String,
    pub iface: String,
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            what: format!("reading {}", path.display()),
            err: e,
        })?;
        let t: Topology = serde_yaml_ng::from_str(&text).map_err(|e| Error::Topology {
            file: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        t.validate(path)?;
        Ok(t)
    }

    fn validate(&self, path: &Path) -> Result<(), Error> {
        let bad = |msg: String| Error::Topology {
            file: path.to_path_buf(),
            msg,
        };
        if self.name.is_empty() || !self.name.chars().all(name_char) {
            return Err(bad(format!(
                "name {:?}: use letters, digits, '-' and '_'",
                self.name
            )));
        }
        for (name, n) in &self.topology.nodes {
            if name.is_empty() || !name.chars().all(name_char) {
                return Err(bad(format!(
                    "node {name:?}: use letters, digits, '-' and '_'"
                )));
            }
            if n.kind != "linux" {
                return Err(bad(format!(
                    "node {name}: kind {:?} is not supported (only `linux`)",
                    n.kind
                )));
            }
            crate::image::Image::find(&n.image).map_err(|m| bad(format!("node {name}: {m}")))?;
            for b in &n.binds {
                parse_bind(b, Path::new(".")).map_err(|m| bad(format!("node {name}: {m}")))?;
            }
        }
        let mut seen = Vec::new();
        for l in &self.topology.links {
            for e in &l.endpoints {
                let ep = parse_endpoint(e).map_err(bad)?;
                if !self.topology.nodes.contains_key(&ep.node) {
                    return Err(bad(format!("link endpoint {e:?}: no node {:?}", ep.node)));
                }
                if seen.contains(&ep) {
                    return Err(bad(format!("link endpoint {e:?} is used twice")));
                }
                seen.push(ep);
            }
        }
        Ok(())
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let (node, iface) = s
        .split_once(':')
        .ok_or_else(|| format!("link endpoint {s:?}: expected NODE:INTERFACE"))?;
    // Linux interface names: at most 15 bytes, no '/', ':' or whitespace.
    if iface.is_empty()
        || iface.len() > 15
        || iface
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "link endpoint {s:?}: {iface:?} is not an interface name"
        ));
    }
    Ok(Endpoint {
        node: node.to_string(),
        iface: iface.to_string(),
    })
}

pub fn parse_bind(s: &str, base: &Path) -> Result<Bind, String> {
    let mut parts = s.split(':');
    let (Some(src), Some(dst)) = (parts.next(), parts.next()) else {
        return Err(format!("bind {s:?}: expected SOURCE:TARGET[:ro]"));
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(o) => {
            return Err(format!(
                "bind {s:?}: option {o:?} is not supported (ro, rw)"
            ));
        }
    };
    if parts.next().is_some() || src.is_empty() || !dst.starts_with('/') {
        return Err(format!(
            "bind {s:?}: expected SOURCE:TARGET[:ro] with an absolute TARGET"
        ));
    }
    let target = PathBuf::from(dst);
    if target
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("bind {s:?}: TARGET may not contain '..'"));
    }
    Ok(Bind {
        source: base.join(src),
        target,
        read_only,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn binds_and_endpoints_parse_and_bad_ones_are_named() {
        let b = parse_bind("frr/frr.conf:/etc/frr/frr.conf:ro", Path::new("/t")).unwrap();
        assert_eq!(b.source, PathBuf::from("/t/frr/frr.conf"));
        assert_eq!(b.target, PathBuf::from("/etc/frr/frr.conf"));
        assert!(b.read_only);
        assert!(parse_bind("a:rel/path", Path::new("/")).is_err());
        assert!(parse_bind("a:/x:z", Path::new("/")).is_err());
        assert!(parse_bind("a:/x/../etc", Path::new("/")).is_err());
        assert_eq!(parse_endpoint("frr:eth1").unwrap().iface, "eth1");
        assert!(parse_endpoint("frr").is_err());
        assert!(parse_endpoint("frr:averyveryverylongname").is_err());
    }
}
