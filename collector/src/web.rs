//! The web dashboard's side of the API port: the embedded app files at `/`, browser sessions
//! (`/api/v1/session`), and the security headers on every response.
//!
//! Sessions: the browser trades an API token (in a POST body, never a URL) for an HttpOnly,
//! SameSite=Strict cookie holding a random 256-bit session id. The server keeps only the SHA-256
//! of the id, and per signed-in org only the SHA-256 of its API token, which [`crate::api::Auth`]
//! resolves on every request exactly like a Bearer token: revoking the token cuts the session's
//! access to that org at once. A session may hold several orgs; a request names its org in
//! `X-FourEyes-Org` (or `?org=` on GET, for `EventSource`, which cannot send headers).
//!
//! Sessions live in memory, not in the store: they last hours, a restart only means signing in
//! again, and nothing of them needs to survive or be shared between processes. That keeps the
//! store's schema free of state that is not the tenant's data.
//!
//! CSRF: SameSite=Strict keeps the cookie off cross-site requests in current browsers; in
//! addition every cookie-authenticated request other than GET/HEAD must carry `X-FourEyes-Csrf`
//! (a custom header a cross-site page cannot send without a CORS preflight, which this server
//! never grants) and, when the browser sends `Origin`, an origin equal to the request's host.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use base64::Engine;
use foureyes_identity::ApiToken;
use foureyes_proto::v1 as pb;
use sha2::Digest;

use crate::{api::ApiError, state::Collector};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

pub const COOKIE: &str = "foureyes_session";
pub const ORG_HEADER: &str = "x-foureyes-org";
pub const CSRF_HEADER: &str = "x-foureyes-csrf";
/// A session's absolute lifetime.
const SESSION_TTL_MS: i64 = 12 * 3_600_000;
/// Sessions held at once; the one closest to expiry makes room for a new one.
const MAX_SESSIONS: usize = 10_000;
/// Orgs one session may hold.
const MAX_ORGS: usize = 16;
/// Largest sign-in body accepted.
const MAX_SIGNIN_BODY: usize = 4096;

/// The policy for every response: scripts only from this origin (plus wasm compilation), no
/// inline script or style, no framing, nothing sent elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct SessionOrg {
    org: String,
    team: Option<String>,
    token_hash: String,
}

struct Session {
    expires_ms: i64,
    orgs: Vec<SessionOrg>,
}

/// Live browser sessions, keyed by the SHA-256 of the cookie's id.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<[u8; 32], Session>>,
}

fn id_hash(id: &str) -> [u8; 32] {
    sha2::Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id the request's cookie names, if any.
fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

fn err(status: StatusCode, msg: &str) -> ApiError {
    ApiError::new(status, msg)
}

/// Refuses a state-changing request that a cross-site page could have made.
fn check_csrf(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if *method == Method::GET || *method == Method::HEAD {
        return Ok(());
    }
    if !headers.contains_key(CSRF_HEADER) {
        return Err(err(
            StatusCode::FORBIDDEN,
            "cookie-authenticated changes need the X-FourEyes-Csrf header",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://").map(|(_, h)| h));
        if host.is_none() || origin_host != host {
            return Err(err(StatusCode::FORBIDDEN, "cross-origin request refused"));
        }
    }
    Ok(())
}

/// For [`crate::api::Auth`]: the API token hash the request's session cookie stands for, in the
/// org the request names. `Ok(None)` without a (live) session cookie.
pub fn session_token(parts: &Parts, c: &Collector) -> Result<Option<String>, ApiError> {
    let Some(id) = cookie_id(&parts.headers) else {
        return Ok(None);
    };
    check_csrf(&parts.method, &parts.headers)?;
    let named = parts
        .headers
        .get(ORG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            // EventSource cannot send headers: GET may name the org in the query.
            (parts.method == Method::GET)
                .then(|| org_query(parts.uri.query().unwrap_or_default()))
                .flatten()
        });
    let now = crate::server::now_ms();
    let sessions = c.sessions.lock();
    let Some(s) = sessions.get(&id_hash(id)).filter(|s| s.expires_ms > now) else {
        return Ok(None);
    };
    let chosen = match named.as_deref().filter(|o| !o.is_empty()) {
        Some(org) => s.orgs.iter().find(|o| o.org == org),
        None if s.orgs.len() == 1 => s.orgs.first(),
        None => {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "this session holds several orgs: name one in X-FourEyes-Org",
            ));
        }
    };
    match chosen {
        Some(o) => Ok(Some(o.token_hash.clone())),
        None => Err(err(
            StatusCode::UNAUTHORIZED,
            "this session is not signed in to that org",
        )),
    }
}

fn org_query(q: &str) -> Option<String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "org")
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b.get(i), b.get(i + 1..i + 3)) {
            (Some(b'%'), Some(h)) => match std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            (Some(b'+'), _) => {
                out.push(b' ');
                i += 1;
            }
            (Some(c), _) => {
                out.push(*c);
                i += 1;
            }
            (None, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the API port speaks HTTPS (the same rule `server::start` applies): the cookie is
/// `Secure` then.
fn https(c: &Collector) -> bool {
    !(c.cfg.api_addr.ip().is_loopback() && c.cfg.api_tls.is_none())
}

fn set_cookie(c: &Collector, value: &str, max_age_s: i64) -> HeaderValue {
    let secure = if https(c) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("foureyes_session=; Max-Age=0"))
}

fn session_pb(s: &Session) -> pb::Session {
    pb::Session {
        orgs: s
            .orgs
            .iter()
            .map(|o| pb::SessionOrg {
                org: o.org.clone(),
                team: o.team.clone().unwrap_or_default(),
            })
            .collect(),
        expires_at: Some(foureyes_proto::timestamp_from_ms(s.expires_ms)),
    }
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => (status, [(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub fn routes() -> Router<Arc<Collector>> {
    Router::new().route(
        "/api/v1/session",
        get(get_session).post(create_session).delete(delete_session),
    )
}

/// What the credential stands for: the cookie's orgs, or a Bearer token's own org.
async fn get_session(State(c): State<Arc<Collector>>, headers: HeaderMap) -> Response {
    let now = crate::server::now_ms();
    if let Some(id) = cookie_id(&headers) {
        let sessions = c.sessions.lock();
        if let Some(s) = sessions.get(&id_hash(id)).filter(|s| s.expires_ms > now) {
            return json(StatusCode::OK, &session_pb(s));
        }
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(row) = bearer
        .and_then(|t| ApiToken::parse(t).ok())
        .and_then(|t| c.auth_lookup(&t.secret_hash()).ok().flatten())
    {
        return json(
            StatusCode::OK,
            &pb::Session {
                orgs: vec![pb::SessionOrg {
                    org: row.org,
                    team: row.team.unwrap_or_default(),
                }],
                expires_at: None,
            },
        );
    }
    err(StatusCode::UNAUTHORIZED, "not signed in").into_response()
}

/// Sign-in: checks the token, then adds its org to the caller's session (or a new one).
async fn create_session(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = check_csrf(&Method::POST, &headers) {
        return e.into_response();
    }
    if body.len() > MAX_SIGNIN_BODY {
        return err(StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    }
    let req: pb::CreateSessionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            return err(
                StatusCode::BAD_REQUEST,
                "request body: {\"token\": \"fea1...\"}",
            )
            .into_response();
        }
    };
    let unauthorized = || err(StatusCode::UNAUTHORIZED, "invalid API token").into_response();
    let Ok(token) = ApiToken::parse(req.token.trim()) else {
        return unauthorized();
    };
    let hash = token.secret_hash();
    let row = match c.auth_lookup(&hash) {
        Ok(Some(r)) => r,
        Ok(None) => return unauthorized(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = crate::server::now_ms();
    let entry = SessionOrg {
        org: row.org.clone(),
        team: row.team.clone(),
        token_hash: hash,
    };
    let mut sessions = c.sessions.lock();
    let existing = cookie_id(&headers)
        .map(id_hash)
        .filter(|h| sessions.get(h).is_some_and(|s| s.expires_ms > now));
    let (cookie, key) = match existing {
        Some(h) => (None, h),
        None => {
            sessions.retain(|_, s| s.expires_ms > now);
            if sessions.len() >= MAX_SESSIONS
                && let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.expires_ms)
                    .map(|(k, _)| *k)
            {
                sessions.remove(&oldest);
            }
            let mut raw = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
            let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
            let key = id_hash(&id);
            sessions.insert(
                key,
                Session {
                    expires_ms: now + SESSION_TTL_MS,
                    orgs: Vec::new(),
                },
            );
            (Some(id), key)
        }
    };
    let Some(s) = sessions.get_mut(&key) else {
        return ApiError::from("session vanished").into_response();
    };
    // Signing in to an org again replaces its entry (a newer token) and moves it last.
    s.orgs.retain(|o| o.org != entry.org);
    if s.orgs.len() >= MAX_ORGS {
        return err(
            StatusCode::BAD_REQUEST,
            "this session holds the most orgs it may",
        )
        .into_response();
    }
    s.orgs.push(entry);
    let body = session_pb(s);
    let max_age = (s.expires_ms - now) / 1000;
    drop(sessions);
    tracing::info!(org = %row.org, "dashboard sign-in");
    let mut resp = json(StatusCode::OK, &body);
    if let Some(id) = cookie {
        resp.headers_mut()
            .insert(header::SET_COOKIE, set_cookie(&c, &id, max_age));
    }
    resp
}

/// Sign-out: forgets the whole session and clears the cookie.
async fn delete_session(State(c): State<Arc<Collector>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_csrf(&Method::DELETE, &headers) {
        return e.into_response();
    }
    if let Some(id) = cookie_id(&headers) {
        c.sessions.lock().remove(&id_hash(id));
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&c, "", 0));
    resp
}

/// Whether this collector was built with the dashboard (`cargo xtask web` before the build).
pub fn ui_built() -> bool {
    assets::ASSETS.iter().any(|(n, _, _, _)| *n == "index.html")
}

/// (content type, bytes, gzipped bytes) of an embedded file.
type Asset = (&'static str, &'static [u8], Option<&'static [u8]>);

fn asset(name: &str) -> Option<Asset> {
    assets::ASSETS
        .iter()
        .find(|(n, _, _, _)| *n == name)
        .map(|(_, t, b, z)| (*t, *b, *z))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.trim().split(';');
            parts.next() == Some("gzip") && !parts.any(|q| q.trim() == "q=0")
        })
}

/// `name-<12 hex>.ext`: the content hash is in the name, so the file never changes.
fn is_hashed(name: &str) -> bool {
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    stem.rsplit_once('-')
        .is_some_and(|(_, h)| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

const NOT_BUILT: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>FourEyes</title></head><body>\n<h1>FourEyes collector</h1>\n<p>This collector was built \
without the web dashboard. Build it with <code>cargo xtask web</code>, then build the collector \
again (<code>cargo xtask dev</code> does both). The API is served at <code>/api/v1/</code> and \
described at <a href=\"/openapi.json\">/openapi.json</a>.</p>\n</body></html>\n";

/// Everything the API does not route: the dashboard's files, and `index.html` for its own
/// routes (`/tests/...`, `/bgp`), so every view is a link that loads.
pub async fn ui(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || !(method == Method::GET || method == Method::HEAD) {
        return err(StatusCode::NOT_FOUND, "no such route").into_response();
    }
    let name = path.trim_start_matches('/');
    let gzip_ok = accepts_gzip(&headers);
    let page = |(ct, body, gz): Asset, cache: &'static str| {
        let mut resp = match gz.filter(|_| gzip_ok) {
            Some(z) => (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, ct),
                    (header::CACHE_CONTROL, cache),
                    (header::CONTENT_ENCODING, "gzip"),
                ],
                z,
            )
                .into_response(),
            None => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, cache)],
                body,
            )
                .into_response(),
        };
        if gz.is_some() {
            resp.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        resp
    };
    if !ui_built() {
        return page(
            ("text/html; charset=utf-8", NOT_BUILT.as_bytes(), None),
            "no-cache",
        );
    }
    if let Some(a) = asset(name).filter(|_| name != "index.html") {
        let cache = if is_hashed(name) {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return page(a, cache);
    }
    // A missing file is a 404; any other path is one of the app's views.
    if name
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
    {
        return err(StatusCode::NOT_FOUND, "no such file").into_response();
    }
    match asset("index.html") {
        Some(a) => page(a, "no-cache"),
        None => err(StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// Adds the security headers to every response of the API port (the JSON API included: they
/// cost nothing there and keep a mis-sniffed response inert).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (k, v) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    }
    h.entry("cross-origin-opener-policy")
        .or_insert(HeaderValue::from_static("same-origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_recognised() {
        assert!(is_hashed("foureyes_web_bg-0123456789ab.wasm"));
        assert!(is_hashed("snippets/x/boot-abcdefabcdef.js"));
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("style-nothex!!!!!.css"));
    }

    #[test]
    fn org_query_is_decoded() {
        assert_eq!(org_query("kinds=results&org=a%20b").as_deref(), Some("a b"));
        assert_eq!(org_query("org=%zz").as_deref(), Some("%zz"));
        assert_eq!(org_query("kinds=x"), None);
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; foureyes_session=abc; b=2"),
        );
        assert_eq!(cookie_id(&h), Some("abc"));
    }
}
