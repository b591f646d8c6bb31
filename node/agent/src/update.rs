//! Signed self-update: the one place an agent ever starts a program, and only one it verified.
//!
//! The collector offers a release as typed data (`UpdateAvailable`: version, URL, SHA-256,
//! signature). The agent downloads the file, checks the digest, and verifies the ed25519 signature
//! over `update_message(version, sha256)` against the key pinned into this binary at build time.
//! Only then is the file staged next to the running binary; after the node has drained its work,
//! [`exec_staged`] replaces the process with it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use foureyes_proto::v1::UpdateAvailable;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::AgentError;

/// Largest release the agent will download.
const MAX_BINARY: usize = 256 << 20;

/// The public half of `testbeds/keys/update-test.key`, which is in the repository: pinned by debug
/// builds only, so tests can sign releases. Never by a release build.
const DEBUG_TEST_KEY: &str = "876df98e223dbba37b009c9ba1d9e7f66c4144173de831c55db7eddcddc8ee09";

/// The update key this build trusts: `FOUREYES_UPDATE_PUBKEY` at build time; in debug builds
/// without it, the test key. A release build without it trusts no key and refuses every update.
pub fn pinned_key() -> Option<VerifyingKey> {
    let hex_key = match option_env!("FOUREYES_UPDATE_PUBKEY") {
        Some(k) => k,
        None if cfg!(debug_assertions) => DEBUG_TEST_KEY,
        None => return None,
    };
    let bytes: [u8; 32] = hex::decode(hex_key.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Checks a downloaded release against the offer and the pinned key.
pub fn verify(
    offer: &UpdateAvailable,
    binary: &[u8],
    key: Option<&VerifyingKey>,
) -> Result<(), AgentError> {
    let key = key.ok_or_else(|| {
        AgentError::Update(
            "this build pins no update key (FOUREYES_UPDATE_PUBKEY): updates are refused".into(),
        )
    })?;
    let digest = Sha256::digest(binary);
    if digest.as_slice() != offer.sha256.as_slice() {
        return Err(AgentError::Update(
            "downloaded file does not match the offered SHA-256".into(),
        ));
    }
    let sig = Signature::from_slice(&offer.signature)
        .map_err(|_| AgentError::Update("malformed signature".into()))?;
    key.verify(
        &foureyes_identity::update_message(&offer.version, &digest),
        &sig,
    )
    .map_err(|_| {
        AgentError::Update("signature does not verify against the pinned update key".into())
    })
}

/// Downloads over http(s); https trusts only the collector's CA.
async fn download(url: &str, ca_der: &[u8]) -> Result<Vec<u8>, AgentError> {
    let err = |m: String| AgentError::Update(format!("download {url}: {m}"));
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| err(e.to_string()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(err("only http and https URLs".into())),
    };
    let host = uri
        .host()
        .ok_or_else(|| err("no host".into()))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| err(e.to_string()))?;
    let req = http::Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(http::header::HOST, host.as_str())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| err(e.to_string()))?;
    let resp = if https {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from(ca_der.to_vec()))
            .map_err(|e| err(e.to_string()))?;
        let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name =
            rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| err(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| err(e.to_string()))?;
        send(hyper_util::rt::TokioIo::new(tls), req).await
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), req).await
    }
    .map_err(err)?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BINARY)
        .collect()
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(body.to_bytes().to_vec())
}

async fn send<T>(
    io: T,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// Downloads, verifies and stages a release next to `current_exe`. Returns the staged path.
pub async fn stage(
    offer: &UpdateAvailable,
    ca_der: &[u8],
    current_exe: &Path,
) -> Result<PathBuf, AgentError> {
    let key = pinned_key();
    if key.is_none() {
        // Refuse before downloading anything.
        verify(offer, &[], None)?;
    }
    let binary = tokio::time::timeout(Duration::from_secs(300), download(&offer.url, ca_der))
        .await
        .map_err(|_| AgentError::Update("download timed out".into()))??;
    verify(offer, &binary, key.as_ref())?;
    let staged = current_exe.with_extension("update");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&staged)?;
        f.write_all(&binary)?;
        f.sync_all()?;
    }
    Ok(staged)
}

/// Replaces the running binary with the staged one and executes it with the same arguments.
/// Returns only on failure.
pub fn exec_staged(staged: &Path) -> AgentError {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return e.into(),
    };
    if let Err(e) = std::fs::rename(staged, &exe) {
        return e.into();
    }
    tracing::warn!(exe = %exe.display(), "running the verified update");
    // The single reviewed place an agent starts a program: the binary verified above.
    #[allow(clippy::disallowed_methods)]
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    err.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn offer(key: &SigningKey, version: &str, binary: &[u8]) -> UpdateAvailable {
        let digest = Sha256::digest(binary);
        UpdateAvailable {
            version: version.into(),
            url: "http://127.0.0.1/x".into(),
            sha256: digest.to_vec(),
            signature: key
                .sign(&foureyes_identity::update_message(version, &digest))
                .to_bytes()
                .to_vec(),
        }
    }

    #[test]
    fn only_a_release_signed_by_the_pinned_key_verifies() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let other = SigningKey::generate(&mut rand::rngs::OsRng);
        let pinned = key.verifying_key();
        let bin = b"\x7fELF new node";
        verify(&offer(&key, "1.2.3", bin), bin, Some(&pinned)).expect("good release");
        assert!(
            verify(&offer(&other, "1.2.3", bin), bin, Some(&pinned)).is_err(),
            "other key"
        );
        assert!(
            verify(&offer(&key, "1.2.3", bin), b"tampered", Some(&pinned)).is_err(),
            "digest"
        );
        let mut relabelled = offer(&key, "1.2.3", bin);
        relabelled.version = "9.9.9".into();
        assert!(
            verify(&relabelled, bin, Some(&pinned)).is_err(),
            "version is signed"
        );
        assert!(
            verify(&offer(&key, "1.2.3", bin), bin, None).is_err(),
            "no pinned key"
        );
    }

    #[test]
    fn debug_builds_pin_the_published_test_key() {
        let expected = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testbeds/keys/update-test.pub"
        ))
        .expect("test key");
        if option_env!("FOUREYES_UPDATE_PUBKEY").is_none() {
            assert_eq!(
                pinned_key().map(|k| hex::encode(k.to_bytes())),
                Some(expected.trim().to_string())
            );
        }
    }
}
