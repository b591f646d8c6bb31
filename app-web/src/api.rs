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
    serde_json::from_str(&text).map_err(|e| format!("response: {e}"))
}

pub async fn get<T: DeserializeOwned>(path: &str, org: &str) -> Result<T, String> {
    let resp = with_headers(Request::get(path), org)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    decode(resp).await
}

pub async fn post<B: Serialize, T: DeserializeOwned>(
    path: &str,
    org: &str,
    body: &B,
) -> Result<T, String> {
    let resp = with_headers(Request::post(path), org)
        .json(body)
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| e.to_string())?;
    decode(resp).await
}

pub async fn post_empty<T: DeserializeOwned>(path: &str, org: &str) -> Result<T, String> {
    let resp = with_headers(Request::post(path), org)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    decode(resp).await
}

pub async fn delete(path: &str, org: &str) -> Result<(), String> {
    let resp = with_headers(Request::delete(path), org)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.ok() {
        Ok(())
    } else {
        Err(format!("{}", resp.status()))
    }
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

/// Every result matching `params`, oldest first, following `next_page_token`.
pub async fn all_results(
    org: &str,
    params: &[(&str, String)],
) -> Result<Vec<pb::ProbeResult>, String> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let mut p = params.to_vec();
        p.push(("page_size", "1000".into()));
        p.push(("page_token", token.clone()));
        let page: pb::ListResultsResponse =
            get(&format!("/api/v1/results?{}", query(&p)), org).await?;
        out.extend(page.results);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(out)
}

/// Every route event matching `params`, oldest first.
pub async fn all_route_events(
    org: &str,
    params: &[(&str, String)],
) -> Result<Vec<pb::RouteEvent>, String> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let mut p = params.to_vec();
        p.push(("page_size", "1000".into()));
        p.push(("page_token", token.clone()));
        let page: pb::ListRouteEventsResponse =
            get(&format!("/api/v1/route-events?{}", query(&p)), org).await?;
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(out)
}

pub async fn all_tests(org: &str) -> Result<Vec<pb::Test>, String> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let page: pb::ListTestsResponse = get(
            &format!(
                "/api/v1/tests?{}",
                query(&[("page_size", "1000".into()), ("page_token", token.clone())])
            ),
            org,
        )
        .await?;
        out.extend(page.tests);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(out)
}

pub async fn correlations(
    org: &str,
    params: &[(&str, String)],
) -> Result<Vec<pb::Correlation>, String> {
    let mut p = params.to_vec();
    p.push(("page_size", "1000".into()));
    let page: pb::ListCorrelationsResponse =
        get(&format!("/api/v1/correlations?{}", query(&p)), org).await?;
    Ok(page.correlations)
}
