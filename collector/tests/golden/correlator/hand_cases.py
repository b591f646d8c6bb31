#!/usr/bin/env python3
"""Writes the hand-made golden inputs (session-down, flap, long-flap, origin-change).

Recorded cases come from the routed end-to-end test (FOUREYES_RECORD=FILE); these three describe
shapes that test does not produce, on the same timeline: a listener session comes up at 14:00:01,
announces 198.19.94.0/24 (targets a = .1 and b = .2) with End-of-RIB at 14:00:02, nodes probe
both targets every 500 ms, and the change under test happens at 14:00:30. Deterministic: run it
again and the files do not change. Then `FOUREYES_BLESS=1 cargo test -p foureyes-collector --lib
golden` and review the expected files.
"""

import json
import os
from datetime import datetime, timedelta, timezone

T0 = datetime(2026, 12, 1, 14, 0, 0, tzinfo=timezone.utc)
LISTENER = "l-golden0000000000000000000000001"
PEER = {"address": "198.19.84.1", "asn": 65001, "bmpRouter": "", "peerDistinguisher": "0",
        "source": "ROUTE_SOURCE_SESSION"}
PREFIX = "198.19.94.0/24"
TESTS = {"a": ("t-golden00000000a", "198.19.94.1"), "b": ("t-golden00000000b", "198.19.94.2")}
END = 50.0


def ts(sec):
    t = T0 + timedelta(seconds=sec)
    return t.isoformat(timespec="milliseconds")


def attrs(*asns):
    return {"aggregatorAddress": "", "aggregatorAs": 0, "asPath": [{"asns": list(asns), "type": 2}],
            "atomicAggregate": False, "communities": [], "extendedCommunities": [],
            "largeCommunities": [], "nextHop": "198.19.84.1", "origin": "BGP_ORIGIN_IGP",
            "originAs": asns[-1], "otherAttributeTypes": []}


class Case:
    def __init__(self, end=END):
        self.end = end
        self.lines = []
        self.event_seq = 0
        self.result_seq = {}
        for name, (tid, host) in TESTS.items():
            self.lines.append((-1.0, {"test": {
                "agentIds": [], "config": {"icmp": {"family": "IP_FAMILY_ANY", "host": host,
                                                    "payloadSize": 0, "spacingMs": 0}},
                "count": 1, "id": tid, "intervalMs": 500, "name": name, "team": "",
                "timeoutMs": 400}}))

    def event(self, sec, kind, **extra):
        self.event_seq += 1
        ev = {"afiSafi": "AFI_SAFI_IPV4_UNICAST", "agentId": LISTENER, "changed": [],
              "observedAt": ts(sec - 0.1), "peer": PEER, "prefix": "", "prefixCount": "0",
              "reason": "", "receivedAt": ts(sec), "routesLost": "0", "routesStale": "0",
              "seq": str(self.event_seq), "type": "ROUTE_EVENT_TYPE_" + kind}
        ev.update(extra)
        self.lines.append((sec, {"routeEvent": ev}))

    def session(self, sec):
        self.event(sec, "SESSION_UP", afiSafi="AFI_SAFI_UNSPECIFIED",
                   session={"addPath": [], "families": ["AFI_SAFI_IPV4_UNICAST"],
                            "fourOctetAs": True, "gracefulRestart": False, "holdTime": 90,
                            "peerRouterId": "198.19.84.1"})
        self.event(sec + 1, "ANNOUNCE", prefix=PREFIX, attributes=attrs(65001, 65010))
        self.event(sec + 1, "END_OF_RIB")

    def results(self, node, state):
        """`state(sec, test) -> latency ms, or None for unreachable`, every 500 ms."""
        i = 0
        while i * 0.5 <= self.end:
            sec = i * 0.5
            for name, (tid, _) in TESTS.items():
                at = sec + (0.11 if name == "a" else 0.13) + (0.02 if node.endswith("2") else 0)
                lat = state(sec, name)
                seq = self.result_seq.get(node, 0) + 1
                self.result_seq[node] = seq
                r = {"agentId": node, "latencyMs": 0.0, "loss": 1.0, "receivedAt": ts(at),
                     "sentAt": ts(at - 0.1), "seq": str(seq), "status": "STATUS_UNREACHABLE",
                     "testId": tid, "error": "network unreachable"}
                if lat is not None:
                    # A little deterministic jitter, as real runs have.
                    r.update(latencyMs=round(lat + ((i * 37) % 11) / 100.0, 3), loss=0.0,
                             status="STATUS_OK", error="")
                self.lines.append((at, {"result": r}))
            i += 1

    def write(self, name):
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, name + ".input.jsonl"), "w") as f:
            for _, line in sorted(self.lines, key=lambda x: x[0]):
                f.write(json.dumps(line, separators=(",", ":"), sort_keys=True) + "\n")


def session_down():
    # The session is lost at :30 (hold timer) and both targets go dark with it: one incident for
    # both tests, found through the announcement that routed them, unreachable. The session comes
    # back at :40 and re-announces during its initial transfer: not correlated.
    c = Case()
    c.session(1.0)
    c.event(30.0, "SESSION_DOWN", afiSafi="AFI_SAFI_UNSPECIFIED", routesLost="1",
            reason="hold timer expired")
    c.session(40.0)
    c.results("n-golden00000000000000000000000n1",
              lambda s, t: None if 30.0 <= s < 41.5 else 1.0)
    c.write("session-down")


def flap():
    # Withdraw and re-announce a second apart (within incident_gap): one incident with both
    # events; the targets are back before the after-window, so no effect.
    c = Case()
    c.session(1.0)
    c.event(30.0, "WITHDRAW", prefix=PREFIX, previous=attrs(65001, 65010))
    c.event(31.0, "ANNOUNCE", prefix=PREFIX, attributes=attrs(65001, 65010))
    c.results("n-golden00000000000000000000000n1",
              lambda s, t: None if 30.0 <= s < 31.5 else 1.0)
    c.write("flap")


def long_flap():
    # The /24 flaps every second from :30 to :79, longer than max_incident (20 s in the golden
    # config): the incident is closed at 20 s and the next event opens another, three in all
    # (:30-:49, :50-:69, :70-:79), each with a verdict. The target is unreachable while the
    # prefix is withdrawn; after :80 it stays up.
    c = Case(end=100.0)
    c.session(1.0)
    for k in range(50):
        sec = 30.0 + k
        if k % 2 == 0:
            c.event(sec, "WITHDRAW", prefix=PREFIX, previous=attrs(65001, 65010))
        else:
            c.event(sec, "ANNOUNCE", prefix=PREFIX, attributes=attrs(65001, 65010))
    c.results("n-golden00000000000000000000000n1",
              lambda s, t: None if 30.0 <= s < 80.0 and int(s) % 2 == 0 else 1.0)
    c.write("long-flap")


def origin_change():
    # The /24's origin changes from AS65010 to AS65666 (a possible hijack). One node's path now
    # goes the long way (1 ms → 41 ms: degraded); the other's does not (no effect). The tests'
    # verdict is the worst of their agents.
    c = Case()
    c.session(1.0)
    c.event(30.0, "ATTRIBUTE_CHANGE", prefix=PREFIX, attributes=attrs(65001, 65666),
            previous=attrs(65001, 65010), changed=["as_path"])
    c.results("n-golden00000000000000000000000n1", lambda s, t: 41.0 if s >= 30.0 else 1.0)
    c.results("n-golden00000000000000000000000n2", lambda s, t: 2.0)
    c.write("origin-change")


if __name__ == "__main__":
    session_down()
    flap()
    long_flap()
    origin_change()
