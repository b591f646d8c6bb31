//! The disk spool: signed record batches wait here until the collector acknowledges them.
//!
//! Each batch is signed when it is spooled, with the key current at that moment, so a batch that
//! waits out a partition and a key renewal still verifies (the collector keeps earlier public keys).
//! The spool is bounded by record count; when full it drops the oldest batches and spools a `Gap`
//! record naming the dropped sequence range: loss is explicit, never silent. A gap is
//! conservative: a dropped batch may have been in flight when the link went down and committed
//! by the collector without the ack arriving, so a gap can cover records the store also holds
//! (always received before the gap record itself).

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use foureyes_proto::v1::{Gap, Record, RecordBatch, SignedBatch, record};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use crate::AgentError;

pub struct Spool {
    conn: Connection,
    max_records: u64,
    records: u64,
    next_seq: u64,
    /// Highest sequence number the collector acknowledged. Kept explicitly (in `meta`) because
    /// "everything below the oldest spooled batch" stops being true once the bound has dropped
    /// batches nobody acknowledged: the collector would then be told it holds records it never
    /// saw, and would log them as lost from its database.
    acked: u64,
    dropped_total: u64,
}

#[derive(Clone, Debug)]
pub struct SpooledBatch {
    pub first_seq: u64,
    pub last_seq: u64,
    pub batch: SignedBatch,
}

fn db(e: rusqlite::Error) -> AgentError {
    AgentError::Spool(e.to_string())
}

impl Spool {
    pub fn open(path: &Path, max_records: u64) -> Result<Self, AgentError> {
        let conn = Connection::open(path).map_err(db)?;
        conn.execute_batch(
            // FULL: after a power loss the sequence counter must not go back and reuse numbers
            // the collector already holds (it would drop the new results as duplicates).
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS batches (
                first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, records INTEGER NOT NULL,
                body BLOB NOT NULL, signature BLOB NOT NULL, key_id BLOB NOT NULL,
                is_gap INTEGER NOT NULL DEFAULT 0);",
        )
        .map_err(db)?;
        let next_seq: u64 = conn
            .query_row("SELECT v FROM meta WHERE k='next_seq'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(db)?
            .map(|v| v as u64)
            .unwrap_or(1);
        let records: i64 = conn
            .query_row("SELECT COALESCE(SUM(records),0) FROM batches", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        let acked = match conn
            .query_row("SELECT v FROM meta WHERE k='acked'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(db)?
        {
            Some(v) => v as u64,
            // A spool from before the watermark was kept: the oldest batch bounds it as before.
            None => {
                let oldest: Option<i64> = conn
                    .query_row("SELECT MIN(first_seq) FROM batches", [], |r| r.get(0))
                    .map_err(db)?;
                match oldest {
                    Some(f) => (f as u64).saturating_sub(1),
                    None => next_seq.saturating_sub(1),
                }
            }
        };
        Ok(Self {
            conn,
            max_records: max_records.max(1),
            records: records as u64,
            next_seq,
            acked,
            dropped_total: 0,
        })
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Highest sequence number the collector acknowledged (dropped batches are not acknowledged).
    pub fn acked_upto(&self) -> Result<u64, AgentError> {
        Ok(self.acked)
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// The collector holds everything up to `acked`: never hand out those numbers again.
    pub fn ensure_next_seq_above(&mut self, acked: u64) -> Result<(), AgentError> {
        if self.next_seq <= acked {
            self.next_seq = acked + 1;
            self.store_next_seq()?;
        }
        Ok(())
    }

    fn store_next_seq(&self) -> Result<(), AgentError> {
        self.conn
            .execute(
                "INSERT INTO meta(k,v) VALUES('next_seq',?1) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                params![self.next_seq as i64],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Numbers, signs and spools `items` as one batch. Returns the sequence range used.
    pub fn append(
        &mut self,
        items: Vec<record::Kind>,
        key: &SigningKey,
    ) -> Result<Option<(u64, u64)>, AgentError> {
        if items.is_empty() {
            return Ok(None);
        }
        let range = self.write_batch(items, key, false)?;
        self.enforce_bound(key)?;
        Ok(Some(range))
    }

    fn write_batch(
        &mut self,
        items: Vec<record::Kind>,
        key: &SigningKey,
        is_gap: bool,
    ) -> Result<(u64, u64), AgentError> {
        let first = self.next_seq;
        let mut records = Vec::with_capacity(items.len());
        for (i, mut kind) in items.into_iter().enumerate() {
            let seq = first + i as u64;
            if let record::Kind::Result(r) = &mut kind {
                r.seq = seq;
            }
            records.push(Record {
                seq,
                kind: Some(kind),
            });
        }
        let n = records.len() as u64;
        let last = first + n - 1;
        let body = RecordBatch { records }.encode_to_vec();
        let signature = key.sign(&body).to_bytes().to_vec();
        let key_id = foureyes_identity::key_id(key.verifying_key().as_bytes()).to_vec();
        let tx = self.conn.transaction().map_err(db)?;
        tx.execute(
            "INSERT INTO batches(first_seq,last_seq,records,body,signature,key_id,is_gap) VALUES(?1,?2,?3,?4,?5,?6,?7)",
            params![first as i64, last as i64, n as i64, body, signature, key_id, is_gap],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO meta(k,v) VALUES('next_seq',?1) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
            params![(last + 1) as i64],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        self.next_seq = last + 1;
        self.records += n;
        Ok((first, last))
    }

    fn enforce_bound(&mut self, key: &SigningKey) -> Result<(), AgentError> {
        if self.records <= self.max_records {
            return Ok(());
        }
        // Drop the oldest data batches down to 90 % of the bound, so a long partition yields a
        // few large gap records rather than one per flush. Gap records themselves are never
        // dropped (one record each): the loss they report must reach the collector. Each
        // contiguous run of dropped sequence numbers becomes one gap, so a gap's count always
        // equals its range and the gaps plus the stored records tile every sequence number.
        let target = self.max_records - self.max_records / 10;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        while self.records + 1 > target {
            let oldest: Option<(i64, i64, i64)> = self
                .conn
                .query_row(
                    "SELECT first_seq,last_seq,records FROM batches WHERE is_gap=0 ORDER BY first_seq LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            let Some((f, l, n)) = oldest else { break };
            self.conn
                .execute("DELETE FROM batches WHERE first_seq=?1", params![f])
                .map_err(db)?;
            let (f, l) = (f as u64, l as u64);
            match runs.last_mut() {
                Some(run) if run.1 + 1 == f => run.1 = l,
                _ => runs.push((f, l)),
            }
            self.records -= n as u64;
        }
        if runs.is_empty() {
            return Ok(());
        }
        let dropped: u64 = runs.iter().map(|(f, l)| l - f + 1).sum();
        self.dropped_total += dropped;
        tracing::warn!(
            first = runs[0].0,
            last = runs[runs.len() - 1].1,
            dropped,
            "spool full: dropped oldest records"
        );
        let gaps = runs
            .into_iter()
            .map(|(first, last)| {
                record::Kind::Gap(Gap {
                    first_seq: first,
                    last_seq: last,
                    count: last - first + 1,
                    reason: "agent spool full".into(),
                    ..Default::default()
                })
            })
            .collect();
        self.write_batch(gaps, key, true)?;
        Ok(())
    }

    /// Batches with sequence numbers above `after`, oldest first.
    pub fn pending_after(&self, after: u64, limit: usize) -> Result<Vec<SpooledBatch>, AgentError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT first_seq,last_seq,body,signature,key_id FROM batches WHERE last_seq > ?1 ORDER BY first_seq LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![after as i64, limit as i64], |r| {
                Ok(SpooledBatch {
                    first_seq: r.get::<_, i64>(0)? as u64,
                    last_seq: r.get::<_, i64>(1)? as u64,
                    batch: SignedBatch {
                        body: r.get(2)?,
                        signature: r.get(3)?,
                        key_id: r.get(4)?,
                    },
                })
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    /// Drops everything the collector has committed.
    pub fn ack(&mut self, seq: u64) -> Result<(), AgentError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(SUM(records),0) FROM batches WHERE last_seq <= ?1",
                params![seq as i64],
                |r| r.get(0),
            )
            .map_err(db)?;
        if n > 0 {
            self.conn
                .execute(
                    "DELETE FROM batches WHERE last_seq <= ?1",
                    params![seq as i64],
                )
                .map_err(db)?;
            self.records = self.records.saturating_sub(n as u64);
        }
        if seq > self.acked {
            self.acked = seq;
            self.conn
                .execute(
                    "INSERT INTO meta(k,v) VALUES('acked',?1) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                    params![seq as i64],
                )
                .map_err(db)?;
        }
        self.ensure_next_seq_above(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foureyes_proto::v1::ProbeResult;

    fn key() -> SigningKey {
        SigningKey::generate(&mut rand::rngs::OsRng)
    }

    fn result() -> record::Kind {
        record::Kind::Result(ProbeResult {
            test_id: "t".into(),
            ..Default::default()
        })
    }

    #[test]
    fn sequences_survive_reopen_and_ack_trims() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("s.sqlite");
        let k = key();
        {
            let mut s = Spool::open(&p, 1000).expect("open");
            assert_eq!(
                s.append(vec![result(), result()], &k).expect("a"),
                Some((1, 2))
            );
            assert_eq!(s.append(vec![result()], &k).expect("a"), Some((3, 3)));
        }
        let mut s = Spool::open(&p, 1000).expect("reopen");
        assert_eq!(s.next_seq(), 4);
        assert_eq!(s.records(), 3);
        assert_eq!(s.acked_upto().expect("acked"), 0);
        s.ack(2).expect("ack");
        assert_eq!(s.acked_upto().expect("acked"), 2);
        let pending = s.pending_after(0, 10).expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].first_seq, pending[0].last_seq), (3, 3));
        // The signature verifies with the key current when spooled.
        let sig = ed25519_dalek::Signature::from_slice(&pending[0].batch.signature).expect("sig");
        k.verifying_key()
            .verify_strict(&pending[0].batch.body, &sig)
            .expect("verifies");
    }

    #[test]
    fn full_spool_drops_oldest_and_records_a_gap() {
        let dir = tempfile::tempdir().expect("tmp");
        let k = key();
        let mut s = Spool::open(&dir.path().join("s.sqlite"), 10).expect("open");
        for _ in 0..8 {
            s.append(vec![result(), result()], &k).expect("append");
        }
        assert!(s.records() <= 10);
        assert!(s.dropped_total() > 0);
        let pending = s.pending_after(0, 100).expect("pending");
        let mut covered = std::collections::BTreeSet::new();
        for b in &pending {
            let batch = RecordBatch::decode(b.batch.body.as_slice()).expect("decode");
            for r in batch.records {
                covered.insert(r.seq);
                if let Some(record::Kind::Gap(g)) = r.kind {
                    assert_eq!(g.count, g.last_seq - g.first_seq + 1);
                    covered.extend(g.first_seq..=g.last_seq);
                }
            }
        }
        let last = s.next_seq() - 1;
        assert_eq!(
            covered,
            (1..=last).collect(),
            "every sequence number is data or in a gap"
        );
        // Dropping is not acknowledging: the collector is still told it holds nothing.
        assert_eq!(s.acked_upto().expect("acked"), 0);
        s.ack(3).expect("ack");
        let p = dir.path().join("s.sqlite");
        drop(s);
        assert_eq!(
            Spool::open(&p, 10)
                .expect("reopen")
                .acked_upto()
                .expect("acked"),
            3
        );
    }
}
