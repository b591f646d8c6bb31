//! Every BGP code point the listener uses, in one place, each with the IANA registry it comes from
//! (<https://www.iana.org/assignments/bgp-parameters>, `capability-codes`, `address-family-numbers`,
//! `safi-namespace`).

/// BGP Message Types (registry "BGP Message Types", RFC 4271, RFC 2918).
pub mod msg {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Header sizes (RFC 4271 §4.1). Extended Messages (RFC 8654) is not advertised, so 4096 is the cap.
pub const MARKER_LEN: usize = 16;
pub const HEADER_LEN: usize = 19;
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The bound once both sides advertised the Extended Message capability (RFC 8654); OPEN and
/// KEEPALIVE stay within `MAX_MESSAGE_LEN` even then.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
pub const BGP_VERSION: u8 = 4;
/// AS_TRANS (RFC 6793), sent in the 2-octet My AS field when the local AS does not fit.
pub const AS_TRANS: u16 = 23456;

/// OPEN optional parameter types (registry "BGP OPEN Optional Parameter Types").
pub mod open_param {
    pub const CAPABILITIES: u8 = 2;
}

/// Capability codes (registry "Capability Codes").
pub mod cap {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const LONG_LIVED_GR: u8 = 71;
}

/// Address Family Numbers (registry "Address Family Numbers").
pub mod afi {
    pub const IPV4: u16 = 1;
    pub const IPV6: u16 = 2;
}

/// SAFI values (registry "Subsequent Address Family Identifiers").
pub mod safi {
    pub const UNICAST: u8 = 1;
}

/// Path attribute types (registry "BGP Path Attributes").
pub mod attr {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const TUNNEL_ENCAPSULATION: u8 = 23;
    pub const LARGE_COMMUNITIES: u8 = 32;

    /// Attribute flag bits (RFC 4271 §4.3).
    pub const FLAG_OPTIONAL: u8 = 0x80;
    pub const FLAG_TRANSITIVE: u8 = 0x40;
    pub const FLAG_PARTIAL: u8 = 0x20;
    pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;
}

/// AS_PATH segment types (RFC 4271, RFC 5065).
pub mod as_path {
    pub const AS_SET: u8 = 1;
    pub const AS_SEQUENCE: u8 = 2;
    pub const AS_CONFED_SEQUENCE: u8 = 3;
    pub const AS_CONFED_SET: u8 = 4;
}

/// NOTIFICATION error codes and subcodes (registry "BGP Error (Notification) Codes" and the
/// per-code subcode registries; RFC 4271, RFC 4486, RFC 6608).
pub mod notif {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const HDR_CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const HDR_BAD_MESSAGE_LENGTH: u8 = 2;
    pub const HDR_BAD_MESSAGE_TYPE: u8 = 3;

    pub const OPEN_MESSAGE: u8 = 2;
    pub const OPEN_UNSPECIFIC: u8 = 0;
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    pub const OPEN_BAD_BGP_IDENTIFIER: u8 = 3;
    pub const OPEN_UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;

    pub const UPDATE_MESSAGE: u8 = 3;
    pub const UPD_MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UPD_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const UPD_OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const UPD_INVALID_NETWORK_FIELD: u8 = 10;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;

    pub const FSM_ERROR: u8 = 5;
    pub const FSM_UNSPECIFIC: u8 = 0;
    pub const FSM_UNEXPECTED_IN_OPENSENT: u8 = 1;
    pub const FSM_UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    pub const FSM_UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    pub const CEASE: u8 = 6;
    pub const CEASE_MAX_PREFIXES: u8 = 1;
    pub const CEASE_ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    pub const CEASE_CONNECTION_COLLISION: u8 = 7;
}

/// BMP code points (registry "BGP Monitoring Protocol (BMP) Parameters", RFC 7854, RFC 8671,
/// RFC 9069).
pub mod bmp {
    pub const VERSION: u8 = 3;
    /// Common header: version (1), message length (4), message type (1).
    pub const COMMON_HEADER_LEN: usize = 6;
    /// Per-peer header: type, flags, distinguisher, address, AS, BGP ID, timestamp (s, µs).
    pub const PER_PEER_HEADER_LEN: usize = 42;

    /// Message types.
    pub const ROUTE_MONITORING: u8 = 0;
    pub const STATISTICS_REPORT: u8 = 1;
    pub const PEER_DOWN: u8 = 2;
    pub const PEER_UP: u8 = 3;
    pub const INITIATION: u8 = 4;
    pub const TERMINATION: u8 = 5;
    pub const ROUTE_MIRRORING: u8 = 6;

    /// Peer types.
    pub const PEER_GLOBAL: u8 = 0;
    pub const PEER_RD: u8 = 1;
    pub const PEER_LOCAL: u8 = 2;
    pub const PEER_LOC_RIB: u8 = 3;

    /// Peer flags (RFC 7854 §4.2, RFC 8671 §4).
    pub const FLAG_V: u8 = 0x80;
    pub const FLAG_L: u8 = 0x40;
    pub const FLAG_A: u8 = 0x20;
    pub const FLAG_O: u8 = 0x10;

    /// Initiation and Termination information TLV types.
    pub const INFO_STRING: u16 = 0;
    pub const INFO_SYS_DESCR: u16 = 1;
    pub const INFO_SYS_NAME: u16 = 2;
    pub const TERM_REASON: u16 = 1;

    /// Peer Down reasons (RFC 7854 §4.9, RFC 9069 §5.5).
    pub const DOWN_LOCAL_NOTIFICATION: u8 = 1;
    pub const DOWN_LOCAL_NO_NOTIFICATION: u8 = 2;
    pub const DOWN_REMOTE_NOTIFICATION: u8 = 3;
    pub const DOWN_REMOTE_NO_NOTIFICATION: u8 = 4;
    pub const DOWN_PEER_DECONFIGURED: u8 = 5;
    pub const DOWN_LOCAL_TLV: u8 = 6;

    /// Statistics types with a per-AFI/SAFI key (RFC 7854 §4.8, RFC 8671 §5).
    pub const STAT_PER_AFI_SAFI: [u16; 4] = [9, 10, 16, 17];
}

/// MRT record types and subtypes (registry "Multi-Threaded Routing Toolkit (MRT)", RFC 6396,
/// RFC 8050 for the ADD-PATH subtypes).
pub mod mrt {
    pub const TABLE_DUMP: u16 = 12;
    pub const TABLE_DUMP_V2: u16 = 13;
    pub const BGP4MP: u16 = 16;
    /// BGP4MP with a microsecond timestamp field after the header (RFC 6396 §3).
    pub const BGP4MP_ET: u16 = 17;

    /// TABLE_DUMP_V2 subtypes.
    pub const PEER_INDEX_TABLE: u16 = 1;
    pub const RIB_IPV4_UNICAST: u16 = 2;
    pub const RIB_IPV4_MULTICAST: u16 = 3;
    pub const RIB_IPV6_UNICAST: u16 = 4;
    pub const RIB_IPV6_MULTICAST: u16 = 5;
    pub const RIB_GENERIC: u16 = 6;
    pub const GEO_PEER_TABLE: u16 = 7;
    pub const RIB_IPV4_UNICAST_ADDPATH: u16 = 8;
    pub const RIB_IPV4_MULTICAST_ADDPATH: u16 = 9;
    pub const RIB_IPV6_UNICAST_ADDPATH: u16 = 10;
    pub const RIB_IPV6_MULTICAST_ADDPATH: u16 = 11;
    pub const RIB_GENERIC_ADDPATH: u16 = 12;

    /// BGP4MP / BGP4MP_ET subtypes.
    pub const STATE_CHANGE: u16 = 0;
    pub const MESSAGE: u16 = 1;
    pub const ENTRY: u16 = 2;
    pub const SNAPSHOT: u16 = 3;
    pub const MESSAGE_AS4: u16 = 4;
    pub const STATE_CHANGE_AS4: u16 = 5;
    pub const MESSAGE_LOCAL: u16 = 6;
    pub const MESSAGE_AS4_LOCAL: u16 = 7;
    pub const MESSAGE_ADDPATH: u16 = 8;
    pub const MESSAGE_AS4_ADDPATH: u16 = 9;
    pub const MESSAGE_LOCAL_ADDPATH: u16 = 10;
    pub const MESSAGE_AS4_LOCAL_ADDPATH: u16 = 11;

    /// TABLE_DUMP (v1) subtypes are the AFI.
    pub const TABLE_DUMP_AFI_IPV4: u16 = 1;
    pub const TABLE_DUMP_AFI_IPV6: u16 = 2;

    /// BGP FSM states in STATE_CHANGE records (RFC 6396 §4.4.1).
    pub const STATE_ESTABLISHED: u16 = 6;
}
