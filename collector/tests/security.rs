//! Agent identity end to end: forged hello, renewal at half-life, revocation, secrets at rest.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{path::Path, time::Duration};

use common::*;
use foureyes_agent::{channel, state::StateDir, tls};
use foureyes_proto::v1::{
    AgentMessage, EnrollRequest, Hello, agent_link_client::AgentLinkClient, agent_message,
    enrollment_client::EnrollmentClient,
};
use serde_json::json;
use tokio_stream::StreamExt;

async fn open_session(state: &Path, claimed_id: Option<&str>) -> Result<(), tonic::Status> {
    let s = StateDir::open(state, false).unwrap();
    let id = s.identity().unwrap();
    let creds = s.credentials().unwrap();
    let cfg = tls::link_config(&s.ca_der().unwrap(), &creds.cert_der, &creds.key_pkcs8).unwrap();
    let ch = channel::connect(&id.collector, cfg)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let hello = AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            agent_id: claimed_id.unwrap_or(&id.agent_id).to_string(),
            ..Default::default()
        })),
    };
    let mut client = AgentLinkClient::new(ch);
    let mut stream = client
        .session(tokio_stream::iter(vec![hello]))
        .await?
        .into_inner();
    // The first message back must be the welcome.
    match stream.message().await? {
        Some(_) => Ok(()),
        None => Err(tonic::Status::unavailable("closed")),
    }
}

/// Says hello, then sends one signed batch of `records`; returns the collector's answer to it.
async fn send_records(
    state: &Path,
    records: Vec<foureyes_proto::v1::Record>,
) -> Result<foureyes_proto::v1::CollectorMessage, tonic::Status> {
    use ed25519_dalek::Signer;
    use foureyes_proto::v1::{RecordBatch, SignedBatch, collector_message};
    use prost::Message;
    let s = StateDir::open(state, false).unwrap();
    let id = s.identity().unwrap();
    let creds = s.credentials().unwrap();
    let key = creds.signing_key().unwrap();
    let cfg = tls::link_config(&s.ca_der().unwrap(), &creds.cert_der, &creds.key_pkcs8).unwrap();
    let ch = channel::connect(&id.collector, cfg)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let body = RecordBatch { records }.encode_to_vec();
    let batch = SignedBatch {
        signature: key.sign(&body).to_bytes().to_vec(),
        key_id: foureyes_identity::key_id(key.verifying_key().as_bytes()).to_vec(),
        body,
    };
    let msgs = vec![
        AgentMessage {
            msg: Some(agent_message::Msg::Hello(Hello {
                agent_id: id.agent_id.clone(),
                ..Default::default()
            })),
        },
        AgentMessage {
            msg: Some(agent_message::Msg::Batch(batch)),
        },
    ];
    let mut stream = AgentLinkClient::new(ch)
        .session(tokio_stream::iter(msgs).chain(tokio_stream::pending()))
        .await?
        .into_inner();
    loop {
        match stream.message().await? {
            Some(m) if matches!(m.msg, Some(collector_message::Msg::Ack(_))) => return Ok(m),
            Some(_) => continue,
            None => return Err(tonic::Status::unavailable("closed")),
        }
    }
}

/// A node measures and a listener reports routes: neither can send the other's records, so a
/// compromised node cannot plant routes in its tenant's BGP table.
#[test]
fn agents_may_send_only_their_own_kind_of_record() {
    use foureyes_proto::v1::{ProbeResult, Record, RouteEvent, record};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    c.tenant("acme", "noc");
    let node = enroll_node(&c, tmp.path(), "acme", "noc");
    let listener = tmp.path().join("listener");
    let token = c.admin(&[
        "token", "create", "--org", "acme", "--team", "noc", "--ttl", "10m", "--kind", "listener",
    ]);
    assert!(enroll(&c.node_addr, &token, &listener).status.success());
    let route = || Record {
        seq: 1,
        kind: Some(record::Kind::RouteEvent(RouteEvent {
            r#type: 1,
            prefix: "10.0.0.0/8".into(),
            ..Default::default()
        })),
    };
    let result = || Record {
        seq: 1,
        kind: Some(record::Kind::Result(ProbeResult {
            test_id: "t".into(),
            ..Default::default()
        })),
    };
    for (state, records) in [(&node, vec![route()]), (&listener, vec![result()])] {
        let err = rt
            .block_on(send_records(state, records))
            .expect_err("a record of the other kind must be refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains("not a kind"), "{err}");
    }
    // Each kind's own records are taken.
    rt.block_on(send_records(&node, vec![result()])).unwrap();
    rt.block_on(send_records(&listener, vec![route()])).unwrap();
}

#[test]
fn a_forged_hello_is_refused_and_the_real_one_accepted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    c.tenant("acme", "noc");
    let a = enroll_node(&c, tmp.path(), "acme", "noc");
    let b = tmp.path().join("other");
    assert!(
        enroll(&c.node_addr, &c.enrollment_token("acme", "noc", "10m"), &b)
            .status
            .success()
    );
    let other_id = StateDir::open(&b, false)
        .unwrap()
        .identity()
        .unwrap()
        .agent_id;

    let forged = rt.block_on(open_session(&a, Some(&other_id)));
    let err = forged.expect_err("a hello naming another agent must be refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    rt.block_on(open_session(&a, None))
        .expect("the certificate's own id is accepted");
}

#[test]
fn certificates_renew_at_half_life_with_a_new_key() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "agent_cert_lifetime = \"10s\"\n", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    api.post("/api/v1/tests", json!({"name": "t", "intervalMs": 500, "config": {"tcp": {"host": "127.0.0.1", "port": 9}}}));
    let state = enroll_node(&c, tmp.path(), "acme", "noc");
    let first_key = StateDir::open(&state, false)
        .unwrap()
        .credentials()
        .unwrap()
        .facts()
        .unwrap()
        .key_id;
    let node = run_node(&state, tmp.path().join("node.log"));
    let first = wait_until("the node to connect", Duration::from_secs(20), || {
        let a = api.get("/api/v1/agents");
        (a["agents"][0]["connected"] == json!(true)).then(|| {
            a["agents"][0]["certificateNotAfter"]
                .as_str()
                .unwrap()
                .to_string()
        })
    });
    let renewed = wait_until("a renewed certificate", Duration::from_secs(30), || {
        let a = api.get("/api/v1/agents");
        let na = a["agents"][0]["certificateNotAfter"].as_str()?.to_string();
        (na > first).then_some(na)
    });
    assert!(renewed > first);
    let creds = StateDir::open(&state, false)
        .unwrap()
        .credentials()
        .unwrap();
    assert_ne!(
        creds.facts().unwrap().key_id,
        first_key,
        "renewal must use a new key"
    );
    // Results signed with the new key are accepted.
    let seq_at_renewal = api.get("/api/v1/agents")["agents"][0]["lastSeq"]
        .as_str()
        .unwrap_or("0")
        .parse::<u64>()
        .unwrap();
    wait_until("results after renewal", Duration::from_secs(20), || {
        let s = api.get("/api/v1/agents")["agents"][0]["lastSeq"]
            .as_str()?
            .parse::<u64>()
            .ok()?;
        (s > seq_at_renewal + 2).then_some(())
    });
    assert!(node.log_text().contains("renewed"), "{}", node.log_text());
}

#[test]
fn revoke_cuts_the_stream_and_refuses_reconnect_and_reenrollment() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let state = enroll_node(&c, tmp.path(), "acme", "noc");
    let mut node = run_node(&state, tmp.path().join("node.log"));
    let id = wait_connected(&api);
    let revoked = api.post(&format!("/api/v1/agents/{id}/revoke"), json!({}));
    assert_eq!(revoked["revoked"], json!(true));
    wait_until("the stream to be cut", Duration::from_secs(5), || {
        (api.get(&format!("/api/v1/agents/{id}"))["connected"] == json!(false)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        api.get(&format!("/api/v1/agents/{id}"))["connected"],
        json!(false),
        "revoked agent reconnected"
    );
    assert!(node.is_running());

    // A connect with the revoked certificate is refused.
    let err = rt
        .block_on(open_session(&state, None))
        .expect_err("revoked certificate must be refused");
    println!("revoked connect: {err}");

    // An enrollment request carrying the revoked key is refused, and does not spend the token.
    let token = c.enrollment_token("acme", "noc", "10m");
    let s = StateDir::open(&state, false).unwrap();
    let creds = s.credentials().unwrap();
    let key = rcgen::KeyPair::try_from(creds.key_pkcs8.as_slice()).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let res = rt.block_on(async {
        let fp = foureyes_identity::EnrollmentToken::parse(&token)
            .unwrap()
            .ca_fingerprint;
        let ch = channel::connect(&c.node_addr, tls::enrollment_config(fp).unwrap())
            .await
            .unwrap();
        EnrollmentClient::new(ch)
            .enroll(EnrollRequest {
                token: token.clone(),
                csr_der: csr.der().to_vec(),
                ..Default::default()
            })
            .await
    });
    let err = res.expect_err("enrollment with a revoked key");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("revoked"), "{err}");
    // The same host enrolling again with a new key gets a new agent id.
    let again = tmp.path().join("again");
    assert!(enroll(&c.node_addr, &token, &again).status.success());
    let new_id = StateDir::open(&again, false)
        .unwrap()
        .identity()
        .unwrap()
        .agent_id;
    assert_ne!(new_id, id);
    node.kill9();
    assert!(
        node.log_text().contains("revoked")
            || node.log_text().contains("Revoked")
            || node.log_text().contains("refused"),
        "{}",
        node.log_text()
    );
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn tokens_and_keys_never_appear_in_plaintext_on_disk_or_in_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[("RUST_LOG", "debug")]);
    let api_token = c.tenant("acme", "noc");
    let api = Api::new(&c.api, &api_token);
    api.post("/api/v1/tests", json!({"name": "t", "intervalMs": 300, "config": {"tcp": {"host": "127.0.0.1", "port": 9}}}));
    let enrollment = c.enrollment_token("acme", "noc", "10m");
    let via_api = api.post("/api/v1/enrollment-tokens", json!({"ttlSeconds": 60}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let state = tmp.path().join("node");
    assert!(enroll(&c.node_addr, &enrollment, &state).status.success());
    let node = run_node(&state, tmp.path().join("node.log"));
    wait_until("results", Duration::from_secs(20), || {
        let v = api.get("/api/v1/results?page_size=1");
        (!v["results"].as_array()?.is_empty()).then_some(())
    });
    drop(node);
    let seed = StateDir::open(&state, false)
        .unwrap()
        .credentials()
        .unwrap()
        .signing_key()
        .unwrap()
        .to_bytes();
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for t in [&api_token, &enrollment, &via_api] {
        needles.push((format!("token {}", &t[..8]), t.as_bytes().to_vec()));
        let secret = t.split('.').nth(1).unwrap();
        needles.push((format!("secret of {}", &t[..8]), secret.as_bytes().to_vec()));
    }
    needles.push(("node private key".into(), seed.to_vec()));
    needles.push(("PEM private key".into(), b"PRIVATE KEY".to_vec()));
    let mut files = Vec::new();
    files_under(tmp.path(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("foureyes.sqlite")));
    for f in files {
        if f.file_name().is_some_and(|n| n == "collector.toml") {
            continue;
        }
        let data = std::fs::read(&f).unwrap();
        for (what, n) in &needles {
            assert!(
                !data.windows(n.len()).any(|w| w == n.as_slice()),
                "{what} found in {}",
                f.display()
            );
        }
    }
}
