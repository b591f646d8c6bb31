//! The REST/JSON API (`/api/v1/...`): canonical proto3 JSON of the proto messages.
//!
//! Every handler gets its scope from [`Auth`], the one place that turns a credential into a tenant
//! scope; nothing here constructs a system scope (a tidy test checks this file for it). An object
//! of another tenant is indistinguishable from a missing one: 404.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequestParts, Path, Query, State},
    http::{StatusCode, header, request::Parts},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::{get, post},
};
use foureyes_identity::ApiToken;
use foureyes_proto::{openapi::Route, v1 as pb};
use foureyes_store::{
    AgentRow, IpPrefix, PrefixMatch, ResultFilter, RouteEventFilter, RouteQuery, Scope,
    StreamCursor, Tenant,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{state::Collector, stream, validate};

pub fn router(c: Arc<Collector>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/agents/{id}", get(get_agent))
        .route("/api/v1/agents/{id}/revoke", post(revoke_agent))
        .route("/api/v1/enrollment-tokens", post(create_enrollment_token))
        .route("/api/v1/tests", get(list_tests).post(create_test))
        .route(
            "/api/v1/tests/{id}",
            get(get_test).put(update_test).delete(delete_test),
        )
        .route("/api/v1/tests/{id}/path-check", get(path_check))
        .route("/api/v1/results", get(list_results))
        .route("/api/v1/route-events", get(list_route_events))
        .route("/api/v1/routes", get(list_routes))
        .route("/api/v1/rpki/validity", get(rpki_validity))
        .route("/api/v1/correlations", get(list_correlations))
        .route("/api/v1/correlations/{id}", get(get_correlation))
        .route("/api/v1/stream", get(stream))
        .route("/metrics", get(crate::metrics::handler))
        .route("/openapi.json", get(openapi))
        .route("/updates/{sha256}", get(update_binary))
        .merge(crate::alerts::api::routes())
        .merge(crate::peers::routes())
        .merge(crate::web::routes())
        .fallback(crate::web::ui)
        .layer(axum::middleware::from_fn(crate::web::security_headers))
        .with_state(c)
}

/// Every `/api/v1` route, for the OpenAPI document. `tests/e2e.rs` calls each of them from
/// another tenant, so a route missing here (or there) shows.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/api/v1/agents",
        summary: "List agents",
        request: None,
        response: Some("foureyes.v1.ListAgentsResponse"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/agents/{id}",
        summary: "Get an agent",
        request: None,
        response: Some("foureyes.v1.Agent"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/agents/{id}/revoke",
        summary: "Revoke an agent and all its keys; cuts its stream",
        request: None,
        response: Some("foureyes.v1.Agent"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/enrollment-tokens",
        summary: "Mint a single-use enrollment token (shown once)",
        request: Some("foureyes.v1.CreateEnrollmentTokenRequest"),
        response: Some("foureyes.v1.EnrollmentToken"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/tests",
        summary: "List tests",
        request: None,
        response: Some("foureyes.v1.ListTestsResponse"),
        query: &[
            ("page_token", "from the previous page"),
            ("page_size", "1-1000, default 100"),
        ],
    },
    Route {
        method: "post",
        path: "/api/v1/tests",
        summary: "Create a test",
        request: Some("foureyes.v1.Test"),
        response: Some("foureyes.v1.Test"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/tests/{id}",
        summary: "Get a test",
        request: None,
        response: Some("foureyes.v1.Test"),
        query: &[],
    },
    Route {
        method: "put",
        path: "/api/v1/tests/{id}",
        summary: "Replace a test",
        request: Some("foureyes.v1.Test"),
        response: Some("foureyes.v1.Test"),
        query: &[],
    },
    Route {
        method: "delete",
        path: "/api/v1/tests/{id}",
        summary: "Delete a test",
        request: None,
        response: None,
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/tests/{id}/path-check",
        summary: "Traceroute vs AS path: the test's latest traceroute per agent, its hops mapped to origin ASes through the tenant's routes, against the AS_PATHs toward the target (docs/alerts.md, path_mismatch)",
        request: None,
        response: Some("foureyes.v1.ListPathChecksResponse"),
        query: &[
            (
                "local_asns",
                "comma-separated ASes of our own network, allowed before the AS_PATH",
            ),
            (
                "ignore_asns",
                "comma-separated ASes never compared (IXP LANs)",
            ),
            (
                "max_age_seconds",
                "oldest traceroute compared (default 900)",
            ),
        ],
    },
    Route {
        method: "get",
        path: "/api/v1/results",
        summary: "List results and gaps",
        request: None,
        response: Some("foureyes.v1.ListResultsResponse"),
        query: &[
            ("test_id", "filter"),
            ("agent_id", "filter"),
            ("from", "RFC 3339 or epoch ms"),
            ("to", "RFC 3339 or epoch ms"),
            ("page_token", "from the previous page"),
            ("page_size", "1-1000, default 100"),
        ],
    },
    Route {
        method: "get",
        path: "/api/v1/route-events",
        summary: "List route events from the tenant's BGP listeners, oldest first",
        request: None,
        response: Some("foureyes.v1.ListRouteEventsResponse"),
        query: &[
            ("prefix", "CIDR or address"),
            (
                "match",
                "exact (default), covering (less-specifics too), within (more-specifics too)",
            ),
            ("peer", "BGP peer address"),
            ("agent_id", "listener"),
            (
                "type",
                "comma-separated: announce, withdraw, attribute_change, end_of_rib, session_up, session_down, update_error, max_prefix, session_info, stale_dropped, resync_end",
            ),
            ("from", "RFC 3339 or epoch ms (collector receive time)"),
            ("to", "RFC 3339 or epoch ms"),
            ("page_token", "from the previous page"),
            ("page_size", "1-1000, default 100"),
        ],
    },
    Route {
        method: "get",
        path: "/api/v1/routes",
        summary: "Current routes held by the tenant's listeners for a prefix",
        request: None,
        response: Some("foureyes.v1.ListRoutesResponse"),
        query: &[
            ("prefix", "CIDR or address (required)"),
            (
                "match",
                "longest (default: per listener peer, the longest prefix covering it), exact, covering, within",
            ),
            ("peer", "BGP peer address"),
            ("agent_id", "listener"),
        ],
    },
    Route {
        method: "get",
        path: "/api/v1/rpki/validity",
        summary: "RPKI origin validation (RFC 6811) of an origin AS for a prefix against the collector's VRP table, with the covering VRPs (unknown while no table is loaded)",
        request: None,
        response: Some("foureyes.v1.RpkiValidity"),
        query: &[
            ("prefix", "CIDR (required)"),
            ("origin", "origin AS, e.g. 64496 or AS64496 (required)"),
        ],
    },
    Route {
        method: "get",
        path: "/api/v1/correlations",
        summary: "Route-change incidents and what they did to tests (provisional until the verdict)",
        request: None,
        response: Some("foureyes.v1.ListCorrelationsResponse"),
        query: &[
            ("test_id", "only incidents touching this test"),
            (
                "prefix",
                "only incidents whose prefixes match this one (a session loss: the prefixes that routed the touched tests)",
            ),
            (
                "match",
                "with prefix: exact (default), covering (incident prefixes containing it) or covered (more-specifics inside it)",
            ),
            ("from", "RFC 3339 or epoch ms (incident opening time)"),
            ("to", "RFC 3339 or epoch ms"),
            ("page_token", "from the previous page"),
            ("page_size", "1-1000, default 100"),
        ],
    },
    Route {
        method: "get",
        path: "/api/v1/stream",
        summary: "Server-Sent Events: the tenant's results, route events, correlations and alert transitions as they are stored (event names result, route_event, correlation, alert; data is the message's JSON). Resumes after the Last-Event-ID header (results and route events; correlations and alerts are live only). A resume that would replay more than `[stream] max_replay` rows (default 10000) replays that many, then sends `event: reset` (data: replayedRows, after, resumeFrom) and continues live after resumeFrom: read the skipped rows with /api/v1/results and /api/v1/route-events. A client that does not keep up gets `event: dropped` and should reconnect with Last-Event-ID",
        request: None,
        response: None,
        query: &[
            (
                "kinds",
                "comma-separated: results, route_events, correlations, alerts (default: all)",
            ),
            ("test_id", "only this test's results and correlations"),
            ("agent_id", "only this agent's rows"),
        ],
    },
    Route {
        method: "get",
        path: "/api/v1/session",
        summary: "The orgs the credential stands for (the session cookie's, or a Bearer token's own)",
        request: None,
        response: Some("foureyes.v1.Session"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/session",
        summary: "Dashboard sign-in: trade an API token for an HttpOnly session cookie (adds the token's org to an existing session). Needs the X-FourEyes-Csrf header",
        request: Some("foureyes.v1.CreateSessionRequest"),
        response: Some("foureyes.v1.Session"),
        query: &[],
    },
    Route {
        method: "delete",
        path: "/api/v1/session",
        summary: "Sign out: forget the session and clear its cookie. Needs the X-FourEyes-Csrf header",
        request: None,
        response: None,
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/correlations/{id}",
        summary: "Get a correlation",
        request: None,
        response: Some("foureyes.v1.Correlation"),
        query: &[],
    },
];

/// A published node release. No credential: the file is public and signed, and holds no tenant
/// data; nodes verify it against their pinned key before running it.
async fn update_binary(State(c): State<Arc<Collector>>, Path(sha): Path<String>) -> Response {
    let Some(path) = crate::update::binary_path(&c.cfg.data_dir, &sha) else {
        return ApiError::not_found("release").into_response();
    };
    match tokio::fs::read(path).await {
        Ok(b) => ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response(),
        Err(_) => ApiError::not_found("release").into_response(),
    }
}

async fn openapi() -> Response {
    json(
        StatusCode::OK,
        &foureyes_proto::openapi::document(
            "FourEyes API",
            env!("CARGO_PKG_VERSION"),
            &ROUTES
                .iter()
                .chain(crate::alerts::api::ROUTES)
                .chain(crate::alerts::notifiers::ROUTES)
                .chain(crate::peers::ROUTES)
                .copied()
                .collect::<Vec<_>>(),
        ),
    )
}

/// An API error as JSON (`{"error": "..."}`).
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self(status, msg.into())
    }
    pub(crate) fn not_found(what: &str) -> Self {
        Self(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl<E: std::fmt::Display> From<E> for ApiError {
    fn from(e: E) -> Self {
        tracing::error!(error = %e, "API internal error");
        Self(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&pb::ApiError { error: self.1 }).unwrap_or_default();
        (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

pub(crate) fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => (status, [(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub(crate) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

/// The caller's tenant, from `Authorization: Bearer <API token>` or the dashboard's session cookie
/// (which stands for API tokens; see `web.rs`). The one place auth is decided.
pub struct Auth(pub Tenant);

impl Auth {
    pub fn scope(&self) -> Scope {
        Scope::Tenant(self.0.clone())
    }
}

impl FromRequestParts<Arc<Collector>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Collector>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or invalid API token (Authorization: Bearer fea1...)".into(),
            )
        };
        let hash = match credential(parts) {
            Some(text) => ApiToken::parse(text)
                .map_err(|_| unauthorized())?
                .secret_hash(),
            None => crate::web::session_token(parts, c)?.ok_or_else(unauthorized)?,
        };
        let row = c.auth_lookup(&hash)?.ok_or_else(unauthorized)?;
        Ok(Auth(Tenant {
            org: row.org,
            team: row.team,
        }))
    }
}

/// The presented Bearer API token. The session cookie is the other credential source; both
/// resolve to a token row the same way.
fn credential(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
}

pub fn agent_to_pb(a: AgentRow, connected: bool) -> pb::Agent {
    pb::Agent {
        id: a.id,
        org: a.org,
        team: a.team.unwrap_or_default(),
        kind: a.kind as i32,
        hostname: a.hostname,
        version: a.version,
        connected,
        revoked: a.revoked,
        created_at: Some(foureyes_proto::timestamp_from_ms(a.created_at_ms)),
        last_seen: a.last_seen_ms.map(foureyes_proto::timestamp_from_ms),
        certificate_not_after: a.cert_not_after_ms.map(foureyes_proto::timestamp_from_ms),
        clock_offset_ms: a.clock_offset_ms,
        last_seq: a.last_seq,
    }
}

async fn list_agents(State(c): State<Arc<Collector>>, auth: Auth) -> Result<Response, ApiError> {
    let agents = c
        .store
        .list_agents(&auth.scope())?
        .into_iter()
        .map(|a| {
            let connected = c.registry.is_connected(&a.id);
            agent_to_pb(a, connected)
        })
        .collect();
    Ok(json(StatusCode::OK, &pb::ListAgentsResponse { agents }))
}

async fn get_agent(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = c
        .store
        .get_agent(&auth.scope(), &id)?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    let connected = c.registry.is_connected(&a.id);
    Ok(json(StatusCode::OK, &agent_to_pb(a, connected)))
}

async fn revoke_agent(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !c.revoke_agent(&auth.scope(), &id)? {
        return Err(ApiError::not_found("agent"));
    }
    let a = c
        .store
        .get_agent(&auth.scope(), &id)?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    Ok(json(StatusCode::OK, &agent_to_pb(a, false)))
}

async fn create_enrollment_token(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: pb::CreateEnrollmentTokenRequest = if body.is_empty() {
        Default::default()
    } else {
        parse_body(&body)?
    };
    let mut tenant = auth.0.clone();
    if !req.team.is_empty() {
        match &tenant.team {
            Some(t) if *t != req.team => {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "this API token belongs to another team".into(),
                ));
            }
            _ => tenant.team = Some(req.team.clone()),
        }
    }
    let ttl = if req.ttl_seconds == 0 {
        3600
    } else {
        req.ttl_seconds
    };
    let kind = pb::AgentKind::try_from(req.kind).unwrap_or(pb::AgentKind::Node);
    let kind = if kind == pb::AgentKind::Unspecified {
        pb::AgentKind::Node
    } else {
        kind
    };
    let out = c
        .mint_enrollment_token(&tenant, kind, std::time::Duration::from_secs(ttl.into()))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(json(StatusCode::CREATED, &out))
}

#[derive(Deserialize)]
struct PageQuery {
    page_token: Option<String>,
    page_size: Option<usize>,
}

/// The position a `page_token` names; empty or absent starts at the beginning.
pub(crate) fn page_cursor(
    token: Option<&str>,
) -> Result<Option<foureyes_store::ResultCursor>, ApiError> {
    token
        .filter(|s| !s.is_empty())
        .map(|t| {
            foureyes_store::ResultCursor::decode(t)
                .ok_or_else(|| ApiError::bad_request("invalid page_token"))
        })
        .transpose()
}

pub(crate) fn page_size(s: Option<usize>) -> usize {
    s.unwrap_or(100).clamp(1, 1000)
}

async fn list_tests(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = page_size(q.page_size);
    let mut tests = c.store.list_tests(
        &auth.scope(),
        q.page_token.as_deref().filter(|s| !s.is_empty()),
        limit + 1,
    )?;
    let next_page_token = if tests.len() > limit {
        tests.truncate(limit);
        tests.last().map(|t| t.id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(json(
        StatusCode::OK,
        &pb::ListTestsResponse {
            tests,
            next_page_token,
        },
    ))
}

async fn create_test(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    let test: pb::Test = parse_body(&body)?;
    let test = validate::test(test).map_err(ApiError::bad_request)?;
    let created = c
        .store
        .create_test(&auth.scope(), test)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    c.registry.tests_changed(&auth.0.org);
    Ok(json(StatusCode::CREATED, &created))
}

async fn get_test(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let t = c
        .store
        .get_test(&auth.scope(), &id)?
        .ok_or_else(|| ApiError::not_found("test"))?;
    Ok(json(StatusCode::OK, &t))
}

async fn update_test(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut test: pb::Test = parse_body(&body)?;
    test.id = id;
    let test = validate::test(test).map_err(ApiError::bad_request)?;
    let t = c
        .store
        .update_test(&auth.scope(), test)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .ok_or_else(|| ApiError::not_found("test"))?;
    c.registry.tests_changed(&auth.0.org);
    Ok(json(StatusCode::OK, &t))
}

async fn delete_test(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !c.store.delete_test(&auth.scope(), &id)? {
        return Err(ApiError::not_found("test"));
    }
    c.registry.tests_changed(&auth.0.org);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct ResultsQuery {
    test_id: Option<String>,
    agent_id: Option<String>,
    /// RFC 3339 time or milliseconds since the epoch.
    from: Option<String>,
    to: Option<String>,
    page_token: Option<String>,
    page_size: Option<usize>,
}

pub(crate) fn parse_time(s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::bad_request(format!("time {s:?}: use RFC 3339 or epoch milliseconds"))
        })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[derive(Deserialize)]
struct PathCheckQuery {
    local_asns: Option<String>,
    ignore_asns: Option<String>,
    max_age_seconds: Option<u32>,
}

fn asn_list(name: &str, v: Option<&str>) -> Result<Vec<u32>, ApiError> {
    v.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(100)
        .map(|s| {
            s.trim_start_matches("AS")
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{name}: {s:?} is not an AS number")))
        })
        .collect()
}

async fn path_check(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<PathCheckQuery>,
) -> Result<Response, ApiError> {
    let scope = auth.scope();
    c.store
        .get_test(&scope, &id)?
        .ok_or_else(|| ApiError::not_found("test"))?;
    let opts = crate::pathcheck::Options {
        local_asns: asn_list("local_asns", q.local_asns.as_deref())?,
        ignore_asns: asn_list("ignore_asns", q.ignore_asns.as_deref())?,
        max_age_s: q.max_age_seconds.unwrap_or(0).min(86_400),
    };
    let checks = crate::pathcheck::checks(&*c.store, &scope, &id, &opts, crate::server::now_ms())?;
    Ok(json(StatusCode::OK, &pb::ListPathChecksResponse { checks }))
}

async fn list_results(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, ApiError> {
    let filter = ResultFilter {
        test_id: q.test_id.filter(|s| !s.is_empty()),
        agent_id: q.agent_id.filter(|s| !s.is_empty()),
        from_ms: q.from.as_deref().map(parse_time).transpose()?,
        to_ms: q.to.as_deref().map(parse_time).transpose()?,
    };
    let limit = page_size(q.page_size);
    let cursor = page_cursor(q.page_token.as_deref())?;
    let page = c.store.results(&auth.scope(), &filter, cursor, limit)?;
    let gaps = c.store.gaps(&auth.scope(), &filter)?;
    Ok(json(
        StatusCode::OK,
        &pb::ListResultsResponse {
            results: page.results,
            gaps,
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        },
    ))
}

#[derive(Deserialize)]
struct RouteEventsQuery {
    prefix: Option<String>,
    #[serde(rename = "match")]
    how: Option<String>,
    peer: Option<String>,
    agent_id: Option<String>,
    #[serde(rename = "type")]
    types: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page_token: Option<String>,
    page_size: Option<usize>,
}

fn parse_match(s: Option<&str>, default: PrefixMatch) -> Result<PrefixMatch, ApiError> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(m) => PrefixMatch::parse(m).ok_or_else(|| {
            ApiError::bad_request(format!(
                "match {m:?}: use exact, covering, longest, within or covered"
            ))
        }),
    }
}

fn parse_peer(s: Option<&str>) -> Result<Option<std::net::IpAddr>, ApiError> {
    s.filter(|s| !s.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|_| ApiError::bad_request(format!("peer {p:?}: not an IP address")))
        })
        .transpose()
}

fn parse_event_type(s: &str) -> Result<pb::RouteEventType, ApiError> {
    let name = format!("ROUTE_EVENT_TYPE_{}", s.trim().to_ascii_uppercase());
    pb::RouteEventType::from_str_name(&name)
        .filter(|t| *t != pb::RouteEventType::Unspecified)
        .ok_or_else(|| ApiError::bad_request(format!("type {s:?}: unknown route event type")))
}

async fn list_route_events(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Query(q): Query<RouteEventsQuery>,
) -> Result<Response, ApiError> {
    let prefix = match q.prefix.as_deref().filter(|s| !s.is_empty()) {
        Some(p) => {
            let p = IpPrefix::parse(p).map_err(ApiError::bad_request)?;
            let how = match parse_match(q.how.as_deref(), PrefixMatch::Exact)? {
                PrefixMatch::Longest => PrefixMatch::Covering,
                m => m,
            };
            Some((p, how))
        }
        None => None,
    };
    let types = q
        .types
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.split(',')
                .map(parse_event_type)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let filter = RouteEventFilter {
        agent_id: q.agent_id.filter(|s| !s.is_empty()),
        peer: parse_peer(q.peer.as_deref())?,
        prefix,
        types,
        from_ms: q.from.as_deref().map(parse_time).transpose()?,
        to_ms: q.to.as_deref().map(parse_time).transpose()?,
    };
    let cursor = page_cursor(q.page_token.as_deref())?;
    let page = c
        .store
        .route_events(&auth.scope(), &filter, cursor, page_size(q.page_size))?;
    Ok(json(
        StatusCode::OK,
        &pb::ListRouteEventsResponse {
            events: page.events,
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        },
    ))
}

#[derive(Deserialize)]
struct RoutesQuery {
    prefix: Option<String>,
    #[serde(rename = "match")]
    how: Option<String>,
    peer: Option<String>,
    agent_id: Option<String>,
}

async fn list_routes(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Query(q): Query<RoutesQuery>,
) -> Result<Response, ApiError> {
    let prefix = q
        .prefix
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("prefix is required (CIDR or address)"))?;
    let query = RouteQuery {
        prefix: IpPrefix::parse(prefix).map_err(ApiError::bad_request)?,
        how: parse_match(q.how.as_deref(), PrefixMatch::Longest)?,
        agent_id: q.agent_id.filter(|s| !s.is_empty()),
        peer: parse_peer(q.peer.as_deref())?,
    };
    let mut routes = c.store.routes(&auth.scope(), &query)?;
    crate::rpki::annotate_routes(&c.rpki, &mut routes);
    Ok(json(StatusCode::OK, &pb::ListRoutesResponse { routes }))
}

#[derive(Deserialize)]
struct RpkiValidityQuery {
    prefix: Option<String>,
    origin: Option<String>,
}

/// Any tenant may ask: the VRP table is public data. Authentication still applies, so the
/// endpoint is not an open oracle on the collector.
async fn rpki_validity(
    State(c): State<Arc<Collector>>,
    _auth: Auth,
    Query(q): Query<RpkiValidityQuery>,
) -> Result<Response, ApiError> {
    let prefix = q
        .prefix
        .as_deref()
        .filter(|s| s.contains('/'))
        .ok_or_else(|| ApiError::bad_request("prefix is required (CIDR)"))?;
    let p = IpPrefix::parse(prefix).map_err(ApiError::bad_request)?;
    let origin = q.origin.as_deref().unwrap_or("").trim();
    let digits = origin
        .strip_prefix("AS")
        .or_else(|| origin.strip_prefix("as"))
        .unwrap_or(origin);
    let origin_as: u32 = digits.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "origin {origin:?}: an AS number, e.g. 64496 or AS64496"
        ))
    })?;
    let (state, m) = c.rpki.explain(p.addr, p.len, origin_as);
    let st = c.rpki.status();
    let vrps = |v: Vec<crate::rpki::Vrp>| v.into_iter().map(|x| x.to_pb()).collect();
    Ok(json(
        StatusCode::OK,
        &pb::RpkiValidity {
            prefix: format!("{}/{}", p.addr, p.len),
            origin_as,
            state: state.to_pb() as i32,
            matched: vrps(m.matched),
            unmatched_as: vrps(m.unmatched_as),
            unmatched_length: vrps(m.unmatched_length),
            vrp_count: c.rpki.current().map(|s| s.len() as u64).unwrap_or(0),
            serial: st.serial.unwrap_or(0),
            synced_at: st.last_sync_ms.map(foureyes_proto::timestamp_from_ms),
        },
    ))
}

#[derive(Deserialize)]
struct CorrelationsQuery {
    test_id: Option<String>,
    prefix: Option<String>,
    #[serde(rename = "match")]
    how: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page_token: Option<String>,
    page_size: Option<usize>,
}

async fn list_correlations(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Query(q): Query<CorrelationsQuery>,
) -> Result<Response, ApiError> {
    let filter = foureyes_store::CorrelationFilter {
        test_id: q.test_id.filter(|s| !s.is_empty()),
        from_ms: q.from.as_deref().map(parse_time).transpose()?,
        to_ms: q.to.as_deref().map(parse_time).transpose()?,
        pending_only: false,
        prefix: match q.prefix.as_deref().filter(|s| !s.is_empty()) {
            Some(p) => Some((
                IpPrefix::parse(p).map_err(ApiError::bad_request)?,
                parse_match(q.how.as_deref(), PrefixMatch::Exact)?,
            )),
            None => None,
        },
    };
    let cursor = page_cursor(q.page_token.as_deref())?;
    let page = c
        .store
        .correlations(&auth.scope(), &filter, cursor, page_size(q.page_size))?;
    Ok(json(
        StatusCode::OK,
        &pb::ListCorrelationsResponse {
            correlations: page.correlations,
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        },
    ))
}

async fn get_correlation(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let corr = c
        .store
        .get_correlation(&auth.scope(), &id)?
        .ok_or_else(|| ApiError::not_found("correlation"))?;
    Ok(json(StatusCode::OK, &corr))
}

#[derive(Deserialize)]
struct StreamQuery {
    kinds: Option<String>,
    test_id: Option<String>,
    agent_id: Option<String>,
}

fn sse_event(ev: &stream::Event, id: StreamCursor) -> SseEvent {
    SseEvent::default()
        .event(ev.name)
        .id(id.encode())
        .data(ev.data.as_str())
}

/// `/api/v1/stream`. Subscribes first, then replays from the store after `Last-Event-ID`, then
/// goes live, skipping live rows the replay already sent: no gap between the two, no duplicate.
async fn stream(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    headers: header::HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let mut filter = stream::StreamFilter {
        tenant: auth.0.clone(),
        results: true,
        route_events: true,
        correlations: true,
        alerts: true,
        test_id: q.test_id.filter(|s| !s.is_empty()),
        agent_id: q.agent_id.filter(|s| !s.is_empty()),
    };
    if let Some(kinds) = q.kinds.as_deref().filter(|s| !s.is_empty()) {
        filter.results = false;
        filter.route_events = false;
        filter.correlations = false;
        filter.alerts = false;
        for k in kinds.split(',') {
            match k.trim() {
                "results" => filter.results = true,
                "route_events" => filter.route_events = true,
                "correlations" => filter.correlations = true,
                "alerts" => filter.alerts = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "kinds {other:?}: use results, route_events, correlations or alerts"
                    )));
                }
            }
        }
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(|s| {
            StreamCursor::decode(s).ok_or_else(|| ApiError::bad_request("invalid Last-Event-ID"))
        })
        .transpose()?
        .map(|from| c.stream.known(from));
    let sub = c.stream.subscribe(filter.clone());
    let mut replay = Vec::new();
    let mut pos = resume.unwrap_or_default();
    if let Some(from) = resume {
        let r = stream::replay(&c, &auth.scope(), &filter, from, c.cfg.stream_max_replay)?;
        replay.extend(r.events.iter().map(|ev| Ok(sse_event(ev, ev.id))));
        if let Some(reset) = r.reset {
            replay.push(Ok(SseEvent::default()
                .event("reset")
                .id(reset.resume_from.encode())
                .data(reset.data())));
        }
        pos = r.pos;
    }
    let live = futures::stream::unfold(Some((sub, pos)), |state| async move {
        let (mut sub, mut pos) = state?;
        loop {
            let Some(ev) = sub.rx.recv().await else {
                if sub.dropped.load(std::sync::atomic::Ordering::Relaxed) {
                    let bye = SseEvent::default()
                        .event("dropped")
                        .data("client too slow; reconnect with Last-Event-ID");
                    return Some((Ok(bye), None));
                }
                return None;
            };
            let seen = match ev.name {
                "result" => ev.key <= pos.result_key,
                "route_event" => ev.key <= pos.event_key,
                "correlation" => ev.key <= pos.corr_key,
                "alert" => ev.key <= pos.alert_key,
                _ => false,
            };
            if seen {
                continue;
            }
            pos = pos.max(ev.id);
            let out = sse_event(&ev, pos);
            return Some((Ok(out), Some((sub, pos))));
        }
    });
    let events = futures::stream::iter(replay).chain(live);
    Ok(
        Sse::new(events.map(|e: Result<SseEvent, std::convert::Infallible>| e))
            .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
            .into_response(),
    )
}
