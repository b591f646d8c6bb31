//! Enrollment: the key pair is generated here and never leaves the agent; the collector gets a CSR.

use foureyes_identity::EnrollmentToken;
use foureyes_proto::v1::{EnrollRequest, enrollment_client::EnrollmentClient};
use rcgen::{CertificateParams, KeyPair};
use zeroize::Zeroizing;

use crate::{
    AgentError, channel,
    state::{Credentials, IdentityFile, StateDir},
    tls,
};

/// A freshly generated key pair with a CSR for it.
pub struct NewKey {
    /// PKCS#8 private key; never leaves the agent except sealed in its state dir.
    pub pkcs8: Zeroizing<Vec<u8>>,
    pub csr_der: Vec<u8>,
    /// Raw ed25519 public key, to check the certificate the collector returns.
    pub public_key: Vec<u8>,
}

/// A fresh ed25519 key and a CSR for it.
pub fn new_key_and_csr() -> Result<NewKey, AgentError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| AgentError::State(format!("key generation: {e}")))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| AgentError::State(format!("CSR: {e}")))?;
    Ok(NewKey {
        pkcs8: Zeroizing::new(key.serialize_der()),
        csr_der: csr.der().to_vec(),
        public_key: key.public_key_raw().to_vec(),
    })
}

pub struct Enrolled {
    pub agent_id: String,
    pub org: String,
    pub team: Option<String>,
}

pub async fn enroll(
    collector: &str,
    token_text: &str,
    state: &StateDir,
    hostname: &str,
) -> Result<Enrolled, AgentError> {
    if state.is_enrolled() {
        return Err(AgentError::Config(format!(
            "{} already holds an enrolled identity; use another --state-dir or remove it first",
            state.path().display()
        )));
    }
    let token =
        EnrollmentToken::parse(token_text).map_err(|e| AgentError::Config(e.to_string()))?;
    let NewKey {
        pkcs8: key,
        csr_der: csr,
        public_key,
    } = new_key_and_csr()?;
    let cfg = tls::enrollment_config(token.ca_fingerprint)
        .map_err(|e| AgentError::Connect(e.to_string()))?;
    let channel = channel::connect(collector, cfg).await?;
    let mut client = EnrollmentClient::new(channel);
    let resp = client
        .enroll(EnrollRequest {
            token: token.reveal(),
            csr_der: csr,
            hostname: hostname.to_string(),
            version: crate::VERSION.to_string(),
        })
        .await
        .map_err(|s| AgentError::Refused(s.message().to_string()))?
        .into_inner();
    if foureyes_identity::fingerprint(&resp.ca_certificate_der) != token.ca_fingerprint {
        return Err(AgentError::Refused(
            "collector returned a CA that does not match the token's fingerprint".into(),
        ));
    }
    let id = tls::validate_agent_certificate(
        &resp.ca_certificate_der,
        &resp.certificate_der,
        &public_key,
    )
    .map_err(AgentError::Refused)?;
    if id.id != resp.agent_id {
        return Err(AgentError::Refused(
            "certificate names another agent id".into(),
        ));
    }
    state.save_enrollment(
        &IdentityFile {
            agent_id: id.id.clone(),
            org: id.org.clone(),
            team: id.team.clone(),
            kind: id.kind.as_str().to_string(),
            collector: collector.to_string(),
        },
        &resp.ca_certificate_der,
        &Credentials {
            key_pkcs8: key,
            cert_der: resp.certificate_der,
        },
    )?;
    Ok(Enrolled {
        agent_id: id.id,
        org: id.org,
        team: id.team,
    })
}
