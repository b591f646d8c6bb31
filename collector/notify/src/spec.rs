//! Notifiers and the target policy as written in configuration (the collector's config, a rules
//! file, an API request body): strict serde shapes whose secrets are *named*, never held.
//!
//! A spec turns into a [`NotifierConfig`] with [`NotifierSpec::load`], which reads each named
//! secret from its file or environment variable. The store keeps the loaded secrets sealed (see
//! [`Secret::seal`]), so a spec is only needed at load time.
//!
//! ```toml
//! [[notifier]]
//! kind = "webhook"
//! url = "https://hooks.example.net/foureyes"
//! hmac_key_file = "/etc/foureyes/webhook.key"
//!
//! [[notifier]]
//! kind = "smtp"
//! host = "mail.example.net"
//! security = "starttls"        # "tls" | "starttls" | "plain-on-loopback"
//! username = "alerts"
//! password_env = "FOUREYES_SMTP_PASSWORD"
//! from = "FourEyes <foureyes@example.net>"
//! to = ["noc@example.net"]
//! ```

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{NotifierConfig, PAGERDUTY_EVENTS_URL, SmtpConfig, SmtpSecurity};
use crate::policy::TargetPolicy;
use crate::secret::{Secret, SecretError};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{field}: name exactly one of {field}_file and {field}_env")]
    SecretSource { field: &'static str },
    #[error("{field}: {source}")]
    Secret {
        field: &'static str,
        #[source]
        source: SecretError,
    },
    #[error("{0}")]
    Invalid(String),
}

/// One notifier in configuration. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum NotifierSpec {
    Webhook {
        url: String,
        hmac_key_file: Option<PathBuf>,
        hmac_key_env: Option<String>,
    },
    Slack {
        url_file: Option<PathBuf>,
        url_env: Option<String>,
    },
    Smtp {
        host: String,
        /// Defaults to 465 for `tls`, 587 for `starttls`, 25 for `plain-on-loopback`.
        port: Option<u16>,
        security: SmtpSecurity,
        username: Option<String>,
        password_file: Option<PathBuf>,
        password_env: Option<String>,
        from: String,
        to: Vec<String>,
        /// PEM trust anchors for a relay with a private CA.
        ca_file: Option<PathBuf>,
    },
    Pagerduty {
        routing_key_file: Option<PathBuf>,
        routing_key_env: Option<String>,
        url: Option<String>,
    },
}

fn secret(
    field: &'static str,
    file: &Option<PathBuf>,
    env: &Option<String>,
    base: &Path,
) -> Result<Option<Secret>, SpecError> {
    let loaded = match (file, env) {
        (Some(_), Some(_)) => return Err(SpecError::SecretSource { field }),
        (None, None) => return Ok(None),
        (Some(f), None) => Secret::from_file(base.join(f)),
        (None, Some(v)) => Secret::from_env(v),
    };
    loaded
        .map(Some)
        .map_err(|source| SpecError::Secret { field, source })
}

fn required(
    field: &'static str,
    file: &Option<PathBuf>,
    env: &Option<String>,
    base: &Path,
) -> Result<Secret, SpecError> {
    secret(field, file, env, base)?.ok_or(SpecError::SecretSource { field })
}

fn read_pem(path: &Path) -> Result<String, SpecError> {
    let what = path.display();
    let meta = std::fs::metadata(path).map_err(|e| SpecError::Invalid(format!("{what}: {e}")))?;
    if meta.len() > 1024 * 1024 {
        return Err(SpecError::Invalid(format!("{what}: larger than 1 MiB")));
    }
    std::fs::read_to_string(path).map_err(|e| SpecError::Invalid(format!("{what}: {e}")))
}

impl NotifierSpec {
    /// Reads the named secrets. Relative `*_file` paths are taken from `base` (the directory of
    /// the file that named them).
    pub fn load(&self, base: &Path) -> Result<NotifierConfig, SpecError> {
        Ok(match self {
            Self::Webhook {
                url,
                hmac_key_file,
                hmac_key_env,
            } => NotifierConfig::Webhook {
                url: url.clone(),
                hmac_key: secret("hmac_key", hmac_key_file, hmac_key_env, base)?,
            },
            Self::Slack { url_file, url_env } => NotifierConfig::Slack {
                url: required("url", url_file, url_env, base)?,
            },
            Self::Smtp {
                host,
                port,
                security,
                username,
                password_file,
                password_env,
                from,
                to,
                ca_file,
            } => {
                if to.is_empty() {
                    return Err(SpecError::Invalid("smtp: `to` names no recipient".into()));
                }
                let password = secret("password", password_file, password_env, base)?;
                if password.is_some() && username.is_none() {
                    return Err(SpecError::Invalid(
                        "smtp: a password needs a username".into(),
                    ));
                }
                NotifierConfig::Smtp(SmtpConfig {
                    host: host.clone(),
                    port: port.unwrap_or(match security {
                        SmtpSecurity::Tls => 465,
                        SmtpSecurity::StartTls => 587,
                        SmtpSecurity::PlainOnLoopback => 25,
                    }),
                    security: *security,
                    username: username.clone(),
                    password,
                    from: from.clone(),
                    to: to.clone(),
                    ca_pem: ca_file
                        .as_ref()
                        .map(|f| read_pem(&base.join(f)))
                        .transpose()?,
                })
            }
            Self::Pagerduty {
                routing_key_file,
                routing_key_env,
                url,
            } => NotifierConfig::PagerDuty {
                routing_key: required("routing_key", routing_key_file, routing_key_env, base)?,
                url: url.clone().unwrap_or_else(|| PAGERDUTY_EVENTS_URL.into()),
            },
        })
    }
}

/// The operator's target policy as configured; the collector adds its own addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetPolicySpec {
    pub allow_private: bool,
    pub allowed: Vec<IpNet>,
}

impl TargetPolicySpec {
    pub fn build(&self, own_addresses: Vec<std::net::IpAddr>) -> TargetPolicy {
        TargetPolicy {
            allow_private: self.allow_private,
            allowed: self.allowed.clone(),
            own_addresses,
            host_addresses: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        notifier: Vec<NotifierSpec>,
        policy: TargetPolicySpec,
    }

    #[test]
    fn a_config_file_names_secrets_and_loading_reads_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hook.key"), "k3y-from-file\n").expect("write");
        std::fs::write(dir.path().join("pd.key"), "pd-routing-key").expect("write");
        let text = r#"
            policy = { allowed = ["127.0.0.1/32", "fd00::/8"] }
            [[notifier]]
            kind = "webhook"
            url = "https://hooks.example.net/x"
            hmac_key_file = "hook.key"
            [[notifier]]
            kind = "pagerduty"
            routing_key_file = "pd.key"
            [[notifier]]
            kind = "smtp"
            host = "mail.example.net"
            security = "starttls"
            from = "a@example.net"
            to = ["b@example.net"]
        "#;
        let f: File = toml::from_str(text).expect("parses");
        assert_eq!(f.policy.allowed.len(), 2);
        assert!(!f.policy.allow_private);
        let loaded: Vec<NotifierConfig> = f
            .notifier
            .iter()
            .map(|s| s.load(dir.path()).expect("loads"))
            .collect();
        match &loaded[0] {
            NotifierConfig::Webhook { hmac_key, .. } => {
                assert_eq!(hmac_key.as_ref().map(Secret::expose), Some("k3y-from-file"))
            }
            other => panic!("{other:?}"),
        }
        match &loaded[1] {
            NotifierConfig::PagerDuty { routing_key, url } => {
                assert_eq!(routing_key.expose(), "pd-routing-key");
                assert_eq!(url, PAGERDUTY_EVENTS_URL);
            }
            other => panic!("{other:?}"),
        }
        match &loaded[2] {
            NotifierConfig::Smtp(c) => {
                assert_eq!((c.port, c.security), (587, SmtpSecurity::StartTls))
            }
            other => panic!("{other:?}"),
        }
        let dbg = format!("{loaded:?}");
        assert!(!dbg.contains("k3y") && !dbg.contains("pd-routing"), "{dbg}");
    }

    #[test]
    fn typos_plain_secrets_and_missing_sources_are_errors() {
        // A secret written inline is an unknown key, not silently accepted.
        let e = toml::from_str::<NotifierSpec>(
            "kind = \"pagerduty\"\nrouting_key = \"inline-secret\"\n",
        )
        .expect_err("inline secret");
        assert!(e.to_string().contains("routing_key"), "{e}");
        assert!(toml::from_str::<NotifierSpec>("kind = \"webhok\"\nurl = \"x\"\n").is_err());
        let spec: NotifierSpec = toml::from_str("kind = \"slack\"\n").expect("parses");
        assert!(matches!(
            spec.load(Path::new("/")),
            Err(SpecError::SecretSource { field: "url" })
        ));
        let spec: NotifierSpec =
            toml::from_str("kind = \"slack\"\nurl_file = \"/nonexistent/slack\"\n")
                .expect("parses");
        let e = spec.load(Path::new("/")).expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/slack"), "{e}");
    }
}
