//! `watch`: one standalone session printing route events (no collector).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::driver::{self, Connection};
use crate::event::{
    DownReason, Event, Peer, Route, RouteChange, RouteEvent, SessionEvent, Source, Statistic,
};
use crate::event_jsonl::JsonlWriter;
use crate::session::SessionConfig;
use crate::update::Rfc7606Action;
use crate::wire::Family;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Text,
    Summary,
}

/// Which rule ended the initial transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoneRule {
    /// End-of-RIB arrived for every negotiated family.
    EndOfRib,
    /// No End-of-RIB expected (graceful restart not negotiated) and no UPDATE for the quiet period
    /// (five quiet periods if no UPDATE came at all).
    QuietPeriod,
}

impl DoneRule {
    pub fn name(self) -> &'static str {
        match self {
            DoneRule::EndOfRib => "end-of-rib",
            DoneRule::QuietPeriod => "quiet-period",
        }
    }
}

/// Tracks the initial transfer of one session (sans-IO: the caller feeds events and asks about the
/// quiet period with the current time).
#[derive(Debug, Default)]
pub struct Transfer {
    established: Option<SystemTime>,
    expect_eor: bool,
    pending: Vec<Family>,
    last_update: Option<SystemTime>,
    last_eor: Option<SystemTime>,
    pub counts: BTreeMap<Family, usize>,
    pub updates: u64,
    done: Option<(DoneRule, f64)>,
}

impl Transfer {
    pub fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::Session(SessionEvent::Established { at, negotiated, .. }) => {
                // Routes kept stale over a graceful restart are still held, and the peer
                // re-announces the unchanged ones silently: their counts carry over (the session
                // down zeroed every other family's).
                let counts = negotiated
                    .families
                    .iter()
                    .map(|f| (*f, self.counts.get(f).copied().unwrap_or(0)))
                    .collect();
                *self = Transfer {
                    established: Some(*at),
                    expect_eor: negotiated.graceful_restart,
                    pending: negotiated.families.clone(),
                    counts,
                    ..Transfer::default()
                };
            }
            Event::Session(SessionEvent::Down { stale_families, .. }) => {
                for (f, c) in self.counts.iter_mut() {
                    if !stale_families.contains(f) {
                        *c = 0;
                    }
                }
                if self.done.is_none() {
                    let counts = std::mem::take(&mut self.counts);
                    *self = Transfer {
                        counts,
                        ..Transfer::default()
                    };
                }
            }
            Event::Session(SessionEvent::UpdateError { at, .. }) => self.last_update = Some(*at),
            Event::Session(SessionEvent::Statistics { .. }) => {}
            Event::Session(SessionEvent::StaleDropped { family, routes, .. }) => {
                let c = self.counts.entry(*family).or_default();
                *c = c.saturating_sub(*routes);
            }
            Event::Session(SessionEvent::PrefixLimit { .. }) => {}
            Event::Route(r) => {
                self.updates += 1;
                self.last_update = Some(r.received);
                let c = self.counts.entry(r.family).or_default();
                match r.change {
                    RouteChange::Announce { .. } => *c += 1,
                    RouteChange::Withdraw { .. } => *c = c.saturating_sub(1),
                    RouteChange::AttributeChange { .. } | RouteChange::Resync(_) => {}
                    RouteChange::EndOfRib => {
                        self.pending.retain(|f| *f != r.family);
                        self.last_eor = Some(r.received);
                        if self.pending.is_empty()
                            && self.done.is_none()
                            && let Some(est) = self.established
                        {
                            let secs = r.received.duration_since(est).unwrap_or_default();
                            self.done = Some((DoneRule::EndOfRib, secs.as_secs_f64()));
                        }
                    }
                }
            }
        }
    }

    /// Checks the quiet-period rule at `now`; it applies only when no End-of-RIB is expected.
    pub fn check_quiet(&mut self, now: SystemTime, quiet: Duration) {
        if self.done.is_some() || self.expect_eor {
            return;
        }
        let Some(est) = self.established else { return };
        // The quiet period runs from the last UPDATE. Before the first one it is five times as
        // long: some peers (BIRD 2 here) take seconds after Established to send anything, and
        // "nothing yet" must not count as an empty table.
        let (last, wait) = match self.last_update {
            Some(t) => (t, quiet),
            None => (est, quiet.saturating_mul(5)),
        };
        if now.duration_since(last).unwrap_or_default() >= wait {
            let secs = last.duration_since(est).unwrap_or_default();
            self.done = Some((DoneRule::QuietPeriod, secs.as_secs_f64()));
        }
    }

    pub fn done(&self) -> Option<(DoneRule, f64)> {
        self.done
    }

    pub fn established(&self) -> bool {
        self.established.is_some()
    }
}

#[derive(Debug)]
pub struct WatchOptions {
    pub session: SessionConfig,
    pub format: Format,
    pub exit_on_eor: bool,
    pub quiet_period: Duration,
    /// TCP MD5 key and TTL policy (`--md5-password-file`, `--ttl-security`, `--multihop`).
    pub transport: crate::transport::Transport,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Driver(#[from] driver::DriverError),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

/// RFC 3339 in UTC, as every event prints its times (`event_jsonl` writes the same); empty
/// outside the years 0 to 9999, which RFC 3339 cannot write.
pub(crate) fn ts(t: SystemTime) -> String {
    // Not `OffsetDateTime::from(t)`: it panics on times beyond the `time` crate's range.
    let epoch = time::OffsetDateTime::UNIX_EPOCH;
    let dt = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => time::Duration::try_from(d)
            .ok()
            .and_then(|d| epoch.checked_add(d)),
        Err(e) => time::Duration::try_from(e.duration())
            .ok()
            .and_then(|d| epoch.checked_sub(d)),
    };
    dt.and_then(|dt| {
        dt.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_default()
}

fn origin_name(o: Option<u8>) -> Value {
    match o {
        Some(0) => json!("igp"),
        Some(1) => json!("egp"),
        Some(2) => json!("incomplete"),
        _ => Value::Null,
    }
}

fn route_json(r: &Route) -> Value {
    let a = &r.attrs;
    json!({
        "next_hop": r.next_hop.map(|n| n.to_string()),
        "as_path": a.as_path.as_ref().map(|_| a.as_path_string()),
        "origin": origin_name(a.origin),
        "med": a.med,
        "local_pref": a.local_pref,
        "communities": a.communities.iter().map(|c| format!("{}:{}", c >> 16, c & 0xffff)).collect::<Vec<_>>(),
        "large_communities": a.large_communities.iter().map(|[x, y, z]| format!("{x}:{y}:{z}")).collect::<Vec<_>>(),
        "extended_communities": a.extended_communities.iter().map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<String>()).collect::<Vec<_>>(),
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

/// The fields every event has about its peer. `bmp_router` appears only for BMP sources.
pub fn peer_json(p: &Peer) -> Value {
    let mut v = json!({
        "peer": p.addr.to_string(),
        "peer_as": p.asn,
        "source": p.source.name(),
    });
    if let (
        Source::Bmp {
            router,
            distinguisher,
            ..
        },
        Value::Object(m),
    ) = (p.source, &mut v)
    {
        m.insert("bmp_router".into(), json!(router.to_string()));
        if distinguisher != 0 {
            m.insert("peer_distinguisher".into(), json!(distinguisher));
        }
    }
    v
}

fn route_event_json(e: &RouteEvent) -> Value {
    let mut base = merge(
        peer_json(&e.peer),
        json!({
            "afi_safi": e.family.name(),
            "path_id": e.path_id,
            "received": ts(e.received),
        }),
    );
    if let Some(t) = e.source_time {
        base = merge(base, json!({"source_time": ts(t)}));
    }
    match &e.change {
        RouteChange::Announce { prefix, route } => merge(
            merge(
                base,
                json!({"type": "announce", "prefix": prefix.to_string()}),
            ),
            route_json(route),
        ),
        RouteChange::Withdraw { prefix, .. } => merge(
            base,
            json!({"type": "withdraw", "prefix": prefix.to_string()}),
        ),
        RouteChange::AttributeChange {
            prefix,
            previous,
            route,
            changed,
        } => merge(
            merge(
                base,
                json!({
                    "type": "attribute_change",
                    "prefix": prefix.to_string(),
                    "changed": changed.iter().map(|c| c.name()).collect::<Vec<_>>(),
                    "previous": route_json(previous),
                }),
            ),
            route_json(route),
        ),
        RouteChange::EndOfRib => merge(base, json!({"type": "end_of_rib"})),
        // Only `run` takes snapshots; shown for completeness.
        RouteChange::Resync(m) => merge(base, json!({"type": "resync", "mark": format!("{m:?}")})),
    }
}

pub(crate) fn down_reason(r: &DownReason) -> String {
    match r {
        DownReason::Sent(n) => format!("sent NOTIFICATION {n}"),
        DownReason::Received(n) => format!("received NOTIFICATION {n}"),
        DownReason::ConnectionClosed => "connection closed".into(),
        DownReason::Reported(s) => s.clone(),
        DownReason::PeerRestarted => "peer reconnected (restarted)".into(),
    }
}

fn statistics_json(stats: &[Statistic]) -> Value {
    Value::Array(
        stats
            .iter()
            .map(|s| {
                json!({
                    "type": s.stat_type,
                    "name": crate::bmp::stat_name(s.stat_type),
                    "afi": s.afi_safi.map(|(a, _)| a),
                    "safi": s.afi_safi.map(|(_, b)| b),
                    "value": s.value,
                    "raw": (s.value.is_none()).then(|| s.raw.iter().map(|b| format!("{b:02x}")).collect::<String>()),
                })
            })
            .collect(),
    )
}

/// An event as a JSON object: the reference for the JSON lines every command prints. Those are
/// written by `event_jsonl::JsonlWriter`, which gives the same bytes as this serialised, far
/// faster; a change here must be made there too (`tests/event_jsonl.rs` compares them).
pub fn event_json(ev: &Event) -> Value {
    match ev {
        Event::Route(r) => route_event_json(r),
        Event::Session(SessionEvent::Established {
            peer,
            at,
            negotiated: n,
        }) => merge(
            peer_json(peer),
            json!({
            "type": "session_established",
            "at": ts(*at),
            "peer_router_id": n.peer_router_id.to_string(),
            "hold_time": n.hold_time,
            "families": n.families.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "four_octet_as": n.four_octet_as,
            "graceful_restart": n.graceful_restart,
            "add_path": n.add_path.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "extended_messages": n.extended_messages,
            }),
        ),
        Event::Session(SessionEvent::Down {
            peer,
            at,
            reason,
            routes_lost,
            routes_stale,
            stale_families,
        }) => merge(
            peer_json(peer),
            json!({
                "type": "session_down",
                "at": ts(*at),
                "reason": down_reason(reason),
                "routes_lost": routes_lost,
                "routes_stale": routes_stale,
                "stale_families": stale_families.iter().map(|f| f.name()).collect::<Vec<_>>(),
            }),
        ),
        Event::Session(SessionEvent::StaleDropped {
            peer,
            at,
            family,
            routes,
            reason,
        }) => merge(
            peer_json(peer),
            json!({
                "type": "stale_dropped",
                "at": ts(*at),
                "afi_safi": family.name(),
                "routes": routes,
                "reason": reason.name(),
            }),
        ),
        Event::Session(SessionEvent::PrefixLimit {
            peer,
            at,
            family,
            count,
            limit,
            teardown,
        }) => merge(
            peer_json(peer),
            json!({
                "type": "prefix_limit",
                "at": ts(*at),
                "afi_safi": family.name(),
                "count": count,
                "limit": limit,
                "teardown": teardown,
            }),
        ),
        Event::Session(SessionEvent::UpdateError { peer, at, action }) => {
            let (act, t, reason) = match action {
                Rfc7606Action::AttributeDiscard { type_code, reason } => {
                    ("attribute-discard", Some(*type_code), *reason)
                }
                Rfc7606Action::TreatAsWithdraw { type_code, reason } => {
                    ("treat-as-withdraw", *type_code, *reason)
                }
                Rfc7606Action::AfiSafiDisable {
                    type_code, reason, ..
                } => ("afi-safi-disable", Some(*type_code), *reason),
            };
            let mut j = json!({"type": "update_error", "at": ts(*at),
                   "action": act, "attribute": t, "reason": reason});
            if let (Rfc7606Action::AfiSafiDisable { family, .. }, Some(o)) =
                (action, j.as_object_mut())
            {
                o.insert("afi_safi".into(), family.name().into());
            }
            merge(peer_json(peer), j)
        }
        Event::Session(SessionEvent::Statistics {
            peer,
            at,
            source_time,
            stats,
        }) => merge(
            peer_json(peer),
            json!({"type": "statistics", "at": ts(*at),
                   "source_time": source_time.map(ts), "stats": statistics_json(stats)}),
        ),
    }
}

pub fn event_text(ev: &Event) -> String {
    match ev {
        Event::Route(r) => {
            let head = format!("{} {} {}", ts(r.received), r.peer, r.family);
            match &r.change {
                RouteChange::Announce { prefix, route } => format!(
                    "{head} + {prefix} via {} path [{}]",
                    route.next_hop.map(|n| n.to_string()).unwrap_or_default(),
                    route.attrs.as_path_string()
                ),
                RouteChange::Withdraw { prefix, .. } => format!("{head} - {prefix}"),
                RouteChange::AttributeChange {
                    prefix, changed, ..
                } => format!(
                    "{head} ~ {prefix} changed {}",
                    changed
                        .iter()
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                RouteChange::EndOfRib => format!("{head} End-of-RIB"),
                RouteChange::Resync(m) => format!("{head} resync {m:?}"),
            }
        }
        Event::Session(SessionEvent::Established {
            peer,
            at,
            negotiated,
        }) => format!(
            "{} {peer} session Established (AS{}, hold {} s, families {:?}, graceful restart {}, extended messages {})",
            ts(*at),
            negotiated.peer_as,
            negotiated.hold_time,
            negotiated
                .families
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>(),
            negotiated.graceful_restart,
            negotiated.extended_messages
        ),
        Event::Session(SessionEvent::Down {
            peer,
            at,
            reason,
            routes_lost,
            routes_stale,
            ..
        }) => format!(
            "{} {peer} session down: {} ({routes_lost} routes lost, {routes_stale} kept stale)",
            ts(*at),
            down_reason(reason)
        ),
        Event::Session(SessionEvent::StaleDropped {
            peer,
            at,
            family,
            routes,
            reason,
        }) => format!(
            "{} {peer} {family} {routes} stale routes dropped ({})",
            ts(*at),
            reason.name()
        ),
        Event::Session(SessionEvent::PrefixLimit {
            peer,
            at,
            family,
            count,
            limit,
            teardown,
        }) => format!(
            "{} {peer} {family} maximum prefixes exceeded: {count} > {limit}{}",
            ts(*at),
            if *teardown { "; tearing down" } else { "" }
        ),
        Event::Session(SessionEvent::UpdateError { peer, at, action }) => {
            format!("{} {peer} RFC 7606: {action:?}", ts(*at))
        }
        Event::Session(SessionEvent::Statistics {
            peer, at, stats, ..
        }) => {
            let parts: Vec<String> = stats
                .iter()
                .map(|s| {
                    let name = crate::bmp::stat_name(s.stat_type)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("type{}", s.stat_type));
                    let fam = s
                        .afi_safi
                        .map(|(a, b)| format!("[{a}/{b}]"))
                        .unwrap_or_default();
                    match s.value {
                        Some(v) => format!("{name}{fam}={v}"),
                        None => format!("{name}{fam}=({} bytes)", s.raw.len()),
                    }
                })
                .collect();
            format!("{} {peer} statistics {}", ts(*at), parts.join(" "))
        }
    }
}

fn final_line(format: Format, t: &Transfer, rule: DoneRule, secs: f64) -> String {
    let counts: BTreeMap<&str, usize> = t.counts.iter().map(|(f, n)| (f.name(), *n)).collect();
    match format {
        Format::Jsonl => json!({
            "type": "transfer_complete",
            "rule": rule.name(),
            "prefixes": counts,
            "seconds_established_to_last_eor": secs,
        })
        .to_string(),
        _ => {
            let what = match rule {
                DoneRule::EndOfRib => "last End-of-RIB",
                DoneRule::QuietPeriod => "last UPDATE (quiet period, no End-of-RIB)",
            };
            let c: Vec<String> = counts.iter().map(|(f, n)| format!("{f} {n}")).collect();
            format!(
                "transfer complete by {}: prefixes {}; {secs:.3} s from Established to {what}",
                rule.name(),
                c.join(", ")
            )
        }
    }
}

/// Runs `watch` until the transfer is complete (with `exit_on_eor`) or `shutdown` resolves.
/// The per-second line of `--format summary`: `PEER STATE v4 N v6 M updates/s U routes/s R`.
/// `updates/s` counts UPDATE messages; `routes/s` counts route events (announce, withdraw,
/// attribute change: one per prefix, so several per UPDATE when prefixes share attributes).
pub fn summary_line(
    peer: IpAddr,
    state: &str,
    transfer: &Transfer,
    updates_per_sec: f64,
    routes_per_sec: f64,
) -> String {
    let v4 = transfer
        .counts
        .get(&Family::Ipv4Unicast)
        .copied()
        .unwrap_or(0);
    let v6 = transfer
        .counts
        .get(&Family::Ipv6Unicast)
        .copied()
        .unwrap_or(0);
    format!(
        "{peer} {state} v4 {v4} v6 {v6} updates/s {updates_per_sec:.0} routes/s {routes_per_sec:.0}"
    )
}

pub async fn watch<W: Write>(
    opts: WatchOptions,
    conn: Connection,
    out: &mut W,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Option<DoneRule>, WatchError> {
    let peer: IpAddr = opts.session.peer;
    // Batches (see `driver::EventSink`): at most 4 × 256 events wait, as many as the 1024 single
    // events of the channel before.
    let (tx, mut rx) = mpsc::channel::<Vec<Event>>(4);
    let (stop_tx, stop_rx) = watch::channel(false);
    let updates = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut task = tokio::spawn(driver::run_counting(
        opts.session,
        conn,
        opts.transport,
        tx,
        stop_rx,
        updates.clone(),
    ));
    let mut transfer = Transfer::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut summary_at = SystemTime::now();
    let mut summary_events = 0u64;
    let mut summary_updates = 0u64;
    let mut state = "connecting";
    let mut result = None;
    let mut task_done = false;
    let mut batches: Vec<Vec<Event>> = Vec::with_capacity(4);
    let mut finished = false;
    // The lines of the batches at hand, written with one `write_all` (stdout is line-buffered:
    // a write per line was a system call per route). JSON lines are written directly
    // (`event_jsonl`), not through `event_json`.
    let mut lines: Vec<u8> = Vec::with_capacity(1 << 17);
    let mut jsonl = JsonlWriter::new();
    loop {
        tokio::select! {
            // Events come in batches: one select and one write per batch, not per route (a full
            // table is a million events).
            n = rx.recv_many(&mut batches, 4) => {
                if n == 0 {
                    break;
                }
                if opts.format == Format::Jsonl {
                    JsonlWriter::prefetch(batches.iter().flatten());
                }
                // By reference: moving each event out of its batch was a copy per route.
                for ev in batches.iter().flatten() {
                    if finished {
                        // The final line is due: later events go to the log only.
                        tracing::debug!(event = %event_json(ev), "after transfer");
                        continue;
                    }
                    transfer.on_event(ev);
                    match ev {
                        Event::Session(SessionEvent::Established { .. }) => state = "established",
                        Event::Session(SessionEvent::Down { .. }) => state = "down",
                        _ => {}
                    }
                    match opts.format {
                        Format::Jsonl => jsonl.line(&mut lines, ev),
                        Format::Text => writeln!(lines, "{}", event_text(ev))?,
                        Format::Summary => {
                            if let Event::Session(_) = ev {
                                writeln!(lines, "{}", event_text(ev))?;
                            }
                        }
                    }
                    finished = opts.exit_on_eor && transfer.done().is_some();
                }
                batches.clear();
                out.write_all(&lines)?;
                lines.clear();
            }
            _ = tick.tick() => {
                let now = SystemTime::now();
                if transfer.established() {
                    transfer.check_quiet(now, opts.quiet_period);
                }
                if opts.format == Format::Summary
                    && now.duration_since(summary_at).unwrap_or_default() >= Duration::from_secs(1)
                {
                    let secs = now.duration_since(summary_at).unwrap_or_default().as_secs_f64().max(0.001);
                    let n = updates.load(std::sync::atomic::Ordering::Relaxed);
                    let line = summary_line(
                        peer,
                        state,
                        &transfer,
                        n.saturating_sub(summary_updates) as f64 / secs,
                        transfer.updates.saturating_sub(summary_events) as f64 / secs,
                    );
                    writeln!(out, "{line}")?;
                    summary_at = now;
                    summary_updates = n;
                    summary_events = transfer.updates;
                }
            }
            _ = &mut shutdown => break,
            r = &mut task => {
                task_done = true;
                tracing::info!(?r, "session driver ended");
                break;
            }
        }
        out.flush()?;
        if opts.exit_on_eor
            && let Some((rule, secs)) = transfer.done()
        {
            writeln!(out, "{}", final_line(opts.format, &transfer, rule, secs))?;
            out.flush()?;
            result = Some(rule);
            break;
        }
    }
    // Cease the session politely, then give the driver a moment to write the NOTIFICATION.
    let _ = stop_tx.send(true);
    let final_printed = result.is_some();
    let drain = async {
        while let Some(batch) = rx.recv().await {
            for ev in batch {
                if final_printed {
                    // The final line is already out: later events (the session going down on our
                    // Cease) go to the log only.
                    tracing::debug!(event = %event_json(&ev), "after transfer");
                } else {
                    match opts.format {
                        Format::Jsonl => jsonl.line(&mut lines, &ev),
                        _ => writeln!(lines, "{}", event_text(&ev))?,
                    }
                }
            }
            out.write_all(&lines)?;
            lines.clear();
        }
        out.flush()
    };
    let wait = async {
        let r = drain.await;
        if !task_done {
            let _ = task.await;
        }
        r
    };
    if let Ok(r) = tokio::time::timeout(Duration::from_secs(2), wait).await {
        r?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Negotiated, RouteEvent};
    use crate::wire::Prefix;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + ms)
    }

    fn up(gr: bool) -> Event {
        Event::Session(SessionEvent::Established {
            peer: Peer::session("198.18.0.1".parse().expect("ip"), 65001),
            at: at(0),
            negotiated: Negotiated {
                peer_as: 65001,
                peer_router_id: "198.18.0.1".parse().expect("ip"),
                hold_time: 90,
                keepalive: 30,
                four_octet_as: true,
                families: Family::ALL.to_vec(),
                graceful_restart: gr,
                add_path: Vec::new(),
                extended_messages: false,
            },
        })
    }

    fn route(ms: u64, family: Family, change: RouteChange) -> Event {
        Event::Route(RouteEvent {
            peer: Peer::session("198.18.0.1".parse().expect("ip"), 65001),
            family,
            path_id: None,
            received: at(ms),
            source_time: None,
            change,
        })
    }

    fn announce(ms: u64) -> Event {
        route(
            ms,
            Family::Ipv4Unicast,
            RouteChange::Announce {
                prefix: Prefix {
                    addr: "198.19.1.0".parse().expect("ip"),
                    len: 24,
                },
                route: Route {
                    next_hop: None,
                    attrs: Default::default(),
                },
            },
        )
    }

    #[test]
    fn end_of_rib_rule_needs_every_negotiated_family() {
        let mut t = Transfer::default();
        t.on_event(&up(true));
        t.on_event(&announce(100));
        t.on_event(&route(200, Family::Ipv4Unicast, RouteChange::EndOfRib));
        t.check_quiet(at(60_000), Duration::from_secs(2));
        assert_eq!(
            t.done(),
            None,
            "GR negotiated: no quiet rule, v6 EoR pending"
        );
        t.on_event(&route(1500, Family::Ipv6Unicast, RouteChange::EndOfRib));
        assert_eq!(t.done(), Some((DoneRule::EndOfRib, 1.5)));
        assert_eq!(t.counts.get(&Family::Ipv4Unicast), Some(&1));
    }

    fn down(stale: &[Family]) -> Event {
        Event::Session(SessionEvent::Down {
            peer: Peer::session("198.18.0.1".parse().expect("ip"), 65001),
            at: at(9_000),
            reason: DownReason::ConnectionClosed,
            routes_lost: 0,
            routes_stale: 1,
            stale_families: stale.to_vec(),
        })
    }

    /// Counts follow what the session holds across a graceful restart: the stale family keeps
    /// its count (its unchanged routes come back silently), the other one is zero; a plain
    /// session loss zeroes everything, even after the transfer was done.
    #[test]
    fn counts_survive_a_graceful_restart_only_for_the_stale_families() {
        let mut t = Transfer::default();
        t.on_event(&up(true));
        t.on_event(&announce(100));
        t.on_event(&announce(110));
        t.on_event(&route(
            120,
            Family::Ipv6Unicast,
            RouteChange::Announce {
                prefix: Prefix {
                    addr: "2001:db8::".parse().expect("ip"),
                    len: 32,
                },
                route: Route {
                    next_hop: None,
                    attrs: Default::default(),
                },
            },
        ));
        for f in Family::ALL {
            t.on_event(&route(200, f, RouteChange::EndOfRib));
        }
        assert!(t.done().is_some());
        t.on_event(&down(&[Family::Ipv4Unicast]));
        assert_eq!(t.counts.get(&Family::Ipv4Unicast), Some(&2));
        assert_eq!(t.counts.get(&Family::Ipv6Unicast), Some(&0));
        t.on_event(&up(true));
        assert_eq!(t.counts.get(&Family::Ipv4Unicast), Some(&2), "kept stale");
        assert_eq!(t.counts.get(&Family::Ipv6Unicast), Some(&0));
        t.on_event(&down(&[]));
        assert_eq!(t.counts.get(&Family::Ipv4Unicast), Some(&0), "no GR: gone");
        t.on_event(&up(false));
        assert_eq!(t.counts.get(&Family::Ipv4Unicast), Some(&0));
    }

    #[test]
    fn quiet_rule_counts_from_the_last_update_and_waits_longer_before_the_first() {
        let q = Duration::from_secs(2);
        let mut t = Transfer::default();
        t.on_event(&up(false));
        t.check_quiet(at(3_000), q);
        assert_eq!(t.done(), None, "no UPDATE yet: wait five quiet periods");
        t.on_event(&announce(3_500));
        t.check_quiet(at(5_000), q);
        assert_eq!(t.done(), None);
        t.check_quiet(at(5_500), q);
        assert_eq!(t.done(), Some((DoneRule::QuietPeriod, 3.5)));
        let mut t = Transfer::default();
        t.on_event(&up(false));
        t.check_quiet(at(10_000), q);
        assert_eq!(
            t.done(),
            Some((DoneRule::QuietPeriod, 0.0)),
            "an empty table ends too"
        );
    }
}
