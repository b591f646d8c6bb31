#!/usr/bin/env bash
# MRT replay throughput: `foureyes-bgp-listener replay --format jsonl` against `bgpdump -m`, both
# writing to /dev/null, on the same synthetic TABLE_DUMP_V2 file (a route collector's RIB dump:
# PREFIXES prefixes, each seen by PEERS peers; made once by the crate's `mrt_synth` example and
# reused). Prints records/s and RIB entries/s of each, and the ratio (best of RUNS runs each).
#
#   benches/mrt_replay.sh                 # PREFIXES=500000 PEERS=4 RUNS=3
#   MRT_BENCH_FILE=rib.mrt benches/mrt_replay.sh   # any MRT file (records are counted by replay)
#
# Builds release under the global build lock, and times under it too (2 shared cores: another
# engineer's build would otherwise be in the figures). Needs `bgpdump` (apt-get install bgpdump).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PREFIXES=${PREFIXES:-500000}
PEERS=${PEERS:-4}
RUNS=${RUNS:-3}
LOCK=/tmp/foureyes-build.lock
# Set FOUREYES_LOCK_HELD=1 when the caller already holds the lock (flock would wait for itself).
locked() { if [ -n "${FOUREYES_LOCK_HELD:-}" ]; then "$@"; else flock "$LOCK" "$@"; fi; }
command -v bgpdump >/dev/null || { echo "bgpdump missing: apt-get install -y bgpdump" >&2; exit 1; }
cd "$ROOT"
locked cargo build --release -q -p foureyes-bgp-listener --bins --example mrt_synth
BIN=$CARGO_TARGET_DIR/release/foureyes-bgp-listener
FILE=${MRT_BENCH_FILE:-$CARGO_TARGET_DIR/mrt-bench-$PREFIXES-$PEERS.mrt}
if [ ! -s "$FILE" ]; then
  "$CARGO_TARGET_DIR/release/examples/mrt_synth" "$FILE" "$PREFIXES" "$PEERS"
fi
# Record and entry counts from the file itself.
SUMMARY=$("$BIN" replay --mrt "$FILE" --format summary)
RECORDS=$(echo "$SUMMARY" | awk '/^  [A-Z_0-9]+\// {s += $2} END {print s}')
ENTRIES=$(echo "$SUMMARY" | awk -F': ' '/^rib entries:/ {print $2}')
best() { # command...: best wall time in seconds over RUNS runs
  local b="" t0 t1 d i
  for ((i = 0; i < RUNS; i++)); do
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    d=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$b" ] || [ "$(echo "$d < $b" | bc -l)" = 1 ]; then b=$d; fi
  done
  echo "$b"
}
export -f best
export RUNS BIN FILE
read -r T_OURS T_BGPDUMP < <(locked bash -c '
  echo "$(best "$BIN" replay --mrt "$FILE" --format jsonl) $(best bgpdump -m "$FILE")"')
SIZE=$(stat -c %s "$FILE")
printf 'file %s: %d bytes, %d records, %d RIB entries\n' "$FILE" "$SIZE" "$RECORDS" "$ENTRIES"
printf 'replay --format jsonl: %.2f s, %.0f records/s, %.0f entries/s\n' "$T_OURS" \
  "$(echo "$RECORDS / $T_OURS" | bc -l)" "$(echo "$ENTRIES / $T_OURS" | bc -l)"
printf 'bgpdump -m:            %.2f s, %.0f records/s, %.0f entries/s\n' "$T_BGPDUMP" \
  "$(echo "$RECORDS / $T_BGPDUMP" | bc -l)" "$(echo "$ENTRIES / $T_BGPDUMP" | bc -l)"
printf 'ratio (bgpdump time / replay time): %.2fx (target 20x)\n' "$(echo "$T_BGPDUMP / $T_OURS" | bc -l)"
