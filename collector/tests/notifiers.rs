//! Tenants' own notifiers through the API, end to end: a real collector process with a real
//! SQLite file, a webhook receiver on loopback checking the HMAC signature, and a second tenant
//! probing every route.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::{Api, Collector, admin, assert_not_in_database, hook::Receiver};
use serde_json::{Value, json};

const SECRET: &str = "api-hmac-key-7c1e93ab55d0";
const FILE_SECRET: &str = "file-hmac-key-41f0aa9e";

/// Status and error text of a call expected to fail.
fn refused(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let (s, v) = api.call(method, path, body);
    let text = v["error"].as_str().map(str::to_string);
    (s, text.unwrap_or_else(|| v.to_string()))
}

fn visibility_rule(api: &Api, name: &str, prefix: &str, notifiers: &[&str]) -> String {
    let r = api.post(
        "/api/v1/alert-rules",
        json!({"name": name, "visibility": {"prefix": prefix, "minPeers": 1},
               "notifiers": notifiers}),
    );
    r["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string()
}

#[test]
fn tenants_create_use_change_and_delete_their_own_notifiers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    admin(&data, &["org", "create", "acme"]);
    admin(&data, &["team", "create", "acme", "noc"]);
    admin(&data, &["org", "create", "other"]);
    let token = admin(
        &data,
        &["apitoken", "create", "--org", "acme", "--name", "t"],
    );
    let other_token = admin(
        &data,
        &["apitoken", "create", "--org", "other", "--name", "t"],
    );
    std::fs::write(root.join("file.key"), FILE_SECRET).unwrap();
    let rules = root.join("rules.toml");
    std::fs::write(
        &rules,
        "[[notifier]]\nname = \"filehook\"\norg = \"acme\"\nkind = \"webhook\"\n\
         url = \"http://127.0.0.1:9/file\"\nhmac_key_file = \"file.key\"\n",
    )
    .unwrap();
    let c = Collector::start_args(
        root,
        0,
        "127.0.0.1:0",
        "[notifier_policy]\nallowed = [\"127.0.0.1/32\"]\n",
        &[],
        &["--rules", rules.to_str().unwrap()],
    );
    let api = Api::new(&c.api, &token);
    let other = Api::new(&c.api, &other_token);
    let hook = Receiver::start();

    // Create: the secret goes in, only its name comes out.
    let (s, n) = api.call(
        "POST",
        "/api/v1/notifiers",
        Some(
            json!({"name": "hook", "kind": "webhook", "url": hook.url("/first"),
                    "hmacKey": SECRET}),
        ),
    );
    assert_eq!(s, 201, "{n}");
    assert_eq!(n["org"], "acme");
    assert_eq!(n["secretNames"], json!(["hmac_key"]));
    assert_eq!(n["settings"]["url"], hook.url("/first"));
    assert!(n["fileManaged"].as_bool() != Some(true), "{n}");
    assert!(!n.to_string().contains(SECRET));
    let list = api.get("/api/v1/notifiers");
    let names: Vec<&str> = list["notifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["filehook", "hook"], "{list}");
    let one = api.get("/api/v1/notifiers/hook");
    assert_eq!(one["secretNames"], json!(["hmac_key"]));
    for v in [&list, &one] {
        assert!(
            !v.to_string().contains(SECRET) && !v.to_string().contains(FILE_SECRET),
            "{v}"
        );
    }

    // Names are unique per org, file notifiers included.
    for name in ["hook", "filehook"] {
        let (s, e) = refused(
            &api,
            "POST",
            "/api/v1/notifiers",
            Some(json!({"name": name, "kind": "webhook", "url": hook.url("/x")})),
        );
        assert_eq!(s, 409, "{e}");
    }
    // Strict bodies: unknown fields, unknown kinds, fields of another kind, bad names.
    for (body, want) in [
        (
            json!({"name": "x", "kind": "webhook", "url": hook.url("/x"), "hmac": "k"}),
            "unknown field",
        ),
        (json!({"name": "x", "kind": "fax"}), "kind"),
        (
            json!({"name": "x", "kind": "slack", "url": hook.url("/x"), "hmacKey": "k"}),
            "does not apply",
        ),
        (
            json!({"name": "a/b", "kind": "webhook", "url": hook.url("/x")}),
            "name",
        ),
        (json!({"name": "x", "kind": "webhook"}), "url"),
    ] {
        let (s, e) = refused(&api, "POST", "/api/v1/notifiers", Some(body.clone()));
        assert_eq!(s, 400, "{body}: {e}");
        assert!(e.contains(want), "{body}: {e}");
    }
    // The target policy at create: resolved now, refused with the reason.
    for (target, want) in [
        (
            json!({"url": format!("http://127.0.0.2:{}/x", hook.port)}),
            "loopback",
        ),
        (
            json!({"url": format!("http://[::1]:{}/x", hook.port)}),
            "loopback",
        ),
        (
            json!({"url": "https://169.254.169.254/latest"}),
            "link-local",
        ),
        (json!({"url": "https://10.1.2.3/hook"}), "private"),
        (
            json!({"url": "http://93.184.216.34/hook?token=abc"}),
            "use https",
        ),
    ] {
        let mut body = json!({"name": "bad", "kind": "webhook"});
        body.as_object_mut()
            .unwrap()
            .extend(target.as_object().unwrap().clone());
        let (s, e) = refused(&api, "POST", "/api/v1/notifiers", Some(body));
        assert_eq!(s, 400, "{target}: {e}");
        assert!(e.contains(want), "{target}: {e}");
        assert!(!e.contains("token=abc"), "the URL's query leaked: {e}");
    }
    let (s, e) = refused(
        &api,
        "POST",
        "/api/v1/notifiers",
        Some(
            json!({"name": "mail", "kind": "smtp", "host": "169.254.0.9",
                    "from": "a@example.net", "to": ["b@example.net"]}),
        ),
    );
    assert!(s == 400 && e.contains("link-local"), "{s} {e}");
    assert_eq!(api.call("GET", "/api/v1/notifiers/bad", None).0, 404);

    // A rule through the API uses it: the receiver gets the signed notification.
    let r1 = visibility_rule(&api, "unseen one", "203.0.113.0/24", &["hook"]);
    let got = hook.wait("the first notification", Duration::from_secs(60), |r| {
        r.path == "/first"
    });
    assert!(got.signed_with(SECRET), "bad signature: {:?}", got.headers);
    assert!(!got.signed_with(FILE_SECRET));
    assert_eq!(got.json()["state"], "firing", "{}", got.json());

    // Another org sees none of it and cannot use it.
    assert!(
        other.get("/api/v1/notifiers")["notifiers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for (m, body) in [
        ("GET", None),
        ("PUT", Some(json!({"url": hook.url("/stolen")}))),
        ("PATCH", Some(json!({"url": hook.url("/stolen")}))),
        ("DELETE", None),
    ] {
        for name in ["hook", "filehook"] {
            let (s, e) = refused(
                &other,
                m,
                &format!("/api/v1/notifiers/{name}"),
                body.clone(),
            );
            assert_eq!(s, 404, "{m} {name}: {e}");
        }
    }
    let (s, e) = refused(
        &other,
        "POST",
        "/api/v1/alert-rules",
        Some(
            json!({"name": "borrow", "visibility": {"prefix": "203.0.113.9/32", "minPeers": 1},
                    "notifiers": ["hook"]}),
        ),
    );
    assert_eq!(s, 400, "{e}");
    assert!(e.contains("hook"), "{e}");
    assert_eq!(
        api.get("/api/v1/notifiers/hook")["settings"]["url"],
        hook.url("/first")
    );

    // File notifiers are read-only through the API.
    for (m, body) in [
        ("PUT", Some(json!({"url": hook.url("/x")}))),
        ("PATCH", Some(json!({"url": hook.url("/x")}))),
        ("DELETE", None),
    ] {
        let (s, e) = refused(&api, m, "/api/v1/notifiers/filehook", body);
        assert_eq!(s, 403, "{m}: {e}");
        assert!(e.contains("rules file"), "{m}: {e}");
    }

    // An update without the secret keeps the sealed one.
    let (s, n) = api.call(
        "PATCH",
        "/api/v1/notifiers/hook",
        Some(json!({"url": hook.url("/second")})),
    );
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["secretNames"], json!(["hmac_key"]));
    let (s, e) = refused(
        &api,
        "PUT",
        "/api/v1/notifiers/hook",
        Some(json!({"url": format!("http://127.0.0.2:{}/x", hook.port)})),
    );
    assert!(s == 400 && e.contains("loopback"), "{s} {e}");
    let r2 = visibility_rule(&api, "unseen two", "203.0.113.1/32", &["hook"]);
    let got = hook.wait("the second notification", Duration::from_secs(60), |r| {
        r.path == "/second"
    });
    assert!(got.signed_with(SECRET), "the kept key does not sign");

    // Delete: refused while rules name it, then gone, and rules cannot name it any more.
    let (s, e) = refused(&api, "DELETE", "/api/v1/notifiers/hook", None);
    assert_eq!(s, 409, "{e}");
    assert!(e.contains("unseen one") && e.contains("unseen two"), "{e}");
    for r in [&r1, &r2] {
        assert_eq!(
            api.call("DELETE", &format!("/api/v1/alert-rules/{r}"), None)
                .0,
            204
        );
    }
    assert_eq!(api.call("DELETE", "/api/v1/notifiers/hook", None).0, 204);
    assert_eq!(api.call("GET", "/api/v1/notifiers/hook", None).0, 404);
    let (s, e) = refused(
        &api,
        "POST",
        "/api/v1/alert-rules",
        Some(
            json!({"name": "late", "visibility": {"prefix": "203.0.113.2/32", "minPeers": 1},
                    "notifiers": ["hook"]}),
        ),
    );
    assert!(
        s == 400 && e.contains("no notifier named \"hook\""),
        "{s} {e}"
    );

    assert_not_in_database(&data, SECRET);
    assert_not_in_database(&data, FILE_SECRET);
    let log = c.proc.log_text();
    assert!(log.contains("notification sent"), "{log}");
    assert!(
        !log.contains(SECRET) && !log.contains(FILE_SECRET),
        "secret in the log"
    );
}

/// Without the operator's allowance, a tenant cannot aim a notifier at the collector's host.
#[test]
fn a_loopback_target_is_refused_without_the_operators_allowance() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    let hook = Receiver::start();
    let (s, v) = api.call(
        "POST",
        "/api/v1/notifiers",
        Some(json!({"name": "hook", "kind": "webhook", "url": hook.url("/x"), "hmacKey": SECRET})),
    );
    assert_eq!(s, 400, "{v}");
    let e = v.to_string();
    // With the API bound there, 127.0.0.1 is refused as the collector's own before as loopback.
    assert!(
        e.contains("127.0.0.1") && (e.contains("loopback") || e.contains("the collector's own")),
        "{e}"
    );
    // The collector's own API port, by name.
    let port = c.api.rsplit(':').next().unwrap().trim_end_matches('/');
    let (s, v) = api.call(
        "POST",
        "/api/v1/notifiers",
        Some(json!({"name": "self", "kind": "webhook",
                    "url": format!("https://localhost:{port}/api/v1/agents")})),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v.to_string().contains("target policy refuses localhost"),
        "{v}"
    );
    assert!(
        api.get("/api/v1/notifiers")["notifiers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(hook.requests().is_empty());
}
