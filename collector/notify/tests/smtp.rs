//! SMTP against a real server: Debian's aiosmtpd writing received mail into a Maildir.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_chart_png, notification};
use foureyes_notify::{
    AlertState, NotifierConfig, Sender, SenderOptions, SmtpConfig, SmtpSecurity, TargetPolicy,
};

/// Debian's python3 (the one python3-aiosmtpd installs into), not whatever `python3` is first
/// on PATH.
const PYTHON: &str = "/usr/bin/python3";

struct Smtpd {
    child: Child,
    port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_smtpd() -> Smtpd {
    start_smtpd_with(&[])
}

fn start_smtpd_with(extra: &[&std::ffi::OsStr]) -> Smtpd {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{PYTHON} cannot import aiosmtpd: install the Debian package python3-aiosmtpd (cargo xtask install)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("mail");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let child = Command::new(PYTHON)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aiosmtpd");
    let mut smtpd = Smtpd {
        child,
        port,
        maildir,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = smtpd.child.try_wait() {
            panic!("aiosmtpd exited early: {status}");
        }
        assert!(Instant::now() < deadline, "aiosmtpd did not listen in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    smtpd.port = port;
    smtpd
}

/// Parses a received mail with Python's `email` package (a parser independent of lettre) into
/// subject, recipients, text and attachments.
fn parse_mail(path: &Path) -> serde_json::Value {
    let script = r#"
import sys, json, email, email.policy, base64
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
out = {"subject": m["subject"], "to": m["to"], "from": m["from"], "type": m.get_content_type(),
       "text": "", "attachments": []}
for part in m.walk():
    if part.is_multipart():
        continue
    if part.get_filename():
        out["attachments"].append({"filename": part.get_filename(), "type": part.get_content_type(),
                                   "b64": base64.b64encode(part.get_payload(decode=True)).decode()})
    elif part.get_content_type() == "text/plain":
        out["text"] += part.get_content()
print(json.dumps(out))
"#;
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python parses mail");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn wait_for_mail(maildir: &Path, count: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        if files.len() >= count {
            files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
            return files;
        }
        assert!(Instant::now() < deadline, "mail did not arrive in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn mail_has_the_state_in_the_subject_the_summary_and_the_chart_attached() {
    let smtpd = start_smtpd();
    let sender = Sender::new(SenderOptions {
        policy: TargetPolicy::allowing(["127.0.0.1/32".parse().expect("net")]),
        timeout: Duration::from_secs(30),
        ..SenderOptions::default()
    })
    .expect("sender");
    let cfg = NotifierConfig::Smtp(SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtpd.port,
        security: SmtpSecurity::PlainOnLoopback,
        username: None,
        password: None,
        from: "FourEyes <foureyes@example.org>".into(),
        to: vec!["noc@example.org".into(), "oncall@example.org".into()],
        ca_pem: None,
    });

    let firing = notification(AlertState::Firing);
    let d = sender.send(&cfg, &firing).await.expect("firing mail");
    assert_eq!((d.kind, d.attempts, d.status), ("smtp", 1, 250));
    let mut resolved = notification(AlertState::Resolved);
    resolved.chart = None;
    sender.send(&cfg, &resolved).await.expect("resolved mail");

    let files = wait_for_mail(&smtpd.maildir, 2);
    let mails: Vec<serde_json::Value> = files.iter().map(|f| parse_mail(f)).collect();
    let first = mails
        .iter()
        .find(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("[FIRING]"))
        })
        .expect("a FIRING mail");
    assert_eq!(
        first["subject"],
        "[FIRING] Latency to 198.51.100.10 above 50 ms (critical)"
    );
    assert_eq!(first["type"], "multipart/mixed");
    let to = first["to"].as_str().expect("to");
    assert!(
        to.contains("noc@example.org") && to.contains("oncall@example.org"),
        "{to}"
    );
    let text = first["text"].as_str().expect("text");
    assert!(
        text.contains("p50 latency rose from 14 ms to 88 ms"),
        "{text}"
    );
    assert!(text.contains("\"threshold_ms\": 50"), "{text}");
    let att = &first["attachments"][0];
    assert_eq!(att["filename"], "chart.png");
    assert_eq!(att["type"], "image/png");
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(att["b64"].as_str().expect("b64"))
        .expect("base64");
    assert_chart_png(&png);

    let second = mails
        .iter()
        .find(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("[RESOLVED]"))
        })
        .expect("a RESOLVED mail");
    assert!(
        second["text"]
            .as_str()
            .expect("text")
            .contains("resolved at:")
    );
    assert_eq!(second["attachments"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn starttls_verifies_the_server_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let smtpd = start_smtpd_with(&[
        "--tlscert".as_ref(),
        cert_path.as_os_str(),
        "--tlskey".as_ref(),
        key_path.as_os_str(),
    ]);
    let sender = Sender::new(SenderOptions {
        policy: TargetPolicy::allowing(["127.0.0.1/32".parse().expect("net")]),
        timeout: Duration::from_secs(30),
        backoff: Duration::from_millis(20),
        ..SenderOptions::default()
    })
    .expect("sender");
    let mut cfg = SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtpd.port,
        security: SmtpSecurity::StartTls,
        username: None,
        password: None,
        from: "foureyes@example.org".into(),
        to: vec!["noc@example.org".into()],
        ca_pem: None,
    };
    let mut n = notification(AlertState::Firing);
    n.chart = None;

    // Not trusted: the handshake fails and nothing is delivered.
    let e = sender
        .send(&NotifierConfig::Smtp(cfg.clone()), &n)
        .await
        .expect_err("untrusted certificate");
    assert!(e.to_string().contains("certificate"), "{e}");

    cfg.ca_pem = Some(cert.pem());
    let d = sender
        .send(&NotifierConfig::Smtp(cfg), &n)
        .await
        .expect("trusted STARTTLS delivery");
    assert_eq!(d.attempts, 1);
    let files = wait_for_mail(&smtpd.maildir, 1);
    assert_eq!(files.len(), 1, "only the trusted attempt delivered");
    let mail = parse_mail(&files[0]);
    assert!(
        mail["subject"]
            .as_str()
            .expect("subject")
            .starts_with("[FIRING]")
    );

    // Implicit TLS (SMTPS) with the same trust.
    let smtps = start_smtpd_with(&[
        "--smtpscert".as_ref(),
        cert_path.as_os_str(),
        "--smtpskey".as_ref(),
        key_path.as_os_str(),
    ]);
    let cfg = SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtps.port,
        security: SmtpSecurity::Tls,
        username: None,
        password: None,
        from: "foureyes@example.org".into(),
        to: vec!["noc@example.org".into()],
        ca_pem: Some(cert.pem()),
    };
    sender
        .send(&NotifierConfig::Smtp(cfg), &n)
        .await
        .expect("SMTPS delivery");
    assert_eq!(wait_for_mail(&smtps.maildir, 1).len(), 1);
}
