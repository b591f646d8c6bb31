//! The dashboard's sessions and headers, without a browser: the cookie's flags, CSRF refusals,
//! the CSP and cache headers on the embedded app, and tenant isolation through a session cookie
//! (every GET route in /openapi.json and the stream).
//!
//! Needs the binaries built after `cargo xtask web` (the collector embeds the dashboard).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{io::Read, time::Duration};

use common::{
    Api, Collector, enroll_node, free_port, run_node, wait_connected, wait_until,
    web::{CookieApi, raw},
};
use serde_json::json;

fn get_with_headers(url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let resp = match ureq::get(url).timeout(Duration::from_secs(10)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or_default().to_string();
            (n, v)
        })
        .collect();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    (status, headers, body)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[test]
fn session_cookie_is_httponly_strict_and_stands_for_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let token = c.tenant("alpha", "noc");
    let s = CookieApi::sign_in(&c.api, &token, None);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(
            s.set_cookie.contains(flag),
            "{flag} missing: {}",
            s.set_cookie
        );
    }
    // Plain HTTP on loopback: a Secure cookie would never come back.
    assert!(!s.set_cookie.contains("Secure"), "{}", s.set_cookie);
    let id = s.cookie.trim_start_matches("foureyes_session=");
    assert!(id.len() >= 43, "a 256-bit id: {id}");
    assert!(!token.contains(id) && !s.set_cookie.contains(&token));

    let (st, v) = s.call("GET", "/api/v1/session", "", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["orgs"][0]["org"], "alpha");
    let (st, v) = s.call("GET", "/api/v1/tests", "alpha", None);
    assert_eq!(st, 200, "{v}");

    // A made-up cookie is no credential.
    let (st, _, _) = raw(
        "GET",
        &format!("{}/api/v1/tests", c.api),
        &[(
            "Cookie",
            "foureyes_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        None,
    );
    assert_eq!(st, 401);

    // Sign-out needs the CSRF header too, then forgets the session and clears the cookie.
    let (st, _, _) = raw(
        "DELETE",
        &format!("{}/api/v1/session", c.api),
        &[("Cookie", &s.cookie)],
        None,
    );
    assert_eq!(st, 403);
    let (st, cleared, _) = raw(
        "DELETE",
        &format!("{}/api/v1/session", c.api),
        &[("Cookie", &s.cookie), ("X-FourEyes-Csrf", "1")],
        None,
    );
    assert_eq!(st, 204);
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (st, _) = s.call("GET", "/api/v1/tests", "alpha", None);
    assert_eq!(st, 401);

    // The token is in no log line.
    assert!(!c.proc.log_text().contains(&token));
    let (st, _, _) = raw(
        "POST",
        &format!("{}/api/v1/session", c.api),
        &[("X-FourEyes-Csrf", "1")],
        Some(json!({"token": "fea1.nope"})),
    );
    assert_eq!(st, 401);
}

#[test]
fn cookie_changes_need_the_csrf_header_and_the_same_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let token = c.tenant("alpha", "noc");
    let s = CookieApi::sign_in(&c.api, &token, None);
    let test = json!({"name": "t", "config": {"tcp": {"host": "127.0.0.1", "port": 9}}});
    let url = format!("{}/api/v1/tests", c.api);
    let host = c.api.trim_start_matches("http://");

    // No custom header: what a cross-site form post would look like.
    let (st, _, v) = raw(
        "POST",
        &url,
        &[("Cookie", &s.cookie), ("X-FourEyes-Org", "alpha")],
        Some(test.clone()),
    );
    assert_eq!(st, 403, "{v}");
    // The header, but from another origin.
    let (st, _, v) = raw(
        "POST",
        &url,
        &[
            ("Cookie", &s.cookie),
            ("X-FourEyes-Csrf", "1"),
            ("Origin", "http://evil.example"),
        ],
        Some(test.clone()),
    );
    assert_eq!(st, 403, "{v}");
    // Sign-in from another origin is refused as well.
    let (st, _, _) = raw(
        "POST",
        &format!("{}/api/v1/session", c.api),
        &[("X-FourEyes-Csrf", "1"), ("Origin", "http://evil.example")],
        Some(json!({"token": token})),
    );
    assert_eq!(st, 403);
    assert!(
        Api::new(&c.api, &token).get("/api/v1/tests")["tests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The app's own request passes.
    let origin = format!("http://{host}");
    let (st, _, v) = raw(
        "POST",
        &url,
        &[
            ("Cookie", &s.cookie),
            ("X-FourEyes-Csrf", "1"),
            ("X-FourEyes-Org", "alpha"),
            ("Origin", &origin),
        ],
        Some(test),
    );
    assert_eq!(st, 201, "{v}");
    // Bearer clients (no cookie) are not browsers: no CSRF header needed.
    let (st, _) = Api::new(&c.api, &token).call(
        "POST",
        "/api/v1/tests",
        Some(json!({"name": "u", "config": {"tcp": {"host": "127.0.0.1", "port": 9}}})),
    );
    assert_eq!(st, 201);
}

#[test]
fn the_app_is_served_with_a_strict_csp_types_and_cache_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let (st, h, body) = get_with_headers(&format!("{}/", c.api));
    assert_eq!(st, 200);
    let index = String::from_utf8(body).unwrap();
    assert!(
        index.contains("/boot-"),
        "this collector was built without the dashboard: run `cargo xtask web`, then `cargo build --bins`\n{index}"
    );
    let csp = header(&h, "content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "frame-ancestors 'none'",
        "style-src 'self'",
    ] {
        assert!(csp.contains(part), "{part} missing: {csp}");
    }
    assert!(!csp.contains("'unsafe-inline'") && !csp.contains(" 'unsafe-eval'"));
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "referrer-policy"), "no-referrer");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert!(header(&h, "content-type").starts_with("text/html"));
    // No inline script: every script element loads a file.
    for tag in index.split("<script").skip(1) {
        let open = tag.split('>').next().unwrap();
        assert!(open.contains("src="), "inline script in index.html: {tag}");
    }

    let named = |ext: &str| {
        index
            .split('"')
            .find(|s| s.starts_with('/') && s.ends_with(ext))
            .unwrap_or_else(|| panic!("no {ext} in {index}"))
            .to_string()
    };
    for (ext, ct) in [
        (".wasm", "application/wasm"),
        (".js", "text/javascript"),
        (".css", "text/css"),
    ] {
        let (st, h, body) = get_with_headers(&format!("{}{}", c.api, named(ext)));
        assert_eq!(st, 200);
        assert!(!body.is_empty());
        assert!(header(&h, "content-type").starts_with(ct), "{ext}: {h:?}");
        assert!(
            header(&h, "cache-control").contains("immutable"),
            "{ext}: {h:?}"
        );
        assert!(header(&h, "content-security-policy").contains("frame-ancestors 'none'"));
    }
    // The wasm goes gzipped to a client that accepts it, and as it is to one that does not.
    let wasm_url = format!("{}{}", c.api, named(".wasm"));
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-w",
                "size=%{size_download}",
            ])
            .args(extra)
            .arg(&wasm_url)
            .output()
            .expect("curl (apt-get install -y curl)");
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    let size = |s: &str| -> u64 { s.rsplit("size=").next().unwrap().trim().parse().unwrap() };
    let gz = curl(&["-H", "Accept-Encoding: gzip, deflate"]);
    let plain = curl(&[]);
    assert!(gz.contains("content-encoding: gzip"), "{gz}");
    assert!(!plain.contains("content-encoding"), "{plain}");
    assert!(size(&gz) * 2 < size(&plain), "gzip {gz} vs {plain}");

    // The app's own routes load the app; unknown files and API routes are 404.
    let (st, h, body) = get_with_headers(&format!("{}/tests/x?org=a&range=6h", c.api));
    assert_eq!(st, 200);
    assert_eq!(String::from_utf8(body).unwrap(), index);
    assert!(header(&h, "content-security-policy").contains("script-src"));
    assert_eq!(get_with_headers(&format!("{}/nope.js", c.api)).0, 404);
    assert_eq!(get_with_headers(&format!("{}/api/v1/nope", c.api)).0, 404);
}

/// The body of an SSE response read for `secs` seconds.
fn read_stream(url: &str, cookie: &str, secs: u64) -> (u16, String) {
    let resp = ureq::get(url)
        .set("Cookie", cookie)
        .timeout(Duration::from_secs(secs))
        .call();
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => return (r.status(), r.into_string().unwrap_or_default()),
        Err(e) => panic!("{url}: {e}"),
    };
    let status = resp.status();
    let mut r = resp.into_reader();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    (status, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn a_session_of_org_b_sees_nothing_of_org_a_on_any_route_or_the_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let token_a = c.tenant("alpha", "noc");
    let token_b = c.tenant("bravo", "noc");
    let a = Api::new(&c.api, &token_a);
    let port = c.api.rsplit(':').next().unwrap().to_string();
    let t = a.post(
        "/api/v1/tests",
        json!({"name": "alpha-secret-test", "intervalMs": 300,
               "config": {"tcp": {"host": "127.0.0.1", "port": port.parse::<u32>().unwrap()}}}),
    );
    let tid = t["id"].as_str().unwrap().to_string();
    let state = enroll_node(&c, tmp.path(), "alpha", "noc");
    let _node = run_node(&state, tmp.path().join("node.log"));
    // A test against a closed loopback port with an unreachable rule: a real alert in org A, and
    // a silence, so the sweep below probes the `{id}` routes with ids that exist.
    let down = a.post(
        "/api/v1/tests",
        json!({"name": "alpha-secret-down", "intervalMs": 300, "timeoutMs": 250,
               "config": {"tcp": {"host": "127.0.0.1", "port": free_port()}}}),
    );
    let down_id = down["id"].as_str().unwrap().to_string();
    let rule = a.post(
        "/api/v1/alert-rules",
        json!({"name": "alpha-secret-rule", "severity": "SEVERITY_CRITICAL",
               "unreachable": {"testId": down_id, "windowSeconds": 30}}),
    );
    let rule_id = rule["id"].as_str().unwrap().to_string();
    let aid = wait_connected(&a);
    wait_until("alpha's results", Duration::from_secs(30), || {
        let r = a.get(&format!("/api/v1/results?test_id={tid}"));
        (!r["results"].as_array().unwrap().is_empty()).then_some(())
    });
    let alert_id = wait_until("alpha's alert to fire", Duration::from_secs(60), || {
        let r = a.get(&format!("/api/v1/alerts?state=firing&rule_id={rule_id}"));
        r["alerts"][0]["id"].as_str().map(String::from)
    });
    let silence = a.post(
        "/api/v1/silences",
        json!({"ruleId": rule_id, "subject": down_id, "comment": "alpha-secret-silence",
               "expiresAt": "2099-01-01T00:00:00Z"}),
    );
    let silence_id = silence["id"].as_str().unwrap().to_string();
    // Every org-A id the sweep looks for in org B's answers.
    let a_ids = [&tid, &aid, &down_id, &rule_id, &alert_id, &silence_id];

    let b = CookieApi::sign_in(&c.api, &token_b, None);
    // The session holds bravo only: naming alpha gets nothing.
    let (st, _) = b.call("GET", "/api/v1/tests", "alpha", None);
    assert_eq!(st, 401);

    let (_, doc) = b.call("GET", "/openapi.json", "bravo", None);
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    let mut by_id = 0;
    for (path, ops) in paths {
        let ops = ops.as_object().unwrap();
        if path.contains('{') {
            // Every method on an `{id}` route, with org A's real id of that kind: 404, and the
            // answer names nothing of org A. (Correlations need a listener's route events, which
            // this test has none of: a test id stands in.)
            let id = if path.starts_with("/api/v1/agents/") {
                &aid
            } else if path.starts_with("/api/v1/alert-rules/") {
                &rule_id
            } else if path.starts_with("/api/v1/alerts/") {
                &alert_id
            } else if path.starts_with("/api/v1/silences/") {
                &silence_id
            } else {
                &tid
            };
            for method in ops.keys() {
                let body = matches!(method.as_str(), "post" | "put").then(|| {
                    if path.starts_with("/api/v1/alert-rules/") {
                        rule.clone()
                    } else if path.starts_with("/api/v1/tests/") {
                        down.clone()
                    } else {
                        json!({})
                    }
                });
                let m = method.to_ascii_uppercase();
                let (st, v) = b.call(&m, &path.replace("{id}", id), "bravo", body);
                assert_eq!(
                    st, 404,
                    "{m} {path} with org A's id from org B's session: {v}"
                );
                let text = v.to_string();
                assert!(
                    a_ids.iter().all(|x| !text.contains(x.as_str())) && !text.contains("alpha"),
                    "{m} {path} leaks org A to org B's session: {text}"
                );
                by_id += 1;
            }
        } else if ops.contains_key("get") && !path.ends_with("/stream") {
            let url = if path.ends_with("results") {
                format!("{path}?test_id={tid}")
            } else if path.ends_with("/routes") {
                format!("{path}?prefix=0.0.0.0/0&match=within")
            } else if path.ends_with("route-events") {
                format!("{path}?agent_id={aid}")
            } else if path.ends_with("/rpki/validity") {
                format!("{path}?prefix=192.0.2.0/24&origin=64500")
            } else {
                path.clone()
            };
            let (st, v) = b.call("GET", &url, "bravo", None);
            assert!(st == 200, "GET {url}: {st} {v}");
            let text = v.to_string();
            assert!(
                a_ids.iter().all(|x| !text.contains(x.as_str())) && !text.contains("alpha"),
                "{path} leaks org A to org B's session: {text}"
            );
        } else {
            continue;
        }
        checked += 1;
    }
    assert!(by_id >= 12, "only {by_id} id routes probed");
    // Org B's attempts changed nothing of org A's.
    let still = a.get(&format!("/api/v1/alerts/{alert_id}"));
    assert!(
        still["ackedBy"].as_str().unwrap_or_default().is_empty(),
        "org B acknowledged org A's alert: {still}"
    );
    a.get(&format!("/api/v1/alert-rules/{rule_id}"));
    let sil = a.get("/api/v1/silences");
    assert!(
        sil.to_string().contains(&silence_id),
        "org B removed org A's silence: {sil}"
    );
    a.get(&format!("/api/v1/tests/{down_id}"));
    assert!(checked >= 9, "only {checked} routes checked");

    // The stream, authenticated by the cookie as EventSource does (org in the query): alpha's
    // own session sees alpha's results (the control), bravo's sees none of them.
    let a_sess = CookieApi::sign_in(&c.api, &token_a, None);
    let (st, seen_a) = read_stream(
        &format!("{}/api/v1/stream?org=alpha&kinds=results", c.api),
        &a_sess.cookie,
        4,
    );
    assert_eq!(st, 200);
    assert!(seen_a.contains(&tid), "alpha's stream is empty: {seen_a}");
    let (st, seen_b) = read_stream(&format!("{}/api/v1/stream?org=bravo", c.api), &b.cookie, 4);
    assert_eq!(st, 200);
    assert!(
        !seen_b.contains(&tid) && !seen_b.contains(&aid) && !seen_b.contains("event: result"),
        "bravo's stream shows alpha: {seen_b}"
    );
    let (st, _) = read_stream(&format!("{}/api/v1/stream?org=alpha", c.api), &b.cookie, 2);
    assert_eq!(st, 401);

    // One session holding both orgs: the header picks the org, and only that org's data shows.
    let both = CookieApi::sign_in(&c.api, &token_b, Some(&a_sess));
    let (_, s) = both.call("GET", "/api/v1/session", "", None);
    assert_eq!(s["orgs"].as_array().unwrap().len(), 2, "{s}");
    let (_, ta) = both.call("GET", "/api/v1/tests", "alpha", None);
    let ids: Vec<&str> = ta["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(ids.contains(&tid.as_str()), "{ta}");
    let (_, tb) = both.call("GET", "/api/v1/tests", "bravo", None);
    assert!(tb["tests"].as_array().unwrap().is_empty(), "{tb}");
    // Without a header a two-org session must say which org it means.
    let (st, _, _) = raw(
        "GET",
        &format!("{}/api/v1/tests", c.api),
        &[("Cookie", &both.cookie)],
        None,
    );
    assert_eq!(st, 400);
}

#[test]
fn over_https_the_session_cookie_is_secure() {
    let tmp = tempfile::tempdir().unwrap();
    // Off loopback the API port speaks HTTPS (only ever reached here through 127.0.0.1).
    let c = Collector::start_api(tmp.path(), 0, "0.0.0.0:0", "", &[]);
    assert!(c.api.starts_with("https://"), "{}", c.api);
    let token = c.tenant("alpha", "noc");
    let port = c.api.rsplit(':').next().unwrap();
    // `-k`: the certificate chain is tests/api_tls.rs's subject; this one is the cookie.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-k",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "-H",
            "X-FourEyes-Csrf: 1",
        ])
        .args(["--data", &json!({ "token": token }).to_string()])
        .arg(format!("https://127.0.0.1:{port}/api/v1/session"))
        .output()
        .expect("curl (apt-get install -y curl)");
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let cookie = headers
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {headers}"));
    for flag in ["; secure", "; httponly", "; samesite=strict", "; path=/"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
}
