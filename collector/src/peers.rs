//! `GET /api/v1/peers`: the tenant's listener peers with session state, route counts and the last
//! error, read from the stored route events and routes table (`Store::peers`), for the BGP view.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, response::Response, routing::get};
use foureyes_proto::{openapi::Route, v1 as pb};

use crate::{
    api::{ApiError, Auth, json},
    state::Collector,
};

pub fn routes() -> Router<Arc<Collector>> {
    Router::new().route("/api/v1/peers", get(list_peers))
}

pub const ROUTES: &[Route] = &[Route {
    method: "get",
    path: "/api/v1/peers",
    summary: "Listener peers: session state (up/down/unknown) and since, routes per family, last error",
    request: None,
    response: Some("foureyes.v1.ListPeersResponse"),
    query: &[],
}];

async fn list_peers(State(c): State<Arc<Collector>>, auth: Auth) -> Result<Response, ApiError> {
    let store = c.store.clone();
    let scope = auth.scope();
    // A grouped pass over the routes table: off the async workers.
    let peers = tokio::task::spawn_blocking(move || store.peers(&scope))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(json(StatusCode::OK, &pb::ListPeersResponse { peers }))
}
