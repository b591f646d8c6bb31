//! The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven
//! through WebDriver with fantoccini): sign in, a node's results appear live, a route event from a
//! real BIRD peer appears as a marker on the test's chart and opens its details, the BGP and
//! agents views work, and a second org's sign-in shows none of the first org's tests.
//! Screenshots of each view go to `<target>/artifacts/web/`.
//!
//! Needs root (namespaces), `bird2`, `iproute2`, `chromium`, `chromium-driver`, and binaries
//! built after `cargo xtask web`.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    Api, Collector, Proc,
    bird::{BirdLab, need, run_listener},
    enroll_node, free_port, run_node, wait_until,
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Third octet of this test's veth subnet (198.19.N.0/24); other lab tests use others.
const NET: u8 = 83;

fn artifacts() -> PathBuf {
    // target/debug/deps/<test> -> target/artifacts/web
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("artifacts/web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free loopback port, and a headless Chromium session through it.
pub struct Browser {
    _driver: Proc,
    pub client: Client,
}

impl Browser {
    pub async fn start(log: PathBuf) -> Self {
        need("chromedriver", "chromium-driver");
        need("chromium", "chromium");
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let driver = Proc::spawn(cmd, log);
        wait_until("chromedriver to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        // Both rustls providers are in the dependency graph: pick the one the project uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }),
        );
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with headless chromium");
        Self {
            _driver: driver,
            client,
        }
    }

    /// Polls `expr` (a JS expression) until it is truthy; returns its value.
    pub async fn wait_js(&self, what: &str, expr: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self
                .client
                .execute(&format!("return ({expr});"), vec![])
                .await
                .unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if start.elapsed() > timeout {
                let html = self.client.source().await.unwrap_or_default();
                panic!("timed out after {timeout:?} waiting for {what} ({expr})\npage:\n{html}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn js(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap()
    }

    /// Clicks the element `css` selects (it must exist).
    pub async fn click(&self, css: impl AsRef<str>) {
        let css = css.as_ref();
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let p = artifacts().join(format!("{name}.png"));
        std::fs::write(&p, png).unwrap();
        println!("screenshot {}", p.display());
    }

    pub async fn sign_in(&self, base: &str, token: &str) {
        self.client.goto(&format!("{base}/signin")).await.unwrap();
        self.wait_js("the sign-in form", "document.querySelector('#token')", T)
            .await;
        let input = self.client.find(Locator::Css("#token")).await.unwrap();
        input.send_keys(token).await.unwrap();
        self.click("#sign-in").await;
        self.wait_js(
            "the overview after sign-in",
            "location.pathname === '/' && document.querySelector('section.overview')",
            T,
        )
        .await;
    }
}

const T: Duration = Duration::from_secs(60);

fn count(sel: &str) -> String {
    format!("document.querySelectorAll({sel:?}).length")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_live_results_route_markers_and_keeps_orgs_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut lab = BirdLab::new(root, NET);
    let c = Collector::start(
        root,
        0,
        "[correlation]\nbefore = \"20s\"\nafter = \"5s\"\nincident_gap = \"2s\"\n",
        &[],
    );
    assert_dashboard_built(&c);
    let token_a = c.tenant("alpha", "noc");
    let token_b = c.tenant("bravo", "noc");
    let a = Api::new(&c.api, &token_a);
    let target = format!("198.19.{NET}.1");
    let t = a.post(
        "/api/v1/tests",
        json!({"name": "alpha-web-test", "intervalMs": 1000, "timeoutMs": 800,
               "config": {"tcp": {"host": target, "port": 179}}}),
    );
    let tid = t["id"].as_str().unwrap().to_string();

    // A real BGP peer announcing the target's /24, through an enrolled listener.
    let _listener = run_listener(&c, &lab, "alpha", "noc");
    let routes =
        format!("    route 198.19.{NET}.0/24 blackhole;\n    route 10.99.0.0/16 blackhole;\n");
    lab.write_conf(&routes, "");
    lab.start();
    wait_until("BIRD's table at the collector", T, || {
        let r = a.get(&format!("/api/v1/routes?prefix={target}"));
        (!r["routes"].as_array().unwrap().is_empty()).then_some(())
    });

    let b = Browser::start(root.join("chromedriver.log")).await;
    b.sign_in(&c.api, &token_a).await;
    let row = format!("tr.test[data-test-id='{tid}']");
    b.wait_js(
        "the test's row",
        &format!("document.querySelector({row:?})"),
        T,
    )
    .await;
    assert_eq!(
        b.js(&format!("document.querySelector({row:?}).dataset.state"))
            .await,
        "unknown"
    );
    // Marks this page load: a reload would lose it.
    b.js("window.__fe_no_reload = 42").await;

    // Live results: the node starts only now, and the row turns from grey to a state.
    let node_state = enroll_node(&c, root, "alpha", "noc");
    let _node = run_node(&node_state, root.join("node.log"));
    b.wait_js(
        "the node's results to arrive live",
        &format!(
            "document.querySelector({row:?}).dataset.state !== 'unknown' && document.querySelector({row:?} + ' td.latency').textContent.includes('ms')"
        ),
        T,
    )
    .await;
    assert_eq!(b.js("window.__fe_no_reload").await, 42, "the page reloaded");
    b.screenshot("overview").await;

    // The token went nowhere the page can read back: not the URL, not storage, not a JS cookie.
    let url = b.client.current_url().await.unwrap().to_string();
    assert!(!url.contains(&token_a), "{url}");
    assert_eq!(b.js("localStorage.length + sessionStorage.length").await, 0);
    assert_eq!(
        b.js("document.cookie.includes('foureyes_session')").await,
        false
    );

    // Test detail: the announcement of the covering /24 is a marker on the chart.
    b.click(format!("{row} a")).await;
    let markers = "#latency-chart g.marker";
    let n0 = b
        .wait_js("a route event marker", &count(markers), T)
        .await
        .as_u64()
        .unwrap();
    assert_eq!(
        b.js(&format!(
            "document.querySelector({markers:?}).dataset.prefix"
        ))
        .await,
        format!("198.19.{NET}.0/24")
    );
    // A change at the router arrives live as one more marker.
    lab.write_conf(
        &routes.replace(
            "0/24 blackhole;",
            "0/24 blackhole { bgp_community.add((65001,42)); };",
        ),
        "",
    );
    let reply = lab.birdc(&["configure"]);
    assert!(reply.to_lowercase().contains("reconfigured"), "{reply}");
    b.wait_js(
        "the attribute change's marker",
        &format!(
            "document.querySelector({:?})",
            format!("{markers}[data-type='attribute_change']")
        ),
        T,
    )
    .await;
    assert!(b.js(&count(markers)).await.as_u64().unwrap() > n0);
    assert_eq!(b.js("window.__fe_no_reload").await, 42, "the page reloaded");
    // Clicking the marker opens the event and its correlation.
    b.js(&format!(
        "document.querySelector({:?}).dispatchEvent(new MouseEvent('click', {{bubbles: true}})) || 1",
        format!("{markers}[data-type='attribute_change']")
    ))
    .await;
    b.wait_js(
        "the event details",
        "document.querySelector('#event-detail') && document.querySelector('#event-detail').textContent.includes('attribute_change') && document.querySelector('#correlation')",
        T,
    )
    .await;
    // The correlator opens an incident for the change; the panel follows it live.
    b.wait_js(
        "the correlation in the event panel",
        "document.querySelector('#correlation').dataset.verdict",
        T,
    )
    .await;
    b.screenshot("test-detail").await;

    // BGP: the peer is up with its routes counted, and a longest-match search finds the /24.
    b.client
        .goto(&format!("{}/bgp?org=alpha&prefix={target}", c.api))
        .await
        .unwrap();
    b.wait_js(
        "the peer and the route",
        "document.querySelector(\"tr.peer[data-state='up']\") && document.querySelector('tr.route')",
        T,
    )
    .await;
    assert_eq!(
        b.js("document.querySelector('tr.route').dataset.prefix")
            .await,
        format!("198.19.{NET}.0/24")
    );
    // The peer's route counts are the collector's table: IPv4 as the routes API lists, no IPv6.
    let v4 = a.get("/api/v1/routes?prefix=0.0.0.0/0&match=within")["routes"]
        .as_array()
        .unwrap()
        .len();
    assert!(v4 >= 2, "{v4}");
    b.wait_js(
        "the peer's IPv4 route count",
        &format!(
            "document.querySelector(\"tr.peer[data-state='up'] td.v4\").textContent === '{v4}'"
        ),
        T,
    )
    .await;
    assert_eq!(
        b.js("document.querySelector(\"tr.peer[data-state='up'] td.v6\").textContent")
            .await,
        "0"
    );
    b.screenshot("bgp").await;

    // Agents: the node and the listener; a minted enrollment token is shown once.
    b.client
        .goto(&format!("{}/agents?org=alpha", c.api))
        .await
        .unwrap();
    b.wait_js("both agents", &format!("{} >= 2", count("tr.agent")), T)
        .await;
    b.click("#mint").await;
    let tok = b
        .wait_js(
            "the enrollment token",
            "document.querySelector('#enrollment-token') && document.querySelector('#enrollment-token').textContent",
            T,
        )
        .await;
    assert!(tok.as_str().unwrap().starts_with("fe1."), "{tok}");
    b.screenshot("agents").await;

    b.client
        .goto(&format!("{}/alerts?org=alpha", c.api))
        .await
        .unwrap();
    b.wait_js(
        "the alerts view",
        "document.querySelector('section.alerts')",
        T,
    )
    .await;
    b.screenshot("alerts").await;

    b.client
        .goto(&format!(
            "{}/wall?org=alpha&views=overview,bgp&every=30",
            c.api
        ))
        .await
        .unwrap();
    b.wait_js(
        "the wallboard",
        &format!("document.querySelector('.app.wall ' + {row:?})"),
        T,
    )
    .await;
    assert_eq!(b.js(&count("nav.top")).await, 0);
    b.screenshot("wallboard").await;

    // A second org in the same browser: its overview shows none of the first org's tests.
    b.sign_in(&c.api, &token_b).await;
    b.wait_js(
        "bravo's empty overview",
        "location.search.includes('org=bravo') && document.querySelector('p.empty')",
        T,
    )
    .await;
    assert_eq!(b.js(&count("tr.test")).await, 0);
    // Give the live stream a few results' time to (wrongly) deliver anything of alpha.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let html = b.client.source().await.unwrap();
    assert!(
        !html.contains(&tid) && !html.contains("alpha-web-test"),
        "bravo's overview shows alpha's test"
    );
    assert_eq!(b.js(&count("#org-switch option[value='alpha']")).await, 1);
    b.screenshot("overview-second-org").await;
    // Switching back shows alpha's test again.
    b.client
        .goto(&format!("{}/?org=alpha", c.api))
        .await
        .unwrap();
    b.wait_js(
        "alpha's row again",
        &format!("document.querySelector({row:?})"),
        T,
    )
    .await;
    b.client.close().await.unwrap();
}

/// Panics unless the collector serves the built dashboard.
fn assert_dashboard_built(c: &Collector) {
    let index = ureq::get(&format!("{}/", c.api))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        index.contains("/boot-"),
        "this collector was built without the dashboard: run `cargo xtask web`, then `cargo build --bins`"
    );
}

/// Two tests against closed loopback ports with `unreachable` rules really fire: the alerts show
/// on the overview's firing banner and in the alerts view; the view acknowledges one (the API then
/// has who and when) and silences the other for a picked duration, lists the silence and removes
/// it; the wallboard rotates to the alerts view.
#[tokio::test(flavor = "multi_thread")]
async fn the_alerts_view_shows_firing_alerts_acknowledges_and_silences_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let c = Collector::start(root, 0, "", &[]);
    assert_dashboard_built(&c);
    let token = c.tenant("alpha", "noc");
    let a = Api::new(&c.api, &token);
    let mut down = Vec::new();
    for name in ["alpha-down-ack", "alpha-down-silence"] {
        // Bound and dropped: nothing listens there, so every connect is refused.
        let port = free_port();
        let t = a.post(
            "/api/v1/tests",
            json!({"name": name, "intervalMs": 1000, "timeoutMs": 800,
                   "config": {"tcp": {"host": "127.0.0.1", "port": port}}}),
        );
        let tid = t["id"].as_str().unwrap().to_string();
        let r = a.post(
            "/api/v1/alert-rules",
            json!({"name": format!("{name} unreachable"), "severity": "SEVERITY_CRITICAL",
                   "unreachable": {"testId": tid, "windowSeconds": 30}}),
        );
        down.push((tid, r["id"].as_str().unwrap().to_string()));
    }

    let b = Browser::start(root.join("chromedriver.log")).await;
    b.sign_in(&c.api, &token).await;
    assert_eq!(b.js(&count(".firing-alert")).await, 0);
    b.js("window.__fe_no_reload = 42").await;

    // The node starts only now: the alerts fire while the overview is open.
    let node_state = enroll_node(&c, root, "alpha", "noc");
    let _node = run_node(&node_state, root.join("node.log"));
    let mut alert_ids = Vec::new();
    for (tid, rule) in &down {
        let id = wait_until("the alert to fire", T, || {
            let r = a.get(&format!("/api/v1/alerts?state=firing&rule_id={rule}"));
            r["alerts"][0]["id"].as_str().map(String::from)
        });
        assert_eq!(
            a.get(&format!("/api/v1/alerts/{id}"))["subject"],
            tid.as_str()
        );
        alert_ids.push(id);
    }
    let (ack_id, silence_id) = (&alert_ids[0], &alert_ids[1]);
    for id in &alert_ids {
        b.wait_js(
            "the firing alert on the overview",
            &format!("document.querySelector(\".firing-alert[data-alert-id='{id}']\")"),
            T,
        )
        .await;
    }
    assert_eq!(b.js("window.__fe_no_reload").await, 42, "the page reloaded");
    // The banner names the rule, links the test, and says since when and the figures.
    let banner = b
        .js(&format!(
            "document.querySelector(\".firing-alert[data-alert-id='{ack_id}']\").outerHTML"
        ))
        .await;
    let banner = banner.as_str().unwrap();
    for want in [
        "alpha-down-ack unreachable".to_string(),
        format!("/tests/{}", down[0].0),
        "firing since".to_string(),
        "failing_agents 1".to_string(),
    ] {
        assert!(banner.contains(&want), "{want} missing: {banner}");
    }
    b.screenshot("overview-firing-alerts").await;

    // Alerts view: the firing alert, linkable with the filter; acknowledge it.
    b.client
        .goto(&format!("{}/alerts?org=alpha&state=firing", c.api))
        .await
        .unwrap();
    let row = format!("tr.alert[data-alert-id='{ack_id}']");
    b.wait_js(
        "the firing alert's row",
        &format!("document.querySelector(\"{row}[data-state='firing']\")"),
        T,
    )
    .await;
    assert_eq!(
        b.js(&format!(
            "document.querySelector(\"{row} a.subject\").getAttribute('href')"
        ))
        .await
        .as_str()
        .unwrap()
        .split('?')
        .next()
        .unwrap(),
        format!("/tests/{}", down[0].0)
    );
    b.click(format!("{row} button.ack")).await;
    b.wait_js(
        "the row to show the acknowledgement",
        &format!(
            "document.querySelector(\"{row}[data-acked='yes'] .acked\") && document.querySelector(\"{row} .acked\").textContent.includes('alpha')"
        ),
        T,
    )
    .await;
    let acked = a.get(&format!("/api/v1/alerts/{ack_id}"));
    assert_eq!(acked["ackedBy"], "alpha", "{acked}");
    assert!(acked["ackedAt"].as_str().is_some(), "{acked}");
    b.screenshot("alerts-acknowledged").await;

    // Select the other alert (by URL), silence it for 4 h, see the silence listed, remove it.
    b.client
        .goto(&format!("{}/alerts?org=alpha&alert={silence_id}", c.api))
        .await
        .unwrap();
    b.wait_js(
        "the selected alert's details",
        &format!(
            "document.querySelector(\"#alert-detail[data-alert-id='{silence_id}']\") && document.querySelectorAll('#alert-detail ul.transitions li').length"
        ),
        T,
    )
    .await;
    b.js("(() => { const s = document.querySelector('#silence-for'); s.value = '4h'; s.dispatchEvent(new Event('change')); return 1; })()")
        .await;
    b.click("#silence").await;
    b.wait_js(
        "the silence in the list",
        "document.querySelectorAll('tr.silence').length === 1",
        T,
    )
    .await;
    let sil = a.get("/api/v1/silences");
    let s0 = &sil["silences"][0];
    assert_eq!(s0["subject"], down[1].0.as_str(), "{sil}");
    assert_eq!(s0["ruleId"], down[1].1.as_str(), "{sil}");
    let expires = time::OffsetDateTime::parse(
        s0["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ahead = expires - time::OffsetDateTime::now_utc();
    assert!(
        ahead > time::Duration::minutes(230) && ahead <= time::Duration::hours(4),
        "a 4 h silence expires in {ahead}"
    );
    wait_until("the alert to be silenced", T, || {
        (a.get(&format!("/api/v1/alerts/{silence_id}"))["silenced"] == true).then_some(())
    });
    b.wait_js(
        "the alert row to show it silenced",
        &format!("document.querySelector(\"tr.alert[data-alert-id='{silence_id}'][data-silenced='yes']\")"),
        T,
    )
    .await;
    b.screenshot("alerts-silenced").await;
    b.click("tr.silence button.remove-silence").await;
    b.wait_js(
        "the silence to go",
        "document.querySelectorAll('tr.silence').length === 0",
        T,
    )
    .await;
    let sil = a.get("/api/v1/silences");
    assert!(sil["silences"].as_array().unwrap().is_empty(), "{sil}");

    // The wallboard rotates to the alerts view.
    b.client
        .goto(&format!("{}/wall?org=alpha&views=alerts", c.api))
        .await
        .unwrap();
    b.wait_js(
        "the alerts view on the wallboard",
        &format!("document.querySelector(\".app.wall {row}\")"),
        T,
    )
    .await;
    b.screenshot("wallboard-alerts").await;
    b.client.close().await.unwrap();
}

/// The `fe-overview` mark (the overview's first data drawn) and first-contentful-paint, in ms
/// since navigation start, of one full page load.
async fn paint_times(b: &Browser) -> (f64, f64) {
    let fmp = b
        .wait_js(
            "the overview's first data",
            "performance.getEntriesByName('fe-overview').length && performance.getEntriesByName('fe-overview')[0].startTime",
            T,
        )
        .await
        .as_f64()
        .unwrap();
    let fcp = b
        .js("(performance.getEntriesByName('first-contentful-paint')[0] || {startTime: 0}).startTime")
        .await
        .as_f64()
        .unwrap_or(0.0);
    (fmp, fcp)
}

/// Not a test: `benches/web_bundle.sh` runs it for the time to first paint of the app with an
/// empty cache (the sign-in view) and to first meaningful paint of the overview (20 tests with
/// results drawn; median of warm reloads) against a local collector.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by benches/web_bundle.sh"]
async fn bench_first_paint() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let c = Collector::start(root, 0, "", &[]);
    let token = c.tenant("bench", "noc");
    let api = Api::new(&c.api, &token);
    let port: u32 = c.api.rsplit(':').next().unwrap().parse().unwrap();
    for i in 0..20 {
        api.post(
            "/api/v1/tests",
            json!({"name": format!("bench-{i:02}"), "intervalMs": 1000,
                   "config": {"tcp": {"host": "127.0.0.1", "port": port}}}),
        );
    }
    let node_state = enroll_node(&c, root, "bench", "noc");
    let _node = run_node(&node_state, root.join("node.log"));
    wait_until("results", T, || {
        let r = api.get("/api/v1/results?page_size=1000");
        (r["results"].as_array().unwrap().len() >= 200).then_some(())
    });
    let b = Browser::start(root.join("chromedriver.log")).await;
    // The first load of the app, with an empty cache: the sign-in view is drawn by the wasm, so
    // its first contentful paint is the app's cold start.
    b.client.goto(&format!("{}/signin", c.api)).await.unwrap();
    let cold = b
        .wait_js(
            "the sign-in view's first paint",
            "document.querySelector('#token') && performance.getEntriesByName('first-contentful-paint').length && performance.getEntriesByName('first-contentful-paint')[0].startTime",
            T,
        )
        .await
        .as_f64()
        .unwrap();
    b.sign_in(&c.api, &token).await;
    let url = format!("{}/?org=bench", c.api);
    b.client.goto(&url).await.unwrap();
    paint_times(&b).await;
    assert_eq!(b.js(&count("tr.test")).await, 20);
    let mut warm = Vec::new();
    for _ in 0..7 {
        b.client.goto(&format!("{}/healthz", c.api)).await.unwrap();
        b.client.goto(&url).await.unwrap();
        warm.push(paint_times(&b).await);
    }
    warm.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (median, median_fcp) = warm[warm.len() / 2];
    println!("first meaningful paint (overview with 20 tests drawn), debug collector on loopback:");
    println!("  cold cache: app drawn (sign-in view) after {cold:.0} ms");
    println!(
        "  warm cache: {median:.0} ms median of {} (first contentful paint {median_fcp:.0} ms)",
        warm.len()
    );
    println!(
        "  target <= 1000 ms: {}",
        if cold <= 1000.0 { "met" } else { "missed" }
    );
    b.client.close().await.unwrap();
}
