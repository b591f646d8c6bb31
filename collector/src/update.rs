//! Node releases for signed self-update. The operator publishes a binary with the signature made
//! offline (`cargo xtask sign-update`); the collector stores it in the data dir, serves it at
//! `/updates/<sha256>` and offers it to nodes running another version. The collector never holds
//! the signing key, and nodes verify against the key pinned into them at build time.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub version: String,
    pub sha256: String,
    pub signature: String,
}

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("updates")
}

/// Path of a stored release binary, for a hex SHA-256 (anything else is refused, so a request
/// path can never walk out of the updates dir).
pub fn binary_path(data_dir: &Path, sha256_hex: &str) -> Option<PathBuf> {
    let ok = sha256_hex.len() == 64
        && sha256_hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    ok.then(|| dir(data_dir).join(format!("{sha256_hex}.bin")))
}

pub fn current(data_dir: &Path) -> Option<Release> {
    let text = std::fs::read_to_string(dir(data_dir).join("current.json")).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn publish(
    data_dir: &Path,
    version: &str,
    binary: &Path,
    signature_hex: &str,
) -> Result<Release, String> {
    if version.is_empty()
        || version.len() > 64
        || version.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err("version: 1-64 printable characters, no spaces".into());
    }
    let sig = hex::decode(signature_hex.trim()).map_err(|e| format!("signature: {e}"))?;
    if sig.len() != 64 {
        return Err("signature: an ed25519 signature is 64 bytes (128 hex digits)".into());
    }
    let bytes = std::fs::read(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    std::fs::create_dir_all(dir(data_dir)).map_err(|e| e.to_string())?;
    let path = binary_path(data_dir, &sha).ok_or("bad digest")?;
    std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
    let release = Release {
        version: version.to_string(),
        sha256: sha,
        signature: hex::encode(sig),
    };
    let json = serde_json::to_vec_pretty(&release).map_err(|e| e.to_string())?;
    foureyes_identity::write_private(&dir(data_dir).join("current.json"), &json)
        .map_err(|e| e.to_string())?;
    Ok(release)
}

/// The typed offer for a node running `running_version`, if it should update.
pub fn offer_for(
    data_dir: &Path,
    base_url: &str,
    running_version: &str,
) -> Option<foureyes_proto::v1::UpdateAvailable> {
    let r = current(data_dir)?;
    if r.version == running_version {
        return None;
    }
    Some(foureyes_proto::v1::UpdateAvailable {
        url: format!("{}/updates/{}", base_url.trim_end_matches('/'), r.sha256),
        version: r.version,
        sha256: hex::decode(&r.sha256).ok()?,
        signature: hex::decode(&r.signature).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_path_refuses_anything_but_a_digest() {
        let d = Path::new("/data");
        assert!(binary_path(d, "../../etc/passwd").is_none());
        assert!(binary_path(d, &"A".repeat(64)).is_none());
        assert!(binary_path(d, &"a".repeat(63)).is_none());
        assert!(binary_path(d, &"a".repeat(64)).is_some());
    }
}
