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
        self.client
            .find(Locator::Css("#sign-in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
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
    let index = ureq::get(&format!("{}/", c.api))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        index.contains("/boot-"),
        "this collector was built without the dashboard: run `cargo xtask web`, then `cargo build --bins`"
    );
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
    b.client
        .find(Locator::Css(&format!("{row} a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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

    // BGP: the peer is up, and a longest-match search finds the /24.
    b.client
        .goto(&format!("{}/bgp?org=alpha&prefix={target}", c.api))
        .await
        .unwrap();
    b.wait_js(
        "the peer and the route",
        "document.querySelector(\"tr.peer[data-state='established']\") && document.querySelector('tr.route')",
        T,
    )
    .await;
    assert_eq!(
        b.js("document.querySelector('tr.route').dataset.prefix")
            .await,
        format!("198.19.{NET}.0/24")
    );
    b.screenshot("bgp").await;

    // Agents: the node and the listener; a minted enrollment token is shown once.
    b.client
        .goto(&format!("{}/agents?org=alpha", c.api))
        .await
        .unwrap();
    b.wait_js("both agents", &format!("{} >= 2", count("tr.agent")), T)
        .await;
    b.client
        .find(Locator::Css("#mint"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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
