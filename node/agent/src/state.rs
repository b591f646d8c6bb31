//! The agent's state directory: who it is, what it trusts, its sealed key, its assignments.
//!
//! Layout (all written atomically, secrets mode 0600):
//! - `identity.json`: agent id, org, team, kind, collector address (no secrets)
//! - `ca.crt.der`: the pinned collector CA
//! - `credentials.sealed`: the current ed25519 key (PKCS#8) and certificate, sealed with the KEK
//! - `kek`: the key-encryption key, unless `FOUREYES_AGENT_KEK` provides one
//! - `assignments.pb`: the last assignment set, so probing goes on through a partition and restarts
//! - `spool.sqlite`: signed result batches not yet acknowledged

use std::path::{Path, PathBuf};

use foureyes_identity::{Kek, write_private};
use prost::Message;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::AgentError;

pub const KEK_ENV: &str = "FOUREYES_AGENT_KEK";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    pub agent_id: String,
    pub org: String,
    pub team: Option<String>,
    pub kind: String,
    pub collector: String,
}

/// The key and certificate in use. Replaced as one sealed file so a crash never pairs a new key
/// with an old certificate.
pub struct Credentials {
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    pub cert_der: Vec<u8>,
}

impl Credentials {
    pub fn signing_key(&self) -> Result<ed25519_dalek::SigningKey, AgentError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_der(&self.key_pkcs8)
            .map_err(|e| AgentError::State(format!("agent key: {e}")))
    }

    pub fn facts(&self) -> Result<foureyes_identity::CertFacts, AgentError> {
        foureyes_identity::AgentIdentity::from_certificate(&self.cert_der)
            .map(|(_, f)| f)
            .map_err(|e| AgentError::State(format!("agent certificate: {e}")))
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.key_pkcs8.len() + self.cert_der.len());
        out.extend_from_slice(&(self.key_pkcs8.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.key_pkcs8);
        out.extend_from_slice(&self.cert_der);
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let key = b.get(4..4 + n)?.to_vec();
        let cert = b.get(4 + n..)?.to_vec();
        Some(Self {
            key_pkcs8: Zeroizing::new(key),
            cert_der: cert,
        })
    }
}

pub struct StateDir {
    dir: PathBuf,
    kek: Kek,
}

impl StateDir {
    /// Opens (creating when `create`) the state dir and its KEK.
    pub fn open(dir: &Path, create: bool) -> Result<Self, AgentError> {
        if create {
            std::fs::create_dir_all(dir)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        } else if !dir.join("identity.json").exists() {
            return Err(AgentError::NotEnrolled(dir.display().to_string()));
        }
        let (kek, _) = Kek::load_or_create(KEK_ENV, &dir.join("kek"), create)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            kek,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn is_enrolled(&self) -> bool {
        self.dir.join("identity.json").exists()
    }

    pub fn identity(&self) -> Result<IdentityFile, AgentError> {
        let text = std::fs::read_to_string(self.dir.join("identity.json"))?;
        serde_json::from_str(&text).map_err(|e| AgentError::State(format!("identity.json: {e}")))
    }

    pub fn ca_der(&self) -> Result<Vec<u8>, AgentError> {
        Ok(std::fs::read(self.dir.join("ca.crt.der"))?)
    }

    pub fn credentials(&self) -> Result<Credentials, AgentError> {
        let sealed = std::fs::read(self.dir.join("credentials.sealed"))?;
        let plain = self.kek.open(&sealed).map_err(|_| {
            AgentError::State("cannot unseal credentials: wrong FOUREYES_AGENT_KEK?".into())
        })?;
        Credentials::decode(&plain)
            .ok_or_else(|| AgentError::State("credentials file is corrupt".into()))
    }

    pub fn save_credentials(&self, c: &Credentials) -> Result<(), AgentError> {
        let plain = Zeroizing::new(c.encode());
        write_private(&self.dir.join("credentials.sealed"), &self.kek.seal(&plain))?;
        Ok(())
    }

    pub fn save_enrollment(
        &self,
        identity: &IdentityFile,
        ca_der: &[u8],
        creds: &Credentials,
    ) -> Result<(), AgentError> {
        std::fs::write(self.dir.join("ca.crt.der"), ca_der)?;
        self.save_credentials(creds)?;
        let json =
            serde_json::to_vec_pretty(identity).map_err(|e| AgentError::State(e.to_string()))?;
        // identity.json last: its presence is what marks the state dir as enrolled.
        write_private(&self.dir.join("identity.json"), &json)?;
        Ok(())
    }

    pub fn load_assignments(&self) -> Option<foureyes_proto::v1::AssignmentSet> {
        let b = std::fs::read(self.dir.join("assignments.pb")).ok()?;
        foureyes_proto::v1::AssignmentSet::decode(b.as_slice()).ok()
    }

    pub fn save_assignments(
        &self,
        set: &foureyes_proto::v1::AssignmentSet,
    ) -> Result<(), AgentError> {
        write_private(&self.dir.join("assignments.pb"), &set.encode_to_vec())?;
        Ok(())
    }

    pub fn spool_path(&self) -> PathBuf {
        self.dir.join("spool.sqlite")
    }
}
