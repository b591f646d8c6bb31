//! The agent runtime shared by `foureyes-node` and `foureyes-bgp-listener`: enrollment client,
//! identity store (state dir with a sealed key), the outbound link with reconnect, and the disk
//! spool. Agents only ever dial out: nothing in this crate binds a listening socket.

pub mod channel;
pub mod enroll;
pub mod link;
pub mod spool;
pub mod state;
pub mod tls;
pub mod update;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This host's name, as agents report it at enrollment and in every hello.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0} is not enrolled: run `enroll --collector HOST:PORT --token TOKEN` first")]
    NotEnrolled(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot reach the collector: {0}")]
    Connect(String),
    #[error("the collector refused: {0}")]
    Refused(String),
    #[error("state directory: {0}")]
    State(String),
    #[error("update refused: {0}")]
    Update(String),
    #[error("spool: {0}")]
    Spool(String),
    #[error(transparent)]
    Identity(#[from] foureyes_identity::IdentityError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
