//! Executors against real sockets on loopback: listeners, servers and the dev DNS responder are
//! spun up in the test; nothing leaves the host.
// Local targets for the probes: listening here is the test's job, not the agent's.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use foureyes_probes::run_test;
use foureyes_proto::v1::{
    DnsConfig, DnsRecordType, HttpConfig, HttpMethod, IcmpConfig, ProbeConfig, ProbeResult, Status,
    TcpConfig, Test, TracerouteConfig, TracerouteProtocol, probe_config::Kind,
    probe_result::Detail,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn test(kind: Kind) -> Test {
    Test {
        id: "t-1".into(),
        timeout_ms: 1000,
        config: Some(ProbeConfig { kind: Some(kind) }),
        ..Default::default()
    }
}

fn icmp(host: &str) -> Kind {
    Kind::Icmp(IcmpConfig {
        host: host.into(),
        ..Default::default()
    })
}

#[track_caller]
fn assert_status(r: &ProbeResult, s: Status) {
    assert_eq!(r.status(), s, "unexpected result: {r:#?}");
}

// ---------------------------------------------------------------- ICMP

async fn ping_ok(host: &str) {
    let r = run_test(&test(icmp(host))).await;
    assert_status(&r, Status::Ok);
    assert_eq!(r.test_id, "t-1");
    assert!(r.sent_at.is_some());
    let Some(Detail::Icmp(d)) = &r.detail else {
        panic!("no icmp detail: {r:?}")
    };
    assert_eq!(d.sent, 5, "ICMP count defaults to 5");
    assert_eq!(d.received, 5);
    assert_eq!(d.rtt_ms.len(), 5);
    assert_eq!(d.loss, 0.0);
    assert_eq!(r.loss, 0.0);
    assert!(r.latency_ms > 0.0 && r.latency_ms < 1000.0);
    assert_eq!(d.address, host);
}

#[tokio::test]
async fn icmp_v4_loopback() {
    ping_ok("127.0.0.1").await;
}

#[tokio::test]
async fn icmp_v6_loopback() {
    ping_ok("::1").await;
}

/// Raw sockets see every echo reply of the host: concurrent runs must each count only their own.
#[tokio::test]
async fn icmp_concurrent_runs_do_not_mix() {
    let mut t = test(icmp("127.0.0.1"));
    t.count = 20;
    let (a, b, c) = tokio::join!(run_test(&t), run_test(&t), run_test(&t));
    for r in [a, b, c] {
        assert_status(&r, Status::Ok);
        let Some(Detail::Icmp(d)) = &r.detail else {
            panic!("no detail")
        };
        assert_eq!((d.sent, d.received, d.rtt_ms.len()), (20, 20, 20));
    }
}

#[tokio::test]
async fn icmp_bad_config_is_error() {
    let mut t = test(icmp(""));
    let r = run_test(&t).await;
    assert_status(&r, Status::Error);
    assert!(r.error.contains("host"), "{}", r.error);

    t = test(Kind::Icmp(IcmpConfig {
        host: "127.0.0.1".into(),
        payload_size: 1_000_000,
        ..Default::default()
    }));
    assert_status(&run_test(&t).await, Status::Error);

    t = test(icmp("127.0.0.1"));
    t.count = 1_000_000;
    assert_status(&run_test(&t).await, Status::Error);

    t = test(Kind::Icmp(IcmpConfig {
        host: "::1".into(),
        family: 1, // V4 only
        ..Default::default()
    }));
    assert_status(&run_test(&t).await, Status::Error);
}

// ---------------------------------------------------------------- TCP

fn tcp(host: &str, port: u16) -> Kind {
    Kind::Tcp(TcpConfig {
        host: host.into(),
        port: u32::from(port),
        ..Default::default()
    })
}

#[tokio::test]
async fn tcp_connect_ok_v4_and_v6() {
    for host in ["127.0.0.1", "::1"] {
        let listener = TcpListener::bind((host, 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let r = run_test(&test(tcp(host, port))).await;
        assert_status(&r, Status::Ok);
        let Some(Detail::Tcp(d)) = &r.detail else {
            panic!("no tcp detail")
        };
        assert_eq!(
            d.address,
            SocketAddr::new(host.parse().expect("ip"), port).to_string()
        );
        assert!(d.connect_ms >= 0.0);
        assert_eq!(r.latency_ms, d.connect_ms);
    }
}

async fn closed_port(host: &str) -> u16 {
    let l = TcpListener::bind((host, 0)).await.expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn tcp_closed_port_is_refused() {
    let port = closed_port("127.0.0.1").await;
    let r = run_test(&test(tcp("127.0.0.1", port))).await;
    assert_status(&r, Status::Refused);
    assert!(r.error.contains("refused"), "{}", r.error);
    assert_eq!(r.loss, 1.0);
}

/// A server that accepts and resets at once still completed the handshake: the port is open.
#[tokio::test]
async fn tcp_accept_then_reset_is_ok() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
        }
    });
    for _ in 0..50 {
        let r = run_test(&test(tcp("127.0.0.1", port))).await;
        assert_status(&r, Status::Ok);
    }
}

#[tokio::test]
async fn tcp_bad_port_is_error() {
    let r = run_test(&test(tcp("127.0.0.1", 0))).await;
    assert_status(&r, Status::Error);
    let r = run_test(&test(Kind::Tcp(TcpConfig {
        host: "127.0.0.1".into(),
        port: 70_000,
        ..Default::default()
    })))
    .await;
    assert_status(&r, Status::Error);
}

// ---------------------------------------------------------------- HTTP

/// Answers every connection with `status` and a 5-byte body after reading the request head.
async fn http_server(status: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_head(&mut s).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    req
}

fn http(url: String) -> HttpConfig {
    HttpConfig {
        url,
        ..Default::default()
    }
}

fn http_detail(r: &ProbeResult) -> &foureyes_proto::v1::HttpResult {
    match &r.detail {
        Some(Detail::Http(d)) => d,
        other => panic!("no http detail: {other:?}"),
    }
}

#[track_caller]
fn assert_phases(r: &ProbeResult) {
    let d = http_detail(r);
    for v in [
        d.dns_ms,
        d.connect_ms,
        d.tls_ms,
        d.first_byte_ms,
        d.total_ms,
    ] {
        assert!(v >= 0.0, "negative phase in {d:?}");
    }
    assert!(d.total_ms >= d.first_byte_ms, "{d:?}");
    assert!(
        d.first_byte_ms >= d.dns_ms + d.connect_ms + d.tls_ms,
        "{d:?}"
    );
    assert_eq!(r.latency_ms, d.total_ms);
}

#[tokio::test]
async fn http_ok_and_phases() {
    let addr = http_server("200 OK").await;
    let r = run_test(&test(Kind::Http(http(format!("http://{addr}/health?x=1"))))).await;
    assert_status(&r, Status::Ok);
    assert_phases(&r);
    let d = http_detail(&r);
    assert_eq!(d.status_code, 200);
    assert_eq!(d.body_bytes, 5);
    assert_eq!(d.address, addr.to_string());
    assert_eq!(d.tls_ms, 0.0);
}

#[tokio::test]
async fn http_head_counts_no_body() {
    let addr = http_server("200 OK").await;
    let mut cfg = http(format!("http://{addr}/"));
    cfg.method = HttpMethod::Head as i32;
    let r = run_test(&test(Kind::Http(cfg))).await;
    assert_status(&r, Status::Ok);
    assert_eq!(http_detail(&r).body_bytes, 0);
}

#[tokio::test]
async fn http_status_checks() {
    let addr = http_server("404 Not Found").await;
    let r = run_test(&test(Kind::Http(http(format!("http://{addr}/"))))).await;
    assert_status(&r, Status::HttpFailure);
    assert!(r.error.contains("404"), "{}", r.error);
    assert_eq!(http_detail(&r).status_code, 404);
    assert_phases(&r);

    let mut cfg = http(format!("http://{addr}/"));
    cfg.expect_status = 404;
    assert_status(&run_test(&test(Kind::Http(cfg))).await, Status::Ok);

    let ok = http_server("200 OK").await;
    let mut cfg = http(format!("http://{ok}/"));
    cfg.expect_status = 204;
    assert_status(&run_test(&test(Kind::Http(cfg))).await, Status::HttpFailure);
}

#[tokio::test]
async fn http_refused_bad_url_and_garbage_server() {
    let port = closed_port("127.0.0.1").await;
    let r = run_test(&test(Kind::Http(http(format!("http://127.0.0.1:{port}/"))))).await;
    assert_status(&r, Status::Refused);

    for url in ["", "ftp://127.0.0.1/", "http://", "not a url"] {
        let r = run_test(&test(Kind::Http(http(url.into())))).await;
        assert_status(&r, Status::Error);
    }

    // A server that answers with something that is not HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            read_head(&mut s).await;
            let _ = s.write_all(b"\x00\xffgarbage\r\n\r\n").await;
        }
    });
    let r = run_test(&test(Kind::Http(http(format!("http://{addr}/"))))).await;
    assert_status(&r, Status::HttpFailure);

    // A server that accepts and never answers: the run's timeout applies.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut t = test(Kind::Http(http(format!("http://{addr}/"))));
    t.timeout_ms = 300;
    let start = std::time::Instant::now();
    let r = run_test(&t).await;
    assert_status(&r, Status::Timeout);
    assert!(start.elapsed() < std::time::Duration::from_millis(1000));
}

struct TlsServer {
    addr: SocketAddr,
    ca_der: Vec<u8>,
}

async fn https_server() -> TlsServer {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("cert");
    let cert_der = ck.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                read_head(&mut tls).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsServer {
        addr,
        ca_der: cert_der.to_vec(),
    }
}

#[tokio::test]
async fn https_with_private_ca() {
    let srv = https_server().await;
    for host in ["localhost".to_string(), "127.0.0.1".to_string()] {
        let mut cfg = http(format!("https://{host}:{}/", srv.addr.port()));
        cfg.ca_certificate_der = srv.ca_der.clone();
        cfg.family = 1; // "localhost" may resolve to ::1 first; the server is on IPv4
        let r = run_test(&test(Kind::Http(cfg))).await;
        assert_status(&r, Status::Ok);
        assert_phases(&r);
        let d = http_detail(&r);
        assert!(d.tls_ms > 0.0, "{d:?}");
        assert_eq!(d.body_bytes, 5);
    }
}

#[tokio::test]
async fn https_untrusted_or_bad_ca_fails() {
    let srv = https_server().await;
    let url = format!("https://127.0.0.1:{}/", srv.addr.port());
    let r = run_test(&test(Kind::Http(http(url.clone())))).await;
    assert_status(&r, Status::TlsFailure);
    assert!(!r.error.is_empty());

    let mut cfg = http(url);
    cfg.ca_certificate_der = b"not a certificate".to_vec();
    let r = run_test(&test(Kind::Http(cfg))).await;
    assert_status(&r, Status::Error);
    assert!(r.error.contains("ca_certificate_der"), "{}", r.error);
}

// ---------------------------------------------------------------- DNS

async fn dev_dns() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = sock.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let records: Vec<(String, IpAddr)> = vec![
        ("svc.fe.test".into(), "192.0.2.10".parse().expect("ip")),
        ("svc.fe.test".into(), "192.0.2.11".parse().expect("ip")),
        ("svc.fe.test".into(), "2001:db8::10".parse().expect("ip")),
    ];
    tokio::spawn(foureyes_probes::dev_dns::serve(sock, records, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn dns(server: SocketAddr, name: &str, ty: DnsRecordType, expect: &str) -> Kind {
    Kind::Dns(DnsConfig {
        server: server.ip().to_string(),
        port: u32::from(server.port()),
        query_name: name.into(),
        record_type: ty as i32,
        expect_answer: expect.into(),
        tcp: false,
    })
}

fn dns_detail(r: &ProbeResult) -> &foureyes_proto::v1::DnsResult {
    match &r.detail {
        Some(Detail::Dns(d)) => d,
        other => panic!("no dns detail: {other:?}"),
    }
}

#[tokio::test]
async fn dns_answers_match_and_mismatch() {
    let (server, _stop) = dev_dns().await;
    let r = run_test(&test(dns(server, "svc.fe.test", DnsRecordType::A, ""))).await;
    assert_status(&r, Status::Ok);
    let d = dns_detail(&r);
    assert_eq!(d.answers, vec!["192.0.2.10", "192.0.2.11"]);
    assert_eq!(d.rcode, 0);
    assert_eq!(d.server, server.to_string());
    assert!(d.rtt_ms > 0.0 && r.latency_ms == d.rtt_ms);

    let r = run_test(&test(dns(server, "SVC.fe.test.", DnsRecordType::Aaaa, ""))).await;
    assert_status(&r, Status::Ok);
    assert_eq!(dns_detail(&r).answers, vec!["2001:db8::10"]);

    let r = run_test(&test(dns(
        server,
        "svc.fe.test",
        DnsRecordType::A,
        "192.0.2.11",
    )))
    .await;
    assert_status(&r, Status::Ok);

    let r = run_test(&test(dns(
        server,
        "svc.fe.test",
        DnsRecordType::A,
        "192.0.2.99",
    )))
    .await;
    assert_status(&r, Status::Mismatch);
    assert!(r.error.contains("192.0.2.99"), "{}", r.error);
    assert_eq!(dns_detail(&r).answers.len(), 2);
}

#[tokio::test]
async fn dns_nxdomain_is_dns_failure() {
    let (server, _stop) = dev_dns().await;
    let r = run_test(&test(dns(server, "nope.fe.test", DnsRecordType::A, ""))).await;
    assert_status(&r, Status::DnsFailure);
    assert_eq!(dns_detail(&r).rcode, 3);
    assert!(
        r.error.contains("NXDomain") || r.error.contains("NXDOMAIN"),
        "{}",
        r.error
    );
}

#[tokio::test]
async fn dns_closed_port_refused_and_silent_server_times_out() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let closed = sock.local_addr().expect("addr");
    drop(sock);
    let r = run_test(&test(dns(closed, "svc.fe.test", DnsRecordType::A, ""))).await;
    assert_status(&r, Status::Refused);

    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut t = test(dns(
        silent.local_addr().expect("addr"),
        "x.test",
        DnsRecordType::A,
        "",
    ));
    t.timeout_ms = 200;
    let r = run_test(&t).await;
    assert_status(&r, Status::Timeout);

    let mut cfg = dns(closed, "x.test", DnsRecordType::A, "");
    if let Kind::Dns(c) = &mut cfg {
        c.tcp = true;
    }
    let r = run_test(&test(cfg)).await;
    assert_status(&r, Status::Refused);
}

#[tokio::test]
async fn dns_bad_config_is_error() {
    let (server, _stop) = dev_dns().await;
    for name in ["", "a..b"] {
        let r = run_test(&test(dns(server, name, DnsRecordType::A, ""))).await;
        assert_status(&r, Status::Error);
    }
    let mut cfg = dns(server, "svc.fe.test", DnsRecordType::A, "");
    if let Kind::Dns(c) = &mut cfg {
        c.record_type = 99;
    }
    assert_status(&run_test(&test(cfg)).await, Status::Error);
}

#[tokio::test]
async fn dev_dns_survives_garbage() {
    let (server, _stop) = dev_dns().await;
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for len in [0usize, 1, 11, 12, 13, 40, 512] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
        junk.send_to(&payload, server).await.expect("send");
    }
    let r = run_test(&test(dns(
        server,
        "svc.fe.test",
        DnsRecordType::A,
        "192.0.2.10",
    )))
    .await;
    assert_status(&r, Status::Ok);
}

// ---------------------------------------------------------------- traceroute

fn trace(host: &str, protocol: TracerouteProtocol) -> Kind {
    Kind::Traceroute(TracerouteConfig {
        host: host.into(),
        protocol: protocol as i32,
        ..Default::default()
    })
}

#[tokio::test]
async fn traceroute_loopback_one_hop() {
    for (host, proto) in [
        ("127.0.0.1", TracerouteProtocol::Icmp),
        ("127.0.0.1", TracerouteProtocol::Udp),
        ("::1", TracerouteProtocol::Icmp),
        ("::1", TracerouteProtocol::Udp),
    ] {
        let r = run_test(&test(trace(host, proto))).await;
        assert_status(&r, Status::Ok);
        let Some(Detail::Traceroute(d)) = &r.detail else {
            panic!("no traceroute detail")
        };
        assert!(d.reached, "{d:?}");
        assert_eq!(d.destination, host);
        assert_eq!(d.hops.len(), 1, "{d:?}");
        assert_eq!(d.hops[0].ttl, 1);
        assert_eq!(d.hops[0].address, host);
        assert_eq!(d.hops[0].rtt_ms.len(), 3, "{proto:?} {d:?}");
        assert_eq!(r.loss, 0.0);
    }
}

#[tokio::test]
async fn traceroute_bad_config_is_error() {
    let r = run_test(&test(Kind::Traceroute(TracerouteConfig {
        host: "127.0.0.1".into(),
        max_hops: 1000,
        ..Default::default()
    })))
    .await;
    assert_status(&r, Status::Error);
    let r = run_test(&test(Kind::Traceroute(TracerouteConfig {
        host: "127.0.0.1".into(),
        protocol: 7,
        ..Default::default()
    })))
    .await;
    assert_status(&r, Status::Error);
}

#[test]
fn result_serializes_as_proto3_json() {
    let r = ProbeResult {
        test_id: "x".into(),
        status: Status::Ok as i32,
        ..Default::default()
    };
    let json = serde_json::to_string(&r).expect("json");
    assert!(json.contains("STATUS_OK"), "{json}");
}
