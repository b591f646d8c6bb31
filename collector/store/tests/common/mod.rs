#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use foureyes_proto::v1::{self as pb, record};
use foureyes_store::{IngestBatch, NewAgent, Scope, SqliteStore, Store, SystemScope, Tenant};
use prost::Message;

pub fn sys() -> SystemScope {
    SystemScope::collector_internal()
}

pub fn all() -> Scope {
    Scope::System(sys())
}

pub fn org(o: &str) -> Scope {
    Scope::Tenant(Tenant {
        org: o.into(),
        team: None,
    })
}

pub fn team(o: &str, t: &str) -> Scope {
    Scope::Tenant(Tenant {
        org: o.into(),
        team: Some(t.into()),
    })
}

pub fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("store.sqlite")).unwrap()
}

/// Orgs `a` and `b`, teams `x` and `y` in each.
pub fn tenants(s: &dyn Store) {
    for o in ["a", "b"] {
        s.create_org(&sys(), o).unwrap();
        for t in ["x", "y"] {
            s.create_team(&sys(), o, t).unwrap();
        }
    }
}

pub fn agent(s: &dyn Store, id: &str, org: &str, team: Option<&str>, kind: pb::AgentKind) {
    s.create_agent(
        &sys(),
        NewAgent {
            id: id.into(),
            org: org.into(),
            team: team.map(Into::into),
            kind,
            hostname: format!("{id}.example"),
            version: "1.0".into(),
            created_at_ms: 1_000,
        },
    )
    .unwrap();
}

pub fn result(seq: u64, test_id: &str) -> pb::Record {
    pb::Record {
        seq,
        kind: Some(record::Kind::Result(pb::ProbeResult {
            seq,
            test_id: test_id.into(),
            status: pb::Status::Ok as i32,
            latency_ms: seq as f64,
            sent_at: Some(foureyes_proto::timestamp_from_ms(
                1_700_000_000_000 + seq as i64,
            )),
            // Lies the collector must overwrite.
            agent_id: "forged".into(),
            received_at: Some(foureyes_proto::timestamp_from_ms(42)),
            ..Default::default()
        })),
    }
}

pub fn gap(seq: u64, first: u64, last: u64) -> pb::Record {
    pb::Record {
        seq,
        kind: Some(record::Kind::Gap(pb::Gap {
            first_seq: first,
            last_seq: last,
            count: last - first + 1,
            reason: "spool full".into(),
            ..Default::default()
        })),
    }
}

pub fn batch(
    agent: &str,
    org: &str,
    team: &str,
    records: Vec<pb::Record>,
    received_ms: i64,
) -> IngestBatch {
    IngestBatch {
        agent_id: agent.into(),
        org: org.into(),
        team: team.into(),
        body: pb::RecordBatch {
            records: records.clone(),
        }
        .encode_to_vec(),
        records,
        signature: vec![7; 64],
        key_id: vec![9; 32],
        received_ms,
    }
}

pub fn results_seqs(s: &dyn Store, scope: &Scope, agent: &str) -> Vec<u64> {
    let filter = foureyes_store::ResultFilter {
        agent_id: Some(agent.into()),
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.results(scope, &filter, cursor, 7).unwrap();
        out.extend(page.results.iter().map(|r| r.seq));
        match page.next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}
