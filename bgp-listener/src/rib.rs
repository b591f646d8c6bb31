//! Per-peer Adj-RIB-In: prefix → route, turning decoded UPDATEs into route events.
//!
//! Attribute sets are shared (`Arc`) between the prefixes of one UPDATE; interning across UPDATEs
//! and compact prefix keys are still to do (issue 4).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::event::{AttrKind, Peer, Route, RouteChange, RouteEvent};
use crate::update::ParsedUpdate;
use crate::wire::{Family, Prefix};

#[derive(Debug, Default)]
pub struct AdjRibIn {
    routes: HashMap<(Family, Option<u32>, Prefix), Route>,
}

impl AdjRibIn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn count(&self, family: Family) -> usize {
        self.routes.keys().filter(|(f, _, _)| *f == family).count()
    }

    pub fn get(&self, family: Family, path_id: Option<u32>, prefix: &Prefix) -> Option<&Route> {
        self.routes.get(&(family, path_id, *prefix))
    }

    /// Drops everything, returning how many routes were held.
    pub fn clear(&mut self) -> usize {
        let n = self.routes.len();
        self.routes.clear();
        n
    }

    /// Applies one UPDATE and returns its events, withdrawals first (RFC 4271 §3.1 order).
    ///
    /// `source_time` is what the source says about when it happened (BMP, MRT); `None` for a
    /// direct session.
    pub fn apply(
        &mut self,
        peer: Peer,
        at: SystemTime,
        source_time: Option<SystemTime>,
        upd: ParsedUpdate,
    ) -> Vec<RouteEvent> {
        let mut events = Vec::new();
        let ev = |family, path_id, change| RouteEvent {
            peer,
            family,
            path_id,
            received: at,
            source_time,
            change,
        };
        for (family, id, prefix) in upd.withdrawn {
            if let Some(previous) = self.routes.remove(&(family, id, prefix)) {
                events.push(ev(family, id, RouteChange::Withdraw { prefix, previous }));
            }
        }
        if !upd.announced.is_empty() {
            let attrs = Arc::new(upd.attrs);
            for (family, id, prefix, next_hop) in upd.announced {
                let route = Route {
                    next_hop,
                    attrs: Arc::clone(&attrs),
                };
                match self.routes.insert((family, id, prefix), route.clone()) {
                    None => events.push(ev(family, id, RouteChange::Announce { prefix, route })),
                    Some(previous) => {
                        let changed = AttrKind::diff(&previous, &route);
                        if !changed.is_empty() {
                            events.push(ev(
                                family,
                                id,
                                RouteChange::AttributeChange {
                                    prefix,
                                    previous,
                                    route,
                                    changed,
                                },
                            ));
                        }
                    }
                }
            }
        }
        if let Some(family) = upd.end_of_rib {
            events.push(ev(family, None, RouteChange::EndOfRib));
        }
        events
    }
}
