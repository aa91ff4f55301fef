#!/usr/bin/env bash
# The interop matrix against a fresh origin and a regional edge.
#
#   bash tests/interop/run.sh target/debug/aethex [matrix.mjs options: --only ROWS --viewers COLS
#                                                   --out FILE --duration S --min-frames N]
#
# Creates one channel per publisher row (`aethex channel create`) in a temporary data dir, starts
# `aethex serve --relay-listen` (the origin) and `aethex edge --origin ... --region eu` on free
# loopback ports with a shared AETHEX_RELAY_SECRET, waits for /healthz on both, runs
# tests/interop/matrix.mjs (results in target/interop/matrix.json, peer logs in
# target/interop/logs/), stops both servers and prints their logs' tails on failure. Exits
# non-zero if any cell failed or a peer is missing. Then
# `node tests/interop/matrix.mjs --write-doc docs/interop.md` puts the table into the doc.
#
# Peers (see tests/peers/README.md): .venv (aiortc, scripts/install-test-deps.sh), .venv312
# (libdatachannel-py, OBS's stack), /usr/bin/python3 with GStreamer's gi bindings, Chromium
# (tests/browser/node_modules), and target/debug/webrtc-peer, built with
#   cargo build --manifest-path tests/peers/webrtc-rs/Cargo.toml --target-dir target
set -euo pipefail

# shellcheck source=tests/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
[[ $# -ge 1 ]] || usage "PATH/TO/aethex [matrix.mjs options]"
set_bin "$1"
shift

cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."
MATRIX=tests/interop/matrix.mjs
ensure_playwright

init_run interop origin 60
KEYS=$(mktemp -t aethex-interop-keys.XXXXXX.jsonl)
CLEANUP_FILES+=("$KEYS")
export AETHEX_RELAY_SECRET="interop-matrix-cluster-secret-42"
trap cleanup EXIT

# One channel per selected row (the matrix knows the rows; --only applies).
CHANNELS=$(timeout 20 node "$MATRIX" --list-channels "$@")
for ch in $CHANNELS; do
  "$BIN" channel create "$ch" --data-dir "$DATA" >>"$KEYS"
done
echo "# $(wc -l <"$KEYS") channels created"

start_origin
start_edge
echo "# origin pid $SERVER_PID on $URL (udp $UDP_PORT, relay $RELAY_PORT); edge pid $EDGE_PID on $EDGE_URL (udp $EDGE_UDP_PORT)"

SERVER_VERSION=$("$BIN" --version 2>/dev/null | head -n1 || true)
set +e
# matrix.mjs bounds itself (a budget per row); this is the backstop.
timeout --foreground -k 10 900 node "$MATRIX" --origin "$URL" --edge "$EDGE_URL" --keys "$KEYS" \
  --server-version "${SERVER_VERSION:-unknown}" "$@"
STATUS=$?
set -e
echo "# matrix.mjs exit $STATUS"
exit "$STATUS"
