#!/usr/bin/env bash
# Issue 5's benchmark end to end: route event → provisional correlation and → alert (SSE stream
# and webhook) under a background load of node results, against a real `foureyes-collector serve`
# process, with the load sent by `foureyes-loadgen` (collector/loadgen) from its own process over
# the real agent link (enrolled identities, signed batches, mTLS gRPC). Prints the offered and
# committed rates, both processes' CPU, and p50/p99/max of each latency, RUNS times.
#
#   benches/ingest_load.sh                       # RATE=100000 EVENTS=100 RUNS=2
#   PERF=/tmp/collector.perf benches/ingest_load.sh   # also profile the collector (perf record -g)
#
# Builds release under the global build lock, and runs under it too (2 shared cores: another
# engineer's build would otherwise be in the figures).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RATE=${RATE:-100000}
EVENTS=${EVENTS:-100}
RUNS=${RUNS:-2}
LOCK=/tmp/foureyes-build.lock
# Set FOUREYES_LOCK_HELD=1 when the caller already holds the lock (flock would wait for itself).
locked() { if [ -n "${FOUREYES_LOCK_HELD:-}" ]; then "$@"; else flock "$LOCK" "$@"; fi; }
cd "$ROOT"
locked cargo build --release -q -p foureyes-collector -p foureyes-loadgen
for run in $(seq 1 "$RUNS"); do
  echo "== run $run of $RUNS"
  args=(--collector "$CARGO_TARGET_DIR/release/foureyes-collector" --rate "$RATE" --events "$EVENTS")
  if [ -n "${PERF:-}" ]; then
    command -v perf >/dev/null || { echo "perf missing: apt-get install -y linux-perf" >&2; exit 1; }
    args+=(--perf "$PERF.$run")
  fi
  locked "$CARGO_TARGET_DIR/release/foureyes-loadgen" "${args[@]}"
done
