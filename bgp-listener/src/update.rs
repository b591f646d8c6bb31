//! UPDATE decoding with RFC 7606 error handling (and RFC 7607: AS 0 is malformed).
//!
//! The attribute section is walked by flags/type/length first; each attribute is then checked on its
//! own and classified: fine, attribute discard, treat-as-withdraw, or session reset. Only session
//! resets are errors (`DecodeError`); the other outcomes are reported in `ParsedUpdate` and the
//! session stays up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::iana::{as_path, attr};
use crate::wire::{DecodeError, Family, Prefix, for_each_nlri, parse_nlri, read_u16, read_u32};

/// One AS_PATH segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: u8,
    pub asns: Vec<u32>,
}

/// An attribute the listener keeps as bytes (unknown, or known but not decoded).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

/// Decoded path attributes of one UPDATE, next hops excluded (those are per family and live on
/// the route).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathAttributes {
    pub origin: Option<u8>,
    pub as_path: Option<Vec<AsSegment>>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<(u32, Ipv4Addr)>,
    pub communities: Vec<u32>,
    pub extended_communities: Vec<[u8; 8]>,
    pub large_communities: Vec<[u32; 3]>,
    pub other: Vec<RawAttribute>,
}

impl PathAttributes {
    /// The AS path as a flat string: sequences space separated, sets in braces.
    pub fn as_path_string(&self) -> String {
        let mut parts = Vec::new();
        for seg in self.as_path.iter().flatten() {
            let asns: Vec<String> = seg.asns.iter().map(u32::to_string).collect();
            match seg.kind {
                as_path::AS_SET | as_path::AS_CONFED_SET => {
                    parts.push(format!("{{{}}}", asns.join(",")))
                }
                _ => parts.push(asns.join(" ")),
            }
        }
        parts.join(" ")
    }
}

/// An RFC 7606 outcome that did not reset the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rfc7606Action {
    /// The attribute was dropped; the routes were kept.
    AttributeDiscard { type_code: u8, reason: &'static str },
    /// Every announced prefix of the UPDATE was handled as a withdrawal.
    TreatAsWithdraw {
        type_code: Option<u8>,
        reason: &'static str,
    },
    /// An MP_REACH_NLRI or MP_UNREACH_NLRI of a negotiated family could not be parsed, so its
    /// prefixes cannot be located and treat-as-withdraw is impossible (RFC 7606 §3 j, §5.3).
    /// RFC 4760 §7 "AFI/SAFI disable": every route of the family from this session is dropped and
    /// the family's later NLRI are ignored until the session ends; the rest of the UPDATE and
    /// the other families carry on.
    AfiSafiDisable {
        family: Family,
        type_code: u8,
        reason: &'static str,
    },
}

/// A decoded UPDATE.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedUpdate {
    /// Withdrawn prefixes with their ADD-PATH path id.
    pub withdrawn: Vec<(Family, Option<u32>, Prefix)>,
    /// Announced prefixes, each with its path id and the next hop of its family.
    pub announced: Vec<(Family, Option<u32>, Prefix, Option<IpAddr>)>,
    pub attrs: PathAttributes,
    pub end_of_rib: Option<Family>,
    pub actions: Vec<Rfc7606Action>,
    /// Set when the attribute set was found already interned in the receiving Adj-RIB-In by its
    /// raw bytes (see [`parse_update_interned`]); `attrs` is then left empty and not decoded.
    pub interned: Option<InternedSet>,
}

/// An attribute set already held by the Adj-RIB-In the UPDATE is applied to. Only that
/// Adj-RIB-In makes one (`AdjRibIn::find_raw_set`), so the index is only meaningful there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InternedSet(pub(crate) u32);

impl ParsedUpdate {
    /// Empties it for the next UPDATE, keeping the vectors' capacity.
    fn reset(&mut self) {
        self.withdrawn.clear();
        self.announced.clear();
        self.attrs = PathAttributes::default();
        self.end_of_rib = None;
        self.actions.clear();
        self.interned = None;
    }

    pub fn treated_as_withdraw(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Rfc7606Action::TreatAsWithdraw { .. }))
    }
}

/// An NLRI entry: ADD-PATH path id (if negotiated) and prefix.
pub type PathPrefix = (Option<u32>, Prefix);

/// What the session negotiated that changes how an UPDATE reads.
#[derive(Clone, Debug)]
pub struct DecodeContext {
    pub four_octet_as: bool,
    pub families: Vec<Family>,
    /// Families whose NLRI carry ADD-PATH path ids (we receive, the peer sends).
    pub add_path: Vec<Family>,
}

enum Check {
    Ok,
    Discard(&'static str),
    Withdraw(&'static str),
}

/// Expected (optional, transitive) bits for the attributes we decode (RFC 7606 §3 c: a flag
/// mismatch is handled like a length error of that attribute).
fn expected_flags(t: u8) -> Option<u8> {
    const WK: u8 = attr::FLAG_TRANSITIVE;
    const ONT: u8 = attr::FLAG_OPTIONAL;
    const OT: u8 = attr::FLAG_OPTIONAL | attr::FLAG_TRANSITIVE;
    Some(match t {
        attr::ORIGIN
        | attr::AS_PATH
        | attr::NEXT_HOP
        | attr::LOCAL_PREF
        | attr::ATOMIC_AGGREGATE => WK,
        attr::MULTI_EXIT_DISC
        | attr::ORIGINATOR_ID
        | attr::CLUSTER_LIST
        | attr::MP_REACH_NLRI
        | attr::MP_UNREACH_NLRI => ONT,
        attr::AGGREGATOR
        | attr::COMMUNITIES
        | attr::EXTENDED_COMMUNITIES
        | attr::AS4_PATH
        | attr::AS4_AGGREGATOR
        | attr::LARGE_COMMUNITIES => OT,
        _ => return None,
    })
}

/// Malformed handling per attribute when it is not treat-as-withdraw (RFC 7606 §7).
fn discard_on_error(t: u8) -> bool {
    matches!(
        t,
        attr::ATOMIC_AGGREGATE | attr::AGGREGATOR | attr::AS4_PATH | attr::AS4_AGGREGATOR
    )
}

fn parse_as_path(v: &[u8], asn4: bool) -> Result<Vec<AsSegment>, &'static str> {
    let width = if asn4 { 4 } else { 2 };
    let mut segs = Vec::new();
    let mut rest = v;
    while let Some((&kind, r)) = rest.split_first() {
        if !(as_path::AS_SET..=as_path::AS_CONFED_SET).contains(&kind) {
            return Err("bad AS_PATH segment type");
        }
        let (&count, r) = r.split_first().ok_or("truncated AS_PATH segment")?;
        if count == 0 {
            return Err("empty AS_PATH segment");
        }
        let (body, r) = r
            .split_at_checked(usize::from(count) * width)
            .ok_or("AS_PATH segment overruns attribute")?;
        let asns: Vec<u32> = if asn4 {
            body.chunks_exact(4).filter_map(read_u32).collect()
        } else {
            body.chunks_exact(2)
                .filter_map(read_u16)
                .map(u32::from)
                .collect()
        };
        if asns.contains(&0) {
            return Err("AS 0 in AS_PATH (RFC 7607)");
        }
        segs.push(AsSegment { kind, asns });
        rest = r;
    }
    Ok(segs)
}

/// Which kind of session an UPDATE came over, where RFC 7606 handles an attribute differently
/// for external peers (LOCAL_PREF §7.5, ORIGINATOR_ID §7.9, CLUSTER_LIST §7.10: attribute discard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    External,
    Internal,
    /// Not known or not ours to judge (BMP, MRT: the monitored router applied these rules when it
    /// received the route), so the external-peer rules are not applied.
    Unknown,
}

/// Decodes an UPDATE body (after the 19-byte header) without the external-peer rules; see
/// [`parse_update_from`].
pub fn parse_update(body: &[u8], ctx: &DecodeContext) -> Result<ParsedUpdate, DecodeError> {
    parse_update_from(body, ctx, SessionKind::Unknown)
}

/// Decodes an UPDATE body (after the 19-byte header) received over a session of `kind`.
pub fn parse_update_from(
    body: &[u8],
    ctx: &DecodeContext,
    kind: SessionKind,
) -> Result<ParsedUpdate, DecodeError> {
    let mut out = ParsedUpdate::default();
    parse_update_impl(body, ctx, kind, None, &mut out)?;
    Ok(out)
}

/// Like [`parse_update_from`], but first offers the UPDATE's shared attribute bytes (everything
/// but NEXT_HOP, MP_REACH_NLRI and MP_UNREACH_NLRI, verbatim; see `shared_attr_parts`) to
/// `lookup`, which returns the set already interned with exactly that encoding. On a hit the
/// shared attributes are not decoded at all: a full table repeats each attribute set in about
/// three UPDATEs, and decoding (AS path and community vectors, then hashing and comparing the
/// decoded set, then freeing it) was the largest per-UPDATE cost. Only 4-octet-AS sessions take
/// this path (the canonical encoding is the 4-octet one). The outcome is the same as
/// `parse_update_from`'s: a hit means the bytes equal the canonical encoding of a set that this
/// session decoded cleanly before, so decoding them again would give that set and no RFC 7606
/// action; anything unusual (repeats, structural errors, discarded attributes) misses and takes
/// the full path.
pub fn parse_update_interned(
    body: &[u8],
    ctx: &DecodeContext,
    kind: SessionKind,
    lookup: RawLookup<'_>,
) -> Result<ParsedUpdate, DecodeError> {
    let mut out = ParsedUpdate::default();
    parse_update_impl(body, ctx, kind, Some(lookup), &mut out)?;
    Ok(out)
}

/// [`parse_update_interned`] into a `ParsedUpdate` the caller keeps from one UPDATE to the next
/// (a session does, and hands it to `AdjRibIn::apply_parsed`, which drains it): its vectors keep
/// their capacity, so a table transfer does not allocate and free a prefix vector per UPDATE
/// (`malloc`/`free` were a tenth of the decode profile). `out` is overwritten; after an error
/// its content is meaningless.
pub fn parse_update_interned_into(
    body: &[u8],
    ctx: &DecodeContext,
    kind: SessionKind,
    lookup: RawLookup<'_>,
    out: &mut ParsedUpdate,
) -> Result<(), DecodeError> {
    parse_update_impl(body, ctx, kind, Some(lookup), out)
}

/// A lookup from an UPDATE's attribute section to an interned set (see
/// [`parse_update_interned`]).
pub type RawLookup<'a> = &'a mut dyn FnMut(&[u8]) -> Option<InternedSet>;

fn parse_update_impl(
    body: &[u8],
    ctx: &DecodeContext,
    kind: SessionKind,
    lookup: Option<RawLookup<'_>>,
    out: &mut ParsedUpdate,
) -> Result<(), DecodeError> {
    out.reset();
    let wlen = read_u16(body).ok_or(DecodeError::MalformedAttributeList("short UPDATE"))?;
    let rest = body.get(2..).unwrap_or_default();
    let (withdrawn, rest) =
        rest.split_at_checked(usize::from(wlen))
            .ok_or(DecodeError::MalformedAttributeList(
                "withdrawn routes length overruns UPDATE",
            ))?;
    let alen = read_u16(rest).ok_or(DecodeError::MalformedAttributeList("no attribute length"))?;
    let rest = rest.get(2..).unwrap_or_default();
    let (attrs, nlri) =
        rest.split_at_checked(usize::from(alen))
            .ok_or(DecodeError::MalformedAttributeList(
                "total path attribute length overruns UPDATE",
            ))?;
    let v4_ok = ctx.families.contains(&Family::Ipv4Unicast);
    let v4_paths = ctx.add_path.contains(&Family::Ipv4Unicast);
    // The legacy NLRI are checked now (a malformed field resets whatever else the UPDATE holds)
    // and parsed into `announced` later, without an intermediate vector.
    if v4_ok {
        for_each_nlri(Family::Ipv4Unicast, withdrawn, v4_paths, |id, p| {
            out.withdrawn.push((Family::Ipv4Unicast, id, p))
        })
    } else {
        for_each_nlri(Family::Ipv4Unicast, withdrawn, v4_paths, |_, _| {})
    }
    .map_err(|_| DecodeError::InvalidNetworkField)?;
    let legacy_count = for_each_nlri(Family::Ipv4Unicast, nlri, v4_paths, |_, _| {})
        .map_err(|_| DecodeError::InvalidNetworkField)?;

    if wlen == 0 && alen == 0 && nlri.is_empty() {
        out.end_of_rib = Some(Family::Ipv4Unicast);
        return Ok(());
    }

    let interned = match lookup {
        Some(f) if ctx.four_octet_as && !attrs.is_empty() => f(attrs),
        _ => None,
    };

    let mut seen = [false; 256];
    let mut next_hop: Option<Ipv4Addr> = None;
    let mut mp_reach: Option<(Family, IpAddr, Vec<PathPrefix>)> = None;
    let mut mp_unreach_only_eor: Option<Family> = None;
    let mut attr_count = 0usize;
    let mut withdraw_reason: Option<(Option<u8>, &'static str)> = None;
    let mut disabled: Option<Family> = None;

    let mut walk = attrs;
    while !walk.is_empty() {
        // Structural walk: flags, type, (extended) length.
        let Some((&[flags, t], r)) = walk.split_first_chunk::<2>() else {
            withdraw_reason.get_or_insert((None, "truncated attribute header"));
            break;
        };
        let (len, r) = if flags & attr::FLAG_EXTENDED_LENGTH != 0 {
            match read_u16(r) {
                Some(l) => (usize::from(l), r.get(2..).unwrap_or_default()),
                None => {
                    withdraw_reason.get_or_insert((Some(t), "truncated attribute length"));
                    break;
                }
            }
        } else {
            match r.split_first() {
                Some((&l, r)) => (usize::from(l), r),
                None => {
                    withdraw_reason.get_or_insert((Some(t), "truncated attribute length"));
                    break;
                }
            }
        };
        let Some((v, r)) = r.split_at_checked(len) else {
            withdraw_reason.get_or_insert((Some(t), "attribute length overruns attribute section"));
            break;
        };
        walk = r;
        attr_count += 1;

        let seen_before = seen.get(usize::from(t)).copied().unwrap_or(false);
        if let Some(s) = seen.get_mut(usize::from(t)) {
            *s = true;
        }
        if seen_before {
            if t == attr::MP_REACH_NLRI || t == attr::MP_UNREACH_NLRI {
                return Err(DecodeError::MalformedAttributeList(
                    "repeated MP_REACH/MP_UNREACH",
                ));
            }
            // RFC 7606 §3 g: keep the first, discard the repeats.
            out.actions.push(Rfc7606Action::AttributeDiscard {
                type_code: t,
                reason: "repeated attribute",
            });
            continue;
        }

        let flags_ok = match expected_flags(t) {
            Some(exp) => flags & (attr::FLAG_OPTIONAL | attr::FLAG_TRANSITIVE) == exp,
            None => true,
        };

        if t == attr::MP_REACH_NLRI || t == attr::MP_UNREACH_NLRI {
            if !flags_ok {
                // RFC 7606 §3 c: wrong optional/transitive bits make the attribute malformed;
                // its NLRI are still located (parsed below), so treat-as-withdraw applies.
                withdraw_reason.get_or_insert((Some(t), "attribute flags"));
            }
            match parse_mp(t, v, ctx) {
                Ok(Mp::Ignored) => {}
                Ok(Mp::Unreach(fam, w)) => {
                    if w.is_empty() {
                        mp_unreach_only_eor = Some(fam);
                    }
                    out.withdrawn
                        .extend(w.into_iter().map(|(id, p)| (fam, id, p)));
                }
                Ok(Mp::Reach(fam, nh, p)) => mp_reach = Some((fam, nh, p)),
                Err(MpError::Reset(reason)) => {
                    return Err(DecodeError::OptionalAttribute(t, reason));
                }
                Err(MpError::Disable(family, reason)) => {
                    disabled = Some(family);
                    out.actions.push(Rfc7606Action::AfiSafiDisable {
                        family,
                        type_code: t,
                        reason,
                    });
                }
            }
            continue;
        }

        if interned.is_some() && t != attr::NEXT_HOP {
            // Equal to the canonical encoding of a set decoded cleanly before: nothing to do.
            continue;
        }
        let ibgp_only = matches!(
            t,
            attr::LOCAL_PREF | attr::ORIGINATOR_ID | attr::CLUSTER_LIST
        );
        let check = if kind == SessionKind::External && ibgp_only {
            // RFC 7606 §7.5, §7.9, §7.10: whatever its length or flags.
            Check::Discard("iBGP-only attribute from an external peer")
        } else if ctx.four_octet_as
            && kind != SessionKind::Unknown
            && (t == attr::AS4_PATH || t == attr::AS4_AGGREGATOR)
        {
            // RFC 6793 §6: never sent between NEW speakers; discarded when they are.
            Check::Discard("AS4_PATH/AS4_AGGREGATOR from a 4-octet-AS peer (RFC 6793 §6)")
        } else if t == attr::TUNNEL_ENCAPSULATION {
            tunnel_encapsulation(flags, v, &mut out.attrs)
        } else if !flags_ok {
            if discard_on_error(t) {
                Check::Discard("attribute flags")
            } else {
                Check::Withdraw("attribute flags")
            }
        } else {
            decode_attr(t, flags, v, ctx, &mut out.attrs, &mut next_hop)?
        };
        let check = match check {
            // RFC 4760 §3 / RFC 7606 §7.3: without NLRI in the NLRI field, NEXT_HOP is not used
            // (a receiver SHOULD ignore it), so a malformed one is only discarded.
            Check::Withdraw(reason) if t == attr::NEXT_HOP && legacy_count == 0 => {
                Check::Discard(reason)
            }
            Check::Ok if t == attr::AS_PATH && kind == SessionKind::External => {
                confed_from_external(&out.attrs)
            }
            c => c,
        };
        match check {
            Check::Ok => {}
            Check::Discard(reason) => out.actions.push(Rfc7606Action::AttributeDiscard {
                type_code: t,
                reason,
            }),
            Check::Withdraw(reason) => {
                withdraw_reason.get_or_insert((Some(t), reason));
            }
        }
    }

    if !ctx.four_octet_as && interned.is_none() {
        merge_as4(&mut out.attrs);
    }

    // End-of-RIB for a multiprotocol family: an UPDATE holding only an empty MP_UNREACH_NLRI.
    if let Some(fam) = mp_unreach_only_eor
        && attr_count == 1
        && wlen == 0
        && nlri.is_empty()
        && withdraw_reason.is_none()
    {
        out.end_of_rib = Some(fam);
        return Ok(());
    }

    let mp_count = mp_reach.as_ref().map_or(0, |(_, _, p)| p.len());
    let legacy_announced = if v4_ok { legacy_count } else { 0 };
    // The caller's vector, emptied by `reset`: its capacity is reused (see
    // `parse_update_interned_into`).
    let mut announced = std::mem::take(&mut out.announced);
    announced.reserve(legacy_announced + mp_count);
    if v4_ok {
        let nh = next_hop.map(IpAddr::V4);
        // Checked above, so this cannot fail; an error would only mean fewer routes.
        let _ = for_each_nlri(Family::Ipv4Unicast, nlri, v4_paths, |id, p| {
            announced.push((Family::Ipv4Unicast, id, p, nh))
        });
    }
    if let Some((fam, nh, prefixes)) = mp_reach {
        announced.extend(prefixes.into_iter().map(|(id, p)| (fam, id, p, Some(nh))));
    }
    if let Some(f) = disabled {
        // Nothing of a disabled family is applied, not even the legacy IPv4 NLRI.
        announced.retain(|(fam, ..)| *fam != f);
        out.withdrawn.retain(|(fam, ..)| *fam != f);
    }
    // RFC 7606 §3 d: missing well-known mandatory attributes → treat-as-withdraw. An interned
    // set always has ORIGIN and AS_PATH (`AdjRibIn::find_raw_set` only returns such sets).
    if withdraw_reason.is_none() && !announced.is_empty() {
        if interned.is_none() && out.attrs.origin.is_none() {
            withdraw_reason = Some((Some(attr::ORIGIN), "missing ORIGIN"));
        } else if interned.is_none() && out.attrs.as_path.is_none() {
            withdraw_reason = Some((Some(attr::AS_PATH), "missing AS_PATH"));
        } else if legacy_announced > 0
            && next_hop.is_none()
            && disabled != Some(Family::Ipv4Unicast)
        {
            withdraw_reason = Some((Some(attr::NEXT_HOP), "missing NEXT_HOP"));
        }
    }
    if let Some((type_code, reason)) = withdraw_reason {
        out.actions
            .push(Rfc7606Action::TreatAsWithdraw { type_code, reason });
        out.withdrawn
            .extend(announced.drain(..).map(|(f, id, p, _)| (f, id, p)));
        out.announced = announced;
    } else {
        out.announced = announced;
        out.interned = interned;
    }
    Ok(())
}

/// RFC 5065 §5.1 / RFC 7606 §7.2: AS_CONFED_SEQUENCE or AS_CONFED_SET segments in an AS_PATH
/// from a peer outside the confederation (the listener is never in one, so any external peer)
/// make the UPDATE malformed: treat-as-withdraw.
fn confed_from_external(a: &PathAttributes) -> Check {
    let confed = a
        .as_path
        .iter()
        .flatten()
        .any(|s| s.kind == as_path::AS_CONFED_SEQUENCE || s.kind == as_path::AS_CONFED_SET);
    if confed {
        Check::Withdraw("AS_CONFED segment from an external peer (RFC 5065 §5.1)")
    } else {
        Check::Ok
    }
}

/// The path length of RFC 4271 §9.1.2.2 (an AS_SET counts 1, confederation segments 0), which
/// RFC 6793 §4.2.3 compares.
fn path_len(segs: &[AsSegment]) -> usize {
    segs.iter()
        .map(|s| match s.kind {
            as_path::AS_SEQUENCE => s.asns.len(),
            as_path::AS_SET => 1,
            _ => 0,
        })
        .sum()
}

/// RFC 6793 §4.2.3, for an UPDATE from a peer that did not negotiate 4-octet AS numbers: folds a
/// (well-formed) AS4_PATH and AS4_AGGREGATOR into the AS path and aggregator, so that routes
/// from 2-octet peers carry the real 4-octet AS numbers instead of AS_TRANS. Both attributes are
/// consumed (removed from `other`) whether used or not. Malformed ones never got here: the
/// attribute walk discarded them (RFC 6793 §6, RFC 7606).
fn merge_as4(a: &mut PathAttributes) {
    if !a
        .other
        .iter()
        .any(|r| r.type_code == attr::AS4_PATH || r.type_code == attr::AS4_AGGREGATOR)
    {
        return;
    }
    let mut as4_path = None;
    let mut as4_aggregator = None;
    a.other.retain(|r| match r.type_code {
        attr::AS4_PATH => {
            as4_path = parse_as_path(&r.value, true).ok();
            false
        }
        attr::AS4_AGGREGATOR => {
            as4_aggregator = read_u32(&r.value).zip(
                r.value
                    .get(4..)
                    .and_then(|b| b.first_chunk::<4>())
                    .map(|b| Ipv4Addr::from(*b)),
            );
            false
        }
        _ => true,
    });
    if let Some(agg4) = as4_aggregator {
        match a.aggregator {
            // AGGREGATOR names a 2-octet AS: both AS4 attributes are ignored (RFC 6793 §4.2.3).
            Some((asn, _)) if asn != u32::from(crate::iana::AS_TRANS) => return,
            Some(_) => a.aggregator = Some(agg4),
            None => {}
        }
    }
    let (Some(mut as4), Some(path)) = (as4_path, a.as_path.as_ref()) else {
        return;
    };
    let before = as4.len();
    // RFC 6793 §6: confederation segments must not be in AS4_PATH; they are dropped.
    as4.retain(|s| s.kind == as_path::AS_SEQUENCE || s.kind == as_path::AS_SET);
    if as4.len() != before {
        tracing::warn!("AS_CONFED segments in AS4_PATH dropped (RFC 6793 §6)");
    }
    let (n, m) = (path_len(path), path_len(&as4));
    if n < m {
        // The AS4_PATH is longer than the AS_PATH: ignored (RFC 6793 §4.2.3).
        return;
    }
    // The leading part of AS_PATH with n - m ASes, then AS4_PATH.
    let mut need = n - m;
    let mut merged: Vec<AsSegment> = Vec::with_capacity(path.len() + as4.len());
    for s in path {
        if need == 0 {
            break;
        }
        match s.kind {
            as_path::AS_SEQUENCE => {
                let take = need.min(s.asns.len());
                merged.push(AsSegment {
                    kind: s.kind,
                    asns: s.asns.get(..take).unwrap_or_default().to_vec(),
                });
                need -= take;
            }
            as_path::AS_SET => {
                merged.push(s.clone());
                need -= 1;
            }
            _ => merged.push(s.clone()),
        }
    }
    for s in as4 {
        match merged.last_mut() {
            // One sequence where AS_PATH's part and AS4_PATH's meet (as a 4-octet peer sends it).
            Some(last)
                if last.kind == as_path::AS_SEQUENCE
                    && s.kind == as_path::AS_SEQUENCE
                    && last.asns.len() + s.asns.len() <= 255 =>
            {
                last.asns.extend_from_slice(&s.asns)
            }
            _ => merged.push(s),
        }
    }
    a.as_path = Some(merged);
}

/// A decoded MP_REACH_NLRI / MP_UNREACH_NLRI.
enum Mp {
    /// A family that was not negotiated (or was disabled): ignored.
    Ignored,
    Unreach(Family, Vec<PathPrefix>),
    Reach(Family, IpAddr, Vec<PathPrefix>),
}

/// Why an MP attribute could not be used.
enum MpError {
    /// Not even the AFI/SAFI can be read: which routes to drop is unknown, so the session is
    /// reset (RFC 7606 §3 j leaves only that when AFI/SAFI disable cannot apply).
    Reset(&'static str),
    /// The AFI/SAFI is known but the next hop or NLRI cannot be parsed: AFI/SAFI disable.
    Disable(Family, &'static str),
}

fn parse_mp(t: u8, v: &[u8], ctx: &DecodeContext) -> Result<Mp, MpError> {
    let afi = read_u16(v).ok_or(MpError::Reset("short"))?;
    let safi = *v.get(2).ok_or(MpError::Reset("short"))?;
    let Some(fam) = Family::from_afi_safi(afi, safi).filter(|f| ctx.families.contains(f)) else {
        tracing::debug!(
            afi,
            safi,
            "MP attribute for a family not negotiated; ignored"
        );
        return Ok(Mp::Ignored);
    };
    let rest = v.get(3..).unwrap_or_default();
    let add_path = ctx.add_path.contains(&fam);
    if t == attr::MP_UNREACH_NLRI {
        let w = parse_nlri(fam, rest, add_path)
            .map_err(|_| MpError::Disable(fam, "MP_UNREACH_NLRI withdrawn NLRI"))?;
        return Ok(Mp::Unreach(fam, w));
    }
    let (&nhlen, rest) = rest
        .split_first()
        .ok_or(MpError::Disable(fam, "MP_REACH_NLRI short"))?;
    let (nh, rest) = rest
        .split_at_checked(usize::from(nhlen))
        .ok_or(MpError::Disable(fam, "MP_REACH_NLRI next hop overruns"))?;
    let (_reserved, nlri) = rest
        .split_first()
        .ok_or(MpError::Disable(fam, "MP_REACH_NLRI short"))?;
    let nh = match (fam, nh.len()) {
        (Family::Ipv4Unicast, 4) => nh
            .first_chunk::<4>()
            .map(|b| IpAddr::V4(Ipv4Addr::from(*b))),
        (Family::Ipv6Unicast, 16 | 32) => nh
            .first_chunk::<16>()
            .map(|b| IpAddr::V6(Ipv6Addr::from(*b))),
        _ => None,
    }
    .ok_or(MpError::Disable(fam, "MP_REACH_NLRI next hop length"))?;
    let p =
        parse_nlri(fam, nlri, add_path).map_err(|_| MpError::Disable(fam, "MP_REACH_NLRI NLRI"))?;
    Ok(Mp::Reach(fam, nh, p))
}

/// Attributes that belong to the UPDATE rather than to its shared attribute set: NEXT_HOP (the
/// next hop lives on the route) and the MP_REACH/MP_UNREACH NLRI carriers.
fn per_update_attr(t: u8) -> bool {
    matches!(
        t,
        attr::NEXT_HOP | attr::MP_REACH_NLRI | attr::MP_UNREACH_NLRI
    )
}

/// Calls `part` with each attribute of an UPDATE's attribute section but its per-UPDATE ones, in
/// order, verbatim (flags, type, length, value): together, the bytes `encode_shared` gives for
/// the set they decode to, if they are canonical. False if the section is not well formed or
/// repeats a type (after some calls: the caller drops what it got): those UPDATEs take the full
/// decode, which reports the RFC 7606 outcome. Streaming the parts (instead of copying them into
/// one buffer) lets the Adj-RIB-In hash them where they lie.
pub(crate) fn shared_attr_parts(attrs: &[u8], mut part: impl FnMut(&[u8])) -> bool {
    let mut seen = [false; 256];
    let mut walk = attrs;
    while let Some((&[flags, t], r)) = walk.split_first_chunk::<2>() {
        let (len, hdr, r) = if flags & attr::FLAG_EXTENDED_LENGTH != 0 {
            match (read_u16(r), r.get(2..)) {
                (Some(l), Some(r)) => (usize::from(l), 4, r),
                _ => return false,
            }
        } else {
            match r.split_first() {
                Some((&l, r)) => (usize::from(l), 3, r),
                None => return false,
            }
        };
        let (Some(whole), Some(r)) = (walk.get(..hdr + len), r.get(len..)) else {
            return false;
        };
        match seen.get_mut(usize::from(t)) {
            Some(s) if !*s => *s = true,
            _ => return false,
        }
        if !per_update_attr(t) {
            part(whole);
        }
        walk = r;
    }
    walk.is_empty()
}

/// Appends one attribute: `value` writes the value, the length field is sized afterwards. With
/// `ext == None` the extended-length bit is set only when the value needs it (the form every
/// common implementation sends); with `Some(bit)` the stored flags decide. False if the value
/// does not fit the chosen length field.
fn put_attr(
    out: &mut Vec<u8>,
    flags: u8,
    t: u8,
    ext: Option<bool>,
    value: impl FnOnce(&mut Vec<u8>),
) -> bool {
    let start = out.len();
    out.extend_from_slice(&[flags, t, 0, 0]);
    value(out);
    let len = out.len() - start - 4;
    let ext = ext.unwrap_or(len > 255);
    if ext {
        let Ok(l) = u16::try_from(len) else {
            return false;
        };
        if let Some(f) = out.get_mut(start) {
            *f |= attr::FLAG_EXTENDED_LENGTH;
        }
        if let Some(b) = out.get_mut(start + 2..start + 4) {
            b.copy_from_slice(&l.to_be_bytes());
        }
    } else {
        let Ok(l) = u8::try_from(len) else {
            return false;
        };
        if let Some(b) = out.get_mut(start + 2) {
            *b = l;
        }
        out.remove(start + 3);
    }
    true
}

/// The canonical wire encoding of a decoded attribute set (4-octet AS numbers, types in
/// ascending order, the usual flags, extended length only where needed; kept raw attributes with
/// their own flags). `parse_update` decodes these bytes back to the same set with no RFC 7606
/// action, so an UPDATE whose shared bytes equal them needs no decoding (and the Adj-RIB-In keys
/// its sets by the hash of these bytes). False for sets that have no such encoding (an unsorted
/// or per-UPDATE kept attribute, an oversized segment): those are keyed another way and never
/// matched by raw bytes.
pub(crate) fn encode_shared(a: &PathAttributes, out: &mut Vec<u8>) -> bool {
    const WK: u8 = attr::FLAG_TRANSITIVE;
    const ONT: u8 = attr::FLAG_OPTIONAL;
    const OT: u8 = attr::FLAG_OPTIONAL | attr::FLAG_TRANSITIVE;
    out.clear();
    let mut last = 0u8;
    for r in &a.other {
        // Decoded types never land in `other`; a set that says otherwise has no encoding.
        let decoded = matches!(
            r.type_code,
            attr::ORIGIN
                | attr::AS_PATH
                | attr::MULTI_EXIT_DISC
                | attr::LOCAL_PREF
                | attr::ATOMIC_AGGREGATE
                | attr::AGGREGATOR
                | attr::COMMUNITIES
                | attr::EXTENDED_COMMUNITIES
                | attr::LARGE_COMMUNITIES
        );
        if r.type_code <= last || per_update_attr(r.type_code) || decoded {
            return false;
        }
        last = r.type_code;
    }
    let mut others = a.other.iter().peekable();
    let mut ok = true;
    // Kept attributes with a type below `t`, in order.
    let mut flush = |out: &mut Vec<u8>, t: u16, ok: &mut bool| {
        while let Some(r) = others.next_if(|r| u16::from(r.type_code) < t) {
            let ext = r.flags & attr::FLAG_EXTENDED_LENGTH != 0;
            *ok &= put_attr(
                out,
                r.flags & !attr::FLAG_EXTENDED_LENGTH,
                r.type_code,
                Some(ext),
                |o| o.extend_from_slice(&r.value),
            );
        }
    };
    if let Some(o) = a.origin {
        flush(out, u16::from(attr::ORIGIN), &mut ok);
        ok &= put_attr(out, WK, attr::ORIGIN, None, |v| v.push(o));
    }
    if let Some(segs) = &a.as_path {
        flush(out, u16::from(attr::AS_PATH), &mut ok);
        ok &= segs
            .iter()
            .all(|s| !s.asns.is_empty() && s.asns.len() <= 255);
        ok &= put_attr(out, WK, attr::AS_PATH, None, |v| {
            for s in segs {
                v.push(s.kind);
                v.push(u8::try_from(s.asns.len()).unwrap_or(u8::MAX));
                for asn in &s.asns {
                    v.extend_from_slice(&asn.to_be_bytes());
                }
            }
        });
    }
    if let Some(m) = a.med {
        flush(out, u16::from(attr::MULTI_EXIT_DISC), &mut ok);
        ok &= put_attr(out, ONT, attr::MULTI_EXIT_DISC, None, |v| {
            v.extend_from_slice(&m.to_be_bytes())
        });
    }
    if let Some(lp) = a.local_pref {
        flush(out, u16::from(attr::LOCAL_PREF), &mut ok);
        ok &= put_attr(out, WK, attr::LOCAL_PREF, None, |v| {
            v.extend_from_slice(&lp.to_be_bytes())
        });
    }
    if a.atomic_aggregate {
        flush(out, u16::from(attr::ATOMIC_AGGREGATE), &mut ok);
        ok &= put_attr(out, WK, attr::ATOMIC_AGGREGATE, None, |_| {});
    }
    if let Some((asn, id)) = a.aggregator {
        flush(out, u16::from(attr::AGGREGATOR), &mut ok);
        ok &= put_attr(out, OT, attr::AGGREGATOR, None, |v| {
            v.extend_from_slice(&asn.to_be_bytes());
            v.extend_from_slice(&id.octets());
        });
    }
    if !a.communities.is_empty() {
        flush(out, u16::from(attr::COMMUNITIES), &mut ok);
        ok &= put_attr(out, OT, attr::COMMUNITIES, None, |v| {
            for c in &a.communities {
                v.extend_from_slice(&c.to_be_bytes());
            }
        });
    }
    if !a.extended_communities.is_empty() {
        flush(out, u16::from(attr::EXTENDED_COMMUNITIES), &mut ok);
        ok &= put_attr(out, OT, attr::EXTENDED_COMMUNITIES, None, |v| {
            for c in &a.extended_communities {
                v.extend_from_slice(c);
            }
        });
    }
    if !a.large_communities.is_empty() {
        flush(out, u16::from(attr::LARGE_COMMUNITIES), &mut ok);
        ok &= put_attr(out, OT, attr::LARGE_COMMUNITIES, None, |v| {
            for c in a.large_communities.iter().flatten() {
                v.extend_from_slice(&c.to_be_bytes());
            }
        });
    }
    flush(out, 256, &mut ok);
    ok
}

/// The path attributes of one MRT RIB entry, with the next hop for the entry's family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RibAttributes {
    pub attrs: PathAttributes,
    pub next_hop: Option<IpAddr>,
    /// RFC 7606 outcomes: a `TreatAsWithdraw` here means the entry is not usable as a route.
    pub actions: Vec<Rfc7606Action>,
}

/// Decodes the attribute block of an MRT RIB entry (TABLE_DUMP_V2 RIB entries, RFC 6396 §4.3.4,
/// and legacy TABLE_DUMP). It differs from an UPDATE's in three ways, so `parse_update` is not
/// reused: MP_REACH_NLRI is usually abbreviated to next-hop length + next hop (no AFI/SAFI, no
/// NLRI), though some writers put the full RFC 4760 form there and both are accepted; there is no
/// NLRI, so MP_UNREACH_NLRI is meaningless and ignored; a dump of locally originated routes may
/// lack ORIGIN or AS_PATH, which is not an error here; and attribute flags are not checked (BIRD 2
/// writes 0 for well-known attributes). `four_octet_as` is true for
/// TABLE_DUMP_V2 (its AS_PATHs are always 4-octet) and false for legacy TABLE_DUMP.
pub fn parse_rib_attributes(
    block: &[u8],
    family: Family,
    four_octet_as: bool,
) -> Result<RibAttributes, DecodeError> {
    let ctx = DecodeContext {
        four_octet_as,
        families: Vec::new(),
        add_path: Vec::new(),
    };
    let mut out = RibAttributes::default();
    let mut legacy_next_hop: Option<Ipv4Addr> = None;
    let mut mp_next_hop: Option<IpAddr> = None;
    let mut seen = [false; 256];
    let mut walk = block;
    while !walk.is_empty() {
        let Some((&[flags, t], r)) = walk.split_first_chunk::<2>() else {
            return Err(DecodeError::MalformedAttributeList(
                "truncated attribute header",
            ));
        };
        let (len, r) = if flags & attr::FLAG_EXTENDED_LENGTH != 0 {
            let l = read_u16(r).ok_or(DecodeError::MalformedAttributeList(
                "truncated attribute length",
            ))?;
            (usize::from(l), r.get(2..).unwrap_or_default())
        } else {
            let (&l, r) = r.split_first().ok_or(DecodeError::MalformedAttributeList(
                "truncated attribute length",
            ))?;
            (usize::from(l), r)
        };
        let (v, r) = r
            .split_at_checked(len)
            .ok_or(DecodeError::MalformedAttributeList(
                "attribute length overruns attribute block",
            ))?;
        walk = r;
        if let Some(s) = seen.get_mut(usize::from(t)) {
            if *s {
                out.actions.push(Rfc7606Action::AttributeDiscard {
                    type_code: t,
                    reason: "repeated attribute",
                });
                continue;
            }
            *s = true;
        }
        match t {
            attr::MP_REACH_NLRI => {
                mp_next_hop = rib_mp_next_hop(v);
                if mp_next_hop.is_none() {
                    out.actions.push(Rfc7606Action::AttributeDiscard {
                        type_code: t,
                        reason: "MP_REACH_NLRI next hop",
                    });
                }
                continue;
            }
            attr::MP_UNREACH_NLRI => continue,
            _ => {}
        }
        // Flags are not checked: a dump is not a wire message, and writers differ (BIRD 2 writes
        // 0 for the well-known attributes). Known types decode by type; for unknown ones the
        // optional bit is all that matters, so a dump's unknown attribute is kept opaque.
        let flags = if expected_flags(t).is_none() {
            flags | attr::FLAG_OPTIONAL
        } else {
            flags
        };
        match decode_attr(t, flags, v, &ctx, &mut out.attrs, &mut legacy_next_hop)? {
            Check::Ok => {}
            Check::Discard(reason) => out.actions.push(Rfc7606Action::AttributeDiscard {
                type_code: t,
                reason,
            }),
            Check::Withdraw(reason) => out.actions.push(Rfc7606Action::TreatAsWithdraw {
                type_code: Some(t),
                reason,
            }),
        }
    }
    out.next_hop = match family {
        Family::Ipv4Unicast => legacy_next_hop.map(IpAddr::V4).or(mp_next_hop),
        Family::Ipv6Unicast => mp_next_hop,
    };
    Ok(out)
}

/// The next hop of a RIB entry's MP_REACH_NLRI: the abbreviated form (length byte, then exactly
/// that many bytes) or, failing that, the full RFC 4760 form. IPv6 next hops of 32 bytes carry a
/// link-local address after the global one; the global one is kept.
fn rib_mp_next_hop(v: &[u8]) -> Option<IpAddr> {
    let nh = match v.split_first() {
        Some((&n, rest)) if usize::from(n) == rest.len() => rest,
        _ => {
            // Full form: AFI (2), SAFI (1), next-hop length (1), next hop, ...
            let (&n, rest) = v.get(3..)?.split_first()?;
            rest.get(..usize::from(n))?
        }
    };
    match nh.len() {
        4 => nh
            .first_chunk::<4>()
            .map(|b| IpAddr::V4(Ipv4Addr::from(*b))),
        16 | 32 => nh
            .first_chunk::<16>()
            .map(|b| IpAddr::V6(Ipv6Addr::from(*b))),
        _ => None,
    }
}

fn decode_attr(
    t: u8,
    flags: u8,
    v: &[u8],
    ctx: &DecodeContext,
    a: &mut PathAttributes,
    next_hop: &mut Option<Ipv4Addr>,
) -> Result<Check, DecodeError> {
    Ok(match t {
        attr::ORIGIN => match v {
            [o @ 0..=2] => {
                a.origin = Some(*o);
                Check::Ok
            }
            _ => Check::Withdraw("malformed ORIGIN"),
        },
        attr::AS_PATH => match parse_as_path(v, ctx.four_octet_as) {
            Ok(p) => {
                a.as_path = Some(p);
                Check::Ok
            }
            Err(reason) => Check::Withdraw(reason),
        },
        attr::NEXT_HOP => match v.first_chunk::<4>() {
            Some(b) if v.len() == 4 => {
                *next_hop = Some(Ipv4Addr::from(*b));
                Check::Ok
            }
            _ => Check::Withdraw("NEXT_HOP length"),
        },
        attr::MULTI_EXIT_DISC | attr::LOCAL_PREF => match read_u32(v) {
            Some(x) if v.len() == 4 => {
                if t == attr::MULTI_EXIT_DISC {
                    a.med = Some(x);
                } else {
                    a.local_pref = Some(x);
                }
                Check::Ok
            }
            _ => Check::Withdraw("MED/LOCAL_PREF length"),
        },
        attr::ATOMIC_AGGREGATE => {
            if v.is_empty() {
                a.atomic_aggregate = true;
                Check::Ok
            } else {
                Check::Discard("ATOMIC_AGGREGATE length")
            }
        }
        attr::AGGREGATOR => {
            let w = if ctx.four_octet_as { 4 } else { 2 };
            if v.len() != w + 4 {
                Check::Discard("AGGREGATOR length")
            } else {
                let asn = if w == 4 {
                    read_u32(v)
                } else {
                    read_u16(v).map(u32::from)
                };
                let id = v
                    .get(w..)
                    .and_then(|b| b.first_chunk::<4>())
                    .map(|b| Ipv4Addr::from(*b));
                if asn == Some(0) {
                    // RFC 7607 §2: AS 0 makes AGGREGATOR malformed; RFC 7606 §7.7: discard.
                    Check::Discard("AS 0 in AGGREGATOR (RFC 7607)")
                } else {
                    a.aggregator = asn.zip(id);
                    Check::Ok
                }
            }
        }
        attr::COMMUNITIES => {
            if v.is_empty() || !v.len().is_multiple_of(4) {
                Check::Withdraw("COMMUNITIES length")
            } else {
                a.communities = v.chunks_exact(4).filter_map(read_u32).collect();
                Check::Ok
            }
        }
        attr::EXTENDED_COMMUNITIES => {
            if v.is_empty() || !v.len().is_multiple_of(8) {
                Check::Withdraw("EXTENDED_COMMUNITIES length")
            } else {
                a.extended_communities = v
                    .chunks_exact(8)
                    .filter_map(|c| c.first_chunk::<8>().copied())
                    .collect();
                Check::Ok
            }
        }
        attr::LARGE_COMMUNITIES => {
            if v.is_empty() || !v.len().is_multiple_of(12) {
                Check::Withdraw("LARGE_COMMUNITIES length")
            } else {
                a.large_communities = v
                    .chunks_exact(12)
                    .filter_map(|c| {
                        Some([read_u32(c)?, read_u32(c.get(4..)?)?, read_u32(c.get(8..)?)?])
                    })
                    .collect();
                Check::Ok
            }
        }
        attr::ORIGINATOR_ID | attr::CLUSTER_LIST => {
            let ok = if t == attr::ORIGINATOR_ID {
                v.len() == 4
            } else {
                !v.is_empty() && v.len().is_multiple_of(4)
            };
            if ok {
                a.other.push(RawAttribute {
                    flags,
                    type_code: t,
                    value: v.to_vec(),
                });
                Check::Ok
            } else {
                Check::Withdraw("ORIGINATOR_ID/CLUSTER_LIST length")
            }
        }
        // RFC 6793 §6: shorter than one AS number is malformed.
        attr::AS4_PATH if v.len() < 6 => Check::Discard("AS4_PATH shorter than 6 octets"),
        attr::AS4_PATH => match parse_as_path(v, true) {
            // Kept raw here; on a 2-octet-AS session `merge_as4` folds it into the AS path.
            Ok(_) => {
                a.other.push(RawAttribute {
                    flags,
                    type_code: t,
                    value: v.to_vec(),
                });
                Check::Ok
            }
            Err(reason) => Check::Discard(reason),
        },
        attr::AS4_AGGREGATOR => {
            if v.len() == 8 && read_u32(v).is_some_and(|asn| asn != 0) {
                a.other.push(RawAttribute {
                    flags,
                    type_code: t,
                    value: v.to_vec(),
                });
                Check::Ok
            } else {
                Check::Discard("AS4_AGGREGATOR length or AS 0")
            }
        }
        _ => {
            if flags & attr::FLAG_OPTIONAL == 0 {
                // An unrecognized well-known attribute still resets (RFC 4271 §6.3, not relaxed
                // by RFC 7606). Data: the whole attribute.
                let mut data = vec![flags, t];
                if flags & attr::FLAG_EXTENDED_LENGTH != 0 {
                    data.extend_from_slice(
                        &u16::try_from(v.len()).unwrap_or(u16::MAX).to_be_bytes(),
                    );
                } else {
                    data.push(u8::try_from(v.len()).unwrap_or(u8::MAX));
                }
                data.extend_from_slice(v);
                return Err(DecodeError::UnrecognizedWellKnown(t, data));
            }
            // Unknown optional (e.g. BGP-LS, 29, the CVE-2023-4481 attribute): kept opaque, never
            // parsed, whatever it holds; the session and the route are not affected.
            a.other.push(RawAttribute {
                flags,
                type_code: t,
                value: v.to_vec(),
            });
            Check::Ok
        }
    })
}

/// The Tunnel Encapsulation attribute (RFC 9012 §13): a TLV whose sub-TLVs do not end exactly at
/// its end is disregarded; an attribute with no valid TLV, or without the transitive bit, is
/// removed by attribute discard. It never withdraws the route or resets the session (FRR before
/// 9.0.1 reset, CVE-2023-38802). A usable attribute is kept opaque.
fn tunnel_encapsulation(flags: u8, v: &[u8], a: &mut PathAttributes) -> Check {
    const OT: u8 = attr::FLAG_OPTIONAL | attr::FLAG_TRANSITIVE;
    if flags & OT != OT {
        return Check::Discard("Tunnel Encapsulation flags (RFC 9012 §13)");
    }
    let mut valid = 0usize;
    let mut rest = v;
    // TLV: Tunnel Type (2 octets), Length (2 octets), sub-TLVs.
    while let Some((&[_, _, l0, l1], r)) = rest.split_first_chunk::<4>() {
        let Some((tlv, r)) = r.split_at_checked(usize::from(u16::from_be_bytes([l0, l1]))) else {
            break; // overruns the attribute: neither it nor anything after it can be located
        };
        rest = r;
        if sub_tlvs_fit(tlv) {
            valid += 1;
        }
    }
    if valid == 0 {
        return Check::Discard("Tunnel Encapsulation without a valid TLV (RFC 9012 §13)");
    }
    a.other.push(RawAttribute {
        flags,
        type_code: attr::TUNNEL_ENCAPSULATION,
        value: v.to_vec(),
    });
    Check::Ok
}

/// Whether a TLV value is a run of sub-TLVs ending exactly at its end. Sub-TLV types 0-127 have a
/// 1-octet length, 128-255 a 2-octet length (RFC 9012 §2).
fn sub_tlvs_fit(mut v: &[u8]) -> bool {
    while let Some((&t, r)) = v.split_first() {
        let (len, r) = if t < 128 {
            match r.split_first() {
                Some((&l, r)) => (usize::from(l), r),
                None => return false,
            }
        } else {
            match r.split_first_chunk::<2>() {
                Some((l, r)) => (usize::from(u16::from_be_bytes(*l)), r),
                None => return false,
            }
        };
        match r.get(len..) {
            Some(r) => v = r,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> DecodeContext {
        DecodeContext {
            four_octet_as: true,
            families: Family::ALL.to_vec(),
            add_path: Vec::new(),
        }
    }

    /// ORIGIN, AS_PATH 65001, NEXT_HOP, then `extra`, announcing 198.19.1.0/24.
    fn body(extra: &[u8]) -> Vec<u8> {
        let mut a = vec![0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
        a.extend_from_slice(&[0x40, 3, 4, 198, 18, 0, 1]);
        a.extend_from_slice(extra);
        let mut b = vec![0, 0];
        b.extend_from_slice(&u16::try_from(a.len()).unwrap_or(0).to_be_bytes());
        b.extend_from_slice(&a);
        b.extend_from_slice(&[24, 198, 19, 1]);
        b
    }

    fn tunnel(flags: u8, v: &[u8]) -> Vec<u8> {
        let mut a = vec![
            flags,
            attr::TUNNEL_ENCAPSULATION,
            u8::try_from(v.len()).unwrap_or(0),
        ];
        a.extend_from_slice(v);
        a
    }

    #[test]
    fn tunnel_encapsulation_follows_rfc9012_section_13() {
        let good_tlv = [0, 8, 0, 4, 1, 2, 0, 0];
        let bad_tlv = [0, 8, 0, 4, 1, 10, 0, 0];
        let kept = |extra: &[u8]| -> Option<bool> {
            let u = parse_update_from(&body(extra), &ctx(), SessionKind::External).ok()?;
            if u.announced.len() != 1 {
                return None;
            }
            Some(u.attrs.other.iter().any(|r| r.type_code == 23))
        };
        assert_eq!(kept(&tunnel(0xc0, &good_tlv)), Some(true));
        let mut one_good = bad_tlv.to_vec();
        one_good.extend_from_slice(&good_tlv);
        assert_eq!(
            kept(&tunnel(0xc0, &one_good)),
            Some(true),
            "a bad TLV is skipped"
        );
        assert_eq!(
            kept(&tunnel(0xc0, &bad_tlv)),
            Some(false),
            "no valid TLV: discard"
        );
        assert_eq!(
            kept(&tunnel(0xc0, &[0, 8, 0, 9, 0])),
            Some(false),
            "TLV overrun"
        );
        assert_eq!(
            kept(&tunnel(0x80, &good_tlv)),
            Some(false),
            "not transitive"
        );
    }

    /// ORIGIN, `path_attr`, NEXT_HOP, `extra`, announcing 198.19.1.0/24.
    fn body_with(path_attr: &[u8], extra: &[u8]) -> Vec<u8> {
        let mut a = vec![0x40, 1, 1, 0];
        a.extend_from_slice(path_attr);
        a.extend_from_slice(&[0x40, 3, 4, 198, 18, 0, 1]);
        a.extend_from_slice(extra);
        let mut b = vec![0, 0];
        b.extend_from_slice(&u16::try_from(a.len()).unwrap_or(0).to_be_bytes());
        b.extend_from_slice(&a);
        b.extend_from_slice(&[24, 198, 19, 1]);
        b
    }

    /// A 2-octet-AS UPDATE: AS_PATH one sequence of `path`, then `extra`.
    fn body2(path: &[u16], extra: &[u8]) -> Vec<u8> {
        let mut seg = vec![2, u8::try_from(path.len()).unwrap_or(0)];
        for a in path {
            seg.extend_from_slice(&a.to_be_bytes());
        }
        let mut p = vec![0x40, 2, u8::try_from(seg.len()).unwrap_or(0)];
        p.extend_from_slice(&seg);
        body_with(&p, extra)
    }

    fn as4_path(segs: &[(u8, &[u32])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (kind, asns) in segs {
            v.push(*kind);
            v.push(u8::try_from(asns.len()).unwrap_or(0));
            for a in *asns {
                v.extend_from_slice(&a.to_be_bytes());
            }
        }
        let mut out = vec![0xc0, attr::AS4_PATH, u8::try_from(v.len()).unwrap_or(0)];
        out.extend_from_slice(&v);
        out
    }

    fn ctx2() -> DecodeContext {
        DecodeContext {
            four_octet_as: false,
            ..ctx()
        }
    }

    /// Decodes for an external 2-octet peer: (AS path string, aggregator, RFC 7606 actions,
    /// whether any AS4 attribute is left in `other`).
    fn decode2(b: &[u8]) -> (String, Option<(u32, Ipv4Addr)>, Vec<Rfc7606Action>, bool) {
        let u = parse_update_from(b, &ctx2(), SessionKind::External).expect("no reset");
        assert_eq!(u.announced.len(), 1, "{u:?}");
        let left = u
            .attrs
            .other
            .iter()
            .any(|r| r.type_code == attr::AS4_PATH || r.type_code == attr::AS4_AGGREGATOR);
        (
            u.attrs.as_path_string(),
            u.attrs.aggregator,
            u.actions,
            left,
        )
    }

    #[test]
    fn as4_path_is_merged_for_two_octet_peers_rfc6793_4_2_3() {
        const T: u16 = 23456;
        // AS_PATH 65001 T T 65010, AS4_PATH 4200000001 4200000002 65010: the leading 65001 is
        // taken from AS_PATH, the rest from AS4_PATH.
        let p4 = as4_path(&[(2, &[4_200_000_001, 4_200_000_002, 65010])]);
        let (path, _, actions, left) = decode2(&body2(&[65001, T, T, 65010], &p4));
        assert_eq!(path, "65001 4200000001 4200000002 65010");
        assert!(actions.is_empty() && !left);

        // An AS_SET in AS_PATH's leading part counts as one AS and is kept whole.
        let path = [0x40, 2, 10, 1, 2, 0, 1, 0, 2, 2, 1, 0x5b, 0xa0];
        let b = body_with(&path, &as4_path(&[(2, &[4_200_000_001])]));
        assert_eq!(decode2(&b).0, "{1,2} 4200000001");

        // AS4_PATH longer than AS_PATH: ignored.
        let p4 = as4_path(&[(2, &[4_200_000_001, 4_200_000_002])]);
        let (path, _, actions, left) = decode2(&body2(&[T], &p4));
        assert_eq!(path, "23456");
        assert!(actions.is_empty() && !left);

        // Confederation segments in AS4_PATH are dropped (RFC 6793 §6), the rest merged.
        let p4 = as4_path(&[(3, &[64512]), (2, &[4_200_000_001])]);
        assert_eq!(decode2(&body2(&[65001, T], &p4)).0, "65001 4200000001");

        // Malformed AS4_PATH (segment overruns; too short): attribute discard, AS_PATH as sent.
        let mut bad = as4_path(&[(2, &[4_200_000_001])]);
        if let Some(c) = bad.get_mut(4) {
            *c = 2;
        }
        for bad in [bad, vec![0xc0, attr::AS4_PATH, 4, 2, 1, 0, 0]] {
            let (path, _, actions, left) = decode2(&body2(&[65001, T], &bad));
            assert_eq!(path, "65001 23456");
            assert!(
                matches!(
                    actions.as_slice(),
                    [Rfc7606Action::AttributeDiscard { type_code: 17, .. }]
                ),
                "{actions:?}"
            );
            assert!(!left);
        }
    }

    #[test]
    fn as4_aggregator_follows_rfc6793_4_2_3() {
        const T: u16 = 23456;
        let agg = |asn: u16| {
            let mut v = vec![0xc0, attr::AGGREGATOR, 6];
            v.extend_from_slice(&asn.to_be_bytes());
            v.extend_from_slice(&[198, 18, 0, 9]);
            v
        };
        let agg4 = {
            let mut v = vec![0xc0, attr::AS4_AGGREGATOR, 8];
            v.extend_from_slice(&4_200_000_009u32.to_be_bytes());
            v.extend_from_slice(&[198, 18, 0, 9]);
            v
        };
        let p4 = as4_path(&[(2, &[4_200_000_001])]);
        let id = Ipv4Addr::new(198, 18, 0, 9);

        // AGGREGATOR is AS_TRANS: AS4_AGGREGATOR is the aggregator, AS4_PATH is merged.
        let mut extra = agg(T);
        extra.extend_from_slice(&agg4);
        extra.extend_from_slice(&p4);
        let (path, aggregator, actions, left) = decode2(&body2(&[65001, T], &extra));
        assert_eq!(aggregator, Some((4_200_000_009, id)));
        assert_eq!(path, "65001 4200000001");
        assert!(actions.is_empty() && !left);

        // AGGREGATOR names a real 2-octet AS: both AS4 attributes are ignored.
        let mut extra = agg(65009);
        extra.extend_from_slice(&agg4);
        extra.extend_from_slice(&p4);
        let (path, aggregator, _, left) = decode2(&body2(&[65001, T], &extra));
        assert_eq!(aggregator, Some((65009, id)));
        assert_eq!(path, "65001 23456");
        assert!(!left);

        // Malformed AS4_AGGREGATOR (AS 0): attribute discard, AGGREGATOR stays AS_TRANS.
        let mut extra = agg(T);
        extra.extend_from_slice(&[0xc0, attr::AS4_AGGREGATOR, 8, 0, 0, 0, 0, 198, 18, 0, 9]);
        let (_, aggregator, actions, _) = decode2(&body2(&[65001], &extra));
        assert_eq!(aggregator, Some((u32::from(T), id)));
        assert!(matches!(
            actions.as_slice(),
            [Rfc7606Action::AttributeDiscard { type_code: 18, .. }]
        ));
    }

    #[test]
    fn as4_attributes_from_four_octet_peers_are_discarded_rfc6793_6() {
        let p4 = as4_path(&[(2, &[4_200_000_001])]);
        let u = parse_update_from(&body(&p4), &ctx(), SessionKind::External).expect("no reset");
        assert_eq!(u.announced.len(), 1);
        assert_eq!(u.attrs.as_path_string(), "65001");
        assert!(u.attrs.other.is_empty());
        assert!(matches!(
            u.actions.as_slice(),
            [Rfc7606Action::AttributeDiscard { type_code: 17, .. }]
        ));
    }

    #[test]
    fn confederation_segments_from_external_peers_are_treat_as_withdraw() {
        // AS_PATH: AS_CONFED_SEQUENCE 64512, then AS_SEQUENCE 65001.
        let b = body_with(
            &[0x40, 2, 12, 3, 1, 0, 0, 0xfc, 0, 2, 1, 0, 0, 0xfd, 0xe9],
            &[],
        );
        let ext = parse_update_from(&b, &ctx(), SessionKind::External).expect("no reset");
        assert!(ext.treated_as_withdraw() && ext.announced.is_empty());
        assert_eq!(ext.withdrawn.len(), 1);
        let int = parse_update_from(&b, &ctx(), SessionKind::Internal).expect("no reset");
        assert_eq!(int.announced.len(), 1);
        assert!(int.actions.is_empty());
    }

    #[test]
    fn mp_errors_disable_the_family_or_reset() {
        // IPv6 MP_REACH with a 3-octet next hop: AFI/SAFI disable, the IPv4 NLRI still announced.
        let mp = [0x80, 14, 8, 0, 2, 1, 3, 0, 0, 0, 0];
        let u = parse_update_from(&body(&mp), &ctx(), SessionKind::External).expect("no reset");
        assert!(matches!(
            u.actions.as_slice(),
            [Rfc7606Action::AfiSafiDisable {
                family: Family::Ipv6Unicast,
                type_code: 14,
                ..
            }]
        ));
        assert_eq!(u.announced.len(), 1);
        // Too short to name a family: reset.
        let mp = [0x80, 14, 2, 0, 2];
        assert!(parse_update_from(&body(&mp), &ctx(), SessionKind::External).is_err());
        // NEXT_HOP malformed with only MP NLRI: discard (RFC 7606 §7.3).
        let mut a = vec![
            0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, 0x40, 3, 3, 1, 2, 3,
        ];
        a.extend_from_slice(&[0x80, 14, 26, 0, 2, 1, 16]);
        a.extend_from_slice(&[0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        a.extend_from_slice(&[32, 0x20, 1, 0, 2]);
        let mut b = vec![0, 0];
        b.extend_from_slice(&u16::try_from(a.len()).unwrap_or(0).to_be_bytes());
        b.extend_from_slice(&a);
        let u = parse_update_from(&b, &ctx(), SessionKind::External).expect("no reset");
        assert_eq!(u.announced.len(), 1, "{u:?}");
        assert!(matches!(
            u.actions.as_slice(),
            [Rfc7606Action::AttributeDiscard { type_code: 3, .. }]
        ));
    }

    #[test]
    fn ibgp_only_attributes_are_discarded_from_external_peers_only() {
        let lp = [0x40, attr::LOCAL_PREF, 4, 0, 0, 0, 100];
        let ext = parse_update_from(&body(&lp), &ctx(), SessionKind::External).ok();
        assert_eq!(ext.as_ref().map(|u| u.attrs.local_pref), Some(None));
        assert!(ext.is_some_and(|u| u.actions.len() == 1 && !u.treated_as_withdraw()));
        let int = parse_update_from(&body(&lp), &ctx(), SessionKind::Internal).ok();
        assert_eq!(int.map(|u| u.attrs.local_pref), Some(Some(100)));
        let unknown = parse_update(&body(&lp), &ctx()).ok();
        assert_eq!(unknown.map(|u| u.attrs.local_pref), Some(Some(100)));
        let bad_len = [0x40, attr::LOCAL_PREF, 3, 0, 0, 100];
        let ext = parse_update_from(&body(&bad_len), &ctx(), SessionKind::External).ok();
        assert!(
            ext.is_some_and(|u| u.announced.len() == 1),
            "discard, not withdraw"
        );
    }
}
