//! Byte builders for tests: what a peer would send.
#![allow(dead_code)]

pub mod lab;

pub fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&u16::try_from(19 + body.len()).expect("len").to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

pub fn keepalive() -> Vec<u8> {
    msg(4, &[])
}

/// An OPEN from `asn` with the given hold time, router id, and raw capabilities.
pub fn open_with(my_as: u16, hold: u16, id: [u8; 4], caps: &[u8]) -> Vec<u8> {
    let mut b = vec![4];
    b.extend_from_slice(&my_as.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    if caps.is_empty() {
        b.push(0);
    } else {
        b.push(u8::try_from(caps.len() + 2).expect("caps"));
        b.push(2);
        b.push(u8::try_from(caps.len()).expect("caps"));
        b.extend_from_slice(caps);
    }
    msg(1, &b)
}

/// Capabilities: MP v4+v6 unicast, 4-octet AS `asn`, graceful restart.
pub fn full_caps(asn: u32) -> Vec<u8> {
    let mut c = vec![1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 65, 4];
    c.extend_from_slice(&asn.to_be_bytes());
    c.extend_from_slice(&[64, 2, 0, 120]);
    c
}

pub fn attr(flags: u8, t: u8, v: &[u8]) -> Vec<u8> {
    let mut a = vec![flags, t];
    if flags & 0x10 != 0 {
        a.extend_from_slice(&u16::try_from(v.len()).expect("len").to_be_bytes());
    } else {
        a.push(u8::try_from(v.len()).expect("len"));
    }
    a.extend_from_slice(v);
    a
}

pub fn as_path4(asns: &[u32]) -> Vec<u8> {
    let mut v = vec![2, u8::try_from(asns.len()).expect("n")];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    attr(0x40, 2, &v)
}

pub fn base_attrs(asns: &[u32], nh: [u8; 4]) -> Vec<u8> {
    let mut a = attr(0x40, 1, &[0]);
    a.extend(as_path4(asns));
    a.extend(attr(0x40, 3, &nh));
    a
}

/// UPDATE body from raw withdrawn bytes, raw attributes and raw NLRI bytes.
pub fn update_body(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&u16::try_from(withdrawn.len()).expect("w").to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&u16::try_from(attrs.len()).expect("a").to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    b
}

pub fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    msg(2, &update_body(withdrawn, attrs, nlri))
}

pub fn mp_reach_v6(nh: [u8; 16], nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, 16];
    v.extend_from_slice(&nh);
    v.push(0);
    v.extend_from_slice(nlri);
    attr(0x80, 14, &v)
}

pub fn mp_unreach_v6(nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1];
    v.extend_from_slice(nlri);
    attr(0x80, 15, &v)
}
