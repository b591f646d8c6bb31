//! Tenants' own notifiers: `POST /api/v1/notifiers`, `GET`/`PUT`/`PATCH`/`DELETE
//! /api/v1/notifiers/{id}` (the id is the name; the list, `GET /api/v1/notifiers`, is in `api.rs`).
//!
//! A notifier's name is its id: unique per org, and what alert rules name in `notifiers`. The org
//! (and, for a team token, the team) comes from the caller's credential, never from the body, and
//! another org's notifier is a 404 like every other object.
//!
//! Secrets (`hmacKey`, a Slack `url`, `password`, `routingKey`) are write-only: they are sealed
//! with the collector's key-encryption key before they reach the store, and reads show only their
//! names (`secretNames`). An update that omits a secret keeps the sealed one.
//!
//! The target is checked here, at create and update, with the same policy the sender enforces at
//! send time (`[notifier_policy]`): the host is resolved now and a refused address (loopback,
//! link-local, private, the collector's own, ...) is a 400 naming the reason. Plain `http` is
//! accepted only when every address the host resolves to is in the operator's explicit `allowed`
//! list (a local relay or test receiver); anything else must be `https`. The check at send time
//! still runs, since a name may resolve elsewhere later.
//!
//! Notifiers from the rules file are read-only here (403), and a file notifier can never replace
//! an API-created one of the same name (the file reload fails instead).

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use foureyes_notify::{NotifierConfig, SmtpSecurity, TargetPolicy};
use foureyes_proto::{openapi::Route, v1 as pb};
use foureyes_store::{NotifierRow, Scope, StoreError, Tenant};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{
    api::{ApiError, Auth, json, parse_body},
    state::Collector,
};

/// Largest request body: a notifier is a few short strings and perhaps a CA certificate.
const MAX_BODY: usize = 64 * 1024;
/// Largest setting (URL, host, address, user name).
const MAX_TEXT: usize = 2048;
const MAX_CA_PEM: usize = 32 * 1024;
const MAX_RECIPIENTS: usize = 50;
const MAX_NAME: usize = 100;
/// Notifiers one rule may name.
const MAX_RULE_NOTIFIERS: usize = 20;
/// How long a create or update waits for the target's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

pub const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/api/v1/notifiers",
        summary: "Create a notifier in the caller's org: {name, kind (webhook, slack, smtp, pagerduty), team?, url, hmacKey, host, port, security, username, password, from, to, caPem, routingKey}; secrets are write-only; the target must pass the notifier target policy",
        request: None,
        response: Some("foureyes.v1.Notifier"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/notifiers/{id}",
        summary: "Get a notifier (never its secrets: secretNames says which are set)",
        request: None,
        response: Some("foureyes.v1.Notifier"),
        query: &[],
    },
    Route {
        method: "put",
        path: "/api/v1/notifiers/{id}",
        summary: "Replace a notifier's settings; an omitted secret keeps the sealed one (not file-managed ones: 403)",
        request: None,
        response: Some("foureyes.v1.Notifier"),
        query: &[],
    },
    Route {
        method: "patch",
        path: "/api/v1/notifiers/{id}",
        summary: "Change some of a notifier's settings or secrets; the others stay (not file-managed ones: 403)",
        request: None,
        response: Some("foureyes.v1.Notifier"),
        query: &[],
    },
    Route {
        method: "delete",
        path: "/api/v1/notifiers/{id}",
        summary: "Delete a notifier (not file-managed ones: 403; not while an alert rule names it: 409)",
        request: None,
        response: None,
        query: &[],
    },
];

/// The request body. Unknown fields are refused, so a typo'd secret name is an error rather than
/// a notifier silently sent unsigned.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Body {
    name: Option<String>,
    team: Option<String>,
    kind: Option<String>,
    url: Option<String>,
    #[serde(alias = "hmac_key")]
    hmac_key: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    security: Option<String>,
    username: Option<String>,
    password: Option<String>,
    from: Option<String>,
    to: Option<Vec<String>>,
    #[serde(alias = "ca_pem")]
    ca_pem: Option<String>,
    #[serde(alias = "routing_key")]
    routing_key: Option<String>,
}

/// Settings and secrets keyed as `alerts/file.rs` stores them (what `dispatch::config_from`
/// reads). The secrets are zeroized on drop.
#[derive(Default)]
struct Parts {
    settings: HashMap<String, String>,
    secrets: Vec<(String, Zeroizing<String>)>,
}

const KINDS: &[&str] = &["webhook", "slack", "smtp", "pagerduty"];

/// (JSON field, stored key, secret?) each kind takes.
fn fields_of(kind: &str) -> &'static [(&'static str, &'static str, bool)] {
    match kind {
        "webhook" => &[("url", "url", false), ("hmacKey", "hmac_key", true)],
        "slack" => &[("url", "url", true)],
        "pagerduty" => &[("url", "url", false), ("routingKey", "routing_key", true)],
        _ => &[
            ("host", "host", false),
            ("port", "port", false),
            ("security", "security", false),
            ("username", "username", false),
            ("from", "from", false),
            ("to", "to", false),
            ("caPem", "ca_pem", false),
            ("password", "password", true),
        ],
    }
}

fn check_text(field: &str, v: &str, max: usize, multiline: bool) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("{field}: empty"));
    }
    if v.len() > max {
        return Err(format!("{field}: at most {max} bytes"));
    }
    if v.chars()
        .any(|ch| ch.is_control() && !(multiline && (ch == '\n' || ch == '\r' || ch == '\t')))
    {
        return Err(format!("{field}: control characters are not allowed"));
    }
    Ok(())
}

/// Splits a body into the kind's settings and secrets, refusing fields the kind does not take.
fn split(kind: &str, b: Body) -> Result<Parts, String> {
    let to = match b.to {
        None => None,
        Some(list) => {
            if list.is_empty() || list.len() > MAX_RECIPIENTS {
                return Err(format!("to: 1 to {MAX_RECIPIENTS} recipients"));
            }
            for a in &list {
                check_text("to", a, 320, false)?;
                if a.contains(',') {
                    return Err("to: one address per entry".into());
                }
            }
            Some(list.join(","))
        }
    };
    // Secrets are moved into zeroizing buffers at once.
    let given: Vec<(&str, Option<String>)> = vec![
        ("url", b.url),
        ("hmacKey", b.hmac_key),
        ("host", b.host),
        ("port", b.port.map(|p| p.to_string())),
        ("security", b.security),
        ("username", b.username),
        ("password", b.password),
        ("from", b.from),
        ("to", to),
        ("caPem", b.ca_pem),
        ("routingKey", b.routing_key),
    ];
    let allowed = fields_of(kind);
    let mut parts = Parts::default();
    for (field, value) in given {
        let Some(value) = value else { continue };
        let value = Zeroizing::new(value);
        let Some((_, key, secret)) = allowed.iter().find(|(f, _, _)| *f == field) else {
            return Err(format!("{field} does not apply to a {kind} notifier"));
        };
        if *secret {
            if value.is_empty() || value.len() > foureyes_notify::secret::MAX_SECRET_BYTES {
                return Err(format!(
                    "{field}: 1 to {} bytes",
                    foureyes_notify::secret::MAX_SECRET_BYTES
                ));
            }
            parts.secrets.push((key.to_string(), value));
        } else {
            let max = if field == "caPem" {
                MAX_CA_PEM
            } else {
                MAX_TEXT
            };
            check_text(field, &value, max, field == "caPem")?;
            parts.settings.insert(key.to_string(), value.to_string());
        }
    }
    Ok(parts)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name: 1 to {MAX_NAME} characters of A-Z, a-z, 0-9, '-', '_' and '.'"
        ))
    }
}

fn policy(c: &Collector) -> TargetPolicy {
    // Before the sender starts there is no configured policy; the default is the strictest.
    c.alerts.target_policy.get().cloned().unwrap_or_default()
}

/// Resolves `host` now and applies the target policy; returns the addresses that passed.
async fn resolve(
    policy: &TargetPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<std::net::SocketAddr>, String> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, policy.resolve(host, port)).await {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "cannot resolve {host}: no answer within {RESOLVE_TIMEOUT:?}"
        )),
    }
}

/// Checks a notifier URL. Errors never repeat the URL (a Slack URL is a credential; a webhook's
/// path or query may hold a token): at most its host.
async fn check_url(policy: &TargetPolicy, url: &str) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| "url: not a valid absolute URL".to_string())?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("url: use an https:// URL".into()),
    };
    let authority = uri.authority().ok_or_else(|| "url: no host".to_string())?;
    if authority.as_str().contains('@') {
        return Err(
            "url: credentials in the URL are not allowed (they would be stored in clear)".into(),
        );
    }
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addrs = resolve(policy, host, port).await?;
    let allowed = |a: &std::net::SocketAddr| policy.allowed.iter().any(|n| n.contains(&a.ip()));
    if !https && !addrs.iter().all(allowed) {
        return Err(format!(
            "url: plain http to {host} is refused: use https (http is accepted only to addresses the operator's [notifier_policy] `allowed` lists)"
        ));
    }
    Ok(())
}

/// The target check at create and update (the sender repeats it at send time).
async fn check_target(policy: &TargetPolicy, cfg: &NotifierConfig) -> Result<(), String> {
    match cfg {
        NotifierConfig::Webhook { url, .. } | NotifierConfig::PagerDuty { url, .. } => {
            check_url(policy, url).await
        }
        NotifierConfig::Slack { url } => check_url(policy, url.expose()).await,
        NotifierConfig::Smtp(s) => {
            let addrs = resolve(policy, &s.host, s.port).await?;
            if s.security == SmtpSecurity::PlainOnLoopback
                && !addrs.iter().all(|a| a.ip().is_loopback())
            {
                return Err(format!(
                    "security plain-on-loopback: {} is not a loopback address; use tls or starttls",
                    s.host
                ));
            }
            Ok(())
        }
    }
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        StoreError::Invalid(m) if m.contains("rules file") => {
            ApiError::new(StatusCode::FORBIDDEN, m)
        }
        StoreError::Invalid(m) if m.contains("is used by") => {
            ApiError::new(StatusCode::CONFLICT, m)
        }
        StoreError::Invalid(m) | StoreError::NotFound(m) => ApiError::bad_request(m),
        StoreError::InvalidName { .. } => ApiError::bad_request(e.to_string()),
        other => ApiError::from(other),
    }
}

fn read_only(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "notifier {name:?} is managed by the rules file and read-only through the API: edit the file and send SIGHUP"
        ),
    )
}

fn body_of(bytes: &Bytes) -> Result<Body, ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: at most {MAX_BODY} bytes"),
        ));
    }
    parse_body(bytes)
}

/// Builds the stored row: checks the result is a usable notifier and that its target passes the
/// policy, then seals the secrets.
async fn row(
    c: &Collector,
    name: String,
    team: String,
    kind: String,
    parts: Parts,
) -> Result<NotifierRow, ApiError> {
    let mut notifier = pb::Notifier {
        name,
        team,
        kind,
        settings: parts.settings,
        ..Default::default()
    };
    let secrets = pb::NotifierSecrets {
        values: parts
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
    };
    let result = match super::dispatch::config_from(&notifier, &secrets.values) {
        Ok(cfg) => check_target(&policy(c), &cfg)
            .await
            .map_err(ApiError::bad_request),
        Err(e) => Err(ApiError::bad_request(e)),
    };
    let mut names: Vec<String> = secrets.values.keys().cloned().collect();
    names.sort();
    notifier.secret_names = names;
    let sealed = (!secrets.values.is_empty()).then(|| {
        let plain = Zeroizing::new(prost::Message::encode_to_vec(&secrets));
        c.alerts.kek.seal(&plain)
    });
    // The plaintext map goes now, whatever the outcome.
    let mut secrets = secrets;
    for v in secrets.values.values_mut() {
        zeroize::Zeroize::zeroize(v);
    }
    result?;
    Ok(NotifierRow {
        notifier,
        sealed_secrets: sealed,
    })
}

pub(super) async fn create(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let mut b = body_of(&bytes)?;
    let name = b
        .name
        .take()
        .ok_or_else(|| ApiError::bad_request("name: required"))?;
    check_name(&name).map_err(ApiError::bad_request)?;
    let kind = b
        .kind
        .take()
        .ok_or_else(|| ApiError::bad_request(format!("kind: required ({})", KINDS.join(", "))))?;
    if !KINDS.contains(&kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "kind {kind:?}: use {}",
            KINDS.join(", ")
        )));
    }
    // Refuse a taken name before resolving anything.
    let org = Scope::Tenant(Tenant {
        org: auth.0.org.clone(),
        team: None,
    });
    if c.alerts.store.get_notifier(&org, &name)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("notifier named {name:?} already exists in this org"),
        ));
    }
    let team = b.team.take().unwrap_or_default();
    let parts = split(&kind, b).map_err(ApiError::bad_request)?;
    let row = row(&c, name, team, kind, parts).await?;
    let n = c
        .alerts
        .store
        .create_notifier(&auth.scope(), row)
        .map_err(store_error)?;
    tracing::info!(org = %n.org, notifier = %n.name, kind = %n.kind, "notifier created through the API");
    Ok(json(StatusCode::CREATED, &n))
}

pub(super) async fn get_one(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let n = c
        .alerts
        .store
        .get_notifier(&auth.scope(), &name)?
        .ok_or_else(|| ApiError::not_found("notifier"))?;
    Ok(json(StatusCode::OK, &n))
}

pub(super) async fn put(
    c: State<Arc<Collector>>,
    auth: Auth,
    name: Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    update(c, auth, name, bytes, false).await
}

pub(super) async fn patch(
    c: State<Arc<Collector>>,
    auth: Auth,
    name: Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    update(c, auth, name, bytes, true).await
}

/// PUT replaces the settings (an omitted secret keeps the sealed one); PATCH keeps the settings
/// it does not name too. Changing the kind drops everything of the old kind.
async fn update(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(name): Path<String>,
    bytes: Bytes,
    merge: bool,
) -> Result<Response, ApiError> {
    // The id first: another org's notifier is a 404 whatever the body says.
    let old = c
        .alerts
        .store
        .get_notifier(&auth.scope(), &name)?
        .ok_or_else(|| ApiError::not_found("notifier"))?;
    if old.file_managed {
        return Err(read_only(&name));
    }
    let mut b = body_of(&bytes)?;
    if b.name.take().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "name: a notifier cannot be renamed (its name is what rules refer to)",
        ));
    }
    let kind = b.kind.take().unwrap_or_else(|| old.kind.clone());
    if !KINDS.contains(&kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "kind {kind:?}: use {}",
            KINDS.join(", ")
        )));
    }
    let team = b.team.take().unwrap_or_else(|| old.team.clone());
    let given = split(&kind, b).map_err(ApiError::bad_request)?;
    let mut parts = Parts::default();
    if kind == old.kind {
        if merge {
            parts.settings = old.settings.clone();
        }
        let kept = c
            .alerts
            .notifier_secrets(&old.org, &old.name)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        if let Some(kept) = kept {
            let mut kept = kept;
            for (k, v) in kept.values.iter_mut() {
                parts
                    .secrets
                    .push((k.clone(), Zeroizing::new(std::mem::take(v))));
            }
        }
    }
    parts.settings.extend(given.settings.clone());
    for (k, v) in given.secrets.iter() {
        parts.secrets.retain(|(old, _)| old != k);
        parts.secrets.push((k.clone(), v.clone()));
    }
    let row = row(&c, name, team, kind, parts).await?;
    let n = c
        .alerts
        .store
        .update_notifier(&auth.scope(), row)
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("notifier"))?;
    tracing::info!(org = %n.org, notifier = %n.name, kind = %n.kind, "notifier changed through the API");
    Ok(json(StatusCode::OK, &n))
}

pub(super) async fn delete(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !c
        .alerts
        .store
        .delete_notifier(&auth.scope(), &name)
        .map_err(store_error)?
    {
        return Err(ApiError::not_found("notifier"));
    }
    tracing::info!(org = %auth.0.org, notifier = %name, "notifier deleted through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A rule created or changed through the API may name only notifiers of the caller's org that the
/// caller may use (org-wide ones, or its own team's): another org's notifier of that name does not
/// exist as far as the rule is concerned, and a typo is an error now rather than a silent alert.
pub fn check_rule_notifiers(
    c: &Collector,
    t: &Tenant,
    rule: &pb::AlertRule,
) -> Result<(), ApiError> {
    if rule.notifiers.is_empty() {
        return Ok(());
    }
    if rule.notifiers.len() > MAX_RULE_NOTIFIERS {
        return Err(ApiError::bad_request(format!(
            "notifiers: at most {MAX_RULE_NOTIFIERS}"
        )));
    }
    let org = Scope::Tenant(Tenant {
        org: t.org.clone(),
        team: None,
    });
    let known = c.alerts.store.notifiers(&org)?;
    for name in &rule.notifiers {
        let usable = known.iter().any(|n| {
            &n.name == name
                && (n.team.is_empty() || t.team.as_deref().is_none_or(|team| team == n.team))
        });
        if !usable {
            return Err(ApiError::bad_request(format!(
                "notifiers: no notifier named {name:?} in this org (create it with POST /api/v1/notifiers)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> Body {
        serde_json::from_value(v).expect("body")
    }

    #[test]
    fn fields_split_into_settings_and_secrets_per_kind() {
        let p = split(
            "webhook",
            body(serde_json::json!({"url": "https://h/x", "hmacKey": "k3y"})),
        )
        .expect("split");
        assert_eq!(
            p.settings.get("url").map(String::as_str),
            Some("https://h/x")
        );
        assert_eq!(p.secrets.len(), 1);
        assert!(!p.settings.values().any(|v| v.contains("k3y")));
        // A Slack URL is the credential.
        let p = split("slack", body(serde_json::json!({"url": "https://h/s"}))).expect("split");
        assert!(p.settings.is_empty());
        assert_eq!(p.secrets.first().map(|(k, _)| k.as_str()), Some("url"));
        let e = split("slack", body(serde_json::json!({"hmacKey": "x"})))
            .err()
            .expect("refused");
        assert!(e.contains("hmacKey does not apply to a slack"), "{e}");
        let p = split(
            "smtp",
            body(serde_json::json!({"host": "mx", "to": ["a@b", "c@d"], "from": "x@y"})),
        )
        .expect("split");
        assert_eq!(p.settings.get("to").map(String::as_str), Some("a@b,c@d"));
        assert!(split("smtp", body(serde_json::json!({"to": ["a@b,c@d"]}))).is_err());
        assert!(split("smtp", body(serde_json::json!({"to": []}))).is_err());
        assert!(split("webhook", body(serde_json::json!({"url": "https://h/\nx"}))).is_err());
        assert!(split("webhook", body(serde_json::json!({"hmacKey": ""}))).is_err());
        let huge = "a".repeat(MAX_TEXT + 1);
        assert!(split("webhook", body(serde_json::json!({"url": huge}))).is_err());
        // Unknown fields are refused by the shape itself.
        assert!(
            serde_json::from_value::<Body>(serde_json::json!({"hmac": "x"})).is_err(),
            "unknown field accepted"
        );
    }

    #[test]
    fn names_are_path_safe() {
        assert!(check_name("noc-hook_2.a").is_ok());
        for bad in ["", "a/b", "a b", "ä", &"a".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn urls_need_https_unless_the_operator_allows_the_address() {
        let open = TargetPolicy::allowing(["127.0.0.1/32".parse().expect("net")]);
        let strict = TargetPolicy::default();
        assert!(check_url(&open, "http://127.0.0.1:9/x").await.is_ok());
        let e = check_url(&strict, "http://127.0.0.1:9/x")
            .await
            .expect_err("loopback");
        assert!(e.contains("loopback"), "{e}");
        let e = check_url(&strict, "http://93.184.216.34/x?token=abc")
            .await
            .expect_err("http");
        assert!(e.contains("use https") && !e.contains("token"), "{e}");
        assert!(check_url(&strict, "https://93.184.216.34/x").await.is_ok());
        let e = check_url(&strict, "https://169.254.169.254/latest")
            .await
            .expect_err("metadata");
        assert!(e.contains("link-local"), "{e}");
        let e = check_url(&strict, "https://user:pw@93.184.216.34/")
            .await
            .expect_err("userinfo");
        assert!(e.contains("credentials") && !e.contains("pw"), "{e}");
        assert!(check_url(&strict, "ftp://93.184.216.34/").await.is_err());
        assert!(check_url(&strict, "/relative").await.is_err());
    }
}
