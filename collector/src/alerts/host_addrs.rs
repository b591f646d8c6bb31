//! The host's interface addresses for the notifier target policy.
//!
//! A collector bound to `0.0.0.0` or `::` answers on every interface address, so "the
//! collector's own addresses" (which a tenant's notifier may not target) are those, not the bind
//! address. Interfaces and their addresses change while the collector runs (DHCP, VPNs,
//! containers), so the list is read now and again every [`REFRESH`].

use std::{net::IpAddr, time::Duration};

use foureyes_notify::HostAddresses;
use tokio_util::sync::CancellationToken;

/// How often the interface addresses are read again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Every address of every interface (loopback and link-local included: the policy refuses those
/// anyway, and listing them costs nothing).
pub fn read() -> std::io::Result<Vec<IpAddr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .collect())
}

/// Fills `into` now (so the first notification is already guarded), then refreshes it every
/// `every` until `shutdown`. A failed read keeps the last list.
pub fn spawn(
    into: HostAddresses,
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    refresh(&into);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => refresh(&into),
                _ = shutdown.cancelled() => return,
            }
        }
    })
}

fn refresh(into: &HostAddresses) {
    match read() {
        Ok(v) => into.set(v),
        Err(e) => {
            tracing::warn!(error = %e, "notifier policy: cannot read the interface addresses; keeping the last list")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_among_the_host_addresses() {
        let v = read().unwrap();
        assert!(v.iter().any(|a| a.is_loopback()), "{v:?}");
    }
}
