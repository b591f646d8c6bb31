//! The identity contract shared by the collector and its agents.
//!
//! Both sides must agree, byte for byte, on how an enrollment token carries the CA fingerprint, how
//! a certificate names its agent (SAN URI), how a key is identified, and how key files are sealed at
//! rest. Keeping that in one small crate means the two sides cannot drift.

use std::{fmt, path::Path};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit},
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("malformed token: {0}")]
    MalformedToken(&'static str),
    #[error("malformed agent identity URI {0:?}")]
    MalformedUri(String),
    #[error(
        "invalid name {0:?}: use 1-63 characters a-z, 0-9 and '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("sealed data is corrupt or the key-encryption key is wrong")]
    Unseal,
    #[error("key-encryption key must be 32 bytes, hex or base64 encoded ({0})")]
    BadKek(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// SHA-256 of a DER certificate: how a token pins the collector's CA before anything is sent.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Lower-case hex SHA-256, the only form in which token secrets reach a database.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Key id of a raw ed25519 public key: how signed batches and revocations name a key.
pub fn key_id(raw_public_key: &[u8]) -> [u8; 32] {
    Sha256::digest(raw_public_key).into()
}

/// The bytes a node release signature covers: a domain tag, the version and the binary's SHA-256.
/// Binding the version stops a validly signed old release being replayed as a new one's label.
pub fn update_message(version: &str, sha256: &[u8]) -> Vec<u8> {
    let mut m = b"foureyes-node-update-v1\0".to_vec();
    m.extend_from_slice(version.as_bytes());
    m.push(0);
    m.extend_from_slice(sha256);
    m
}

/// Org, team and agent names: DNS-label-like so they are safe in URIs, paths and logs.
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidName(name.to_string()))
    }
}

fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// A single-use enrollment token: 256 random bits plus the CA fingerprint the agent pins.
///
/// Text form: `fe1.<secret>.<ca-fingerprint>`, both base64url. Only [`Self::secret_hash`] is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    secret: [u8; 32],
    pub ca_fingerprint: [u8; 32],
}

impl EnrollmentToken {
    pub fn generate(ca_fingerprint: [u8; 32]) -> Self {
        Self {
            secret: random_secret(),
            ca_fingerprint,
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let mut parts = s.trim().split('.');
        if parts.next() != Some("fe1") {
            return Err(IdentityError::MalformedToken(
                "an enrollment token starts with `fe1.`",
            ));
        }
        let secret = decode32(parts.next(), "secret")?;
        let ca_fingerprint = decode32(parts.next(), "CA fingerprint")?;
        if parts.next().is_some() {
            return Err(IdentityError::MalformedToken("trailing data"));
        }
        Ok(Self {
            secret,
            ca_fingerprint,
        })
    }

    pub fn secret_hash(&self) -> String {
        sha256_hex(&self.secret)
    }

    /// The text to show once to the operator.
    pub fn reveal(&self) -> String {
        format!(
            "fe1.{}.{}",
            URL_SAFE_NO_PAD.encode(self.secret),
            URL_SAFE_NO_PAD.encode(self.ca_fingerprint)
        )
    }
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnrollmentToken(<redacted>)")
    }
}

/// An API token: 256 random bits, text form `fea1.<secret>`; only its SHA-256 is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    secret: [u8; 32],
}

impl ApiToken {
    pub fn generate() -> Self {
        Self {
            secret: random_secret(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let rest = s
            .trim()
            .strip_prefix("fea1.")
            .ok_or(IdentityError::MalformedToken(
                "an API token starts with `fea1.`",
            ))?;
        Ok(Self {
            secret: decode32(Some(rest), "secret")?,
        })
    }

    pub fn secret_hash(&self) -> String {
        sha256_hex(&self.secret)
    }

    pub fn reveal(&self) -> String {
        format!("fea1.{}", URL_SAFE_NO_PAD.encode(self.secret))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken(<redacted>)")
    }
}

fn decode32(part: Option<&str>, what: &'static str) -> Result<[u8; 32], IdentityError> {
    let part = part.ok_or(IdentityError::MalformedToken(what))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IdentityError::MalformedToken(what))?;
    bytes
        .try_into()
        .map_err(|_| IdentityError::MalformedToken(what))
}

/// What kind of agent a certificate names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentKind {
    Node,
    Listener,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Node => "node",
            AgentKind::Listener => "listener",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "node" => Some(AgentKind::Node),
            "listener" => Some(AgentKind::Listener),
            _ => None,
        }
    }
}

/// Who an agent certificate says it is. The collector reads tenant and id from here only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentIdentity {
    pub org: String,
    pub team: Option<String>,
    pub kind: AgentKind,
    pub id: String,
}

const URI_PREFIX: &str = "foureyes://agent/";

impl AgentIdentity {
    /// The SAN URI: `foureyes://agent/<org>/<team or ->/<kind>/<id>`.
    pub fn to_uri(&self) -> String {
        format!(
            "{URI_PREFIX}{}/{}/{}/{}",
            self.org,
            self.team.as_deref().unwrap_or("-"),
            self.kind.as_str(),
            self.id
        )
    }

    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let bad = || IdentityError::MalformedUri(uri.to_string());
        let rest = uri.strip_prefix(URI_PREFIX).ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [org, team, kind, id] = parts.as_slice() else {
            return Err(bad());
        };
        validate_name(org).map_err(|_| bad())?;
        validate_name(id).map_err(|_| bad())?;
        let team = if *team == "-" {
            None
        } else {
            validate_name(team).map_err(|_| bad())?;
            Some(team.to_string())
        };
        Ok(Self {
            org: org.to_string(),
            team,
            kind: AgentKind::parse(kind).ok_or_else(bad)?,
            id: id.to_string(),
        })
    }

    /// Reads the identity from an agent certificate's SAN URIs. Exactly one FourEyes URI is accepted.
    pub fn from_certificate(der: &[u8]) -> Result<(Self, CertFacts), IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let mut found = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(u) = name
                    && u.starts_with(URI_PREFIX)
                {
                    found.push(Self::from_uri(u)?);
                }
            }
        }
        if found.len() != 1 {
            return Err(IdentityError::Certificate(format!(
                "expected exactly one {URI_PREFIX} SAN, found {}",
                found.len()
            )));
        }
        let public_key = cert.public_key().subject_public_key.data.to_vec();
        let facts = CertFacts {
            key_id: key_id(&public_key),
            public_key,
            serial: cert.raw_serial().to_vec(),
            not_before_unix: cert.validity().not_before.timestamp(),
            not_after_unix: cert.validity().not_after.timestamp(),
        };
        Ok((found.remove(0), facts))
    }
}

/// Facts about a certificate that renewal, revocation and signature checks need.
#[derive(Clone, Debug)]
pub struct CertFacts {
    /// Raw subject public key bytes (32 bytes for ed25519).
    pub public_key: Vec<u8>,
    pub key_id: [u8; 32],
    pub serial: Vec<u8>,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

/// A key-encryption key: seals private keys at rest.
///
/// A KEK stored on the same disk as what it seals only guards against copies of the data (a backup,
/// a stolen disk image of one directory), not against root on the host. Point `*_kek_file` at a
/// file on another mount, or use the environment variable, where that matters.
pub struct Kek(Zeroizing<[u8; 32]>);

impl Kek {
    pub fn from_text(text: &str) -> Result<Self, IdentityError> {
        let t = text.trim();
        let bytes = if t.len() == 64 {
            hex::decode(t).map_err(|e| IdentityError::BadKek(e.to_string()))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|e| IdentityError::BadKek(e.to_string()))?
        };
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| IdentityError::BadKek("wrong length".into()))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    pub fn generate() -> Self {
        Self(Zeroizing::new(random_secret()))
    }

    /// Loads the KEK from the environment variable if set, else from `file`; if neither exists and
    /// `create` is true, generates one into `file` (mode 0600). Returns whether it was generated.
    pub fn load_or_create(
        env_var: &str,
        file: &Path,
        create: bool,
    ) -> Result<(Self, bool), IdentityError> {
        if let Ok(v) = std::env::var(env_var)
            && !v.trim().is_empty()
        {
            return Ok((Self::from_text(&v)?, false));
        }
        match std::fs::read_to_string(file) {
            Ok(t) => Ok((Self::from_text(&t)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let k = Self::generate();
                write_private(file, hex::encode(*k.0).as_bytes())?;
                Ok((k, true))
            }
            Err(e) => Err(IdentityError::Io(std::io::Error::new(
                e.kind(),
                format!("key-encryption key {}: {e}", file.display()),
            ))),
        }
    }

    /// XChaCha20-Poly1305 with a random nonce: `FESEAL1` || nonce(24) || ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&*self.0).into());
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce size cannot fail; an empty output would fail to open.
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut out = b"FESEAL1".to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        let rest = sealed
            .strip_prefix(b"FESEAL1")
            .ok_or(IdentityError::Unseal)?;
        if rest.len() < 24 + 16 {
            return Err(IdentityError::Unseal);
        }
        let (nonce, ct) = rest.split_at(24);
        let cipher = XChaCha20Poly1305::new((&*self.0).into());
        cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map(Zeroizing::new)
            .map_err(|_| IdentityError::Unseal)
    }
}

/// Writes a file readable by its owner only, atomically (temp file + rename).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_token_round_trip_and_debug_redacts() {
        let t = EnrollmentToken::generate([7; 32]);
        let text = t.reveal();
        let back = EnrollmentToken::parse(&text).expect("parse");
        assert_eq!(back, t);
        assert_eq!(back.ca_fingerprint, [7; 32]);
        assert!(!format!("{t:?}").contains(&text[4..20]));
        assert!(EnrollmentToken::parse("fe1.abc").is_err());
        assert!(EnrollmentToken::parse(&text.replace("fe1", "fe2")).is_err());
    }

    #[test]
    fn api_token_hash_is_stable_and_not_the_secret() {
        let t = ApiToken::generate();
        let text = t.reveal();
        let back = ApiToken::parse(&text).expect("parse");
        assert_eq!(back.secret_hash(), t.secret_hash());
        assert!(!t.secret_hash().contains(&text[5..]));
    }

    #[test]
    fn uri_round_trip_and_rejects_injection() {
        let id = AgentIdentity {
            org: "acme".into(),
            team: Some("noc".into()),
            kind: AgentKind::Node,
            id: "n-1234".into(),
        };
        assert_eq!(AgentIdentity::from_uri(&id.to_uri()).expect("uri"), id);
        assert!(AgentIdentity::from_uri("foureyes://agent/acme/noc/node/n-1/extra").is_err());
        assert!(AgentIdentity::from_uri("foureyes://agent/ACME/-/node/n-1").is_err());
        assert!(AgentIdentity::from_uri("foureyes://agent/acme/-/root/n-1").is_err());
    }

    #[test]
    fn seal_open_and_wrong_key() {
        let k = Kek::generate();
        let sealed = k.seal(b"private key");
        assert_eq!(&**k.open(&sealed).expect("open"), b"private key");
        assert!(Kek::generate().open(&sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(k.open(&tampered).is_err());
    }

    #[test]
    fn kek_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("kek");
        let (k1, created) = Kek::load_or_create("FOUREYES_TEST_UNSET_KEK", &f, true).expect("kek");
        assert!(created);
        let (k2, created) = Kek::load_or_create("FOUREYES_TEST_UNSET_KEK", &f, true).expect("kek");
        assert!(!created);
        assert_eq!(*k1.0, *k2.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        assert!(
            Kek::load_or_create("FOUREYES_TEST_UNSET_KEK", &dir.path().join("x"), false).is_err()
        );
    }
}
