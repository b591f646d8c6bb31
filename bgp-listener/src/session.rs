//! Sans-IO BGP session state machine (RFC 4271 §8, receive-only), with the graceful-restart helper
//! (RFC 4724 §4.2), connection collision handling (RFC 4271 §6.8) and a maximum-prefix check
//! (RFC 4486 subcode 1).
//!
//! `Session::handle(now, input)` takes bytes received, timer expiries, and TCP connect/close, and
//! returns what to do: messages to send (only `Outgoing`: OPEN, KEEPALIVE, NOTIFICATION), events,
//! timers to (re)arm, and whether to close. No socket, clock or task lives here; the current time
//! is an argument so that tests control it.
//!
//! The TCP-level states (Connect, Active) belong to the driver; this machine starts when a
//! connection exists. Passive and active sessions behave the same from there: both send OPEN on
//! `Connected`.
//!
//! Connections: the *primary* connection carries the session (`Connected`, `Received`, `Closed`,
//! `Send`, `Close`). A second connection from the same peer while the primary exists is the
//! *contender* (`Contender*` inputs and outputs). It gets our OPEN; its OPEN decides the
//! collision: the loser gets a Cease (connection collision resolution, 6/7) and is closed; if the
//! contender wins, `PromoteContender` tells the driver it is now the primary.
//!
//! Graceful restart helper: when graceful restart was negotiated and an Established session is
//! lost without a NOTIFICATION (TCP closed, hold timer expired, or the peer reconnected), the
//! peer's routes in the families its capability lists are kept and marked stale, one `Down`
//! event says how many, and `Timer::Restart` runs for the peer's restart time. See the crate
//! README for each branch.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use crate::event::{DownReason, Event, Negotiated, Peer, SessionEvent, StaleDropReason};
use crate::iana::{self, notif};
use crate::rib::AdjRibIn;
use crate::update::{DecodeContext, ParsedUpdate, SessionKind, parse_update_interned_into};
use crate::wire::{
    DecodeError, Family, Framer, GracefulRestartCap, LocalCapabilities, Notification, OpenMessage,
    Outgoing, PeerOpen, decode_notification, decode_open,
};

/// Hold timer while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// Default graceful-restart time in the helper-form capability.
pub const GR_RESTART_TIME: u16 = 120;
/// How long stale routes wait for End-of-RIB once the peer is back (RFC 4724 §4.2 leaves the
/// value to the implementation; 360 s is what FRR and Junos use).
pub const STALE_ROUTES_TIME: Duration = Duration::from_secs(360);

/// A maximum number of prefixes per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPrefixes {
    /// Applies to each negotiated family on its own (stale routes count: they are held).
    pub limit: u32,
    /// Tear the session down (Cease, subcode 1, RFC 4486) when crossed; otherwise only warn.
    pub teardown: bool,
    /// After such a teardown, refuse the peer's connections (Cease, subcode 5) and dial nothing
    /// for this long: a peer that comes straight back with the same table would be torn down
    /// again and again, each time resending it all. Zero lets it back at once.
    pub idle_hold: Duration,
}

/// Default [`MaxPrefixes::idle_hold`]: five minutes, long enough that a peer sending a table
/// it should not does not churn the listener, short enough that a fixed peer is back soon.
pub const MAX_PREFIXES_IDLE_HOLD: Duration = Duration::from_secs(300);

impl MaxPrefixes {
    /// Below this count a warned family is re-armed: 90 % of the limit.
    pub fn rearm_level(&self) -> usize {
        usize::try_from(u64::from(self.limit) * 9 / 10).unwrap_or(usize::MAX)
    }
}

/// The families a peer's `ipv4`/`ipv6` switches (config and `watch` flags) leave on.
pub fn families(ipv4: bool, ipv6: bool) -> Vec<Family> {
    Family::ALL
        .iter()
        .copied()
        .filter(|f| match f {
            Family::Ipv4Unicast => ipv4,
            Family::Ipv6Unicast => ipv6,
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct SessionConfig {
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    pub peer: IpAddr,
    /// Proposed hold time in seconds: 0 or at least 3.
    pub hold_time: u16,
    /// The families we advertise (Multiprotocol capability, RFC 4760). A family left out is not
    /// negotiated: the peer's routes in it are ignored (legacy IPv4 NLRI and MP attributes alike,
    /// without a NOTIFICATION; see `update::parse_mp`).
    pub families: Vec<Family>,
    /// Advertise 4-octet AS numbers (RFC 6793). Off, the peer treats us as an OLD speaker: it
    /// sends 2-octet AS_PATHs with AS_TRANS and an AS4_PATH, which the decoder merges back (RFC
    /// 6793 §4.2.3). Needs a local AS that fits in 2 octets ([`SessionConfig::check`]).
    pub four_octet_as: bool,
    /// Advertise graceful restart in helper form, so that the peer sends End-of-RIB, and keep the
    /// peer's routes as stale over its restarts.
    pub graceful_restart: bool,
    /// Advertise ADD-PATH receive (RFC 7911) for every configured family.
    pub add_path: bool,
    /// How long stale routes wait for End-of-RIB after the peer is back.
    pub stale_routes_time: Duration,
    pub max_prefixes: Option<MaxPrefixes>,
    /// Advertise Extended Messages (RFC 8654): UPDATEs up to 65535 octets once the peer
    /// advertises it too.
    pub extended_message: bool,
}

impl SessionConfig {
    pub fn new(local_as: u32, remote_as: u32, router_id: Ipv4Addr, peer: IpAddr) -> Self {
        SessionConfig {
            local_as,
            remote_as,
            router_id,
            peer,
            hold_time: 90,
            families: Family::ALL.to_vec(),
            four_octet_as: true,
            graceful_restart: true,
            add_path: true,
            stale_routes_time: STALE_ROUTES_TIME,
            max_prefixes: None,
            extended_message: true,
        }
    }

    /// Settings no session can run with: no family at all, or a 4-octet local AS without the
    /// 4-octet AS capability (an OLD speaker's OPEN would carry AS_TRANS, 23456, and nothing else
    /// would tell the peer our real AS, so its `remote-as` check must fail).
    pub fn check(&self) -> Result<(), String> {
        if self.families.is_empty() {
            return Err("at least one address family (IPv4 or IPv6) must stay enabled".into());
        }
        if !self.four_octet_as && self.local_as > u32::from(u16::MAX) {
            return Err(format!(
                "local AS {} needs the 4-octet AS capability (RFC 6793); it cannot be switched off",
                self.local_as
            ));
        }
        Ok(())
    }

    /// The peer as events name it.
    pub fn peer_id(&self) -> Peer {
        Peer::session(self.peer, self.remote_as)
    }

    pub fn open_message(&self) -> OpenMessage {
        OpenMessage {
            local_as: self.local_as,
            hold_time: self.hold_time,
            router_id: self.router_id,
            capabilities: LocalCapabilities {
                families: self.families.clone(),
                graceful_restart_time: self.graceful_restart.then_some(GR_RESTART_TIME),
                add_path_receive: if self.add_path {
                    self.families.clone()
                } else {
                    Vec::new()
                },
                extended_message: self.extended_message,
                four_octet_as: self.four_octet_as,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    Hold,
    Keepalive,
    /// Graceful restart: while the peer is away, its restart time (expiry drops the stale
    /// routes); once it is back, `stale_routes_time` (expiry withdraws what is still stale).
    Restart,
    /// Hold timer of the contender connection while it waits for the peer's OPEN.
    ContenderHold,
    /// The idle hold after a max-prefix teardown ([`MaxPrefixes::idle_hold`]) ends.
    IdleHold,
}

/// Who opened a connection. Decides RFC 4271 §6.8 collisions between a dialled and an accepted
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The peer connected to us.
    Accepted,
    /// We dialled the peer.
    Dialled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// TCP is up (accepted from the peer, or dialled; taken as accepted for collisions).
    Connected,
    /// TCP is up, and we dialled it.
    Dialled,
    /// Bytes read from the connection.
    Received(Vec<u8>),
    TimerFired(Timer),
    /// TCP closed or failed.
    Closed,
    /// Operator asks to end the session (Cease, administrative shutdown).
    Stop,
    /// A second connection with the peer while the primary exists.
    ContenderConnected(Direction),
    /// Bytes read from the contender.
    ContenderReceived(Vec<u8>),
    /// The contender closed or failed.
    ContenderClosed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send(Outgoing),
    Event(Event),
    /// Arm (`Some`) or cancel (`None`) a timer; re-arming replaces the previous deadline.
    SetTimer(Timer, Option<Duration>),
    /// Close the TCP connection (after writing what was sent before).
    Close,
    /// Write to the contender connection.
    SendContender(Outgoing),
    /// Close the contender connection (after writing what was sent to it).
    CloseContender,
    /// The contender becomes the primary connection (the old primary was closed just before);
    /// later `Send`/`Close` are for it.
    PromoteContender,
}

#[derive(Debug)]
struct Contender {
    framer: Framer,
    direction: Direction,
}

#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    /// UPDATE messages received in Established, over the session's life (`watch --format
    /// summary` prints their rate).
    updates_received: u64,
    state: State,
    framer: Framer,
    rib: AdjRibIn,
    negotiated: Option<Negotiated>,
    /// What `negotiated` means for decoding, built once per session instead of per UPDATE.
    decode_ctx: Option<DecodeContext>,
    /// Reused body buffer for framed messages.
    frame_buf: Vec<u8>,
    /// Reused decoded UPDATE (see `update::parse_update_interned_into`).
    update_buf: ParsedUpdate,
    /// A KEEPALIVE or UPDATE arrived in Established during this `process_frames`: the hold
    /// timer is restarted once at its end, not once per message (a table transfer is a few
    /// thousand UPDATEs per read, and each restart was an `Output` for the driver to handle;
    /// every message of a read arrives at the same `now`, so the deadline is the same).
    hold_due: bool,
    hold: Duration,
    direction: Direction,
    contender: Option<Contender>,
    /// The peer's graceful-restart capability in the current session (only when we advertise
    /// graceful restart too).
    peer_gr: Option<GracefulRestartCap>,
    /// Families whose stale routes are kept, waiting for the peer (then its End-of-RIB).
    retained: Vec<Family>,
    /// Families whose prefix-limit warning was raised and not yet re-armed.
    limit_warned: Vec<Family>,
    /// In the idle hold after a max-prefix teardown: connections are refused.
    idle_held: bool,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Self {
        Session {
            cfg,
            updates_received: 0,
            state: State::Idle,
            framer: Framer::new(),
            rib: AdjRibIn::new(),
            negotiated: None,
            decode_ctx: None,
            frame_buf: Vec::new(),
            update_buf: ParsedUpdate::default(),
            hold_due: false,
            hold: Duration::ZERO,
            direction: Direction::Accepted,
            contender: None,
            peer_gr: None,
            retained: Vec::new(),
            limit_warned: Vec::new(),
            idle_held: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn rib(&self) -> &AdjRibIn {
        &self.rib
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// UPDATE messages received while Established, counted over every connection.
    pub fn updates_received(&self) -> u64 {
        self.updates_received
    }

    /// Sets the BGP identifier before an OPEN goes out: a config with the unspecified identifier
    /// (0.0.0.0, `watch` without `--router-id`) takes the connection's local IPv4 address, which
    /// the driver knows on connect, before the session sends its OPEN.
    pub fn set_router_id(&mut self, id: Ipv4Addr) {
        self.cfg.router_id = id;
    }

    /// Families whose stale routes are kept over a graceful restart.
    pub fn retained(&self) -> &[Family] {
        &self.retained
    }

    /// Whether the session refuses its peer for now (the idle hold after a max-prefix
    /// teardown): the driver does not dial meanwhile.
    pub fn idle_held(&self) -> bool {
        self.idle_held
    }

    /// Whether a contender connection is waiting for its OPEN.
    pub fn has_contender(&self) -> bool {
        self.contender.is_some()
    }

    pub fn handle(&mut self, now: SystemTime, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        self.handle_into(now, input, &mut out);
        out
    }

    /// Like [`Session::handle`], but appends the outputs to `out`: the driver keeps one vector
    /// for every input instead of growing a new one per TCP read (a 64 KB read of a table
    /// transfer gives a few thousand route events, and growing a vector of them by doubling
    /// showed up as `memmove` and `malloc` in the decode profile).
    pub fn handle_into(&mut self, now: SystemTime, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Connected | Input::Dialled => {
                let direction = if input == Input::Dialled {
                    Direction::Dialled
                } else {
                    Direction::Accepted
                };
                if self.state != State::Idle {
                    // Drivers report a second connection as a contender; a bare second
                    // `Connected` keeps the current one.
                    tracing::warn!("connection while a session exists; ignored");
                    return;
                }
                if self.idle_held {
                    tracing::info!(peer = %self.cfg.peer, "connection refused: idle hold after a max-prefix teardown");
                    out.push(Output::Send(Outgoing::Notification(Notification::new(
                        notif::CEASE,
                        notif::CEASE_CONNECTION_REJECTED,
                    ))));
                    out.push(Output::Close);
                    return;
                }
                self.start(direction, out);
            }
            Input::Received(bytes) => {
                if self.state == State::Idle {
                    return;
                }
                self.framer.push(&bytes);
                self.process_frames(now, out);
            }
            Input::TimerFired(Timer::Hold) => {
                if self.state != State::Idle {
                    self.fail(now, Notification::hold_timer_expired(), out);
                }
            }
            Input::TimerFired(Timer::Keepalive) => {
                if matches!(self.state, State::OpenConfirm | State::Established) {
                    out.push(Output::Send(Outgoing::Keepalive));
                    if let Some(k) = self.keepalive_interval() {
                        out.push(Output::SetTimer(Timer::Keepalive, Some(k)));
                    }
                }
            }
            Input::TimerFired(Timer::Restart) => self.restart_timer_fired(now, out),
            Input::TimerFired(Timer::IdleHold) => {
                if self.idle_held {
                    tracing::info!(peer = %self.cfg.peer, "idle hold over: the peer may connect again");
                }
                self.idle_held = false;
            }
            Input::TimerFired(Timer::ContenderHold) => {
                if self.contender.take().is_some() {
                    out.push(Output::SendContender(Outgoing::Notification(
                        Notification::hold_timer_expired(),
                    )));
                    out.push(Output::CloseContender);
                }
            }
            Input::Closed => {
                if self.state != State::Idle {
                    self.down(now, DownReason::ConnectionClosed, out);
                }
            }
            Input::Stop => {
                if let Some(_c) = self.contender.take() {
                    out.push(Output::SendContender(Outgoing::Notification(
                        Notification::admin_shutdown(),
                    )));
                    out.push(Output::CloseContender);
                    out.push(Output::SetTimer(Timer::ContenderHold, None));
                }
                if self.state != State::Idle {
                    self.fail(now, Notification::admin_shutdown(), out);
                }
            }
            Input::ContenderConnected(direction) => {
                if self.state == State::Idle && self.idle_held {
                    out.push(Output::SendContender(Outgoing::Notification(
                        Notification::new(notif::CEASE, notif::CEASE_CONNECTION_REJECTED),
                    )));
                    out.push(Output::CloseContender);
                    return;
                }
                if self.state == State::Idle {
                    // Nothing to contend with: this is simply the connection.
                    out.push(Output::PromoteContender);
                    self.start(direction, out);
                    return;
                }
                if self.contender.is_some() {
                    // The newest of several contenders is kept; the driver closed the older.
                    tracing::info!(peer = %self.cfg.peer, "contender replaced by a newer connection");
                }
                self.contender = Some(Contender {
                    framer: Framer::new(),
                    direction,
                });
                out.push(Output::SendContender(Outgoing::Open(
                    self.cfg.open_message(),
                )));
                out.push(Output::SetTimer(Timer::ContenderHold, Some(OPEN_HOLD_TIME)));
            }
            Input::ContenderReceived(bytes) => self.contender_received(now, &bytes, out),
            Input::ContenderClosed => {
                if self.contender.take().is_some() {
                    out.push(Output::SetTimer(Timer::ContenderHold, None));
                }
            }
        }
    }

    fn start(&mut self, direction: Direction, out: &mut Vec<Output>) {
        self.framer = Framer::new();
        self.direction = direction;
        self.state = State::OpenSent;
        out.push(Output::Send(Outgoing::Open(self.cfg.open_message())));
        out.push(Output::SetTimer(Timer::Hold, Some(OPEN_HOLD_TIME)));
    }

    fn process_frames(&mut self, now: SystemTime, out: &mut Vec<Output>) {
        // One body buffer for every message instead of a vector each (taken out of `self` while
        // `on_message` borrows `self`).
        let mut body = std::mem::take(&mut self.frame_buf);
        loop {
            match self.framer.next_frame_into(&mut body) {
                Ok(Some(kind)) => {
                    if let Err(e) = self.on_message(now, kind, &body, out) {
                        self.fail(now, Notification::from(&e), out);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = %self.cfg.peer, error = %e, "framing error");
                    self.fail(now, Notification::from(&e), out);
                }
            }
            if self.state == State::Idle {
                break;
            }
        }
        if std::mem::take(&mut self.hold_due) && self.state == State::Established {
            self.restart_hold(out);
        }
        self.frame_buf = body;
    }

    fn keepalive_interval(&self) -> Option<Duration> {
        let k = self.negotiated.as_ref()?.keepalive;
        (k > 0).then(|| Duration::from_secs(u64::from(k)))
    }

    fn restart_hold(&self, out: &mut Vec<Output>) {
        if !self.hold.is_zero() {
            out.push(Output::SetTimer(Timer::Hold, Some(self.hold)));
        }
    }

    /// The semantic OPEN checks of RFC 4271 §6.2 (the structure is `decode_open`'s).
    fn check_open(&self, body: &[u8]) -> Result<PeerOpen, DecodeError> {
        let open = decode_open(body)?;
        let peer_as = open.asn();
        if peer_as != self.cfg.remote_as {
            return Err(DecodeError::BadPeerAs {
                got: peer_as,
                expected: self.cfg.remote_as,
            });
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(DecodeError::UnacceptableHoldTime(open.hold_time));
        }
        let id = open.router_id;
        if id.is_unspecified()
            || (self.cfg.local_as == self.cfg.remote_as && id == self.cfg.router_id)
        {
            return Err(DecodeError::BadBgpIdentifier(id));
        }
        Ok(open)
    }

    fn on_message(
        &mut self,
        now: SystemTime,
        kind: u8,
        body: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), DecodeError> {
        use iana::msg;
        if kind == msg::NOTIFICATION {
            let n = decode_notification(body).unwrap_or_else(|_| Notification::new(0, 0));
            tracing::info!(peer = %self.cfg.peer, notification = %n, "peer sent NOTIFICATION");
            out.push(Output::Close);
            self.down(now, DownReason::Received(n), out);
            return Ok(());
        }
        if kind == msg::ROUTE_REFRESH {
            // Route refresh was not advertised: ignore (RFC 2918 §4).
            return Ok(());
        }
        match (self.state, kind) {
            (State::OpenSent, msg::OPEN) => {
                let open = self.check_open(body)?;
                self.accept_open(open, out);
            }
            (State::OpenConfirm, msg::KEEPALIVE) => {
                self.state = State::Established;
                self.restart_hold(out);
                if let Some(neg) = &self.negotiated {
                    out.push(Output::Event(Event::Session(SessionEvent::Established {
                        peer: self.cfg.peer_id(),
                        at: now,
                        negotiated: neg.clone(),
                    })));
                }
                self.peer_is_back(now, out);
            }
            (State::Established, msg::KEEPALIVE) => self.hold_due = true,
            (State::Established, msg::UPDATE) => {
                self.hold_due = true;
                self.updates_received += 1;
                let kind = if self.cfg.local_as == self.cfg.remote_as {
                    SessionKind::Internal
                } else {
                    SessionKind::External
                };
                let Some(ctx) = &self.decode_ctx else {
                    return Err(DecodeError::MalformedAttributeList("no session"));
                };
                let rib = &mut self.rib;
                // Taken out of `self` while `self` is borrowed below; put back at the end (after
                // an error it is simply dropped, with its capacity).
                let mut upd = std::mem::take(&mut self.update_buf);
                parse_update_interned_into(
                    body,
                    ctx,
                    kind,
                    &mut |raw| rib.find_raw_set(raw, kind),
                    &mut upd,
                )?;
                for action in &upd.actions {
                    tracing::warn!(peer = %self.cfg.peer, ?action, "RFC 7606 error handling");
                    out.push(Output::Event(Event::Session(SessionEvent::UpdateError {
                        peer: self.cfg.peer_id(),
                        at: now,
                        action: action.clone(),
                    })));
                    if let crate::update::Rfc7606Action::AfiSafiDisable { family, .. } = action {
                        self.disable_family(now, *family, out);
                    }
                }
                let eor = upd.end_of_rib;
                let grew = !upd.announced.is_empty();
                let peer = self.cfg.peer_id();
                self.rib.apply_parsed(peer, now, None, &mut upd, &mut |ev| {
                    out.push(Output::Event(Event::Route(ev)));
                });
                self.update_buf = upd;
                if let Some(f) = eor
                    && self.retained.contains(&f)
                {
                    // RFC 4724 §4.2: End-of-RIB ends the restart for the family. Whatever is
                    // still stale was not re-announced: it is gone, and each one is withdrawn
                    // (before the End-of-RIB event, so the consumer's view is final at that
                    // event).
                    let eor_event = match out.last() {
                        Some(Output::Event(Event::Route(r)))
                            if matches!(r.change, crate::event::RouteChange::EndOfRib) =>
                        {
                            out.pop()
                        }
                        _ => None,
                    };
                    self.sweep_withdraw(now, f, out);
                    out.extend(eor_event);
                    if self.retained.is_empty() {
                        out.push(Output::SetTimer(Timer::Restart, None));
                    }
                }
                self.check_limits(now, grew, out);
            }
            (state, _) => {
                let sub = match state {
                    State::OpenSent => notif::FSM_UNEXPECTED_IN_OPENSENT,
                    State::OpenConfirm => notif::FSM_UNEXPECTED_IN_OPENCONFIRM,
                    State::Established => notif::FSM_UNEXPECTED_IN_ESTABLISHED,
                    State::Idle => notif::FSM_UNSPECIFIC,
                };
                self.fail(now, Notification::new(notif::FSM_ERROR, sub), out);
            }
        }
        Ok(())
    }

    /// OpenSent → OpenConfirm with the peer's (already checked) OPEN.
    fn accept_open(&mut self, open: PeerOpen, out: &mut Vec<Output>) {
        let families: Vec<Family> = match &open.families {
            Some(f) => self
                .cfg
                .families
                .iter()
                .copied()
                .filter(|x| f.contains(x))
                .collect(),
            None => self
                .cfg
                .families
                .iter()
                .copied()
                .filter(|x| *x == Family::Ipv4Unicast)
                .collect(),
        };
        let hold = open.hold_time.min(self.cfg.hold_time);
        let graceful_restart = self.cfg.graceful_restart && open.graceful_restart;
        let extended = self.cfg.extended_message && open.extended_message;
        let neg = Negotiated {
            peer_as: open.asn(),
            peer_router_id: open.router_id,
            hold_time: hold,
            keepalive: hold / 3,
            four_octet_as: self.cfg.four_octet_as && open.four_octet_as.is_some(),
            add_path: if self.cfg.add_path {
                families
                    .iter()
                    .copied()
                    .filter(|f| open.add_path_send.contains(f))
                    .collect()
            } else {
                Vec::new()
            },
            families,
            graceful_restart,
            extended_messages: extended,
        };
        self.framer.set_extended(extended);
        tracing::debug!(peer = %self.cfg.peer, ?neg, extended_message = extended, "OPEN accepted");
        self.peer_gr = if graceful_restart {
            open.graceful_restart_cap
        } else {
            None
        };
        self.hold = Duration::from_secs(u64::from(hold));
        self.decode_ctx = Some(DecodeContext {
            four_octet_as: neg.four_octet_as,
            families: neg.families.clone(),
            add_path: neg.add_path.clone(),
        });
        self.negotiated = Some(neg);
        self.state = State::OpenConfirm;
        out.push(Output::Send(Outgoing::Keepalive));
        if self.hold.is_zero() {
            out.push(Output::SetTimer(Timer::Hold, None));
        } else {
            self.restart_hold(out);
        }
        if let Some(k) = self.keepalive_interval() {
            out.push(Output::SetTimer(Timer::Keepalive, Some(k)));
        }
    }

    /// The session is Established again while stale routes are kept (RFC 4724 §4.2): families
    /// the new session does not preserve (no graceful restart, family not listed, or F bit clear)
    /// are dropped at once; the others wait for End-of-RIB, at most `stale_routes_time`.
    fn peer_is_back(&mut self, now: SystemTime, out: &mut Vec<Output>) {
        if self.retained.is_empty() {
            return;
        }
        let families = self
            .negotiated
            .as_ref()
            .map(|n| n.families.clone())
            .unwrap_or_default();
        let preserved = |f: Family| {
            families.contains(&f)
                && self
                    .peer_gr
                    .as_ref()
                    .is_some_and(|g| g.families.iter().any(|(x, fwd)| *x == f && *fwd))
        };
        let (keep, drop): (Vec<Family>, Vec<Family>) =
            self.retained.iter().copied().partition(|f| preserved(*f));
        for f in drop {
            self.drop_stale(now, f, StaleDropReason::NotPreserved, out);
        }
        self.retained = keep;
        out.push(Output::SetTimer(
            Timer::Restart,
            (!self.retained.is_empty()).then_some(self.cfg.stale_routes_time),
        ));
    }

    fn restart_timer_fired(&mut self, now: SystemTime, out: &mut Vec<Output>) {
        let families = std::mem::take(&mut self.retained);
        if self.state == State::Established {
            // Back, but no End-of-RIB within stale_routes_time: what is still stale is gone.
            for f in families {
                self.sweep_withdraw(now, f, out);
            }
        } else {
            // Not back within its restart time: nothing was re-announced, drop all at once.
            for f in families {
                self.drop_stale(now, f, StaleDropReason::RestartTimerExpired, out);
            }
        }
        self.check_limits(now, false, out);
    }

    /// RFC 4760 §7 AFI/SAFI disable (chosen by RFC 7606 §3 j over a session reset where the family
    /// is known): the family's routes go at once (one event, as for stale routes) and its later
    /// NLRI are ignored until this session ends; the next session negotiates it afresh.
    fn disable_family(&mut self, now: SystemTime, family: Family, out: &mut Vec<Output>) {
        if let Some(ctx) = &mut self.decode_ctx {
            ctx.families.retain(|f| *f != family);
        }
        self.retained.retain(|x| *x != family);
        self.limit_warned.retain(|x| *x != family);
        let routes = self.rib.clear_family(family);
        tracing::warn!(peer = %self.cfg.peer, %family, routes, "AFI/SAFI disabled for this session");
        out.push(Output::Event(Event::Session(SessionEvent::StaleDropped {
            peer: self.cfg.peer_id(),
            at: now,
            family,
            routes,
            reason: StaleDropReason::AfiSafiDisabled,
        })));
    }

    fn sweep_withdraw(&mut self, now: SystemTime, f: Family, out: &mut Vec<Output>) {
        self.retained.retain(|x| *x != f);
        let events = self.rib.sweep_stale(self.cfg.peer_id(), now, f);
        tracing::info!(peer = %self.cfg.peer, family = %f, routes = events.len(), "stale routes withdrawn");
        out.extend(events.into_iter().map(|e| Output::Event(Event::Route(e))));
    }

    fn drop_stale(
        &mut self,
        now: SystemTime,
        family: Family,
        reason: StaleDropReason,
        out: &mut Vec<Output>,
    ) {
        self.retained.retain(|x| *x != family);
        let routes = self.rib.drop_stale(family);
        tracing::info!(peer = %self.cfg.peer, %family, routes, reason = reason.name(), "stale routes dropped");
        out.push(Output::Event(Event::Session(SessionEvent::StaleDropped {
            peer: self.cfg.peer_id(),
            at: now,
            family,
            routes,
            reason,
        })));
    }

    /// Raises the prefix-limit event when a family crosses the limit (and tears the session down
    /// if so configured); re-arms a family once it is below 90 % of the limit.
    fn check_limits(&mut self, now: SystemTime, grew: bool, out: &mut Vec<Output>) {
        let Some(mp) = self.cfg.max_prefixes else {
            return;
        };
        let rib = &self.rib;
        self.limit_warned
            .retain(|f| rib.count(*f) >= mp.rearm_level());
        if !grew || self.state != State::Established {
            return;
        }
        let limit = usize::try_from(mp.limit).unwrap_or(usize::MAX);
        for f in Family::ALL {
            let count = self.rib.count(f);
            if count <= limit || self.limit_warned.contains(&f) {
                continue;
            }
            self.limit_warned.push(f);
            tracing::warn!(peer = %self.cfg.peer, family = %f, count, limit, "maximum prefixes exceeded");
            out.push(Output::Event(Event::Session(SessionEvent::PrefixLimit {
                peer: self.cfg.peer_id(),
                at: now,
                family: f,
                count,
                limit: mp.limit,
                teardown: mp.teardown,
            })));
            if mp.teardown {
                // RFC 4486 §4: data is AFI, SAFI and the upper bound.
                let mut data = f.afi().to_be_bytes().to_vec();
                data.push(f.safi());
                data.extend_from_slice(&mp.limit.to_be_bytes());
                self.fail(
                    now,
                    Notification::with_data(notif::CEASE, notif::CEASE_MAX_PREFIXES, data),
                    out,
                );
                if !mp.idle_hold.is_zero() {
                    tracing::warn!(peer = %self.cfg.peer, secs = mp.idle_hold.as_secs(), "max-prefix teardown: refusing the peer for the idle hold");
                    self.idle_held = true;
                    out.push(Output::SetTimer(Timer::IdleHold, Some(mp.idle_hold)));
                }
                return;
            }
        }
    }

    fn contender_received(&mut self, now: SystemTime, bytes: &[u8], out: &mut Vec<Output>) {
        let Some(c) = self.contender.as_mut() else {
            return;
        };
        c.framer.push(bytes);
        let contender_dir = c.direction;
        let frame = match c.framer.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                self.reject_contender(Notification::from(&e), out);
                return;
            }
        };
        if frame.kind == iana::msg::NOTIFICATION {
            self.contender = None;
            out.push(Output::CloseContender);
            out.push(Output::SetTimer(Timer::ContenderHold, None));
            return;
        }
        if frame.kind != iana::msg::OPEN {
            self.reject_contender(
                Notification::new(notif::FSM_ERROR, notif::FSM_UNEXPECTED_IN_OPENSENT),
                out,
            );
            return;
        }
        let open = match self.check_open(&frame.body) {
            Ok(o) => o,
            Err(e) => {
                self.reject_contender(Notification::from(&e), out);
                return;
            }
        };
        let collision = Notification::new(notif::CEASE, notif::CEASE_CONNECTION_COLLISION);
        let contender_wins = match self.state {
            State::Established => {
                if self.negotiated.as_ref().is_some_and(|n| n.graceful_restart) {
                    // RFC 4724 §4.2: a peer that restarted reconnects before we noticed; the old
                    // session is lost (its routes go stale) and the new connection proceeds.
                    true
                } else {
                    // RFC 4271 §6.8: a collision with an Established session closes the new
                    // connection.
                    false
                }
            }
            State::Idle => true,
            State::OpenSent | State::OpenConfirm => {
                if contender_dir == self.direction {
                    // Both opened by the same side (the usual case for a passive listener: the
                    // peer gave up on its first attempt); §6.8's identifier rule cannot tell
                    // them apart, and the newer one is the one the peer is using.
                    true
                } else {
                    // RFC 4271 §6.8: if our identifier is lower, keep the connection the peer
                    // opened; otherwise the one we opened.
                    let keep_accepted = u32::from(self.cfg.router_id) < u32::from(open.router_id);
                    (contender_dir == Direction::Accepted) == keep_accepted
                }
            }
        };
        if !contender_wins {
            tracing::info!(peer = %self.cfg.peer, "connection collision: closing the new connection");
            self.reject_contender(collision, out);
            return;
        }
        let Some(mut c) = self.contender.take() else {
            return;
        };
        out.push(Output::SetTimer(Timer::ContenderHold, None));
        tracing::info!(peer = %self.cfg.peer, state = ?self.state, "connection collision: the new connection replaces the old");
        if self.state == State::Established {
            out.push(Output::Close);
            self.down(now, DownReason::PeerRestarted, out);
        } else if self.state != State::Idle {
            self.fail(now, collision, out);
        }
        // `down` promotes a waiting contender; it was taken above, so promote here.
        self.framer = std::mem::take(&mut c.framer);
        self.direction = c.direction;
        self.state = State::OpenSent;
        out.push(Output::PromoteContender);
        self.accept_open(open, out);
        // Bytes after the OPEN (the peer's KEEPALIVE, UPDATEs) are the session's now.
        self.process_frames(now, out);
    }

    fn reject_contender(&mut self, n: Notification, out: &mut Vec<Output>) {
        self.contender = None;
        out.push(Output::SendContender(Outgoing::Notification(n)));
        out.push(Output::CloseContender);
        out.push(Output::SetTimer(Timer::ContenderHold, None));
    }

    /// Sends a NOTIFICATION, closes, and reports the session down.
    fn fail(&mut self, now: SystemTime, n: Notification, out: &mut Vec<Output>) {
        if self.state == State::Idle {
            return;
        }
        tracing::warn!(peer = %self.cfg.peer, notification = %n, "sending NOTIFICATION");
        out.push(Output::Send(Outgoing::Notification(n.clone())));
        out.push(Output::Close);
        self.down(now, DownReason::Sent(n), out);
    }

    fn down(&mut self, now: SystemTime, reason: DownReason, out: &mut Vec<Output>) {
        let gr_loss = match &reason {
            DownReason::ConnectionClosed | DownReason::PeerRestarted => true,
            DownReason::Sent(n) => n.code == notif::HOLD_TIMER_EXPIRED,
            // Only BMP reports this; a direct session never does.
            DownReason::Received(_) | DownReason::Reported(_) => false,
        };
        let was_established = self.state == State::Established;
        let gr = self.negotiated.as_ref().is_some_and(|n| n.graceful_restart);
        let (routes_lost, routes_stale) = if !was_established {
            // A session that never came up held no routes of its own; stale ones from an earlier
            // restart stay until that restart ends (its timer keeps running).
            let stale = Family::ALL.iter().map(|f| self.rib.stale_count(*f)).sum();
            (0, stale)
        } else if gr_loss && gr {
            let cap = self.peer_gr.clone();
            let negotiated: Vec<Family> = self
                .negotiated
                .as_ref()
                .map(|n| n.families.clone())
                .unwrap_or_default();
            let (mut lost, mut stale) = (0, 0);
            self.retained.clear();
            for f in Family::ALL {
                let keep = negotiated.contains(&f)
                    && cap
                        .as_ref()
                        .is_some_and(|c| c.families.iter().any(|(x, _)| *x == f));
                if keep {
                    stale += self.rib.mark_stale(f);
                    self.retained.push(f);
                } else {
                    lost += self.rib.clear_family(f);
                }
            }
            let restart = cap.as_ref().map(|c| c.restart_time).unwrap_or(0);
            tracing::info!(peer = %self.cfg.peer, stale, lost, restart, "graceful restart: keeping the peer's routes as stale");
            out.push(Output::SetTimer(
                Timer::Restart,
                (!self.retained.is_empty()).then(|| Duration::from_secs(u64::from(restart))),
            ));
            (lost, stale)
        } else {
            self.retained.clear();
            out.push(Output::SetTimer(Timer::Restart, None));
            (self.rib.clear(), 0)
        };
        self.state = State::Idle;
        self.negotiated = None;
        self.decode_ctx = None;
        self.peer_gr = None;
        self.hold = Duration::ZERO;
        out.push(Output::SetTimer(Timer::Hold, None));
        out.push(Output::SetTimer(Timer::Keepalive, None));
        let stale_families = Family::ALL
            .iter()
            .copied()
            .filter(|f| self.rib.stale_count(*f) > 0)
            .collect();
        out.push(Output::Event(Event::Session(SessionEvent::Down {
            peer: self.cfg.peer_id(),
            at: now,
            reason,
            routes_lost,
            routes_stale,
            stale_families,
        })));
        self.check_limits(now, false, out);
        // A contender waiting for its OPEN takes over the session.
        if let Some(mut c) = self.contender.take() {
            out.push(Output::SetTimer(Timer::ContenderHold, None));
            out.push(Output::PromoteContender);
            self.framer = std::mem::take(&mut c.framer);
            self.direction = c.direction;
            self.state = State::OpenSent;
            out.push(Output::SetTimer(Timer::Hold, Some(OPEN_HOLD_TIME)));
            self.process_frames(now, out);
        }
    }
}
