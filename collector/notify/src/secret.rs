//! Notifier secrets (HMAC keys, SMTP passwords, PagerDuty routing keys, Slack webhook URLs).
//!
//! A `Secret` is never printed: `Debug` and `Display` show `***`, it has no `Serialize`, and its
//! bytes are zeroized on drop. The store keeps secrets sealed with the collector's key-encryption
//! key (`seal`/`open`), and configuration names a file or an environment variable instead of
//! holding one.

use std::fmt;
use std::path::Path;

use foureyes_identity::Kek;
use zeroize::Zeroizing;

/// The largest secret read from a file or the environment; a key file bigger than this is a
/// mistake (the wrong path), not a key.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("secret {what} is empty")]
    Empty { what: String },
    #[error("secret {what} is larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge { what: String },
    #[error("secret {what} is not UTF-8")]
    NotUtf8 { what: String },
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("sealed secret does not open with this key-encryption key (wrong key or corrupted)")]
    Open,
}

/// A secret string. Cloning copies the zeroizing buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value the caller already holds (for example one just received through the API).
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// Reads a secret file. One trailing newline (as editors and `echo` write) is dropped;
    /// other whitespace is kept, since it may be part of the key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SecretError> {
        let path = path.as_ref();
        let what = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| SecretError::Read {
            path: what.clone(),
            source,
        })?;
        if meta.len() > MAX_SECRET_BYTES as u64 {
            return Err(SecretError::TooLarge { what });
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| SecretError::Read {
            path: what.clone(),
            source,
        })?);
        Self::from_bytes(&bytes, &what)
    }

    /// Reads a secret from an environment variable.
    pub fn from_env(var: &str) -> Result<Self, SecretError> {
        let value =
            Zeroizing::new(std::env::var(var).map_err(|_| SecretError::EnvUnset(var.to_string()))?);
        Self::from_bytes(value.as_bytes(), &format!("${var}"))
    }

    fn from_bytes(bytes: &[u8], what: &str) -> Result<Self, SecretError> {
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge { what: what.into() });
        }
        let text =
            std::str::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 { what: what.into() })?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        if text.is_empty() {
            return Err(SecretError::Empty { what: what.into() });
        }
        Ok(Self::new(text))
    }

    /// The plaintext, for the one place that must use it (signing, authenticating, sending).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Encrypts the secret with the collector's KEK (XChaCha20-Poly1305, see `foureyes_identity`)
    /// for storage.
    pub fn seal(&self, kek: &Kek) -> Vec<u8> {
        kek.seal(self.0.as_bytes())
    }

    /// Decrypts a sealed secret. A wrong KEK or a changed byte fails; the error says nothing of
    /// the content.
    pub fn open(kek: &Kek, sealed: &[u8]) -> Result<Self, SecretError> {
        let plain = kek.open(sealed).map_err(|_| SecretError::Open)?;
        let text = std::str::from_utf8(&plain).map_err(|_| SecretError::Open)?;
        Ok(Self::new(text))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every occurrence of a secret in `text` (for example a receiver's error body that
/// echoes the request) with `***`.
pub(crate) fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        let v = s.expose();
        if v.len() >= 4 {
            out = out.replace(v, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn seal_open_round_trip_and_wrong_kek_fails() {
        let kek = Kek::generate();
        let s = Secret::new("routing-key-123");
        let sealed = s.seal(&kek);
        assert!(
            !sealed
                .windows(b"routing-key-123".len())
                .any(|w| w == b"routing-key-123"),
            "sealed bytes hold the plaintext"
        );
        assert_eq!(Secret::open(&kek, &sealed).expect("open"), s);
        assert!(matches!(
            Secret::open(&Kek::generate(), &sealed),
            Err(SecretError::Open)
        ));
        let mut bad = sealed.clone();
        if let Some(b) = bad.last_mut() {
            *b ^= 1;
        }
        assert!(Secret::open(&kek, &bad).is_err());
    }

    #[test]
    fn from_file_drops_one_newline_and_refuses_empty_and_huge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        std::fs::write(&p, "abc def\n").expect("write");
        assert_eq!(Secret::from_file(&p).expect("read").expose(), "abc def");
        std::fs::write(&p, "\n").expect("write");
        assert!(matches!(
            Secret::from_file(&p),
            Err(SecretError::Empty { .. })
        ));
        std::fs::write(&p, vec![b'a'; MAX_SECRET_BYTES + 1]).expect("write");
        assert!(matches!(
            Secret::from_file(&p),
            Err(SecretError::TooLarge { .. })
        ));
        assert!(Secret::from_file(dir.path().join("missing")).is_err());
        assert!(matches!(
            Secret::from_env("FOUREYES_NOTIFY_TEST_UNSET_VAR"),
            Err(SecretError::EnvUnset(_))
        ));
    }

    #[test]
    fn redact_removes_echoed_secrets() {
        let s = Secret::new("topsecret");
        assert_eq!(redact("got topsecret back", &[&s]), "got *** back");
    }
}
