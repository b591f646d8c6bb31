//! Where a notification goes. Secrets are `Secret`s, so `Debug` of a config never shows one.

use crate::secret::Secret;

/// PagerDuty's Events API v2 endpoint, the default for `NotifierConfig::PagerDuty`.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpSecurity {
    /// TLS from the first byte (usually port 465).
    Tls,
    /// Plain connect, then STARTTLS, which must succeed (usually port 587).
    #[serde(rename = "starttls")]
    StartTls,
    /// No TLS at all; allowed only when the server's address is loopback (a local relay or a
    /// test server), so credentials and alert contents never cross a network in clear.
    PlainOnLoopback,
}

#[derive(Debug, Clone)]
pub enum NotifierConfig {
    /// A generic JSON webhook; with `hmac_key`, requests are signed (see the crate README).
    Webhook {
        url: String,
        hmac_key: Option<Secret>,
    },
    /// A Slack-compatible incoming webhook. Its URL is the credential, so it is a `Secret`.
    Slack {
        url: Secret,
    },
    Smtp(SmtpConfig),
    /// PagerDuty Events API v2; `url` defaults to [`PAGERDUTY_EVENTS_URL`].
    PagerDuty {
        routing_key: Secret,
        url: String,
    },
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    /// PEM certificates trusted in addition to the public roots, for a relay with a private CA.
    pub ca_pem: Option<String>,
}

impl NotifierConfig {
    /// A PagerDuty notifier sending to the public Events API.
    pub fn pagerduty(routing_key: Secret) -> Self {
        Self::PagerDuty {
            routing_key,
            url: PAGERDUTY_EVENTS_URL.to_string(),
        }
    }

    /// The kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Slack { .. } => "slack",
            Self::Smtp(_) => "smtp",
            Self::PagerDuty { .. } => "pagerduty",
        }
    }

    pub(crate) fn secrets(&self) -> Vec<&Secret> {
        match self {
            Self::Webhook { hmac_key, .. } => hmac_key.iter().collect(),
            Self::Slack { url } => vec![url],
            Self::Smtp(c) => c.password.iter().collect(),
            Self::PagerDuty { routing_key, .. } => vec![routing_key],
        }
    }
}
