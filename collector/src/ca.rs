//! The collector's certificate authority.
//!
//! Created on first start in the data dir. Its private key is sealed with the key-encryption key
//! (see `foureyes_identity::Kek`); the certificate is public. Agent certificates are built here from
//! nothing but the CSR's public key: id, tenant, SANs, key usages and lifetime come from the
//! collector, so a CSR asking for `CA:true`, extra SANs or another tenant's identity gains nothing.

use std::{path::Path, time::Duration};

use foureyes_identity::{AgentIdentity, Kek, fingerprint, write_private};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA files in {dir}: {msg}")]
    Files { dir: String, msg: String },
    #[error("certificate signing request rejected: {0}")]
    BadCsr(String),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Identity(#[from] foureyes_identity::IdentityError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct Ca {
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

pub const CA_CERT_FILE: &str = "ca.crt.der";
pub const CA_KEY_FILE: &str = "ca.key.sealed";

impl Ca {
    /// Loads the CA from `dir`, or creates it there when neither file exists.
    pub fn load_or_create(dir: &Path, kek: &Kek) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let files = |msg: String| CaError::Files {
            dir: dir.display().to_string(),
            msg,
        };
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert_der = std::fs::read(&cert_path)?;
                let sealed = std::fs::read(&key_path)?;
                let key_der = kek.open(&sealed).map_err(|_| {
                    files(
                        "cannot unseal the CA key: wrong key-encryption key (FOUREYES_KEK / kek_file)?"
                            .into(),
                    )
                })?;
                let key = KeyPair::try_from(key_der.as_slice())?;
                let issuer =
                    Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.clone()), key)?;
                Ok(Self { cert_der, issuer })
            }
            (false, false) => {
                std::fs::create_dir_all(dir)?;
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let mut params = CertificateParams::default();
                let mut dn = DistinguishedName::new();
                dn.push(
                    DnType::CommonName,
                    format!("FourEyes collector CA {}", short_id()),
                );
                dn.push(DnType::OrganizationName, "FourEyes");
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                let now = OffsetDateTime::now_utc();
                params.not_before = now - time::Duration::hours(1);
                params.not_after = now + time::Duration::days(3650);
                params.serial_number = Some(random_serial());
                let cert = params.self_signed(&key)?;
                let cert_der = cert.der().to_vec();
                write_private(&key_path, &kek.seal(&key.serialize_der()))?;
                std::fs::write(&cert_path, &cert_der)?;
                let issuer = Issuer::new(params, key);
                Ok(Self { cert_der, issuer })
            }
            _ => Err(files(format!(
                "only one of {CA_CERT_FILE} and {CA_KEY_FILE} exists; restore both or remove both"
            ))),
        }
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert_der)
    }

    /// Issues an agent certificate for the public key of `csr_der` (its signature is checked: the
    /// requester must hold the key). Nothing else of the CSR is used.
    pub fn issue_agent(
        &self,
        csr_der: &[u8],
        identity: &AgentIdentity,
        lifetime: Duration,
    ) -> Result<Vec<u8>, CaError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| CaError::BadCsr(e.to_string()))?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(CaError::BadCsr("agent keys must be ed25519".into()));
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.id.clone());
        dn.push(DnType::OrganizationName, identity.org.clone());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(identity.to_uri().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        // A little back-dating absorbs clock skew between collector and agent.
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::DAY);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(cert.der().to_vec())
    }

    /// A fresh server certificate for the agent port, valid for `names` (DNS names or IP literals).
    /// Its key lives in memory only and is made anew at each start.
    pub fn issue_server(&self, names: &[String]) -> Result<(Vec<u8>, Vec<u8>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "FourEyes collector");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(90);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }
}

fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

fn short_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foureyes_identity::AgentKind;

    fn ca() -> (tempfile::TempDir, Ca) {
        let dir = tempfile::tempdir().expect("tmp");
        let kek = Kek::generate();
        let ca = Ca::load_or_create(dir.path(), &kek).expect("ca");
        (dir, ca)
    }

    fn ident(org: &str) -> AgentIdentity {
        AgentIdentity {
            org: org.into(),
            team: Some("noc".into()),
            kind: AgentKind::Node,
            id: "n-abc".into(),
        }
    }

    #[test]
    fn csr_asking_for_ca_extra_sans_and_another_tenant_gains_nothing() {
        let (_d, ca) = ca();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let evil = AgentIdentity {
            org: "victim".into(),
            team: None,
            kind: AgentKind::Listener,
            id: "n-victim".into(),
        };
        let mut params = CertificateParams::new(vec!["collector.example".to_string()]).expect("p");
        params
            .subject_alt_names
            .push(SanType::URI(evil.to_uri().try_into().expect("uri")));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let csr = params.serialize_request(&key).expect("csr");
        let der = ca
            .issue_agent(csr.der(), &ident("acme"), Duration::from_secs(3600))
            .expect("issue");
        let (id, facts) = AgentIdentity::from_certificate(&der).expect("identity");
        assert_eq!(id, ident("acme"));
        assert_eq!(facts.public_key, key.public_key_raw());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert!(!cert.is_ca());
        let bc = cert.basic_constraints().expect("bc");
        assert!(bc.is_none_or(|b| !b.value.ca));
        let san = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        assert_eq!(
            san.value.general_names.len(),
            1,
            "only the collector's URI SAN"
        );
        let ku = cert.key_usage().expect("ku").expect("present");
        assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());
        let eku = cert.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.client_auth && !eku.value.server_auth);
    }

    #[test]
    fn csr_with_a_bad_signature_is_refused() {
        let (_d, ca) = ca();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .expect("csr");
        let mut der = csr.der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0xff;
        assert!(
            ca.issue_agent(&der, &ident("acme"), Duration::from_secs(60))
                .is_err()
        );
    }

    #[test]
    fn reload_with_wrong_kek_fails_and_right_kek_works() {
        let dir = tempfile::tempdir().expect("tmp");
        let kek = Kek::generate();
        let fp = Ca::load_or_create(dir.path(), &kek)
            .expect("ca")
            .fingerprint();
        assert_eq!(
            Ca::load_or_create(dir.path(), &kek)
                .expect("reload")
                .fingerprint(),
            fp
        );
        assert!(Ca::load_or_create(dir.path(), &Kek::generate()).is_err());
        let key = std::fs::read(dir.path().join(CA_KEY_FILE)).expect("key file");
        assert!(!key.windows(10).any(|w| w == b"PRIVATE KE"));
    }
}
