//! TLS for the agent port: the collector's server certificate, and a client verifier that adds
//! revocation to webpki's chain check. tonic's own TLS config has no hook for either (stack.md), so
//! the agent port is served over tokio-rustls with this config.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use rustls::{
    DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};

/// Key ids (SHA-256 of the raw public key) of every revoked agent key. Shared with the link and
/// API so a revoke takes effect at the next handshake without a restart.
#[derive(Clone, Default)]
pub struct RevokedKeys(Arc<RwLock<HashSet<[u8; 32]>>>);

impl RevokedKeys {
    pub fn replace(&self, keys: impl IntoIterator<Item = [u8; 32]>) {
        let set: HashSet<_> = keys.into_iter().collect();
        if let Ok(mut g) = self.0.write() {
            *g = set;
        }
    }

    pub fn insert(&self, key: [u8; 32]) {
        if let Ok(mut g) = self.0.write() {
            g.insert(key);
        }
    }

    pub fn contains(&self, key: &[u8; 32]) -> bool {
        // A poisoned lock fails closed: treat every key as revoked.
        self.0.read().map(|g| g.contains(key)).unwrap_or(true)
    }
}

#[derive(Debug)]
struct RevocationCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: RevokedKeysDebug,
}

struct RevokedKeysDebug(RevokedKeys);
impl std::fmt::Debug for RevokedKeysDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevokedKeys")
    }
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Enrollment runs without a client certificate; every other RPC checks for one itself.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let (_, facts) = foureyes_identity::AgentIdentity::from_certificate(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if self.revoked.0.contains(&facts.key_id) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server config for the agent port: chain [server cert, CA cert] so an enrolling agent can pin the
/// CA by fingerprint, optional client auth against the CA, revocation by key id, HTTP/2 only.
pub fn agent_port_config(
    ca_der: &[u8],
    server_cert_der: Vec<u8>,
    server_key_der: Vec<u8>,
    revoked: RevokedKeys,
) -> Result<ServerConfig, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let verifier = Arc::new(RevocationCheckingVerifier {
        inner,
        revoked: RevokedKeysDebug(revoked),
    });
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![
                CertificateDer::from(server_cert_der),
                CertificateDer::from(ca_der.to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key_der)),
        )?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Server config for the HTTPS API port (no client certificates; browsers and curl).
pub fn api_port_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
