//! Architecture Invariant: no remote-code channel.
//!
//! Walks every message reachable from what the collector sends to an agent (`CollectorMessage` on the
//! stream, `EnrollResponse` from enrollment) and fails on any `Any`/`Struct`/`Value` field, any map,
//! and any string or bytes field that is not on the reviewed allowlist below, which names the field's
//! kind and what the node does with it. An allowlist, not a denylist: a new string field fails this
//! test until somebody reviews it here.

use std::collections::{BTreeSet, HashMap};

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet, field_descriptor_proto::Type};

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An opaque identifier or display text: compared or shown, never interpreted.
    Label,
    /// A hostname or IP literal the node resolves and sends probe packets to.
    Hostname,
    /// An http(s) URL the node fetches with a GET or HEAD.
    Url,
    /// A DNS name the node puts in a query.
    DnsName,
    /// An X.509 certificate in DER that the node only parses and validates against its pinned CA
    /// (or adds as a trust anchor for one HTTPS test).
    X509Der,
    /// A SHA-256 digest the node compares with what it downloaded.
    Sha256Digest,
    /// An ed25519 signature the node verifies against its build-time pinned update key; a file
    /// whose signature does not verify is never run.
    Ed25519Signature,
}

const NODE_BOUND_ROOTS: &[&str] = &[
    ".foureyes.v1.CollectorMessage",
    ".foureyes.v1.EnrollResponse",
];

const ALLOWLIST: &[(&str, Kind)] = &[
    ("foureyes.v1.Welcome.agent_id", Kind::Label),
    ("foureyes.v1.AssignmentDelta.removed", Kind::Label),
    ("foureyes.v1.ProbeBurst.test_ids", Kind::Label),
    ("foureyes.v1.ProbeBurst.reason", Kind::Label),
    ("foureyes.v1.RenewResponse.certificate_der", Kind::X509Der),
    ("foureyes.v1.UpdateAvailable.version", Kind::Label),
    ("foureyes.v1.UpdateAvailable.url", Kind::Url),
    ("foureyes.v1.UpdateAvailable.sha256", Kind::Sha256Digest),
    (
        "foureyes.v1.UpdateAvailable.signature",
        Kind::Ed25519Signature,
    ),
    ("foureyes.v1.EnrollResponse.agent_id", Kind::Label),
    ("foureyes.v1.EnrollResponse.certificate_der", Kind::X509Der),
    (
        "foureyes.v1.EnrollResponse.ca_certificate_der",
        Kind::X509Der,
    ),
    ("foureyes.v1.EnrollResponse.org", Kind::Label),
    ("foureyes.v1.EnrollResponse.team", Kind::Label),
    ("foureyes.v1.Test.id", Kind::Label),
    ("foureyes.v1.Test.name", Kind::Label),
    ("foureyes.v1.Test.team", Kind::Label),
    ("foureyes.v1.Test.agent_ids", Kind::Label),
    ("foureyes.v1.IcmpConfig.host", Kind::Hostname),
    ("foureyes.v1.TcpConfig.host", Kind::Hostname),
    ("foureyes.v1.HttpConfig.url", Kind::Url),
    ("foureyes.v1.HttpConfig.ca_certificate_der", Kind::X509Der),
    ("foureyes.v1.DnsConfig.server", Kind::Hostname),
    ("foureyes.v1.DnsConfig.query_name", Kind::DnsName),
    ("foureyes.v1.DnsConfig.expect_answer", Kind::Label),
    ("foureyes.v1.TracerouteConfig.host", Kind::Hostname),
];

const FORBIDDEN_TYPES: &[&str] = &[
    ".google.protobuf.Any",
    ".google.protobuf.Struct",
    ".google.protobuf.Value",
    ".google.protobuf.ListValue",
    ".google.protobuf.BytesValue",
    ".google.protobuf.StringValue",
];

fn index(fds: &FileDescriptorSet) -> HashMap<String, DescriptorProto> {
    fn add(map: &mut HashMap<String, DescriptorProto>, prefix: &str, msg: &DescriptorProto) {
        let name = format!("{prefix}.{}", msg.name());
        for nested in &msg.nested_type {
            add(map, &name, nested);
        }
        map.insert(name, msg.clone());
    }
    let mut map = HashMap::new();
    for file in &fds.file {
        let prefix = if file.package().is_empty() {
            String::new()
        } else {
            format!(".{}", file.package())
        };
        for msg in &file.message_type {
            add(&mut map, &prefix, msg);
        }
    }
    map
}

/// Returns every violation found walking from `roots`, and the string/bytes fields it saw.
fn walk(fds: &FileDescriptorSet, roots: &[&str]) -> (Vec<String>, BTreeSet<String>) {
    let messages = index(fds);
    let allow: HashMap<&str, Kind> = ALLOWLIST.iter().copied().collect();
    let mut violations = Vec::new();
    let mut seen_fields = BTreeSet::new();
    let mut visited = BTreeSet::new();
    let mut stack: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
    while let Some(name) = stack.pop() {
        if !visited.insert(name.clone()) {
            continue;
        }
        let Some(msg) = messages.get(&name) else {
            violations.push(format!("{name}: message not found in the descriptor set"));
            continue;
        };
        let is_map_entry = msg.options.as_ref().is_some_and(|o| o.map_entry());
        for field in &msg.field {
            let full = format!("{}.{}", name.trim_start_matches('.'), field.name());
            match field.r#type() {
                Type::Message | Type::Group => {
                    let ty = field.type_name().to_string();
                    if FORBIDDEN_TYPES.contains(&ty.as_str()) {
                        violations.push(format!("{full}: forbidden type {ty}"));
                        continue;
                    }
                    if messages
                        .get(&ty)
                        .is_some_and(|m| m.options.as_ref().is_some_and(|o| o.map_entry()))
                    {
                        violations.push(format!(
                            "{full}: map fields are not allowed on node-bound messages"
                        ));
                        continue;
                    }
                    stack.push(ty);
                }
                Type::String | Type::Bytes => {
                    seen_fields.insert(full.clone());
                    if is_map_entry || !allow.contains_key(full.as_str()) {
                        violations.push(format!(
                            "{full}: {:?} field is not on the reviewed allowlist",
                            field.r#type()
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    (violations, seen_fields)
}

fn real_descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(foureyes_proto::FILE_DESCRIPTOR_SET).expect("embedded descriptor set")
}

#[test]
fn node_bound_messages_carry_only_reviewed_typed_fields() {
    let (violations, seen) = walk(&real_descriptors(), NODE_BOUND_ROOTS);
    assert!(
        violations.is_empty(),
        "remote-code channel risk:\n{}",
        violations.join("\n")
    );
    // Every allowlist entry must still exist: a stale entry would hide a renamed field.
    for (field, kind) in ALLOWLIST {
        assert!(
            seen.contains(*field),
            "allowlist names {field} ({kind:?}) which is no longer node-bound"
        );
    }
}

#[test]
fn the_walker_catches_a_bad_descriptor() {
    let dir = std::env::temp_dir().join(format!("fe-bad-proto-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("bad")).expect("tmp dir");
    std::fs::write(
        dir.join("bad/bad.proto"),
        r#"syntax = "proto3";
package bad;
import "google/protobuf/any.proto";
import "google/protobuf/struct.proto";
message Root {
  oneof msg { Exec exec = 1; Plugin plugin = 2; Config config = 3; Env env = 4; }
}
message Exec { string command = 1; }
message Plugin { google.protobuf.Any payload = 1; bytes blob = 2; }
message Config { google.protobuf.Struct settings = 1; }
message Env { map<string, string> vars = 1; }
"#,
    )
    .expect("write bad proto");
    let fds = protox::compile(["bad/bad.proto"], [dir.as_path()]).expect("compile bad proto");
    let (violations, _) = walk(&fds, &[".bad.Root"]);
    let text = violations.join("\n");
    for needle in [
        "bad.Exec.command",
        "bad.Plugin.payload",
        "bad.Plugin.blob",
        "bad.Config.settings",
        "bad.Env.vars",
    ] {
        assert!(
            text.contains(needle),
            "walker missed {needle}; it reported:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn probe_config_is_a_closed_oneof() {
    // The node runs only what one of these typed configs describes.
    let fds = real_descriptors();
    let messages = index(&fds);
    let cfg = messages
        .get(".foureyes.v1.ProbeConfig")
        .expect("ProbeConfig");
    assert_eq!(cfg.oneof_decl.len(), 1);
    let kinds: Vec<_> = cfg
        .field
        .iter()
        .map(|f| f.type_name().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            ".foureyes.v1.IcmpConfig",
            ".foureyes.v1.TcpConfig",
            ".foureyes.v1.HttpConfig",
            ".foureyes.v1.DnsConfig",
            ".foureyes.v1.TracerouteConfig"
        ]
    );
}

/// Every field of a probe burst, with its type: the burst is what a route change makes the
/// collector send unprompted, so a new field fails here until somebody reviews it (strings are
/// also on the allowlist above). `traceroute` is a switch: the node traces toward the target of
/// a test it already holds, never toward an address the collector names.
const PROBE_BURST_REVIEWED: &[(&str, Type)] = &[
    ("test_ids", Type::String),
    ("runs", Type::Uint32),
    ("spacing_ms", Type::Uint32),
    ("reason", Type::String),
    ("traceroute", Type::Bool),
];

#[test]
fn probe_burst_fields_are_reviewed() {
    let fds = real_descriptors();
    let messages = index(&fds);
    let burst = messages.get(".foureyes.v1.ProbeBurst").expect("ProbeBurst");
    let fields: Vec<(&str, Type)> = burst.field.iter().map(|f| (f.name(), f.r#type())).collect();
    assert_eq!(fields, PROBE_BURST_REVIEWED);
}
