//! The API speaks plain HTTP only on loopback; elsewhere it serves HTTPS with a certificate from
//! the collector's CA, or the operator's own certificate when configured.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{path::Path, process::Command};

use base64::Engine;
use common::*;

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// curl against 127.0.0.1 on the API port; returns (exit ok, stdout, stderr).
fn curl(url: &str, ca: Option<&Path>) -> (bool, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", url]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let out = cmd.output().expect("curl is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn port_of(url: &str) -> String {
    url.rsplit(':').next().unwrap().to_string()
}

#[test]
fn a_non_loopback_api_serves_https_from_the_collector_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start_api(tmp.path(), 0, "0.0.0.0:0", "", &[]);
    assert!(c.api.starts_with("https://"), "{}", c.api);
    let port = port_of(&c.api);
    let ca = tmp.path().join("ca.pem");
    std::fs::write(
        &ca,
        pem(
            "CERTIFICATE",
            &std::fs::read(c.data_dir.join("ca.crt.der")).unwrap(),
        ),
    )
    .unwrap();

    let (ok, body, err) = curl(&format!("https://127.0.0.1:{port}/healthz"), Some(&ca));
    assert!(ok, "{err}");
    assert_eq!(body.trim(), "ok");
    let (ok, _, _) = curl(&format!("https://127.0.0.1:{port}/healthz"), None);
    assert!(
        !ok,
        "the system roots must not vouch for the collector's CA"
    );
    let (ok, body, _) = curl(&format!("http://127.0.0.1:{port}/healthz"), None);
    assert!(
        !ok || body.trim() != "ok",
        "plain HTTP must not be served off loopback"
    );
}

#[test]
fn an_operator_certificate_is_served_when_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key).unwrap();
    let cert_file = tmp.path().join("op.crt");
    let key_file = tmp.path().join("op.key");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let cfg = format!(
        "api_tls_cert_file = {:?}\napi_tls_key_file = {:?}\n",
        cert_file.to_str().unwrap(),
        key_file.to_str().unwrap()
    );
    let c = Collector::start_api(tmp.path(), 0, "0.0.0.0:0", &cfg, &[]);
    let port = port_of(&c.api);
    let (ok, body, err) = curl(
        &format!("https://127.0.0.1:{port}/healthz"),
        Some(&cert_file),
    );
    assert!(ok, "{err}");
    assert_eq!(body.trim(), "ok");
}
