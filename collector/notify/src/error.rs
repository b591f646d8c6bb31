//! Delivery errors. None of them holds a secret: URLs appear only as scheme, host and port
//! (webhook tokens live in paths and queries), and receiver bodies are capped and redacted.

use crate::chart::ChartError;
use crate::policy::ResolveError;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{kind} notifier: invalid configuration: {detail}")]
    Config { kind: &'static str, detail: String },
    #[error("{kind} notifier: {source}")]
    Policy {
        kind: &'static str,
        #[source]
        source: ResolveError,
    },
    #[error("{kind} notifier: cannot connect to {target}: {detail}")]
    Connect {
        kind: &'static str,
        target: String,
        detail: String,
    },
    #[error("{kind} notifier: {target} did not answer in time")]
    Timeout { kind: &'static str, target: String },
    #[error("{kind} notifier: {target} answered {status}: {body}")]
    Status {
        kind: &'static str,
        target: String,
        status: u16,
        body: String,
    },
    #[error("{kind} notifier: {target} redirected (status {status}); redirects are not followed")]
    Redirect {
        kind: &'static str,
        target: String,
        status: u16,
    },
    #[error("{kind} notifier: {target}: {detail}")]
    Protocol {
        kind: &'static str,
        target: String,
        detail: String,
    },
    /// The receiver refused for good (an SMTP 5xx reply, say).
    #[error("{kind} notifier: {target} refused: {detail}")]
    Rejected {
        kind: &'static str,
        target: String,
        detail: String,
    },
    #[error("chart: {0}")]
    Chart(#[from] ChartError),
    #[error("{kind} notifier: message too large ({size} bytes, max {max})")]
    TooLarge {
        kind: &'static str,
        size: usize,
        max: usize,
    },
}

impl NotifyError {
    /// Worth another attempt: the receiver may be back in a moment.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Protocol { .. } => true,
            // A failed lookup may be the resolver's hiccup; a refusal is not.
            Self::Policy {
                source: ResolveError::Lookup { .. },
                ..
            } => true,
            _ => false,
        }
    }

    /// The policy refusal inside, if that is why delivery failed.
    pub fn policy_refusal(&self) -> Option<&crate::policy::PolicyError> {
        match self {
            Self::Policy {
                source: ResolveError::Refused(p),
                ..
            } => Some(p),
            _ => None,
        }
    }
}
