#!/usr/bin/env bash
# Makes real MRT files in two network namespaces joined by a veth pair:
#   BIRD 2 (AS 65001) originates static routes with varied attributes (AS paths, communities, MED,
#   local preference, origin), dumps its tables as TABLE_DUMP_V2 (`protocol mrt`, plain and
#   ADD-PATH), and announces them over eBGP (IPv4 and IPv6 sessions) to
#   GoBGP (AS 65002), which dumps every UPDATE it receives as BGP4MP (`[[mrt-dump]] updates`) and
#   its RIB as TABLE_DUMP_V2 (`[[mrt-dump]] table`).
# After the initial transfer BIRD is reconfigured: one group of routes is withdrawn, one group
# changes attributes, new routes appear; then both sessions are shut down (state changes).
#
# usage: make_dumps.sh OUTDIR NAME N4 N6     (needs root, bird2, gobgpd, iproute2)
# Writes OUTDIR/{bird-rib4.mrt,bird-rib6.mrt,bird-rib4-ap.mrt,gobgp-updates.mrt,gobgp-table.mrt}.
# Namespaces are "${NAME}b" and "${NAME}g"; everything is removed on exit.
set -euo pipefail
OUT=$(realpath "$1"); NAME=$2; N4=${3:-2000}; N6=${4:-500}
NSB="${NAME}b"; NSG="${NAME}g"
# GoBGP treats its dump file names as Go time layouts ("1".."5", "pm", "Jan", ... are replaced),
# so the work directory's name must hold none of those: letters q..z only.
WORK=/tmp/femrt-$(echo "$NAME$$" | tr '0-9' 'q-z' | tr -dc 'q-z')
mkdir -p "$WORK"
cleanup() {
  [ -f "$WORK/gobgpd.pid" ] && kill "$(cat "$WORK/gobgpd.pid")" 2>/dev/null || true
  [ -f "$WORK/bird.pid" ] && kill "$(cat "$WORK/bird.pid")" 2>/dev/null || true
  sleep 0.5
  ip netns del "$NSB" 2>/dev/null || true
  ip netns del "$NSG" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"
ip netns add "$NSB"; ip netns add "$NSG"
ip link add "${NAME}x" netns "$NSB" type veth peer name "${NAME}y" netns "$NSG"
ip -n "$NSB" link set lo up; ip -n "$NSG" link set lo up
ip -n "$NSB" addr add 198.18.0.1/24 dev "${NAME}x"; ip -n "$NSB" addr add fd00:6396::1/64 dev "${NAME}x" nodad
ip -n "$NSG" addr add 198.18.0.2/24 dev "${NAME}y"; ip -n "$NSG" addr add fd00:6396::2/64 dev "${NAME}y" nodad
ip -n "$NSB" link set "${NAME}x" up; ip -n "$NSG" link set "${NAME}y" up

# Static routes in eight groups; each group gets its own attributes in the import filter.
routes() { # phase: 1 = initial, 2 = after the change
  local phase=$1 g i
  for g in 0 1 2 3 4 5 6 7; do
    echo "protocol static s4g$g { ipv4 { import filter grp$g; }; "
    for ((i = g; i < N4; i += 8)); do
      # phase 2: group 7 is withdrawn, and N4/8 new routes appear in group 0
      if [ "$phase" = 2 ] && [ $g = 7 ]; then continue; fi
      echo "  route 100.$((64 + i / 65536)).$(((i / 256) % 256)).$((i % 256))/32 blackhole;"
    done
    if [ "$phase" = 2 ] && [ $g = 0 ]; then
      for ((i = 0; i < N4 / 8; i++)); do echo "  route 100.127.$((i / 256)).$((i % 256))/32 blackhole;"; done
    fi
    echo "}"
    echo "protocol static s6g$g { ipv6 { import filter grp$g; }; "
    for ((i = g; i < N6; i += 8)); do
      if [ "$phase" = 2 ] && [ $g = 7 ]; then continue; fi
      printf '  route 2001:db8:%x:%x::/64 blackhole;\n' $((i / 65536)) $((i % 65536))
    done
    echo "}"
  done
}
filters() { # phase 2 changes group 1's attributes
  local phase=$1
  cat <<F
filter grp0 { bgp_origin = ORIGIN_IGP; bgp_path.prepend(64600); bgp_community.add((65001,100)); accept; }
filter grp1 { bgp_origin = ORIGIN_IGP; bgp_path.prepend(4200000001); bgp_path.prepend(64601); bgp_med = $([ "$phase" = 2 ] && echo 77 || echo 10); bgp_community.add((65001,$([ "$phase" = 2 ] && echo 201 || echo 200))); accept; }
filter grp2 { bgp_origin = ORIGIN_EGP; bgp_path.prepend(64602); bgp_path.prepend(64602); bgp_path.prepend(64603); accept; }
filter grp3 { bgp_origin = ORIGIN_INCOMPLETE; bgp_local_pref = 250; bgp_med = 5; accept; }
filter grp4 { bgp_origin = ORIGIN_IGP; bgp_path.prepend(65535); bgp_community.add((65001,1)); bgp_community.add((65001,2)); bgp_community.add((64999,65535)); accept; }
filter grp5 { bgp_origin = ORIGIN_IGP; bgp_path.prepend(64605); bgp_large_community.add((65001,5,5)); accept; }
filter grp6 { bgp_origin = ORIGIN_IGP; bgp_path.prepend(64606); bgp_path.prepend(4200000006); bgp_local_pref = 90; bgp_med = 600; accept; }
filter grp7 { bgp_origin = ORIGIN_IGP; bgp_path.prepend(64607); accept; }
F
}
bird_conf() {
  local phase=$1
  cat <<C
router id 198.18.0.1;
log "$WORK/bird.log" all;
protocol device {}
$(filters "$phase")
$(routes "$phase")
protocol bgp g4 { local 198.18.0.1 as 65001; neighbor 198.18.0.2 as 65002; ipv4 { import none; export all; }; }
protocol bgp g6 { local fd00:6396::1 as 65001; neighbor fd00:6396::2 as 65002; ipv6 { import none; export all; }; }
C
}
bird_conf 1 > "$WORK/bird.conf"
cat > "$WORK/gobgpd.toml" <<G
[global.config]
  as = 65002
  router-id = "198.18.0.2"
  local-address-list = ["198.18.0.2", "fd00:6396::2"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.0.1"
    peer-as = 65001
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "fd00:6396::1"
    peer-as = 65001
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
[[mrt-dump]]
  [mrt-dump.config]
    dump-type = "updates"
    file-name = "$WORK/gobgp-updates.mrt"
[[mrt-dump]]
  [mrt-dump.config]
    dump-type = "table"
    file-name = "$WORK/gobgp-table-150405.mrt"
    dump-interval = 2
G
ip netns exec "$NSG" gobgpd -f "$WORK/gobgpd.toml" --api-hosts 127.0.0.1:50051 -l warn >"$WORK/gobgpd.log" 2>&1 &
echo $! > "$WORK/gobgpd.pid"
ip netns exec "$NSB" bird -c "$WORK/bird.conf" -s "$WORK/bird.ctl" -P "$WORK/bird.pid"
gob() { ip netns exec "$NSG" gobgp -u 127.0.0.1 -p 50051 "$@"; }
wait_count() { # family expected
  local fam=$1 want=$2 n=0 t
  for ((t = 0; t < 600; t++)); do
    n=$(gob global rib -a "$fam" summary 2>/dev/null | awk '/Destination/ {print $2}' | tr -d ',' || true)
    n=${n:-0}
    [ "$n" = "$want" ] && return 0
    sleep 0.5
  done
  echo "timed out waiting for $want $fam routes in GoBGP (have $n)" >&2
  cat "$WORK/gobgpd.log" "$WORK/bird.log" >&2 || true
  exit 1
}
wait_count ipv4 "$N4"
wait_count ipv6 "$N6"
# BIRD's TABLE_DUMP_V2 dumps of the initial tables (one plain, one ADD-PATH for IPv4).
cat >> "$WORK/bird.conf" <<M
protocol mrt m4 { table "master4"; filename "$WORK/bird-rib4-%s.mrt"; period 1; }
protocol mrt m6 { table "master6"; filename "$WORK/bird-rib6-%s.mrt"; period 1; }
protocol mrt m4ap { table "master4"; filename "$WORK/bird-rib4-ap-%s.mrt"; period 1; always add path on; }
M
birdc -s "$WORK/bird.ctl" configure >/dev/null
settle() { # waits until a dump file matching $1 exists and has stopped growing
  local f="" t s1 s2
  for ((t = 0; t < 300; t++)); do
    f=$(ls -1 $1 2>/dev/null | head -1 || true)
    if [ -n "$f" ]; then
      s1=$(stat -c %s "$f"); sleep 0.5; s2=$(stat -c %s "$f")
      if [ "$s1" = "$s2" ] && [ "$s1" -gt 0 ]; then echo "$f"; return 0; fi
    else
      sleep 0.2
    fi
  done
  echo "no dump $1" >&2; exit 1
}
sleep 1.5
cp "$(settle "$WORK/bird-rib4-[0-9]*.mrt")" "$OUT/bird-rib4.mrt"
cp "$(settle "$WORK/bird-rib6-[0-9]*.mrt")" "$OUT/bird-rib6.mrt"
cp "$(settle "$WORK/bird-rib4-ap-[0-9]*.mrt")" "$OUT/bird-rib4-ap.mrt"
# GoBGP writes a table dump every 2 s; take the largest finished one.
for ((t = 0; t < 100; t++)); do
  sleep 0.5
  big=$(ls -1S "$WORK"/gobgp-table-*.mrt 2>/dev/null | head -1 || true)
  [ -n "$big" ] && [ "$(stat -c %s "$big")" -gt 0 ] && break
done
sleep 2.5
cp "$(ls -1S "$WORK"/gobgp-table-*.mrt | head -1)" "$OUT/gobgp-table.mrt"
# Phase 2: withdraw group 7, change group 1's attributes, add routes to group 0.
bird_conf 2 > "$WORK/bird.conf"
birdc -s "$WORK/bird.ctl" configure >/dev/null
G7_4=$(( (N4 - 7 + 7) / 8 )); G7_6=$(( (N6 - 7 + 7) / 8 ))
wait_count ipv4 $(( N4 - G7_4 + N4 / 8 ))
wait_count ipv6 $(( N6 - G7_6 ))
sleep 1
# Shut both sessions down so that the dump holds state changes too, then stop GoBGP.
birdc -s "$WORK/bird.ctl" disable g4 >/dev/null
birdc -s "$WORK/bird.ctl" disable g6 >/dev/null
sleep 2
for ((t = 0; t < 100; t++)); do [ -s "$WORK/gobgp-updates.mrt" ] && break; sleep 0.2; done
kill "$(cat "$WORK/gobgpd.pid")"; sleep 1
cp "$WORK/gobgp-updates.mrt" "$OUT/gobgp-updates.mrt"
ls -l "$OUT"
