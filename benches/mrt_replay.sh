#!/usr/bin/env bash
# MRT replay throughput: `foureyes-bgp-listener replay --format jsonl` against `bgpdump -m`, both
# writing to /dev/null, on the same synthetic TABLE_DUMP_V2 file (a route collector's RIB dump:
# PREFIXES prefixes, each seen by PEERS peers; made once by the crate's `mrt_synth` example and
# reused), then on its gzip and bzip2 copies (as RIPE RIS and RouteViews publish them), with
# `zcat`/`bzcat` alone as the decompression floor, and for bzip2 our parallel block decoder alone
# (the `bz2_decode` example) on 1 and 2 threads. Prints, per input, the range (fastest–slowest)
# over RUNS runs of each command, records/s and RIB entries/s at the fastest run, and the ratio of
# bgpdump's time to ours (range: slowest ours against fastest bgpdump, and the other way round).
#
#   benches/mrt_replay.sh                 # PREFIXES=500000 PEERS=4 RUNS=3 COMPRESSED=1
#   MRT_BENCH_FILE=rib.mrt benches/mrt_replay.sh   # any uncompressed MRT file
#   COMPRESSED=0 benches/mrt_replay.sh    # the plain file only
#
# Builds release under the global build lock, and times under it too (2 shared cores: another
# engineer's build would otherwise be in the figures). Needs `bgpdump` (apt-get install bgpdump),
# `gzip`, `bzip2` and `bc`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PREFIXES=${PREFIXES:-500000}
PEERS=${PEERS:-4}
RUNS=${RUNS:-3}
COMPRESSED=${COMPRESSED:-1}
LOCK=/tmp/foureyes-build.lock
# Set FOUREYES_LOCK_HELD=1 when the caller already holds the lock (flock would wait for itself).
locked() { if [ -n "${FOUREYES_LOCK_HELD:-}" ]; then "$@"; else flock "$LOCK" "$@"; fi; }
for tool in bgpdump gzip bzip2 bc; do
  command -v $tool >/dev/null || { echo "$tool missing: apt-get install -y $tool" >&2; exit 1; }
done
cd "$ROOT"
locked cargo build --release -q -p foureyes-bgp-listener --bins --example mrt_synth \
  --example bz2_decode
BIN=$CARGO_TARGET_DIR/release/foureyes-bgp-listener
FILE=${MRT_BENCH_FILE:-$CARGO_TARGET_DIR/mrt-bench-$PREFIXES-$PEERS.mrt}
if [ ! -s "$FILE" ]; then
  "$CARGO_TARGET_DIR/release/examples/mrt_synth" "$FILE" "$PREFIXES" "$PEERS"
fi
INPUTS=("$FILE")
if [ "$COMPRESSED" = 1 ]; then
  # Compressed copies next to the file, made once (default levels, single stream).
  [ -s "$FILE.gz" ] || gzip -c "$FILE" >"$FILE.gz"
  [ -s "$FILE.bz2" ] || bzip2 -c "$FILE" >"$FILE.bz2"
  INPUTS+=("$FILE.gz" "$FILE.bz2")
fi
# Record and entry counts from the file itself.
SUMMARY=$("$BIN" replay --mrt "$FILE" --format summary)
RECORDS=$(echo "$SUMMARY" | awk '/^  [A-Z_0-9]+\// {s += $2} END {print s}')
ENTRIES=$(echo "$SUMMARY" | awk -F': ' '/^rib entries:/ {print $2}')
times() { # command...: "fastest slowest" wall seconds over RUNS runs
  local lo="" hi="" t0 t1 d i
  for ((i = 0; i < RUNS; i++)); do
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    d=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$lo" ] || [ "$(echo "$d < $lo" | bc -l)" = 1 ]; then lo=$d; fi
    if [ -z "$hi" ] || [ "$(echo "$d > $hi" | bc -l)" = 1 ]; then hi=$d; fi
  done
  echo "$lo $hi"
}
export -f times
export RUNS BIN
printf 'file %s: %d bytes, %d records, %d RIB entries\n' "$FILE" "$(stat -c %s "$FILE")" \
  "$RECORDS" "$ENTRIES"
for IN in "${INPUTS[@]}"; do
  case $IN in
    *.gz) FLOOR="zcat" ;;
    *.bz2) FLOOR="bzcat" ;;
    *) FLOOR="" ;;
  esac
  read -r O_LO O_HI B_LO B_HI F_LO F_HI < <(IN=$IN FLOOR=$FLOOR locked bash -c '
    echo "$(times "$BIN" replay --mrt "$IN" --format jsonl) $(times bgpdump -m "$IN")" \
      "$(if [ -n "$FLOOR" ]; then times $FLOOR "$IN"; else echo "0 0"; fi)"')
  echo
  printf 'input %s (%d bytes), %d runs each:\n' "$IN" "$(stat -c %s "$IN")" "$RUNS"
  printf '  replay --format jsonl: %.2f-%.2f s, %.0f records/s, %.0f entries/s\n' "$O_LO" "$O_HI" \
    "$(echo "$RECORDS / $O_LO" | bc -l)" "$(echo "$ENTRIES / $O_LO" | bc -l)"
  printf '  bgpdump -m:            %.2f-%.2f s, %.0f records/s, %.0f entries/s\n' "$B_LO" "$B_HI" \
    "$(echo "$RECORDS / $B_LO" | bc -l)" "$(echo "$ENTRIES / $B_LO" | bc -l)"
  if [ -n "$FLOOR" ]; then
    printf '  %s alone (decompression floor): %.2f-%.2f s\n' "$FLOOR" "$F_LO" "$F_HI"
  fi
  printf '  ratio (bgpdump time / replay time): %.1f-%.1fx (target 20x)\n' \
    "$(echo "$B_LO / $O_HI" | bc -l)" "$(echo "$B_HI / $O_LO" | bc -l)"
done
if [ "$COMPRESSED" = 1 ]; then
  read -r D1_LO D1_HI D2_LO D2_HI < <(IN=$FILE.bz2 locked bash -c '
    echo "$(times "$(dirname "$BIN")/examples/bz2_decode" "$IN" 1)" \
      "$(times "$(dirname "$BIN")/examples/bz2_decode" "$IN" 2)"')
  echo
  printf 'bzip2 decoding alone (bz2_decode, output discarded): 1 thread %.2f-%.2f s, 2 threads %.2f-%.2f s\n' \
    "$D1_LO" "$D1_HI" "$D2_LO" "$D2_HI"
fi
