//! Alert notifications: a generic webhook signed with HMAC, Slack-compatible webhooks, SMTP mail
//! and PagerDuty Events v2, each carrying a PNG chart of latency and loss around the event.
//!
//! The alert engine builds a [`Notification`] and calls [`Sender::send`] with the tenant's
//! [`NotifierConfig`]. Everything a tenant controls (URLs, SMTP hosts) passes the operator's
//! [`TargetPolicy`] on the addresses actually connected to. Secrets are [`Secret`]s: never
//! printed, zeroized on drop, sealed with the collector's KEK for storage. Payload formats and
//! the signature recipe are in this crate's README.

pub mod chart;
pub mod config;
pub mod error;
pub mod notification;
pub mod payload;
pub mod policy;
pub mod secret;
pub mod sender;
pub mod spec;

pub use chart::{CHART_HEIGHT, CHART_WIDTH, Chart, ChartError, Series, Unit, render_png};
pub use config::{NotifierConfig, PAGERDUTY_EVENTS_URL, SmtpConfig, SmtpSecurity};
pub use error::NotifyError;
pub use notification::{AlertState, Notification, Severity};
pub use payload::{SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature};
pub use policy::{HostAddresses, PolicyError, ResolveError, TargetPolicy};
pub use secret::{Secret, SecretError};
pub use sender::{Delivery, Sender, SenderOptions, render_off_thread};
pub use spec::{NotifierSpec, SpecError, TargetPolicySpec};
