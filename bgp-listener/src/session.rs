//! Sans-IO BGP session state machine (RFC 4271 §8, receive-only).
//!
//! `Session::handle(now, input)` takes bytes received, timer expiries, and TCP connect/close, and
//! returns what to do: messages to send (only `Outgoing`: OPEN, KEEPALIVE, NOTIFICATION), events,
//! timers to (re)arm, and whether to close. No socket, clock or task lives here; the current time
//! is an argument so that tests control it.
//!
//! The TCP-level states (Connect, Active) belong to the driver; this machine starts when a
//! connection exists. Passive and active sessions behave the same from there: both send OPEN on
//! `Connected`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use crate::event::{DownReason, Event, Negotiated, Peer, SessionEvent};
use crate::iana::{self, notif};
use crate::rib::AdjRibIn;
use crate::update::{DecodeContext, SessionKind, parse_update_from};
use crate::wire::{
    DecodeError, Family, Framer, LocalCapabilities, Notification, OpenMessage, Outgoing,
    decode_notification, decode_open,
};

/// Hold timer while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// Default graceful-restart time in the helper-form capability.
pub const GR_RESTART_TIME: u16 = 120;

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    pub peer: IpAddr,
    /// Proposed hold time in seconds: 0 or at least 3.
    pub hold_time: u16,
    pub families: Vec<Family>,
    /// Advertise graceful restart in helper form, so that the peer sends End-of-RIB.
    pub graceful_restart: bool,
    /// Advertise ADD-PATH receive (RFC 7911) for every configured family.
    pub add_path: bool,
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
            graceful_restart: true,
            add_path: true,
        }
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// TCP is up (accepted from the peer, or dialled).
    Connected,
    /// Bytes read from the connection.
    Received(Vec<u8>),
    TimerFired(Timer),
    /// TCP closed or failed.
    Closed,
    /// Operator asks to end the session (Cease, administrative shutdown).
    Stop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send(Outgoing),
    Event(Event),
    /// Arm (`Some`) or cancel (`None`) a timer; re-arming replaces the previous deadline.
    SetTimer(Timer, Option<Duration>),
    /// Close the TCP connection (after writing what was sent before).
    Close,
}

#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    framer: Framer,
    rib: AdjRibIn,
    negotiated: Option<Negotiated>,
    hold: Duration,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Self {
        Session {
            cfg,
            state: State::Idle,
            framer: Framer::new(),
            rib: AdjRibIn::new(),
            negotiated: None,
            hold: Duration::ZERO,
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

    pub fn handle(&mut self, now: SystemTime, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Connected => {
                if self.state != State::Idle {
                    // A second connection for one peer: collision handling is not built; keep
                    // the current one.
                    tracing::warn!("connection while a session exists; ignored");
                    return out;
                }
                self.framer = Framer::new();
                self.state = State::OpenSent;
                out.push(Output::Send(Outgoing::Open(self.cfg.open_message())));
                out.push(Output::SetTimer(Timer::Hold, Some(OPEN_HOLD_TIME)));
            }
            Input::Received(bytes) => {
                if self.state == State::Idle {
                    return out;
                }
                self.framer.push(&bytes);
                loop {
                    match self.framer.next_frame() {
                        Ok(Some(frame)) => {
                            if let Err(e) = self.on_message(now, frame.kind, &frame.body, &mut out)
                            {
                                self.fail(now, Notification::from(&e), &mut out);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(peer = %self.cfg.peer, error = %e, "framing error");
                            self.fail(now, Notification::from(&e), &mut out);
                        }
                    }
                    if self.state == State::Idle {
                        break;
                    }
                }
            }
            Input::TimerFired(Timer::Hold) => {
                if self.state != State::Idle {
                    self.fail(now, Notification::hold_timer_expired(), &mut out);
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
            Input::Closed => {
                if self.state != State::Idle {
                    self.down(now, DownReason::ConnectionClosed, &mut out);
                }
            }
            Input::Stop => {
                if self.state != State::Idle {
                    self.fail(now, Notification::admin_shutdown(), &mut out);
                }
            }
        }
        out
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
                let neg = Negotiated {
                    peer_as,
                    peer_router_id: id,
                    hold_time: hold,
                    keepalive: hold / 3,
                    four_octet_as: open.four_octet_as.is_some(),
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
                    graceful_restart: self.cfg.graceful_restart && open.graceful_restart,
                };
                tracing::debug!(peer = %self.cfg.peer, ?neg, "OPEN accepted");
                self.hold = Duration::from_secs(u64::from(hold));
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
            }
            (State::Established, msg::KEEPALIVE) => self.restart_hold(out),
            (State::Established, msg::UPDATE) => {
                self.restart_hold(out);
                let ctx = match &self.negotiated {
                    Some(n) => DecodeContext {
                        four_octet_as: n.four_octet_as,
                        families: n.families.clone(),
                        add_path: n.add_path.clone(),
                    },
                    None => return Err(DecodeError::MalformedAttributeList("no session")),
                };
                let kind = if self.cfg.local_as == self.cfg.remote_as {
                    SessionKind::Internal
                } else {
                    SessionKind::External
                };
                let upd = parse_update_from(body, &ctx, kind)?;
                for action in &upd.actions {
                    tracing::warn!(peer = %self.cfg.peer, ?action, "RFC 7606 error handling");
                    out.push(Output::Event(Event::Session(SessionEvent::UpdateError {
                        peer: self.cfg.peer_id(),
                        at: now,
                        action: action.clone(),
                    })));
                }
                for ev in self.rib.apply(self.cfg.peer_id(), now, None, upd) {
                    out.push(Output::Event(Event::Route(ev)));
                }
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
        let routes_lost = self.rib.clear();
        self.state = State::Idle;
        self.negotiated = None;
        self.hold = Duration::ZERO;
        out.push(Output::SetTimer(Timer::Hold, None));
        out.push(Output::SetTimer(Timer::Keepalive, None));
        out.push(Output::Event(Event::Session(SessionEvent::Down {
            peer: self.cfg.peer_id(),
            at: now,
            reason,
            routes_lost,
        })));
    }
}
