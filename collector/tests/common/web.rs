//! The dashboard's side of the API as a browser uses it: sign in for a session cookie, then call
//! the API with the cookie (and the org and CSRF headers the app sends).

use std::time::Duration;

use serde_json::{Value, json};

/// A signed-in browser session, without a browser.
pub struct CookieApi {
    pub base: String,
    /// `foureyes_session=<id>`
    pub cookie: String,
    /// The full `Set-Cookie` header of the sign-in.
    pub set_cookie: String,
}

/// `(status, Set-Cookie, body)` of a raw request.
pub fn raw(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(10));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let set_cookie = resp.header("set-cookie").unwrap_or_default().to_string();
    let text = resp.into_string().unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, set_cookie, v)
}

impl CookieApi {
    /// Signs in with `token` (adding to `existing`'s session if given).
    pub fn sign_in(base: &str, token: &str, existing: Option<&CookieApi>) -> Self {
        let mut h = vec![("X-FourEyes-Csrf", "1")];
        if let Some(e) = existing {
            h.push(("Cookie", e.cookie.as_str()));
        }
        let (s, set_cookie, v) = raw(
            "POST",
            &format!("{base}/api/v1/session"),
            &h,
            Some(json!({ "token": token })),
        );
        assert_eq!(s, 200, "sign-in: {v}");
        assert!(!v.to_string().contains(token), "the token came back: {v}");
        let cookie = match existing {
            Some(e) => e.cookie.clone(),
            None => set_cookie
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        assert!(
            cookie.starts_with("foureyes_session="),
            "no session cookie: {set_cookie:?}"
        );
        Self {
            base: base.to_string(),
            cookie,
            set_cookie,
        }
    }

    /// A request as the app makes it, for `org`.
    pub fn call(&self, method: &str, path: &str, org: &str, body: Option<Value>) -> (u16, Value) {
        let (s, _, v) = raw(
            method,
            &format!("{}{}", self.base, path),
            &[
                ("Cookie", self.cookie.as_str()),
                ("X-FourEyes-Org", org),
                ("X-FourEyes-Csrf", "1"),
            ],
            body,
        );
        (s, v)
    }
}
