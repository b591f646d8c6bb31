//! [`AlertStore`] for SQLite. A child of `sqlite` so it shares the connection handling and the
//! one scope-to-SQL builder ([`Where`]).

use foureyes_proto::v1 as pb;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};

use super::{
    MAX_PAGE, SqliteStore, Where, ensure_tenant, key_body_page, key_floor, next_key, random_id,
    tenant_of,
};
use crate::{
    AlertFilter, AlertPage, AlertStore, NotifierRow, ResultCursor, Scope, StoreError, SystemScope,
    Tenant, alerts::MAX_ALERT_ROWS, now_ms,
};

const FILE_MANAGED: &str = "rule is managed by the rules file: edit the file and send SIGHUP";

const NOTIFIER_FILE_MANAGED: &str = "notifier is managed by the rules file and read-only through the API: edit the file and send SIGHUP";

fn validate_notifier_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(StoreError::Invalid(
            "notifier name: 1 to 200 characters".into(),
        ));
    }
    Ok(())
}

fn decode<M: Message + Default>(b: &[u8]) -> Result<M, StoreError> {
    Ok(M::decode(b)?)
}

/// The rows of `sql` (which selects one `body` column, filtered by `w`), decoded.
fn decoded<M: Message + Default>(
    c: &Connection,
    sql: &str,
    w: &Where,
) -> Result<Vec<M>, StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let bodies = st
        .query_map(params_from_iter(&w.params), |r| r.get::<_, Vec<u8>>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    bodies.iter().map(|b| decode(b)).collect()
}

/// The team a write lands in: a team scope always owns it, an org-wide scope may name one.
fn owning_team(t: &Tenant, asked: &str) -> String {
    match &t.team {
        Some(team) => team.clone(),
        None => asked.to_string(),
    }
}

/// The (org, team, file-managed) of the row of `table` that `w` (which carries the caller's
/// scope) selects: what an update of a rule or a notifier keeps and checks.
fn owner_row(
    c: &Connection,
    table: &str,
    w: &Where,
) -> Result<Option<(String, String, bool)>, StoreError> {
    let sql = format!("SELECT org, team, file_managed FROM {table}{}", w.sql());
    Ok(c.query_row(&sql, params_from_iter(&w.params), |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .optional()?)
}

fn validate_rule_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(StoreError::Invalid("rule name: 1 to 200 characters".into()));
    }
    Ok(())
}

fn insert_rule(tx: &Connection, rule: &pb::AlertRule) -> Result<(), StoreError> {
    let r = tx.execute(
        "INSERT INTO alert_rules (id, org, team, name, file_managed, updated_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            rule.id,
            rule.org,
            rule.team,
            rule.name,
            rule.file_managed,
            now_ms(),
            rule.encode_to_vec()
        ],
    );
    match r {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::Conflict(format!(
                "alert rule named {:?} in org {:?}",
                rule.name, rule.org
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Merges the ack columns into the engine's body.
fn alert_with_ack(
    body: &[u8],
    acked_ms: Option<i64>,
    acked_by: Option<String>,
) -> Result<pb::Alert, StoreError> {
    let mut a: pb::Alert = decode(body)?;
    if let Some(ms) = acked_ms {
        a.acked_at = Some(foureyes_proto::timestamp_from_ms(ms));
        a.acked_by = acked_by.unwrap_or_default();
    }
    Ok(a)
}

fn read_alerts(c: &Connection, w: &Where, tail: &str) -> Result<Vec<(i64, pb::Alert)>, StoreError> {
    let sql = format!(
        "SELECT key, body, acked_ms, acked_by FROM alerts{}{tail}",
        w.sql()
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st
        .query_map(params_from_iter(&w.params), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(k, b, ms, by)| Ok((k, alert_with_ack(&b, ms, by)?)))
        .collect()
}

impl AlertStore for SqliteStore {
    fn create_alert_rule(
        &self,
        scope: &Scope,
        mut rule: pb::AlertRule,
    ) -> Result<pb::AlertRule, StoreError> {
        let t = tenant_of(scope, "creating an alert rule")?;
        validate_rule_name(&rule.name)?;
        rule.org = t.org.clone();
        rule.team = owning_team(t, &rule.team);
        rule.id = random_id("r-");
        rule.file_managed = false;
        rule.updated_at = Some(foureyes_proto::timestamp_from_ms(now_ms()));
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_tenant(&tx, &rule.org, &rule.team)?;
            insert_rule(&tx, &rule)?;
            tx.commit()?;
            Ok(rule)
        })
    }

    fn update_alert_rule(
        &self,
        scope: &Scope,
        mut rule: pb::AlertRule,
    ) -> Result<Option<pb::AlertRule>, StoreError> {
        validate_rule_name(&rule.name)?;
        let w = Where::default()
            .and("id = ?", rule.id.clone())
            .scope(scope, "");
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some((org, team, file)) = owner_row(&tx, "alert_rules", &w)? else {
                return Ok(None);
            };
            if file {
                return Err(StoreError::Invalid(FILE_MANAGED.into()));
            }
            rule.org = org;
            rule.team = match scope.tenant() {
                Some(t) => owning_team(t, &rule.team),
                None => team,
            };
            rule.file_managed = false;
            rule.updated_at = Some(foureyes_proto::timestamp_from_ms(now_ms()));
            ensure_tenant(&tx, &rule.org, &rule.team)?;
            tx.execute("DELETE FROM alert_rules WHERE id = ?1", [&rule.id])?;
            insert_rule(&tx, &rule)?;
            tx.commit()?;
            Ok(Some(rule))
        })
    }

    fn delete_alert_rule(&self, scope: &Scope, id: &str) -> Result<bool, StoreError> {
        let w = Where::default()
            .and("id = ?", id.to_string())
            .scope(scope, "");
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sql = format!("SELECT file_managed FROM alert_rules{}", w.sql());
            let Some(file) = tx
                .query_row(&sql, params_from_iter(&w.params), |r| r.get::<_, bool>(0))
                .optional()?
            else {
                return Ok(false);
            };
            if file {
                return Err(StoreError::Invalid(FILE_MANAGED.into()));
            }
            tx.execute("DELETE FROM alert_rules WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn get_alert_rule(&self, scope: &Scope, id: &str) -> Result<Option<pb::AlertRule>, StoreError> {
        let w = Where::default()
            .and("id = ?", id.to_string())
            .scope(scope, "");
        self.read(|c| {
            let body: Option<Vec<u8>> = c
                .prepare_cached(&format!("SELECT body FROM alert_rules{}", w.sql()))?
                .query_row(params_from_iter(&w.params), |r| r.get(0))
                .optional()?;
            body.map(|b| decode(&b)).transpose()
        })
    }

    fn list_alert_rules(&self, scope: &Scope) -> Result<Vec<pb::AlertRule>, StoreError> {
        let w = Where::default().scope(scope, "");
        self.read(|c| {
            decoded(
                c,
                &format!(
                    "SELECT body FROM alert_rules{} ORDER BY org, name LIMIT {MAX_ALERT_ROWS}",
                    w.sql()
                ),
                &w,
            )
        })
    }

    fn replace_file_managed(
        &self,
        _sys: &SystemScope,
        rules: &[pb::AlertRule],
        notifiers: &[NotifierRow],
    ) -> Result<(), StoreError> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM alert_rules WHERE file_managed = 1", [])?;
            tx.execute("DELETE FROM notifiers WHERE file_managed = 1", [])?;
            for r in rules {
                ensure_tenant(&tx, &r.org, &r.team)?;
                let mut r = r.clone();
                r.file_managed = true;
                // An API rule of the same name stays: the file's rule is the one that conflicts.
                insert_rule(&tx, &r)?;
            }
            for n in notifiers {
                let p = &n.notifier;
                ensure_tenant(&tx, &p.org, &p.team)?;
                let mut p = p.clone();
                p.file_managed = true;
                // File notifiers were deleted above, so a taken name is an API-created one: the
                // file's notifier is the one that conflicts (it must not replace a tenant's).
                let r = tx.execute(
                    "INSERT INTO notifiers (org, name, team, file_managed, body, sealed_secrets)
                     VALUES (?1, ?2, ?3, 1, ?4, ?5)",
                    params![p.org, p.name, p.team, p.encode_to_vec(), n.sealed_secrets],
                );
                match r {
                    Ok(_) => {}
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        return Err(StoreError::Conflict(format!(
                            "notifier named {:?} in org {:?} (created through the API)",
                            p.name, p.org
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn save_alert(
        &self,
        _sys: &SystemScope,
        a: &pb::Alert,
        transition: Option<&pb::AlertTransition>,
    ) -> Result<(), StoreError> {
        let started = a
            .started_at
            .as_ref()
            .map(foureyes_proto::timestamp_ms)
            .unwrap_or_else(now_ms);
        // The ack belongs to its columns; the body never carries one of its own.
        let mut body = a.clone();
        body.acked_at = None;
        body.acked_by.clear();
        let body = body.encode_to_vec();
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let updated = tx.execute(
                "UPDATE alerts SET state = ?2, updated_ms = ?3, body = ?4 WHERE id = ?1",
                params![a.id, a.state, now_ms(), body],
            )?;
            if updated == 0 {
                let last: i64 =
                    tx.query_row("SELECT coalesce(max(key), 0) FROM alerts", [], |r| r.get(0))?;
                tx.execute(
                    "INSERT INTO alerts (key, id, org, team, rule_id, subject, state, updated_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        next_key(last, started),
                        a.id,
                        a.org,
                        a.team,
                        a.rule_id,
                        a.subject,
                        a.state,
                        now_ms(),
                        body
                    ],
                )?;
            }
            if let Some(t) = transition {
                let at = t.at.as_ref().map(foureyes_proto::timestamp_ms).unwrap_or_else(now_ms);
                let last: i64 = tx.query_row(
                    "SELECT coalesce(max(key), 0) FROM alert_transitions",
                    [],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "INSERT INTO alert_transitions (key, alert_id, org, team, at_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![next_key(last, at), t.alert_id, t.org, t.team, at, t.encode_to_vec()],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn active_alerts(&self, _sys: &SystemScope) -> Result<Vec<pb::Alert>, StoreError> {
        let w = Where::default().and_many("state IN (1, 2)".into(), Vec::new());
        self.read(|c| {
            Ok(
                read_alerts(c, &w, &format!(" ORDER BY key LIMIT {MAX_ALERT_ROWS}"))?
                    .into_iter()
                    .map(|(_, a)| a)
                    .collect(),
            )
        })
    }

    fn alerts(
        &self,
        scope: &Scope,
        f: &AlertFilter,
        after: Option<ResultCursor>,
        limit: usize,
    ) -> Result<AlertPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut w = Where::default().scope(scope, "");
        if let Some(s) = f.state {
            w = w.and("state = ?", s as i32);
        }
        if let Some(r) = &f.rule_id {
            w = w.and("rule_id = ?", r.clone());
        }
        if let Some(s) = &f.subject {
            w = w.and("subject = ?", s.clone());
        }
        if let Some(t) = f.from_ms {
            w = w.and("key >= ?", key_floor(t));
        }
        if let Some(t) = f.to_ms {
            w = w.and("key < ?", key_floor(t));
        }
        if let Some(c) = after {
            w = w.and("key > ?", c.0);
        }
        self.read(|c| {
            let rows = read_alerts(c, &w, &format!(" ORDER BY key LIMIT {}", limit + 1))?;
            let more = rows.len() > limit;
            let mut page = AlertPage::default();
            let mut last = None;
            for (k, a) in rows.into_iter().take(limit) {
                page.alerts.push(a);
                last = Some(k);
            }
            if more {
                page.next = last.map(ResultCursor);
            }
            Ok(page)
        })
    }

    fn get_alert(&self, scope: &Scope, id: &str) -> Result<Option<pb::Alert>, StoreError> {
        let w = Where::default()
            .scope(scope, "")
            .and("id = ?", id.to_string());
        self.read(|c| Ok(read_alerts(c, &w, "")?.into_iter().next().map(|(_, a)| a)))
    }

    fn ack_alert(
        &self,
        scope: &Scope,
        id: &str,
        by: &str,
        now: i64,
    ) -> Result<Option<pb::Alert>, StoreError> {
        let w = Where::default()
            .scope(scope, "")
            .and("id = ?", id.to_string());
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sql = format!(
                "UPDATE alerts SET acked_ms = coalesce(acked_ms, ?), acked_by = coalesce(acked_by, ?){}",
                w.sql()
            );
            let mut ps: Vec<rusqlite::types::Value> = vec![now.into(), by.to_string().into()];
            ps.extend(w.params.iter().cloned());
            if tx.execute(&sql, params_from_iter(&ps))? == 0 {
                return Ok(None);
            }
            let out = read_alerts(&tx, &w, "")?.into_iter().next().map(|(_, a)| a);
            tx.commit()?;
            Ok(out)
        })
    }

    fn alert_transitions(
        &self,
        scope: &Scope,
        alert_id: &str,
    ) -> Result<Vec<pb::AlertTransition>, StoreError> {
        let w = Where::default()
            .scope(scope, "")
            .and("alert_id = ?", alert_id.to_string());
        self.read(|c| {
            let (v, _, _) = key_body_page(c, "alert_transitions", &w, MAX_ALERT_ROWS)?;
            Ok(v)
        })
    }

    fn create_silence(&self, scope: &Scope, mut s: pb::Silence) -> Result<pb::Silence, StoreError> {
        let t = tenant_of(scope, "creating a silence")?;
        s.org = t.org.clone();
        s.team = owning_team(t, &s.team);
        s.id = random_id("s-");
        let now = now_ms();
        s.created_at = Some(foureyes_proto::timestamp_from_ms(now));
        let expires = s
            .expires_at
            .as_ref()
            .map(foureyes_proto::timestamp_ms)
            .ok_or_else(|| StoreError::Invalid("a silence needs expiresAt".into()))?;
        if expires <= now {
            return Err(StoreError::Invalid("expiresAt is in the past".into()));
        }
        if s.comment.len() > 1000 || s.created_by.len() > 200 {
            return Err(StoreError::Invalid("comment or createdBy too long".into()));
        }
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_tenant(&tx, &s.org, &s.team)?;
            tx.execute(
                "INSERT INTO silences (id, org, team, expires_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![s.id, s.org, s.team, expires, s.encode_to_vec()],
            )?;
            tx.commit()?;
            Ok(s)
        })
    }

    fn silences(&self, scope: &Scope, now: i64) -> Result<Vec<pb::Silence>, StoreError> {
        let w = Where::default().scope(scope, "").and("expires_ms > ?", now);
        self.read(|c| {
            decoded(
                c,
                &format!(
                    "SELECT body FROM silences{} ORDER BY id LIMIT {MAX_ALERT_ROWS}",
                    w.sql()
                ),
                &w,
            )
        })
    }

    fn delete_silence(&self, scope: &Scope, id: &str) -> Result<bool, StoreError> {
        let w = Where::default()
            .and("id = ?", id.to_string())
            .scope(scope, "");
        self.write(|c| {
            let n = c.execute(
                &format!("DELETE FROM silences{}", w.sql()),
                params_from_iter(&w.params),
            )?;
            Ok(n > 0)
        })
    }

    fn notifiers(&self, scope: &Scope) -> Result<Vec<pb::Notifier>, StoreError> {
        let w = Where::default().scope(scope, "");
        self.read(|c| {
            decoded(
                c,
                &format!(
                    "SELECT body FROM notifiers{} ORDER BY org, name LIMIT {MAX_ALERT_ROWS}",
                    w.sql()
                ),
                &w,
            )
        })
    }

    fn notifier_secrets(
        &self,
        _sys: &SystemScope,
        org: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT sealed_secrets FROM notifiers WHERE org = ?1 AND name = ?2",
            )?
            .query_row([org, name], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
        })
    }

    fn create_notifier(&self, scope: &Scope, n: NotifierRow) -> Result<pb::Notifier, StoreError> {
        let t = tenant_of(scope, "creating a notifier")?;
        let mut p = n.notifier;
        validate_notifier_name(&p.name)?;
        p.org = t.org.clone();
        p.team = owning_team(t, &p.team);
        p.file_managed = false;
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_tenant(&tx, &p.org, &p.team)?;
            let r = tx.execute(
                "INSERT INTO notifiers (org, name, team, file_managed, body, sealed_secrets)
                 VALUES (?1, ?2, ?3, 0, ?4, ?5)",
                params![p.org, p.name, p.team, p.encode_to_vec(), n.sealed_secrets],
            );
            match r {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(StoreError::Conflict(format!(
                        "notifier named {:?} in org {:?}",
                        p.name, p.org
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            tx.commit()?;
            Ok(p)
        })
    }

    fn get_notifier(&self, scope: &Scope, name: &str) -> Result<Option<pb::Notifier>, StoreError> {
        let w = Where::default()
            .and("name = ?", name.to_string())
            .scope(scope, "");
        self.read(|c| {
            let body: Option<Vec<u8>> = c
                .prepare_cached(&format!("SELECT body FROM notifiers{}", w.sql()))?
                .query_row(params_from_iter(&w.params), |r| r.get(0))
                .optional()?;
            body.map(|b| decode(&b)).transpose()
        })
    }

    fn update_notifier(
        &self,
        scope: &Scope,
        n: NotifierRow,
    ) -> Result<Option<pb::Notifier>, StoreError> {
        let mut p = n.notifier;
        let w = Where::default()
            .and("name = ?", p.name.clone())
            .scope(scope, "");
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some((org, team, file)) = owner_row(&tx, "notifiers", &w)? else {
                return Ok(None);
            };
            if file {
                return Err(StoreError::Invalid(NOTIFIER_FILE_MANAGED.into()));
            }
            p.org = org;
            p.team = match scope.tenant() {
                Some(t) => owning_team(t, &p.team),
                None => team,
            };
            p.file_managed = false;
            ensure_tenant(&tx, &p.org, &p.team)?;
            tx.execute(
                "UPDATE notifiers SET team = ?3, body = ?4, sealed_secrets = ?5
                 WHERE org = ?1 AND name = ?2",
                params![p.org, p.name, p.team, p.encode_to_vec(), n.sealed_secrets],
            )?;
            tx.commit()?;
            Ok(Some(p))
        })
    }

    fn delete_notifier(&self, scope: &Scope, name: &str) -> Result<bool, StoreError> {
        let w = Where::default()
            .and("name = ?", name.to_string())
            .scope(scope, "");
        self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sql = format!("SELECT org, file_managed FROM notifiers{}", w.sql());
            let Some((org, file)) = tx
                .query_row(&sql, params_from_iter(&w.params), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
                })
                .optional()?
            else {
                return Ok(false);
            };
            if file {
                return Err(StoreError::Invalid(NOTIFIER_FILE_MANAGED.into()));
            }
            // Rules of the whole org, not only the caller's team: an org-wide rule naming a team's
            // notifier would otherwise lose its notifications without anyone being told.
            let mut users: Vec<String> = {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT body FROM alert_rules WHERE org = ?1 LIMIT {MAX_ALERT_ROWS}"
                ))?;
                let bodies = st
                    .query_map([&org], |r| r.get::<_, Vec<u8>>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut users = Vec::new();
                for b in bodies {
                    let r: pb::AlertRule = decode(&b)?;
                    if r.notifiers.iter().any(|n| n == name) {
                        users.push(format!("{:?}", r.name));
                    }
                }
                users
            };
            if !users.is_empty() {
                users.sort();
                users.truncate(10);
                return Err(StoreError::Invalid(format!(
                    "notifier {name:?} is used by alert rule(s) {}: remove it from them first",
                    users.join(", ")
                )));
            }
            tx.execute(
                "DELETE FROM notifiers WHERE org = ?1 AND name = ?2",
                params![org, name],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Store;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path().join("a.sqlite")).unwrap();
        let sys = SystemScope::collector_internal();
        for org in ["acme", "other"] {
            s.create_org(&sys, org).unwrap();
        }
        s.create_team(&sys, "acme", "noc").unwrap();
        (dir, s)
    }

    fn tenant(org: &str, team: Option<&str>) -> Scope {
        Scope::Tenant(Tenant {
            org: org.into(),
            team: team.map(Into::into),
        })
    }

    fn rule(name: &str) -> pb::AlertRule {
        pb::AlertRule {
            name: name.into(),
            kind: Some(pb::alert_rule::Kind::Loss(pb::LossRule {
                test_id: "t-1".into(),
                threshold: 0.5,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn rules_are_tenant_scoped_and_file_rules_are_read_only() {
        let (_d, s) = store();
        let acme = tenant("acme", None);
        let other = tenant("other", None);
        let r = s.create_alert_rule(&acme, rule("loss")).unwrap();
        assert!(matches!(
            s.create_alert_rule(&acme, rule("loss")),
            Err(StoreError::Conflict(_))
        ));
        assert!(s.get_alert_rule(&other, &r.id).unwrap().is_none());
        assert!(s.list_alert_rules(&other).unwrap().is_empty());
        assert!(!s.delete_alert_rule(&other, &r.id).unwrap());
        assert!(s.update_alert_rule(&other, r.clone()).unwrap().is_none());
        // A team scope sees only its team's rules; the org-wide rule is not its own.
        assert!(
            s.get_alert_rule(&tenant("acme", Some("noc")), &r.id)
                .unwrap()
                .is_none()
        );

        let mut f = rule("from-file");
        f.id = "rf-1".into();
        f.org = "acme".into();
        s.replace_file_managed(&SystemScope::collector_internal(), &[f.clone()], &[])
            .unwrap();
        assert!(
            s.get_alert_rule(&acme, "rf-1")
                .unwrap()
                .unwrap()
                .file_managed
        );
        assert!(matches!(
            s.delete_alert_rule(&acme, "rf-1"),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            s.update_alert_rule(&acme, f),
            Err(StoreError::Invalid(_))
        ));
        // A reload replaces the file's rules and keeps the API's.
        s.replace_file_managed(&SystemScope::collector_internal(), &[], &[])
            .unwrap();
        assert!(s.get_alert_rule(&acme, "rf-1").unwrap().is_none());
        assert!(s.get_alert_rule(&acme, &r.id).unwrap().is_some());
        assert!(s.delete_alert_rule(&acme, &r.id).unwrap());
    }

    #[test]
    fn alerts_keep_acks_across_engine_saves_and_stay_in_their_tenant() {
        let (_d, s) = store();
        let sys = SystemScope::collector_internal();
        let mut a = pb::Alert {
            id: "a-1".into(),
            org: "acme".into(),
            rule_id: "r-1".into(),
            subject: "t-1".into(),
            state: pb::AlertState::Pending as i32,
            started_at: Some(foureyes_proto::timestamp_from_ms(now_ms())),
            ..Default::default()
        };
        s.save_alert(&sys, &a, None).unwrap();
        assert_eq!(s.active_alerts(&sys).unwrap().len(), 1);
        let acme = tenant("acme", None);
        assert!(
            s.ack_alert(&tenant("other", None), "a-1", "x", 5)
                .unwrap()
                .is_none()
        );
        let acked = s.ack_alert(&acme, "a-1", "alice", 5).unwrap().unwrap();
        assert_eq!(acked.acked_by, "alice");
        a.state = pb::AlertState::Resolved as i32;
        let t = pb::AlertTransition {
            alert_id: "a-1".into(),
            org: "acme".into(),
            to: pb::AlertState::Resolved as i32,
            ..Default::default()
        };
        s.save_alert(&sys, &a, Some(&t)).unwrap();
        let got = s.get_alert(&acme, "a-1").unwrap().unwrap();
        assert_eq!(got.acked_by, "alice");
        assert_eq!(got.state, pb::AlertState::Resolved as i32);
        assert!(s.active_alerts(&sys).unwrap().is_empty());
        assert!(
            s.get_alert(&tenant("other", None), "a-1")
                .unwrap()
                .is_none()
        );
        assert_eq!(s.alert_transitions(&acme, "a-1").unwrap().len(), 1);
        assert!(
            s.alert_transitions(&tenant("other", None), "a-1")
                .unwrap()
                .is_empty()
        );
        let page = s
            .alerts(
                &acme,
                &AlertFilter {
                    state: Some(pb::AlertState::Resolved),
                    ..Default::default()
                },
                None,
                10,
            )
            .unwrap();
        assert_eq!(page.alerts.len(), 1);
        // Pages walk alerts in start order with a cursor.
        for i in 2..=4 {
            let mut b = a.clone();
            b.id = format!("a-{i}");
            b.started_at = Some(foureyes_proto::timestamp_from_ms(now_ms() + i));
            s.save_alert(&sys, &b, None).unwrap();
        }
        let all = AlertFilter::default();
        let p1 = s.alerts(&acme, &all, None, 3).unwrap();
        assert_eq!(p1.alerts.len(), 3);
        let p2 = s.alerts(&acme, &all, p1.next, 3).unwrap();
        let ids: Vec<&str> = p1
            .alerts
            .iter()
            .chain(&p2.alerts)
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(ids, ["a-1", "a-2", "a-3", "a-4"]);
        assert!(p2.next.is_none());
    }

    #[test]
    fn silences_expire_and_notifier_secrets_stay_out_of_reads() {
        let (_d, s) = store();
        let acme = tenant("acme", None);
        let now = now_ms();
        let sil = s
            .create_silence(
                &acme,
                pb::Silence {
                    expires_at: Some(foureyes_proto::timestamp_from_ms(now + 1000)),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(s.silences(&acme, now).unwrap().len(), 1);
        assert!(s.silences(&acme, now + 2000).unwrap().is_empty());
        assert!(s.silences(&tenant("other", None), now).unwrap().is_empty());
        assert!(!s.delete_silence(&tenant("other", None), &sil.id).unwrap());
        assert!(s.delete_silence(&acme, &sil.id).unwrap());
        let n = NotifierRow {
            notifier: pb::Notifier {
                name: "hook".into(),
                org: "acme".into(),
                kind: "webhook".into(),
                secret_names: vec!["hmac_key".into()],
                ..Default::default()
            },
            sealed_secrets: Some(b"sealed".to_vec()),
        };
        s.replace_file_managed(&SystemScope::collector_internal(), &[], &[n])
            .unwrap();
        assert_eq!(s.notifiers(&acme).unwrap()[0].name, "hook");
        assert!(s.notifiers(&tenant("other", None)).unwrap().is_empty());
        assert_eq!(
            s.notifier_secrets(&SystemScope::collector_internal(), "acme", "hook")
                .unwrap()
                .as_deref(),
            Some(&b"sealed"[..])
        );
    }
    #[test]
    fn api_notifiers_are_scoped_guarded_and_never_replaced_by_the_file() {
        let (_d, s) = store();
        let acme = tenant("acme", None);
        let row = |name: &str, url: &str| NotifierRow {
            notifier: pb::Notifier {
                name: name.into(),
                org: "forged".into(),
                kind: "webhook".into(),
                settings: [("url".to_string(), url.to_string())].into(),
                secret_names: vec!["hmac_key".into()],
                file_managed: true,
                ..Default::default()
            },
            sealed_secrets: Some(b"sealed-1".to_vec()),
        };
        let n = s
            .create_notifier(&acme, row("hook", "https://a/1"))
            .unwrap();
        // The org comes from the scope, and an API notifier is never file-managed.
        assert_eq!((n.org.as_str(), n.file_managed), ("acme", false));
        assert!(matches!(
            s.create_notifier(&acme, row("hook", "https://a/2")),
            Err(StoreError::Conflict(_))
        ));
        let other = tenant("other", None);
        assert!(s.get_notifier(&other, "hook").unwrap().is_none());
        assert!(
            s.update_notifier(&other, row("hook", "https://x"))
                .unwrap()
                .is_none()
        );
        assert!(!s.delete_notifier(&other, "hook").unwrap());
        let mut changed = row("hook", "https://a/3");
        changed.sealed_secrets = Some(b"sealed-2".to_vec());
        s.update_notifier(&acme, changed).unwrap().unwrap();
        assert_eq!(
            s.get_notifier(&acme, "hook").unwrap().unwrap().settings["url"],
            "https://a/3"
        );
        let sys = SystemScope::collector_internal();
        assert_eq!(
            s.notifier_secrets(&sys, "acme", "hook").unwrap().as_deref(),
            Some(&b"sealed-2"[..])
        );
        // A rules file naming the same notifier fails instead of replacing the tenant's.
        let mut file = row("hook", "https://file");
        file.notifier.org = "acme".into();
        assert!(matches!(
            s.replace_file_managed(&sys, &[], &[file]),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.get_notifier(&acme, "hook").unwrap().unwrap().settings["url"],
            "https://a/3"
        );
        // Not deleted while a rule names it.
        let mut r = rule("uses hook");
        r.notifiers = vec!["hook".into()];
        let r = s.create_alert_rule(&acme, r).unwrap();
        let e = s.delete_notifier(&acme, "hook").unwrap_err();
        assert!(e.to_string().contains("uses hook"), "{e}");
        s.delete_alert_rule(&acme, &r.id).unwrap();
        assert!(s.delete_notifier(&acme, "hook").unwrap());
        assert!(s.get_notifier(&acme, "hook").unwrap().is_none());
    }
}
