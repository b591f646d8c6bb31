#!/usr/bin/env bash
# The web dashboard's weight and speed: the wasm + JS bundle size (raw and gzip -9, per file and in
# total, printed by `cargo xtask web`) and the time to first meaningful paint in headless Chromium
# against a local collector (the overview of an org with 20 tests and their results drawn; a cold
# first load, then the median of warm reloads). Targets: <= 1.5 MB gzip, <= 1 s.
#
#   benches/web_bundle.sh
#
# Needs chromium and chromium-driver (apt-get install -y chromium chromium-driver). Builds and
# times under the global build lock (2 shared cores: another engineer's build would otherwise be
# in the figures); set FOUREYES_LOCK_HELD=1 when the caller already holds it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/foureyes-target}
LOCK=/tmp/foureyes-build.lock
locked() { if [ -n "${FOUREYES_LOCK_HELD:-}" ]; then "$@"; else flock "$LOCK" "$@"; fi; }
command -v chromedriver >/dev/null || { echo "chromedriver missing: apt-get install -y chromium-driver" >&2; exit 1; }
cd "$ROOT"
echo "== bundle (the collector serves the gzip sizes to browsers that accept gzip)"
locked cargo xtask web
locked cargo build -q --bins -p foureyes-collector -p foureyes-node
echo "== first meaningful paint"
locked cargo test -q -p foureyes-collector --test web_ui -- --ignored --nocapture bench_first_paint 2>&1 \
  | grep -E "first meaningful|cold cache|warm cache|target"
