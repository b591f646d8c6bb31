#!/usr/bin/env python3
"""Rebuilds the committed seed corpora in fuzz/seeds/<target>/ from the MRT fixtures in
bgp-listener/tests/data/mrt (real BIRD and GoBGP output), so that short CI fuzz runs start from
inputs that reach deep into each decoder instead of from nothing. Run from the repository root:
python3 fuzz/seeds/make_seeds.py"""
import bz2
import gzip
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MRT = os.path.join(ROOT, "bgp-listener", "tests", "data", "mrt")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def records(data):
    off = 0
    while off + 12 <= len(data):
        _ts, typ, sub, ln = struct.unpack_from(">IHHI", data, off)
        yield typ, sub, data[off + 12 : off + 12 + ln]
        off += 12 + ln


def bgp_messages(data):
    """Full BGP messages (marker included) of BGP4MP MESSAGE / MESSAGE_AS4 records."""
    for typ, sub, body in records(data):
        if typ not in (16, 17) or sub not in (1, 4):
            continue
        asl = 4 if sub == 4 else 2
        afi = struct.unpack_from(">H", body, 2 * asl + 2)[0]
        ipl = 4 if afi == 1 else 16
        yield body[2 * asl + 4 + 2 * ipl :]


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    with open(os.path.join(MRT, "gobgp-updates.mrt"), "rb") as f:
        upd_mrt = f.read()
    updates = [m for m in bgp_messages(upd_mrt) if len(m) >= 19 and m[18] == 2]
    # A few distinct UPDATEs: first ones, one with MP_REACH/MP_UNREACH if present, the largest.
    picked = []
    for m in updates[:3] + sorted(updates, key=len)[-2:]:
        if m not in picked:
            picked.append(m)
    for i, m in enumerate(picked):
        write("bgp_update", f"gobgp-{i}", m[19:])
    write("bgp_update", "eor-ipv4", b"\0\0\0\0")
    # bgp_session: first byte odd = 4-octet AS (as GoBGP's session was), then the messages.
    stream = b"".join(updates[:20]) + bytes.fromhex("ff" * 16 + "0017" + "02" + "00000000")
    write("bgp_session", "gobgp-updates", b"\x01" + stream)
    write("bgp_session", "keepalive-notification", b"\x00" + bytes.fromhex("ff" * 16 + "001304") + bytes.fromhex("ff" * 16 + "0015030600"))
    # bmp: first byte = chunk size; Route Monitoring for the preamble's peer, then Peer Down.
    hdr = bytes(2) + bytes(8) + bytes(12) + bytes([198, 18, 0, 1]) + struct.pack(">I", 65001) + bytes([198, 18, 0, 1]) + bytes(8)
    post = bytes([0, 0x40]) + hdr[2:]

    def bmp(kind, body):
        return struct.pack(">BIB", 3, 6 + len(body), kind) + body

    rm = b"".join(bmp(0, hdr + m) for m in updates[:6]) + b"".join(bmp(0, post + m) for m in updates[:2])
    stats = bmp(1, hdr + struct.pack(">IHHI", 1, 0, 4, 7))
    write("bmp", "route-monitoring", b"\xff" + rm + stats + bmp(2, hdr + b"\x02\x00\x02"))
    write("bmp", "termination", b"\x07" + bmp(5, struct.pack(">HH", 1, 2) + b"\x00\x01"))
    # mrt: the small real dumps as they are, gzip'd and bzip2'd.
    with open(os.path.join(MRT, "bird-rib6.mrt"), "rb") as f:
        rib6 = f.read()
    write("mrt", "bird-rib6.mrt", rib6)
    write("mrt", "gobgp-updates.mrt", upd_mrt)
    write("mrt", "bird-rib6.mrt.gz", gzip.compress(rib6, mtime=0))
    write("mrt", "bird-rib6.mrt.bz2", bz2.compress(rib6))


if __name__ == "__main__":
    main()
