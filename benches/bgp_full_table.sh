#!/usr/bin/env bash
# Full-table benchmark for the BGP listener (issue 4). Not a test: it prints figures.
#
# Pre-encodes a synthetic full IPv4 table once (bgp-listener/examples/fulltable.rs `gen`: ~1M
# prefixes, 2-5 per UPDATE sharing an attribute set, ~100k attribute sets, AS paths of 2-9 hops,
# communities on half, then End-of-RIB), then, in the same run, feeds the same bytes over a veth
# pair between two network namespaces (`fulltable send`: OPEN exchange, then the UPDATEs as fast
# as TCP allows) to:
#   (a) a BIRD 2 receiver: time from Established (the sender's clock) until `birdc show route
#       count` reports every prefix, polled every 10 ms (plus a birdc round trip: the row prints
#       the gap between the last two polls, BIRD's finish lies in it); peak RSS = VmHWM of bird;
#   (b) foureyes-bgp-listener watch --exit-on-eor, with --format summary (no per-route output)
#       and with --format jsonl, each written to a file: its final line gives the seconds from
#       Established to End-of-RIB and the prefixes held, which must be PREFIXES (else the run
#       fails); peak RSS from /usr/bin/time -v;
#   (c) `fulltable sink`, which only frames messages until End-of-RIB (the floor).
#
# Needs root, iproute2, bird2 (bird, birdc), bc and /usr/bin/time (package `time`). Builds and
# measures under the global build lock (/tmp/foureyes-build.lock).
# Usage: benches/bgp_full_table.sh [ROUNDS]   (env: PREFIXES=1000000; EXTRAS=1 also runs the decode
# microbenchmark and benches/mrt_replay.sh afterwards, which the issue's figures need too)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-1}
PREFIXES=${PREFIXES:-1000000}
EXTRAS=${EXTRAS:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/foureyes-target-bench}

for t in ip bird birdc /usr/bin/time flock; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y iproute2 bird2 time util-linux)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

echo "== building release (under the build lock)"
# Set FOUREYES_LOCK_HELD=1 when the caller already holds the lock (`cargo xtask bench` does).
locked() { if [ -n "${FOUREYES_LOCK_HELD:-}" ]; then "$@"; else flock /tmp/foureyes-build.lock "$@"; fi; }
(cd "$ROOT" && locked cargo build --release -q -p foureyes-bgp-listener --bins --example fulltable)
# The measurement starts routers: hold the global lock for it too (machine rule), which also keeps
# parallel builds from skewing the timings.
if [ -z "${FOUREYES_LOCK_HELD:-}" ]; then
    exec 9>/tmp/foureyes-build.lock
    flock 9
fi
BIN=$CARGO_TARGET_DIR/release/foureyes-bgp-listener
FT=$CARGO_TARGET_DIR/release/examples/fulltable

WORK=$(mktemp -d)
ID=$$
NS_S=session-bench-s$ID
NS_R=session-bench-r$ID
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    ip netns del "$NS_S" 2>/dev/null || true
    ip netns del "$NS_R" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$FT" gen --out "$WORK/table.bgp" --prefixes "$PREFIXES"

ip netns add "$NS_S"
ip netns add "$NS_R"
ip link add "sb${ID}s" netns "$NS_S" type veth peer name "sb${ID}r" netns "$NS_R"
ip -n "$NS_S" addr add 198.18.0.1/24 dev "sb${ID}s"
ip -n "$NS_R" addr add 198.18.0.2/24 dev "sb${ID}r"
for ns in "$NS_S" "$NS_R"; do ip -n "$ns" link set lo up; done
ip -n "$NS_S" link set "sb${ID}s" up
ip -n "$NS_R" link set "sb${ID}r" up

now() { date +%s.%N; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
time_rss_kb() { awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$1"; }

start_sender() {
    ip netns exec "$NS_S" "$FT" send --file "$WORK/table.bgp" --connect 198.18.0.2:179 --linger 30 \
        >"$WORK/send.out" 2>"$WORK/send.err" &
    SENDER=$!
    PIDS+=("$SENDER")
}

stop_sender() {
    kill "$SENDER" 2>/dev/null || true
    wait "$SENDER" 2>/dev/null || true
}

established_at() {
    for _ in $(seq 1 600); do
        grep -q '^established' "$WORK/send.out" 2>/dev/null && break
        sleep 0.05
    done
    awk '/^established/ {print $2}' "$WORK/send.out"
}

run_sink() {
    ip netns exec "$NS_R" /usr/bin/time -v "$FT" sink --listen 198.18.0.2:179 \
        >"$WORK/sink.out" 2>"$WORK/sink.time" &
    local p=$!
    PIDS+=("$p")
    sleep 0.3
    start_sender
    wait "$p"
    stop_sender
    SINK_S=$(sed -n 's/.* \([0-9.]*\) s from Established.*/\1/p' "$WORK/sink.out")
    SINK_KB=$(time_rss_kb "$WORK/sink.time")
}

run_bird() {
    cat >"$WORK/bird.conf" <<CONF
router id 198.18.0.2;
protocol device { }
protocol bgp feeder {
    local 198.18.0.2 as 65002;
    neighbor 198.18.0.1 as 65001;
    passive on;
    hold time 240;
    ipv4 { import all; export none; };
}
CONF
    ip netns exec "$NS_R" bird -f -c "$WORK/bird.conf" -s "$WORK/bird.ctl" &
    local p=$!
    PIDS+=("$p")
    sleep 0.5
    start_sender
    local est
    est=$(established_at)
    local done_at="" prev_at
    prev_at=$(now)
    for _ in $(seq 1 12000); do
        local n t
        n=$(ip netns exec "$NS_R" birdc -s "$WORK/bird.ctl" show route count 2>/dev/null \
            | awk '/in table master4/ {print $1}')
        t=$(now)
        if [ -n "$n" ] && [ "$n" -ge "$PREFIXES" ]; then done_at=$t; break; fi
        prev_at=$t
        sleep 0.01
    done
    [ -n "$done_at" ] || { echo "BIRD never held all $PREFIXES prefixes" >&2; exit 1; }
    BIRD_S=$(echo "$done_at - $est" | bc -l)
    # BIRD finished between the last two polls: its time is BIRD_S minus up to this much.
    BIRD_RES_MS=$(echo "scale=0; ($done_at - $prev_at) * 1000 / 1" | bc -l)
    BIRD_KB=$(hwm_kb "$p")
    stop_sender
    kill "$p"; wait "$p" 2>/dev/null || true
}

# $1: summary|jsonl
run_watch() {
    # Output goes to a file, as `watch ... > file` would (1M JSON lines are ~0.4 GB; deleted
    # after each run); its line count is checked below.
    (ip netns exec "$NS_R" /usr/bin/time -v "$BIN" watch --local-as 65002 --peer 198.18.0.1 \
        --remote-as 65001 --listen 198.18.0.2 --hold-time 240 --format "$1" --exit-on-eor \
        2>"$WORK/watch.err" >"$WORK/watch.out") &
    local p=$!
    PIDS+=("$p")
    sleep 0.3
    start_sender
    wait "$p"
    stop_sender
    local last
    last=$(tail -n 1 "$WORK/watch.out")
    if [ "$1" = jsonl ]; then
        local n
        n=$(grep -c '"type":"announce"' "$WORK/watch.out" || true)
        [ "$n" = "$PREFIXES" ] || { echo "watch jsonl printed $n announce lines, not $PREFIXES" >&2; exit 1; }
    fi
    rm -f "$WORK/watch.out"
    local held
    if [ "$1" = jsonl ]; then
        WATCH_S=$(echo "$last" | sed -n 's/.*"seconds_established_to_last_eor":\([0-9.e-]*\).*/\1/p')
        held=$(echo "$last" | sed -n 's/.*"ipv4-unicast":\([0-9]*\).*/\1/p')
    else
        WATCH_S=$(echo "$last" | sed -n 's/.*; \([0-9.]*\) s from Established.*/\1/p')
        held=$(echo "$last" | sed -n 's/.*prefixes ipv4-unicast \([0-9]*\).*/\1/p')
    fi
    # The time only counts if the listener then held the whole table, as BIRD's does.
    [ "$held" = "$PREFIXES" ] || { echo "watch $1 held ${held:-?} prefixes at the end, not $PREFIXES: $last" >&2; exit 1; }
    WATCH_KB=$(time_rss_kb "$WORK/watch.err")
    [ -n "$WATCH_S" ] || { echo "watch gave no final line: $last" >&2; tail -n 20 "$WORK/watch.err" >&2; exit 1; }
    echo "   watch $1: $last"
}

command -v bc >/dev/null || { echo "missing bc (apt-get install -y bc)" >&2; exit 1; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
mb() { echo "scale=1; $1 / 1024" | bc -l; }

for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r ($PREFIXES prefixes, $(stat -c %s "$WORK/table.bgp") bytes)"
    run_sink
    run_bird
    run_watch summary
    WS_S=$WATCH_S; WS_KB=$WATCH_KB
    run_watch jsonl
    WJ_S=$WATCH_S; WJ_KB=$WATCH_KB
    printf '%-36s %10s %12s %12s %12s\n' receiver seconds "peak RSS MB" "time/BIRD" "RSS/BIRD"
    printf '%-36s %10.3f %12s %12s %12s\n' "BIRD 2 ($(bird --version 2>&1 | awk '{print $3}'))" "$BIRD_S" "$(mb "$BIRD_KB")" 1.00 1.00
    echo "   (BIRD's finish lies within the last ${BIRD_RES_MS} ms of its time: poll interval + birdc)"
    printf '%-36s %10.3f %12s %12s %12s\n' "foureyes watch --format summary" "$WS_S" "$(mb "$WS_KB")" "$(ratio "$WS_S" "$BIRD_S")" "$(ratio "$WS_KB" "$BIRD_KB")"
    printf '%-36s %10.3f %12s %12s %12s\n' "foureyes watch --format jsonl >file" "$WJ_S" "$(mb "$WJ_KB")" "$(ratio "$WJ_S" "$BIRD_S")" "$(ratio "$WJ_KB" "$BIRD_KB")"
    printf '%-36s %10.3f %12s %12s %12s\n' "null sink (framing only)" "$SINK_S" "$(mb "$SINK_KB")" "$(ratio "$SINK_S" "$BIRD_S")" "$(ratio "$SINK_KB" "$BIRD_KB")"
    echo "targets: foureyes time <= 0.5x BIRD (the summary row: holding every prefix, like BIRD; jsonl also writes every route), peak RSS <= 0.7x BIRD"
done

# The issue's other two figures come from their own benchmarks (they need no namespaces).
DECODE_CMD="cargo bench -p foureyes-bgp-listener --bench decode"
MRT_CMD="benches/mrt_replay.sh"
if [ "$EXTRAS" = 1 ]; then
    flock -u 9
    exec 9>&-
    echo "== decode throughput: $DECODE_CMD"
    (cd "$ROOT" && flock /tmp/foureyes-build.lock $DECODE_CMD)
    echo "== MRT replay against bgpdump -m: $MRT_CMD"
    "$ROOT/$MRT_CMD"
else
    echo "decode throughput (target >= 3M prefixes/s/core): cd $ROOT && flock /tmp/foureyes-build.lock $DECODE_CMD"
    echo "MRT replay rate against bgpdump -m (target >= 20x): $ROOT/$MRT_CMD"
    echo "(or run this script with EXTRAS=1)"
fi
