#!/usr/bin/env bash
# Headless Chromium end-to-end test against a freshly started aethex server.
#
#   bash tests/browser/run.sh target/debug/aethex
#
# Creates two channels in a temporary data dir, starts `aethex serve` on free loopback ports, runs
# tests/browser/watch.test.mjs (go-live page publishes, watch page plays) on the first and
# tests/browser/simulcast.test.mjs (3-layer simulcast publisher, unconstrained, bandwidth-capped and
# pinned viewers) on the second, tests/browser/player-errors.test.mjs (the player's handling of
# refused offers, unusable answers, offline and network errors; WHEP answered by the test), then
# starts a regional edge (region eu) and runs tests/browser/edge.test.mjs on a third, private
# channel (token, 307 to the edge), and stops both. Fails if any test failed.
# Needs /usr/bin/chromium, node/npm, curl and python3 (see scripts/install-test-deps.sh).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 PATH/TO/aethex" >&2
  exit 2
fi
BIN=$(realpath -- "$1")
if [[ ! -x "$BIN" ]]; then
  echo "run.sh: $BIN is not an executable" >&2
  exit 2
fi

cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)

if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  (cd tests/browser && npm ci --silent --no-audit --no-fund)
fi

DATA=$(mktemp -d -t aethex-browser-data.XXXXXX)
EDGE_DATA=$(mktemp -d -t aethex-browser-edge.XXXXXX)
LOG=$(mktemp -t aethex-browser-server.XXXXXX.log)
EDGE_LOG=$(mktemp -t aethex-browser-edge.XXXXXX.log)
SERVER_PID=""
EDGE_PID=""
STATUS=1
export AETHEX_RELAY_SECRET="browser-test-cluster-secret-0123"

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
  stop_pid "$SERVER_PID" server
  if [[ $rc -ne 0 ]]; then
    for f in "$LOG" "$EDGE_LOG"; do
      [[ -s "$f" ]] || continue
      echo "# ---- log (last 80 lines of $f) ----"
      tail -n 80 "$f" | sed 's/^/# /'
    done
  fi
  rm -f "$LOG" "$EDGE_LOG"
  rm -rf "$DATA" "$EDGE_DATA"
  exit "$rc"
}
trap cleanup EXIT

free_port() { # $1 = tcp|udp
  python3 -c 'import socket,sys
t = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, t); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' "$1"
}

create_channel() { # $1 = name; prints "channel stream_key"
  local created pair
  created=$("$BIN" channel create "$1" --data-dir "$DATA")
  pair=$(printf '%s' "$created" | python3 -c 'import json,sys
d = json.load(sys.stdin); print(d["channel"], d["stream_key"])') || pair=""
  if [[ -z "$pair" || "$pair" != *" "* ]]; then
    echo "run.sh: could not parse channel/stream_key from: $created" >&2
    return 1
  fi
  printf '%s\n' "$pair"
}

PAIR=$(create_channel demo2)
read -r CHANNEL KEY <<<"$PAIR"
PAIR=$(create_channel simul)
read -r SC_CHANNEL SC_KEY <<<"$PAIR"
PAIR=$(create_channel vip)
read -r VIP_CHANNEL VIP_KEY <<<"$PAIR"
"$BIN" channel private vip --data-dir "$DATA" >/dev/null
VIP_TOKEN=$("$BIN" channel token vip --ttl 600 --data-dir "$DATA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
if [[ -z "${CHANNEL:-}" || -z "${KEY:-}" || -z "${SC_CHANNEL:-}" || -z "${SC_KEY:-}" ]]; then
  echo "run.sh: could not create the test channels" >&2
  exit 1
fi

HTTP_PORT=$(free_port tcp)
UDP_PORT=$(free_port udp)
RELAY_PORT=$(free_port udp)
URL="http://127.0.0.1:$HTTP_PORT"

"$BIN" serve --data-dir "$DATA" --http-listen "127.0.0.1:$HTTP_PORT" --udp-port "$UDP_PORT" \
  --advertise-ip 127.0.0.1 --relay-listen "127.0.0.1:$RELAY_PORT" >"$LOG" 2>&1 &
SERVER_PID=$!

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
wait_healthy "$SERVER_PID" "$URL" server
echo "# server pid $SERVER_PID on $URL (udp $UDP_PORT), channels $CHANNEL and $SC_CHANNEL"

set +e
echo "# ---- watch.test.mjs (channel $CHANNEL) ----"
AETHEX_URL="$URL" AETHEX_CHANNEL="$CHANNEL" AETHEX_KEY="$KEY" \
  timeout -k 5 120 node "$ROOT/tests/browser/watch.test.mjs"
WATCH_STATUS=$?
echo "# ---- simulcast.test.mjs (channel $SC_CHANNEL) ----"
AETHEX_URL="$URL" AETHEX_CHANNEL="$SC_CHANNEL" AETHEX_KEY="$SC_KEY" \
  timeout -k 5 150 node "$ROOT/tests/browser/simulcast.test.mjs"
SIMULCAST_STATUS=$?
echo "# ---- player-errors.test.mjs ----"
AETHEX_URL="$URL" AETHEX_CHANNEL="$CHANNEL" \
  timeout -k 5 120 node "$ROOT/tests/browser/player-errors.test.mjs"
PLAYER_ERRORS_STATUS=$?
set -e

EDGE_HTTP_PORT=$(free_port tcp)
EDGE_UDP_PORT=$(free_port udp)
EDGE_URL="http://127.0.0.1:$EDGE_HTTP_PORT"
"$BIN" edge --origin "127.0.0.1:$RELAY_PORT" --region eu --data-dir "$EDGE_DATA" \
  --http-listen "127.0.0.1:$EDGE_HTTP_PORT" --udp-port "$EDGE_UDP_PORT" --advertise-ip 127.0.0.1 \
  >"$EDGE_LOG" 2>&1 &
EDGE_PID=$!
wait_healthy "$EDGE_PID" "$EDGE_URL" edge
set +e
echo "# ---- edge.test.mjs (private channel $VIP_CHANNEL, edge $EDGE_URL) ----"
AETHEX_URL="$URL" AETHEX_EDGE_URL="$EDGE_URL" AETHEX_REGION=eu AETHEX_CHANNEL="$VIP_CHANNEL" \
  AETHEX_KEY="$VIP_KEY" AETHEX_TOKEN="$VIP_TOKEN" \
  timeout -k 5 120 node "$ROOT/tests/browser/edge.test.mjs"
EDGE_STATUS=$?
set -e
echo "# watch.test.mjs exit $WATCH_STATUS, simulcast.test.mjs exit $SIMULCAST_STATUS, player-errors.test.mjs exit $PLAYER_ERRORS_STATUS, edge.test.mjs exit $EDGE_STATUS"
if [[ $WATCH_STATUS -eq 0 && $SIMULCAST_STATUS -eq 0 && $PLAYER_ERRORS_STATUS -eq 0 && $EDGE_STATUS -eq 0 ]]; then STATUS=0; else STATUS=1; fi
exit "$STATUS"
