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

if [[ $# -lt 1 ]]; then
  echo "usage: $0 PATH/TO/aethex [matrix.mjs options]" >&2
  exit 2
fi
BIN=$(realpath -- "$1")
shift
if [[ ! -x "$BIN" ]]; then
  echo "run.sh: $BIN is not an executable" >&2
  exit 2
fi

cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."
MATRIX=tests/interop/matrix.mjs

if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  (cd tests/browser && npm ci --silent --no-audit --no-fund)
fi

DATA=$(mktemp -d -t aethex-interop-data.XXXXXX)
EDGE_DATA=$(mktemp -d -t aethex-interop-edge.XXXXXX)
KEYS=$(mktemp -t aethex-interop-keys.XXXXXX.jsonl)
LOG=$(mktemp -t aethex-interop-origin.XXXXXX.log)
EDGE_LOG=$(mktemp -t aethex-interop-edge.XXXXXX.log)
SERVER_PID=""
EDGE_PID=""
STATUS=1
export AETHEX_RELAY_SECRET="interop-matrix-cluster-secret-42"

stop_pid() { # pid name
  local pid=$1 i
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "# $2 (pid $pid) did not exit within 5 s of SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  [[ $STATUS -ne 0 ]] || rc=0
  stop_pid "$EDGE_PID" edge
  stop_pid "$SERVER_PID" origin
  if [[ $rc -ne 0 ]]; then
    for f in "$LOG" "$EDGE_LOG"; do
      [[ -s "$f" ]] || continue
      echo "# ---- log (last 60 lines of $f) ----"
      tail -n 60 "$f" | sed 's/^/# /'
    done
  fi
  rm -f "$LOG" "$EDGE_LOG" "$KEYS"
  rm -rf "$DATA" "$EDGE_DATA"
  exit "$rc"
}
trap cleanup EXIT

free_port() { # $1 = tcp|udp
  python3 -c 'import socket,sys
t = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, t); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' "$1"
}

wait_healthy() { # pid url name
  local i code
  for ((i = 0; i < 100; i++)); do # 100 x 0.2 s = 20 s
    if ! kill -0 "$1" 2>/dev/null; then
      echo "run.sh: $3 exited before becoming healthy" >&2
      return 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$2/healthz" || true)
    if [[ "$code" == 200 ]]; then return 0; fi
    sleep 0.2
  done
  echo "run.sh: $2/healthz ($3) did not answer 200 within 20 s" >&2
  return 1
}

# One channel per selected row (the matrix knows the rows; --only applies).
CHANNELS=$(timeout 20 node "$MATRIX" --list-channels "$@")
for ch in $CHANNELS; do
  "$BIN" channel create "$ch" --data-dir "$DATA" >>"$KEYS"
done
echo "# $(wc -l <"$KEYS") channels created"

HTTP_PORT=$(free_port tcp)
UDP_PORT=$(free_port udp)
RELAY_PORT=$(free_port udp)
URL="http://127.0.0.1:$HTTP_PORT"
"$BIN" serve --data-dir "$DATA" --http-listen "127.0.0.1:$HTTP_PORT" --udp-port "$UDP_PORT" \
  --advertise-ip 127.0.0.1 --relay-listen "127.0.0.1:$RELAY_PORT" >"$LOG" 2>&1 &
SERVER_PID=$!
wait_healthy "$SERVER_PID" "$URL" origin

EDGE_HTTP_PORT=$(free_port tcp)
EDGE_UDP_PORT=$(free_port udp)
EDGE_URL="http://127.0.0.1:$EDGE_HTTP_PORT"
"$BIN" edge --origin "127.0.0.1:$RELAY_PORT" --region eu --data-dir "$EDGE_DATA" \
  --http-listen "127.0.0.1:$EDGE_HTTP_PORT" --udp-port "$EDGE_UDP_PORT" --advertise-ip 127.0.0.1 \
  >"$EDGE_LOG" 2>&1 &
EDGE_PID=$!
wait_healthy "$EDGE_PID" "$EDGE_URL" edge
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
