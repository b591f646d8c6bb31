//! Client TLS for the agent link. Two trust modes: during enrollment the agent knows only the CA's
//! fingerprint (from the token) and pins it before it sends anything; afterwards it trusts exactly
//! the CA certificate it stored, never the system roots.

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts a server chain only if it contains the CA whose SHA-256 the token carries, and the
/// leaf validates against that CA for the name dialled.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| foureyes_identity::fingerprint(c) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the collector's CA does not match the fingerprint in the enrollment token"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS for enrollment: no client certificate, CA pinned by fingerprint.
pub fn enrollment_config(ca_fingerprint: [u8; 32]) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
            pin: ca_fingerprint,
            provider,
        }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// TLS for the link: trusts only the stored CA, presents the agent certificate.
pub fn link_config(
    ca_der: &[u8],
    cert_der: &[u8],
    key_pkcs8_der: &[u8],
) -> Result<ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec())),
        )?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Validates a certificate the collector handed us against our pinned CA: it must chain to it,
/// be for client auth and carry our key. Typed data the node checks, never runs.
pub fn validate_agent_certificate(
    ca_der: &[u8],
    cert_der: &[u8],
    expected_public_key: &[u8],
) -> Result<foureyes_identity::AgentIdentity, String> {
    use x509_parser::prelude::*;
    let (_, ca) = parse_x509_certificate(ca_der).map_err(|e| e.to_string())?;
    let (_, cert) = parse_x509_certificate(cert_der).map_err(|e| e.to_string())?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| "certificate is not signed by the pinned CA".to_string())?;
    if cert.is_ca() {
        return Err("certificate claims to be a CA".into());
    }
    if cert.public_key().subject_public_key.data.as_ref() != expected_public_key {
        return Err("certificate is for another key".into());
    }
    let (id, _) =
        foureyes_identity::AgentIdentity::from_certificate(cert_der).map_err(|e| e.to_string())?;
    Ok(id)
}
