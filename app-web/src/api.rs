//! Calls to the collector's REST API with the session cookie (same origin, sent by the browser).
//!
//! Every call names the org it acts for in `X-FourEyes-Org` (a session may hold several orgs), and
//! every call carries `X-FourEyes-Csrf`: the collector refuses a cookie-authenticated change
//! without it, and a cross-site page cannot add a custom header without a CORS preflight that the
//! collector never grants.

use foureyes_proto::v1 as pb;
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::{Serialize, de::DeserializeOwned};

pub const ORG_HEADER: &str = "X-FourEyes-Org";
pub const CSRF_HEADER: &str = "X-FourEyes-Csrf";

/// Pages followed at most for one listing, so a huge range cannot lock the tab.
const MAX_PAGES: usize = 20;
/// Rows asked for per page (the API's maximum).
const PAGE_SIZE: usize = 1000;
/// The most rows one listing returns; views say so when a listing stopped there.
pub const MAX_ROWS: usize = MAX_PAGES * PAGE_SIZE;

fn with_headers(b: RequestBuilder, org: &str) -> RequestBuilder {
    let b = b.header(CSRF_HEADER, "1");
    if org.is_empty() {
        b
    } else {
        b.header(ORG_HEADER, org)
    }
}

async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, String> {
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !(200..300).contains(&status) {
        let msg = serde_json::from_str::<pb::ApiError>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        return Err(format!("{status}: {msg}"));
    }
    // 204 and other empty answers decode as JSON `null` (so `T = ()` works).
    let text = if text.is_empty() { "null" } else { &text };
    serde_json::from_str(text).map_err(|e| format!("response: {e}"))
}

/// The one request helper: the org and CSRF headers, an optional JSON body, the answer decoded.
async fn send<T: DeserializeOwned>(
    b: RequestBuilder,
    org: &str,
    body: Option<&dyn erased::Json>,
) -> Result<T, String> {
    let b = with_headers(b, org);
    let req = match body {
        Some(j) => b
            .header("Content-Type", "application/json")
            .body(j.to_json()?),
        None => b.build(),
    }
    .map_err(|e| e.to_string())?;
    let resp = req.send().await.map_err(|e| e.to_string())?;
    decode(resp).await
}

/// Object-safe JSON encoding, so `send` is not instantiated once per body type.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Result<String, String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<String, String> {
            serde_json::to_string(self).map_err(|e| e.to_string())
        }
    }
}

pub async fn get<T: DeserializeOwned>(path: &str, org: &str) -> Result<T, String> {
    send(Request::get(path), org, None).await
}

pub async fn post<B: Serialize, T: DeserializeOwned>(
    path: &str,
    org: &str,
    body: &B,
) -> Result<T, String> {
    send(Request::post(path), org, Some(body)).await
}

pub async fn post_empty<T: DeserializeOwned>(path: &str, org: &str) -> Result<T, String> {
    send(Request::post(path), org, None).await
}

pub async fn delete(path: &str, org: &str) -> Result<(), String> {
    send(Request::delete(path), org, None).await
}

/// A path segment (an id) URI-encoded.
pub fn seg(s: &str) -> String {
    String::from(js_sys::encode_uri_component(s))
}

/// `k=v&...` with each value URI-encoded.
pub fn query(params: &[(&str, String)]) -> String {
    params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", String::from(js_sys::encode_uri_component(v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// A listing the API pages with `next_page_token`.
pub trait Paged: DeserializeOwned {
    type Item;
    fn split(self) -> (Vec<Self::Item>, String);
}

macro_rules! paged {
    ($($resp:ty => $field:ident: $item:ty),* $(,)?) => {$(
        impl Paged for $resp {
            type Item = $item;
            fn split(self) -> (Vec<$item>, String) {
                (self.$field, self.next_page_token)
            }
        }
    )*};
}

paged! {
    pb::ListResultsResponse => results: pb::ProbeResult,
    pb::ListRouteEventsResponse => events: pb::RouteEvent,
    pb::ListTestsResponse => tests: pb::Test,
    pb::ListAlertsResponse => alerts: pb::Alert,
}

/// What a listing returned, and whether it stopped at [`MAX_PAGES`] with more left.
pub struct Listing<T> {
    pub items: Vec<T>,
    pub truncated: bool,
}

/// Every item of `path` matching `params`, oldest first, following `next_page_token` for at most
/// [`MAX_PAGES`] pages of [`PAGE_SIZE`].
pub async fn all<P: Paged>(
    path: &str,
    org: &str,
    params: &[(&str, String)],
) -> Result<Listing<P::Item>, String> {
    let mut items = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let mut p = params.to_vec();
        p.push(("page_size", PAGE_SIZE.to_string()));
        p.push(("page_token", token));
        let page: P = get(&format!("{path}?{}", query(&p)), org).await?;
        let (more, next) = page.split();
        items.extend(more);
        if next.is_empty() {
            return Ok(Listing {
                items,
                truncated: false,
            });
        }
        token = next;
    }
    Ok(Listing {
        items,
        truncated: true,
    })
}

/// Results matching `params`, oldest first (at most [`MAX_ROWS`]).
pub async fn all_results(
    org: &str,
    params: &[(&str, String)],
) -> Result<Listing<pb::ProbeResult>, String> {
    all::<pb::ListResultsResponse>("/api/v1/results", org, params).await
}

/// Route events matching `params`, oldest first (at most [`MAX_ROWS`]).
pub async fn all_route_events(
    org: &str,
    params: &[(&str, String)],
) -> Result<Vec<pb::RouteEvent>, String> {
    Ok(
        all::<pb::ListRouteEventsResponse>("/api/v1/route-events", org, params)
            .await?
            .items,
    )
}

pub async fn all_tests(org: &str) -> Result<Vec<pb::Test>, String> {
    Ok(all::<pb::ListTestsResponse>("/api/v1/tests", org, &[])
        .await?
        .items)
}

pub async fn correlations(
    org: &str,
    params: &[(&str, String)],
) -> Result<Vec<pb::Correlation>, String> {
    let mut p = params.to_vec();
    p.push(("page_size", PAGE_SIZE.to_string()));
    let page: pb::ListCorrelationsResponse =
        get(&format!("/api/v1/correlations?{}", query(&p)), org).await?;
    Ok(page.correlations)
}
