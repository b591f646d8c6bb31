//! `/api/v1/alert-rules`, `/api/v1/alerts`, `/api/v1/silences`, `/api/v1/notifiers`.
//!
//! Same rules as `api.rs`: the scope comes from [`Auth`] only, and another tenant's object is a
//! 404. Ids are looked up before a body is read, so a foreign id is a 404 whatever the body.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use foureyes_proto::{openapi::Route, v1 as pb};
use foureyes_store::{AlertFilter, StoreError};
use serde::Deserialize;

use crate::{
    api::{ApiError, Auth, json, page_cursor, page_size, parse_body, parse_time},
    server::now_ms,
    state::Collector,
};

pub fn routes() -> Router<Arc<Collector>> {
    Router::new()
        .route("/api/v1/alert-rules", get(list_rules).post(create_rule))
        .route(
            "/api/v1/alert-rules/{id}",
            get(get_rule).put(update_rule).delete(delete_rule),
        )
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/transitions", get(list_transitions))
        .route("/api/v1/alerts/{id}/ack", post(ack))
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(delete_silence),
        )
        .route(
            "/api/v1/notifiers",
            get(list_notifiers).post(super::notifiers::create),
        )
        .route(
            "/api/v1/notifiers/{id}",
            get(super::notifiers::get_one)
                .put(super::notifiers::put)
                .patch(super::notifiers::patch)
                .delete(super::notifiers::delete),
        )
        // No credential: the signed link is one (chart_link.rs).
        .route("/charts/{org}/{file}", get(super::chart_link::handler))
}

pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/api/v1/alert-rules",
        summary: "List alert rules (API- and file-managed)",
        request: None,
        response: Some("foureyes.v1.ListAlertRulesResponse"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/alert-rules",
        summary: "Create an alert rule",
        request: Some("foureyes.v1.AlertRule"),
        response: Some("foureyes.v1.AlertRule"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/alert-rules/{id}",
        summary: "Get an alert rule",
        request: None,
        response: Some("foureyes.v1.AlertRule"),
        query: &[],
    },
    Route {
        method: "put",
        path: "/api/v1/alert-rules/{id}",
        summary: "Replace an alert rule (not file-managed ones: 403)",
        request: Some("foureyes.v1.AlertRule"),
        response: Some("foureyes.v1.AlertRule"),
        query: &[],
    },
    Route {
        method: "delete",
        path: "/api/v1/alert-rules/{id}",
        summary: "Delete an alert rule (not file-managed ones: 403); its alerts resolve",
        request: None,
        response: None,
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/alerts",
        summary: "List alerts, oldest first",
        request: None,
        response: Some("foureyes.v1.ListAlertsResponse"),
        query: &[
            ("state", "pending, firing or resolved"),
            ("rule_id", "filter"),
            (
                "target",
                "the alert's subject (test id, test/agent, prefix, listener/peer)",
            ),
            ("from", "RFC 3339 or epoch ms (alert start time)"),
            ("to", "RFC 3339 or epoch ms"),
            ("page_token", "from the previous page"),
            ("page_size", "1-1000, default 100"),
        ],
    },
    Route {
        method: "get",
        path: "/api/v1/alerts/{id}",
        summary: "Get an alert",
        request: None,
        response: Some("foureyes.v1.Alert"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/alerts/{id}/transitions",
        summary: "An alert's state transitions, oldest first",
        request: None,
        response: Some("foureyes.v1.ListAlertTransitionsResponse"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/alerts/{id}/ack",
        summary: "Acknowledge an alert (the first acknowledgement is kept)",
        request: Some("foureyes.v1.AckAlertRequest"),
        response: Some("foureyes.v1.Alert"),
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/silences",
        summary: "List silences that have not expired",
        request: None,
        response: Some("foureyes.v1.ListSilencesResponse"),
        query: &[],
    },
    Route {
        method: "post",
        path: "/api/v1/silences",
        summary: "Create a silence (matchers on rule, target and labels; expiresAt required)",
        request: Some("foureyes.v1.Silence"),
        response: Some("foureyes.v1.Silence"),
        query: &[],
    },
    Route {
        method: "delete",
        path: "/api/v1/silences/{id}",
        summary: "Delete a silence",
        request: None,
        response: None,
        query: &[],
    },
    Route {
        method: "get",
        path: "/api/v1/notifiers",
        summary: "List notifiers (never their secrets)",
        request: None,
        response: Some("foureyes.v1.ListNotifiersResponse"),
        query: &[],
    },
];

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError(StatusCode::CONFLICT, format!("{m} already exists")),
        StoreError::Invalid(m) if m.contains("rules file") => ApiError(StatusCode::FORBIDDEN, m),
        StoreError::Invalid(m) | StoreError::NotFound(m) => ApiError::bad_request(m),
        StoreError::InvalidName { .. } => ApiError::bad_request(e.to_string()),
        other => ApiError::from(other),
    }
}

async fn list_rules(State(c): State<Arc<Collector>>, auth: Auth) -> Result<Response, ApiError> {
    let rules = c.alerts.store.list_alert_rules(&auth.scope())?;
    Ok(json(StatusCode::OK, &pb::ListAlertRulesResponse { rules }))
}

async fn create_rule(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rule: pb::AlertRule = parse_body(&body)?;
    super::rules::validate(&rule).map_err(ApiError::bad_request)?;
    super::notifiers::check_rule_notifiers(&c, &auth.0, &rule)?;
    let r = c
        .alerts
        .store
        .create_alert_rule(&auth.scope(), rule)
        .map_err(store_error)?;
    c.alerts.changed();
    Ok(json(StatusCode::CREATED, &r))
}

async fn get_rule(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = c
        .alerts
        .store
        .get_alert_rule(&auth.scope(), &id)?
        .ok_or_else(|| ApiError::not_found("alert rule"))?;
    Ok(json(StatusCode::OK, &r))
}

async fn update_rule(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if c.alerts.store.get_alert_rule(&auth.scope(), &id)?.is_none() {
        return Err(ApiError::not_found("alert rule"));
    }
    let mut rule: pb::AlertRule = parse_body(&body)?;
    rule.id = id;
    super::rules::validate(&rule).map_err(ApiError::bad_request)?;
    super::notifiers::check_rule_notifiers(&c, &auth.0, &rule)?;
    let r = c
        .alerts
        .store
        .update_alert_rule(&auth.scope(), rule)
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("alert rule"))?;
    c.alerts.changed();
    Ok(json(StatusCode::OK, &r))
}

async fn delete_rule(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !c
        .alerts
        .store
        .delete_alert_rule(&auth.scope(), &id)
        .map_err(store_error)?
    {
        return Err(ApiError::not_found("alert rule"));
    }
    c.alerts.changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct AlertsQuery {
    state: Option<String>,
    rule_id: Option<String>,
    target: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page_token: Option<String>,
    page_size: Option<usize>,
}

fn parse_state(s: &str) -> Result<pb::AlertState, ApiError> {
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("ALERT_STATE_") {
        up
    } else {
        format!("ALERT_STATE_{up}")
    };
    pb::AlertState::from_str_name(&name)
        .filter(|s| *s != pb::AlertState::Unspecified)
        .ok_or_else(|| {
            ApiError::bad_request(format!("state {s:?}: use pending, firing or resolved"))
        })
}

async fn list_alerts(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Query(q): Query<AlertsQuery>,
) -> Result<Response, ApiError> {
    let filter = AlertFilter {
        state: q
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(parse_state)
            .transpose()?,
        rule_id: q.rule_id.filter(|s| !s.is_empty()),
        subject: q.target.filter(|s| !s.is_empty()),
        from_ms: q.from.as_deref().map(parse_time).transpose()?,
        to_ms: q.to.as_deref().map(parse_time).transpose()?,
    };
    let cursor = page_cursor(q.page_token.as_deref())?;
    let page = c
        .alerts
        .store
        .alerts(&auth.scope(), &filter, cursor, page_size(q.page_size))?;
    Ok(json(
        StatusCode::OK,
        &pb::ListAlertsResponse {
            alerts: page.alerts,
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        },
    ))
}

async fn get_alert(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = c
        .alerts
        .store
        .get_alert(&auth.scope(), &id)?
        .ok_or_else(|| ApiError::not_found("alert"))?;
    Ok(json(StatusCode::OK, &a))
}

async fn list_transitions(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if c.alerts.store.get_alert(&auth.scope(), &id)?.is_none() {
        return Err(ApiError::not_found("alert"));
    }
    let transitions = c.alerts.store.alert_transitions(&auth.scope(), &id)?;
    Ok(json(
        StatusCode::OK,
        &pb::ListAlertTransitionsResponse { transitions },
    ))
}

async fn ack(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if c.alerts.store.get_alert(&auth.scope(), &id)?.is_none() {
        return Err(ApiError::not_found("alert"));
    }
    let req: pb::AckAlertRequest = if body.is_empty() {
        Default::default()
    } else {
        parse_body(&body)?
    };
    if req.acked_by.len() > 200 {
        return Err(ApiError::bad_request("ackedBy: at most 200 characters"));
    }
    let by = if req.acked_by.is_empty() {
        match &auth.0.team {
            Some(t) => format!("{}/{t}", auth.0.org),
            None => auth.0.org.clone(),
        }
    } else {
        req.acked_by
    };
    let a = c
        .alerts
        .store
        .ack_alert(&auth.scope(), &id, &by, now_ms())?
        .ok_or_else(|| ApiError::not_found("alert"))?;
    Ok(json(StatusCode::OK, &a))
}

async fn list_silences(State(c): State<Arc<Collector>>, auth: Auth) -> Result<Response, ApiError> {
    let silences = c.alerts.store.silences(&auth.scope(), now_ms())?;
    Ok(json(StatusCode::OK, &pb::ListSilencesResponse { silences }))
}

async fn create_silence(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    let s: pb::Silence = parse_body(&body)?;
    let s = c
        .alerts
        .store
        .create_silence(&auth.scope(), s)
        .map_err(store_error)?;
    c.alerts.changed();
    Ok(json(StatusCode::CREATED, &s))
}

async fn delete_silence(
    State(c): State<Arc<Collector>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !c.alerts.store.delete_silence(&auth.scope(), &id)? {
        return Err(ApiError::not_found("silence"));
    }
    c.alerts.changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_notifiers(State(c): State<Arc<Collector>>, auth: Auth) -> Result<Response, ApiError> {
    let notifiers = c.alerts.store.notifiers(&auth.scope())?;
    Ok(json(
        StatusCode::OK,
        &pb::ListNotifiersResponse { notifiers },
    ))
}
