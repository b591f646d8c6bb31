//! The rules file (`foureyes-collector serve --rules FILE`): alert rules and notifiers as TOML,
//! each naming its org (and optionally team). Rules from the file are file-managed: the API shows
//! them but cannot change them. The collector re-reads the file on SIGHUP; a file that does not
//! load leaves the rules in force untouched and logs an error naming the line.
//!
//! ```toml
//! [[notifier]]
//! name = "noc-hook"
//! org = "acme"
//! kind = "webhook"              # webhook | slack | smtp | pagerduty
//! url = "https://hooks.example.net/foureyes"
//! hmac_key_file = "/etc/foureyes/noc-hook.key"   # secrets only as *_file
//!
//! [[rule]]
//! name = "api loss"
//! org = "acme"
//! team = "noc"
//! notifiers = ["noc-hook"]
//! severity = "critical"
//! fire_after = 3                # evaluations
//! fire_after_duration = "30s"
//! clear_after = 2
//! labels = { service = "api" }
//! loss = { test_id = "t-0123456789abcdef", threshold = 0.2, window_seconds = 60 }
//! ```
//!
//! A rule's kind is one table named after it (`latency`, `loss`, `unreachable`, `stale`,
//! `visibility`, `origin_change`, `more_specific`, `unexpected_as`, `session_down`,
//! `rpki_invalid`) with the fields of the proto message (`alert.proto`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::atomic::Ordering,
};

use foureyes_proto::v1 as pb;
use foureyes_store::{NotifierRow, SystemScope};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::state::Collector;

/// Largest rules file read (a typo'd path to a huge file must not eat the collector's memory).
const MAX_FILE_BYTES: u64 = 4 << 20;
/// Largest secret file read.
const MAX_SECRET_BYTES: u64 = 64 << 10;
const NOTIFIER_KINDS: &[&str] = &["webhook", "slack", "smtp", "pagerduty"];
/// Setting names that hold secrets: they may only be given as `<name>_file`.
const SECRET_NAMES: &[&str] = &[
    "secret",
    "password",
    "hmac_key",
    "routing_key",
    "token",
    "api_key",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    notifier: Vec<toml::Spanned<FileNotifier>>,
    #[serde(default)]
    rule: Vec<toml::Spanned<FileRule>>,
}

#[derive(Debug, Deserialize)]
struct FileNotifier {
    name: String,
    org: String,
    team: Option<String>,
    kind: String,
    #[serde(flatten)]
    settings: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    name: String,
    org: String,
    team: Option<String>,
    #[serde(default)]
    notifiers: Vec<String>,
    severity: Option<String>,
    fire_after: Option<u32>,
    fire_after_duration: Option<String>,
    clear_after: Option<u32>,
    #[serde(default)]
    labels: HashMap<String, String>,
    latency: Option<toml::Value>,
    loss: Option<toml::Value>,
    unreachable: Option<toml::Value>,
    stale: Option<toml::Value>,
    visibility: Option<toml::Value>,
    origin_change: Option<toml::Value>,
    more_specific: Option<toml::Value>,
    unexpected_as: Option<toml::Value>,
    session_down: Option<toml::Value>,
    rpki_invalid: Option<toml::Value>,
    path_mismatch: Option<toml::Value>,
}

/// What a rules file holds, checked and ready for the store.
#[derive(Debug)]
pub struct Parsed {
    pub rules: Vec<pb::AlertRule>,
    pub notifiers: Vec<NotifierRow>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|s| s.matches('\n').count())
        .unwrap_or(0)
        + 1
}

/// The stable id of a file rule: a reload keeps its alerts' state.
pub fn file_rule_id(org: &str, name: &str) -> String {
    let h = Sha256::digest(format!("{org}\0{name}").as_bytes());
    format!("rf-{}", hex::encode(h.get(..8).unwrap_or_default()))
}

fn kind_of<M>(v: &toml::Value, name: &str) -> Result<M, String>
where
    M: serde::de::DeserializeOwned,
{
    let json = serde_json::to_value(v).map_err(|e| format!("{name}: {e}"))?;
    serde_json::from_value(json).map_err(|e| format!("{name}: {e}"))
}

fn read_secret(base: &Path, key: &str, path: &str) -> Result<String, String> {
    let p = base.join(path);
    let meta = std::fs::metadata(&p).map_err(|e| format!("{key} {}: {e}", p.display()))?;
    if meta.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "{key} {}: larger than {MAX_SECRET_BYTES} bytes",
            p.display()
        ));
    }
    let s = std::fs::read_to_string(&p).map_err(|e| format!("{key} {}: {e}", p.display()))?;
    Ok(s.trim().to_string())
}

fn rule_from(f: FileRule) -> Result<pb::AlertRule, String> {
    use pb::alert_rule::Kind;
    let mut kinds = Vec::new();
    macro_rules! k {
        ($field:ident, $variant:ident, $name:literal) => {
            if let Some(v) = &f.$field {
                kinds.push(Kind::$variant(kind_of(v, $name)?));
            }
        };
    }
    k!(latency, Latency, "latency");
    k!(loss, Loss, "loss");
    k!(unreachable, Unreachable, "unreachable");
    k!(stale, Stale, "stale");
    k!(visibility, Visibility, "visibility");
    k!(origin_change, OriginChange, "origin_change");
    k!(more_specific, MoreSpecific, "more_specific");
    k!(unexpected_as, UnexpectedAs, "unexpected_as");
    k!(session_down, SessionDown, "session_down");
    k!(rpki_invalid, RpkiInvalid, "rpki_invalid");
    k!(path_mismatch, PathMismatch, "path_mismatch");
    if kinds.len() != 1 {
        return Err(format!(
            "rule {:?} must have exactly one kind table (latency, loss, unreachable, stale, visibility, origin_change, more_specific, unexpected_as, session_down, rpki_invalid, path_mismatch); it has {}",
            f.name,
            kinds.len()
        ));
    }
    let severity = match f.severity.as_deref() {
        None => pb::Severity::Warning,
        Some("info") => pb::Severity::Info,
        Some("warning") => pb::Severity::Warning,
        Some("critical") => pb::Severity::Critical,
        Some(o) => return Err(format!("severity {o:?}: use info, warning or critical")),
    };
    let fire_after_seconds = match &f.fire_after_duration {
        None => 0,
        Some(s) => {
            let d = humantime::parse_duration(s)
                .map_err(|e| format!("fire_after_duration {s:?}: {e}"))?;
            u32::try_from(d.as_secs())
                .map_err(|_| format!("fire_after_duration {s:?}: too long"))?
        }
    };
    let team = f.team.unwrap_or_default();
    let rule = pb::AlertRule {
        id: file_rule_id(&f.org, &f.name),
        org: f.org,
        team,
        name: f.name,
        kind: kinds.pop(),
        fire_after: f.fire_after.unwrap_or(1),
        fire_after_seconds,
        clear_after: f.clear_after.unwrap_or(1),
        severity: severity as i32,
        notifiers: f.notifiers,
        labels: f.labels,
        file_managed: true,
        updated_at: Some(foureyes_proto::timestamp_from_ms(crate::server::now_ms())),
    };
    super::rules::validate(&rule)?;
    Ok(rule)
}

fn notifier_from(
    f: FileNotifier,
    base: &Path,
    kek: &foureyes_identity::Kek,
) -> Result<NotifierRow, String> {
    if !NOTIFIER_KINDS.contains(&f.kind.as_str()) {
        return Err(format!(
            "notifier kind {:?}: use {}",
            f.kind,
            NOTIFIER_KINDS.join(", ")
        ));
    }
    let mut settings = HashMap::new();
    let mut secrets = HashMap::new();
    for (k, v) in f.settings {
        if SECRET_NAMES.contains(&k.as_str()) || (f.kind == "slack" && k == "url") {
            return Err(format!(
                "notifier {:?}: {k} is a secret: name a file with {k}_file instead",
                f.name
            ));
        }
        let text = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or(()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|()| format!("notifier {:?}: {k} must be a list of strings", f.name))?
                .join(","),
            _ => return Err(format!("notifier {:?}: {k} must be a string", f.name)),
        };
        match k.strip_suffix("_file") {
            Some(name) => {
                secrets.insert(name.to_string(), read_secret(base, &k, &text)?);
            }
            None => {
                settings.insert(k, text);
            }
        }
    }
    let need = |s: &str| settings.contains_key(s) || secrets.contains_key(s);
    let required: &[&str] = match f.kind.as_str() {
        "webhook" => &["url"],
        "slack" => &["url"],
        "smtp" => &["host", "from", "to"],
        _ => &["routing_key"],
    };
    for r in required {
        if !need(r) {
            return Err(format!("notifier {:?} ({}) needs {r}", f.name, f.kind));
        }
    }
    let mut secret_names: Vec<String> = secrets.keys().cloned().collect();
    secret_names.sort();
    let sealed = (!secrets.is_empty()).then(|| {
        let plain = prost::Message::encode_to_vec(&pb::NotifierSecrets { values: secrets });
        let sealed = kek.seal(&plain);
        zeroize_vec(plain);
        sealed
    });
    Ok(NotifierRow {
        notifier: pb::Notifier {
            name: f.name,
            org: f.org,
            team: f.team.unwrap_or_default(),
            kind: f.kind,
            settings,
            secret_names,
            file_managed: true,
        },
        sealed_secrets: sealed,
    })
}

/// Opens a notifier's sealed secrets.
pub fn open_secrets(
    kek: &foureyes_identity::Kek,
    sealed: &[u8],
) -> Result<pb::NotifierSecrets, String> {
    let plain = kek
        .open(sealed)
        .map_err(|e| format!("notifier secrets do not unseal: {e}"))?;
    <pb::NotifierSecrets as prost::Message>::decode(plain.as_slice())
        .map_err(|e| format!("notifier secrets: {e}"))
}

fn zeroize_vec(mut v: Vec<u8>) {
    for b in v.iter_mut() {
        *b = 0;
    }
    std::hint::black_box(&v);
}

/// Reads and checks a rules file. Errors name the file and the line.
pub fn parse(path: &Path, kek: &foureyes_identity::Kek) -> Result<Parsed, String> {
    let at = |line: usize, e: String| format!("{}:{line}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: RulesFile = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(0);
        at(line, e.message().to_string())
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut notifiers = Vec::new();
    let mut names = HashSet::new();
    for n in file.notifier {
        let line = line_of(&text, n.span().start);
        let n = n.into_inner();
        if !names.insert((n.org.clone(), n.name.clone())) {
            return Err(at(
                line,
                format!("notifier {:?} defined twice in org {:?}", n.name, n.org),
            ));
        }
        notifiers.push(notifier_from(n, base, kek).map_err(|e| at(line, e))?);
    }
    let mut rules = Vec::new();
    let mut rule_names = HashSet::new();
    for r in file.rule {
        let line = line_of(&text, r.span().start);
        let r = rule_from(r.into_inner()).map_err(|e| at(line, e))?;
        if !rule_names.insert((r.org.clone(), r.name.clone())) {
            return Err(at(
                line,
                format!("rule {:?} defined twice in org {:?}", r.name, r.org),
            ));
        }
        for n in &r.notifiers {
            if !names.contains(&(r.org.clone(), n.clone())) {
                return Err(at(
                    line,
                    format!(
                        "rule {:?} names notifier {n:?}, which org {:?} does not define",
                        r.name, r.org
                    ),
                ));
            }
        }
        rules.push((line, r));
    }
    Ok(Parsed {
        rules: rules.into_iter().map(|(_, r)| r).collect(),
        notifiers,
    })
}

/// Loads the configured rules file into the store (replacing the previous file's rules).
pub fn load(c: &Collector) -> Result<(usize, usize), String> {
    let Some(path) = &c.alerts.rules_file else {
        return Ok((0, 0));
    };
    let parsed = parse(path, &c.alerts.kek)?;
    let sys = SystemScope::collector_internal();
    for r in &parsed.rules {
        let ok = c.store.org_exists(&sys, &r.org).unwrap_or(false)
            && (r.team.is_empty() || c.store.team_exists(&sys, &r.org, &r.team).unwrap_or(false));
        if !ok {
            return Err(format!(
                "{}: rule {:?}: org {:?} or team {:?} does not exist",
                path.display(),
                r.name,
                r.org,
                r.team
            ));
        }
    }
    c.alerts
        .store
        .replace_file_managed(&sys, &parsed.rules, &parsed.notifiers)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    c.alerts.changed();
    Ok((parsed.rules.len(), parsed.notifiers.len()))
}

/// SIGHUP: reload, or keep the rules in force and say why.
pub fn reload(c: &Collector) {
    let counters = &c.alerts.counters;
    let mut last = c
        .alerts
        .last_file_error
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match load(c) {
        Ok((rules, notifiers)) => {
            counters.file_reloads.fetch_add(1, Ordering::Relaxed);
            last.clear();
            tracing::info!(rules, notifiers, "rules file reloaded");
        }
        Err(e) => {
            counters.file_reload_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "rules file not reloaded; the previous rules stay in force");
            *last = e;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Parsed, String> {
        parse_with(text, &foureyes_identity::Kek::generate())
    }

    fn parse_with(text: &str, kek: &foureyes_identity::Kek) -> Result<Parsed, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.key"), "s3cr3t-hmac\n").unwrap();
        let p = dir.path().join("rules.toml");
        std::fs::write(&p, text).unwrap();
        parse(&p, kek)
    }

    const GOOD: &str = r#"
[[notifier]]
name = "hook"
org = "acme"
kind = "webhook"
url = "http://127.0.0.1:9/x"
hmac_key_file = "hook.key"

[[rule]]
name = "loss"
org = "acme"
notifiers = ["hook"]
fire_after = 2
loss = { test_id = "t-1", threshold = 0.5 }
"#;

    #[test]
    fn a_good_file_parses_and_seals_secrets() {
        let p = parse_text(GOOD).unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].id, file_rule_id("acme", "loss"));
        assert!(p.rules[0].file_managed);
        assert_eq!(p.rules[0].fire_after, 2);
        let n = &p.notifiers[0];
        assert_eq!(n.notifier.secret_names, vec!["hmac_key"]);
        let sealed = n.sealed_secrets.as_ref().unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"s3cr3t-hmac"));
        assert!(!format!("{:?}", n.notifier).contains("s3cr3t"));
        // The sender gets them back with the same key, and only with it.
        let kek = foureyes_identity::Kek::generate();
        let p = parse_with(GOOD, &kek).unwrap();
        let sealed = p.notifiers[0].sealed_secrets.clone().unwrap();
        assert_eq!(
            open_secrets(&kek, &sealed).unwrap().values["hmac_key"],
            "s3cr3t-hmac"
        );
        assert!(open_secrets(&foureyes_identity::Kek::generate(), &sealed).is_err());
    }

    #[test]
    fn a_path_mismatch_rule_parses_as_documented() {
        let text = GOOD.replace(
            "loss = { test_id = \"t-1\", threshold = 0.5 }",
            "path_mismatch = { test_id = \"t-1\", local_asns = [64500], ignore_asns = [64700] }",
        );
        let p = parse_text(&text).unwrap();
        let Some(pb::alert_rule::Kind::PathMismatch(k)) = &p.rules[0].kind else {
            panic!("{:?}", p.rules[0].kind);
        };
        assert_eq!(
            (k.test_id.as_str(), &k.local_asns[..], &k.ignore_asns[..]),
            ("t-1", &[64500][..], &[64700][..])
        );
        let e = parse_text(&text.replace("test_id = \"t-1\", ", "")).unwrap_err();
        assert!(e.contains("testId"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        // Unknown key in the second rule's table: the line of that rule.
        let bad = format!("{GOOD}\n[[rule]]\nname = \"x\"\norg = \"acme\"\nthreshold = 3\n");
        let e = parse_text(&bad).unwrap_err();
        assert!(e.contains("rules.toml:") && e.contains("threshold"), "{e}");
        let line: usize = e.split(':').nth(1).unwrap().trim().parse().unwrap();
        assert!(line >= 17, "{e}");
        // Two kinds.
        let two = GOOD.replace(
            "loss = { test_id",
            "unreachable = { test_id = \"t-1\" }\nloss = { test_id",
        );
        let e = parse_text(&two).unwrap_err();
        assert!(e.contains(":9:") && e.contains("exactly one kind"), "{e}");
        // Inline secret.
        let inline = GOOD.replace("hmac_key_file = \"hook.key\"", "hmac_key = \"x\"");
        let e = parse_text(&inline).unwrap_err();
        assert!(e.contains("_file"), "{e}");
        // Unknown notifier.
        let e = parse_text(&GOOD.replace("notifiers = [\"hook\"]", "notifiers = [\"nope\"]"))
            .unwrap_err();
        assert!(e.contains("nope"), "{e}");
        // Bad field inside a kind.
        let e = parse_text(&GOOD.replace("threshold = 0.5", "treshold = 0.5")).unwrap_err();
        assert!(e.contains("treshold"), "{e}");
    }
}
