//! Signed chart links for notifiers that take images only by URL (Slack, PagerDuty).
//!
//! Slack and PagerDuty fetch an image from a URL they are given, without our credentials, so the
//! link itself is the credential: `/charts/{org}/{alert}.png?exp=UNIX&sig=HEX`, where `sig` is
//! HMAC-SHA256 over `org`, `alert` and `exp` with a key only the collector holds. A link opens
//! exactly one alert's chart until it expires ([`LINK_TTL`]); nothing else can be named with it.
//! The key is random, sealed with the collector's key-encryption key in the data directory
//! (`chart-link.key.sealed`), so links survive restarts. The chart is drawn when fetched, from
//! the alert's tenant data only (its org's scope).
//!
//! Links are made only when the operator sets `chart_base_url` (the address Slack and PagerDuty
//! can reach, usually a reverse proxy in front of the API); without it those notifiers carry no
//! chart, as before.

use std::{path::Path, sync::Arc};

use axum::{
    extract::{Path as UrlPath, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use foureyes_identity::Kek;
use foureyes_store::{Scope, Tenant};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::state::Collector;

/// How long a link opens its chart.
pub const LINK_TTL_S: i64 = 7 * 24 * 3600;
const KEY_FILE: &str = "chart-link.key.sealed";

pub struct ChartLinks {
    key: Zeroizing<Vec<u8>>,
    /// Without a trailing slash.
    base: String,
}

impl ChartLinks {
    /// Loads the link key from `data_dir`, creating it on first use.
    pub fn load(data_dir: &Path, kek: &Kek, base: &str) -> Result<Self, String> {
        let path = data_dir.join(KEY_FILE);
        let key = match std::fs::read(&path) {
            Ok(sealed) => kek
                .open(&sealed)
                .map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = Zeroizing::new(rand::random::<[u8; 32]>().to_vec());
                std::fs::write(&path, kek.seal(&k))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                k
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if key.len() != 32 {
            return Err(format!("{}: not a chart link key", path.display()));
        }
        Ok(Self {
            key,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// `None` never happens in practice: HMAC takes a key of any length.
    fn mac(&self, org: &str, alert: &str, exp: i64) -> Option<Hmac<Sha256>> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).ok()?;
        // Lengths first, so no two (org, alert) pairs sign the same bytes.
        for part in [org.as_bytes(), alert.as_bytes()] {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part);
        }
        m.update(&exp.to_be_bytes());
        Some(m)
    }

    /// The link to `alert`'s chart, valid for [`LINK_TTL_S`] from `now_s`.
    pub fn url(&self, org: &str, alert: &str, now_s: i64) -> Option<String> {
        let exp = now_s + LINK_TTL_S;
        let sig = hex::encode(self.mac(org, alert, exp)?.finalize().into_bytes());
        Some(format!(
            "{}/charts/{org}/{alert}.png?exp={exp}&sig={sig}",
            self.base
        ))
    }

    /// Whether the signature is ours and the link has not expired (constant-time comparison).
    pub fn verify(&self, org: &str, alert: &str, exp: i64, sig: &str, now_s: i64) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        exp >= now_s
            && self
                .mac(org, alert, exp)
                .is_some_and(|m| m.verify_slice(&sig).is_ok())
    }
}

#[derive(Deserialize)]
pub struct LinkQuery {
    exp: Option<i64>,
    sig: Option<String>,
}

/// `GET /charts/{org}/{alert}.png`: the chart, to whoever holds a valid link. Every failure is
/// the same 404, so a link neither confirms an alert exists nor says why it was refused.
pub async fn handler(
    State(c): State<Arc<Collector>>,
    UrlPath((org, file)): UrlPath<(String, String)>,
    Query(q): Query<LinkQuery>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such chart\n").into_response();
    let (Some(links), Some(alert), Some(exp), Some(sig)) = (
        c.alerts.chart_links.get(),
        file.strip_suffix(".png"),
        q.exp,
        q.sig.as_deref(),
    ) else {
        return not_found();
    };
    if !links.verify(&org, alert, exp, sig, crate::server::now_ms() / 1000) {
        return not_found();
    }
    let scope = Scope::Tenant(Tenant {
        org: org.clone(),
        team: None,
    });
    let Ok(Some(a)) = c.alerts.store.get_alert(&scope, alert) else {
        return not_found();
    };
    let c2 = c.clone();
    let png = tokio::task::spawn_blocking(move || {
        let chart = super::dispatch::chart(&c2, &a)?;
        foureyes_notify::render_png(&chart).ok()
    })
    .await
    .ok()
    .flatten();
    match png {
        Some(p) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "private, max-age=300"),
            ],
            p,
        )
            .into_response(),
        None => not_found(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn links_open_one_alert_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::generate();
        let l = ChartLinks::load(dir.path(), &kek, "https://fe.example.net/").unwrap();
        let url = l.url("acme", "a-0011", 1_000).unwrap();
        let (path, q) = url.split_once('?').unwrap();
        assert_eq!(path, "https://fe.example.net/charts/acme/a-0011.png");
        let exp: i64 = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("exp="))
            .unwrap()
            .parse()
            .unwrap();
        let sig = q.split('&').find_map(|kv| kv.strip_prefix("sig=")).unwrap();
        assert_eq!(exp, 1_000 + LINK_TTL_S);
        assert!(l.verify("acme", "a-0011", exp, sig, 2_000));
        assert!(!l.verify("acme", "a-0011", exp, sig, exp + 1), "expired");
        assert!(
            !l.verify("acme", "a-0012", exp, sig, 2_000),
            "another alert"
        );
        assert!(!l.verify("other", "a-0011", exp, sig, 2_000), "another org");
        assert!(
            !l.verify("acme", "a-0011", exp + 1, sig, 2_000),
            "moved expiry"
        );
        assert!(!l.verify("acme", "a-0011", exp, "zz", 2_000));
        // The key persists (sealed): a restarted collector accepts its old links.
        let again = ChartLinks::load(dir.path(), &kek, "https://x").unwrap();
        assert!(again.verify("acme", "a-0011", exp, sig, 2_000));
        assert!(
            ChartLinks::load(dir.path(), &Kek::generate(), "https://x").is_err(),
            "another KEK cannot open the key"
        );
    }
}
