//! The correlator's target set: every test's target addresses, per org, in a prefix trie
//! (`prefix-trie`), so a route event finds the targets inside its prefix with one subtree walk
//! instead of a scan of the org's whole list.
//!
//! Freshness: the API (through `Registry::tests_changed`, the one place every test change
//! passes) marks the org in [`TargetChanges`] and wakes the correlator, which reloads that org's
//! tests before it reads the next route events, so a change right after a test is created is
//! matched. Names are resolved by [`Resolver`] with tokio's resolver and a timeout, outside the
//! correlation round: a name seen for the first time is awaited (up to the timeout) before the
//! next round, a known one is re-resolved in the background when its answer is older than
//! [`RESOLVE_TTL`] (or [`NEGATIVE_TTL`] for a failure), and the orgs using a name whose addresses
//! changed are rebuilt.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foureyes_store::IpPrefix;
use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use tokio::sync::Notify;

/// A resolved name is used this long before it is looked up again.
pub const RESOLVE_TTL: Duration = Duration::from_secs(300);
/// A name that did not resolve is tried again after this long (it may be a new record).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// One lookup gives up after this long; the name counts as failed until [`NEGATIVE_TTL`].
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Lookups running at once.
const LOOKUPS_IN_FLIGHT: usize = 16;

#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub addr: IpAddr,
    pub test_id: String,
    pub test_name: String,
    pub team: String,
}

/// One org's targets by address.
#[derive(Default)]
pub struct OrgTargets {
    v4: PrefixMap<Ipv4Net, Vec<Target>>,
    v6: PrefixMap<Ipv6Net, Vec<Target>>,
    len: usize,
}

impl OrgTargets {
    pub fn insert(&mut self, t: Target) {
        match t.addr {
            IpAddr::V4(a) => self.v4.entry(Ipv4Net::from(a)).or_default().push(t),
            IpAddr::V6(a) => self.v6.entry(Ipv6Net::from(a)).or_default().push(t),
        }
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The targets whose address is inside `p`.
    pub fn within(&self, p: &IpPrefix) -> Vec<&Target> {
        match p.addr {
            IpAddr::V4(a) => match Ipv4Net::new(a, p.len) {
                Ok(n) => self.v4.children(&n).flat_map(|(_, v)| v).collect(),
                Err(_) => Vec::new(),
            },
            IpAddr::V6(a) => match Ipv6Net::new(a, p.len) {
                Ok(n) => self.v6.children(&n).flat_map(|(_, v)| v).collect(),
                Err(_) => Vec::new(),
            },
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Target> {
        self.v4.values().flatten().chain(self.v6.values().flatten())
    }
}

/// Orgs whose tests changed since the correlator last looked, and names whose addresses did.
#[derive(Default)]
pub struct TargetChanges {
    orgs: Mutex<HashSet<String>>,
    hosts: Mutex<HashSet<String>>,
    notify: Notify,
}

impl TargetChanges {
    pub fn org_changed(&self, org: &str) {
        lock(&self.orgs).insert(org.to_string());
        self.notify.notify_one();
    }

    pub fn host_changed(&self, host: &str) {
        lock(&self.hosts).insert(host.to_string());
        self.notify.notify_one();
    }

    pub fn take(&self) -> (HashSet<String>, HashSet<String>) {
        (
            std::mem::take(&mut *lock(&self.orgs)),
            std::mem::take(&mut *lock(&self.hosts)),
        )
    }

    /// Completes when something changed (a change made before the wait counts too).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Entry {
    addrs: Vec<IpAddr>,
    at_ms: i64,
    ok: bool,
    in_flight: bool,
}

/// The name cache. Lookups run on tokio (never inside the correlator's blocking round).
pub struct Resolver {
    cache: Mutex<HashMap<String, Entry>>,
    changes: Arc<TargetChanges>,
    timeout: Duration,
}

/// What the target build needs resolved: names never looked up (awaited before the next round)
/// and names whose answer has aged (looked up in the background).
#[derive(Default, Debug, PartialEq)]
pub struct Wanted {
    pub fresh: Vec<String>,
    pub stale: Vec<String>,
}

impl Resolver {
    pub fn new(changes: Arc<TargetChanges>, timeout: Duration) -> Self {
        Resolver {
            cache: Mutex::new(HashMap::new()),
            changes,
            timeout,
        }
    }

    /// The addresses of `host` as last resolved (none yet, or none found: empty). Notes in
    /// `wanted` a name to look up; each name is asked for once until its lookup ends.
    pub fn addrs(&self, host: &str, now_ms: i64, wanted: &mut Wanted) -> Vec<IpAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![ip.to_canonical()];
        }
        let mut cache = lock(&self.cache);
        match cache.get_mut(host) {
            None => {
                cache.insert(
                    host.to_string(),
                    Entry {
                        addrs: Vec::new(),
                        at_ms: now_ms,
                        ok: false,
                        in_flight: true,
                    },
                );
                wanted.fresh.push(host.to_string());
                Vec::new()
            }
            Some(e) => {
                let ttl = if e.ok { RESOLVE_TTL } else { NEGATIVE_TTL };
                if !e.in_flight && now_ms - e.at_ms >= ttl.as_millis() as i64 {
                    e.in_flight = true;
                    wanted.stale.push(host.to_string());
                }
                e.addrs.clone()
            }
        }
    }

    /// Forgets names no test uses any more (called after every org was reloaded).
    pub fn retain(&self, used: &HashSet<&str>) {
        lock(&self.cache).retain(|h, e| e.in_flight || used.contains(h.as_str()));
    }

    /// Looks the names up (at most [`LOOKUPS_IN_FLIGHT`] at once, each bounded by the timeout)
    /// and records the answers; a name whose addresses changed is reported to the correlator.
    /// A failed lookup keeps the last good addresses (a DNS hiccup does not drop targets) and is
    /// retried after [`NEGATIVE_TTL`].
    pub async fn resolve(&self, hosts: Vec<String>) {
        use futures::StreamExt;
        let timeout = self.timeout;
        let mut answers = futures::stream::iter(hosts)
            .map(|h| async move {
                let r =
                    tokio::time::timeout(timeout, tokio::net::lookup_host((h.clone(), 0))).await;
                let addrs: Option<Vec<IpAddr>> = match r {
                    Ok(Ok(it)) => {
                        let mut v: Vec<IpAddr> = it.map(|a| a.ip().to_canonical()).collect();
                        v.sort();
                        v.dedup();
                        Some(v)
                    }
                    Ok(Err(e)) => {
                        tracing::info!(host = %h, error = %e, "test target does not resolve");
                        None
                    }
                    Err(_) => {
                        tracing::info!(host = %h, "test target lookup timed out");
                        None
                    }
                };
                (h, addrs)
            })
            .buffer_unordered(LOOKUPS_IN_FLIGHT);
        while let Some((h, addrs)) = answers.next().await {
            let now = crate::server::now_ms();
            let changed = {
                let mut cache = lock(&self.cache);
                let e = cache.entry(h.clone()).or_insert(Entry {
                    addrs: Vec::new(),
                    at_ms: now,
                    ok: false,
                    in_flight: false,
                });
                e.in_flight = false;
                e.at_ms = now;
                match addrs {
                    Some(a) if !a.is_empty() => {
                        e.ok = true;
                        let changed = e.addrs != a;
                        e.addrs = a;
                        changed
                    }
                    _ => {
                        e.ok = false;
                        false
                    }
                }
            };
            if changed {
                self.changes.host_changed(&h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(addr: &str, id: &str) -> Target {
        Target {
            addr: addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}")),
            test_id: id.into(),
            test_name: id.into(),
            team: String::new(),
        }
    }

    fn ids(v: Vec<&Target>) -> Vec<String> {
        let mut v: Vec<String> = v.into_iter().map(|t| t.test_id.clone()).collect();
        v.sort();
        v
    }

    fn p(s: &str) -> IpPrefix {
        IpPrefix::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_trie_finds_the_targets_inside_a_prefix() {
        let mut o = OrgTargets::default();
        o.insert(t("198.19.90.1", "a"));
        o.insert(t("198.19.90.2", "b"));
        o.insert(t("198.19.90.2", "c"));
        o.insert(t("198.19.91.1", "d"));
        o.insert(t("2001:db8::1", "e"));
        assert_eq!(o.len(), 5);
        assert_eq!(ids(o.within(&p("198.19.90.0/24"))), ["a", "b", "c"]);
        assert_eq!(ids(o.within(&p("198.19.90.1/32"))), ["a"]);
        assert_eq!(ids(o.within(&p("198.19.0.0/16"))), ["a", "b", "c", "d"]);
        assert_eq!(ids(o.within(&p("0.0.0.0/0"))), ["a", "b", "c", "d"]);
        assert!(o.within(&p("10.0.0.0/8")).is_empty());
        assert_eq!(ids(o.within(&p("2001:db8::/32"))), ["e"]);
        assert_eq!(ids(o.within(&p("::/0"))), ["e"]);
        assert_eq!(o.all().count(), 5);
    }

    #[tokio::test]
    async fn names_resolve_off_the_round_with_a_short_negative_cache() {
        let changes = Arc::new(TargetChanges::default());
        let r = Resolver::new(changes.clone(), Duration::from_secs(2));
        let mut w = Wanted::default();
        // An address is its own answer; a name is wanted once, then cached.
        assert_eq!(
            r.addrs("192.0.2.1", 0, &mut w),
            vec![
                "192.0.2.1"
                    .parse::<IpAddr>()
                    .unwrap_or_else(|_| unreachable!())
            ]
        );
        assert!(r.addrs("localhost", 0, &mut w).is_empty());
        assert!(r.addrs("localhost", 1, &mut w).is_empty());
        assert!(r.addrs("no-such-host.invalid", 0, &mut w).is_empty());
        assert_eq!(w.fresh, ["localhost", "no-such-host.invalid"]);
        r.resolve(std::mem::take(&mut w.fresh)).await;
        let got = r.addrs("localhost", 2, &mut w);
        assert!(
            got.contains(&IpAddr::from([127, 0, 0, 1])),
            "localhost resolved to {got:?}"
        );
        assert_eq!(changes.take().1, HashSet::from(["localhost".to_string()]));
        // A failure is retried after the negative TTL, an answer after the long one (the cache
        // keeps the real time of each answer).
        let t0 = crate::server::now_ms();
        let neg = NEGATIVE_TTL.as_millis() as i64;
        assert!(
            r.addrs("no-such-host.invalid", t0 + neg - 5_000, &mut w)
                .is_empty()
        );
        assert_eq!(w, Wanted::default());
        r.addrs("no-such-host.invalid", t0 + neg + 5_000, &mut w);
        r.addrs("localhost", t0 + neg + 5_000, &mut w);
        assert_eq!(w.stale, ["no-such-host.invalid"]);
        r.addrs(
            "localhost",
            t0 + RESOLVE_TTL.as_millis() as i64 + 5_000,
            &mut w,
        );
        assert_eq!(w.stale, ["no-such-host.invalid", "localhost"]);
        // Same answer again: no change reported.
        r.resolve(std::mem::take(&mut w.stale)).await;
        assert!(changes.take().1.is_empty());
        // A name no test uses is forgotten: wanted afresh if a test names it again.
        r.retain(&HashSet::new());
        r.addrs("localhost", t0, &mut w);
        assert_eq!(w.fresh, ["localhost"]);
    }
}
