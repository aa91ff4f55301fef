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
# channel (token, 307 to the edge), and stops both; tests/browser/stage.test.mjs (the co-stream page
# /stage/{channel}: a host from /live and two guests with invites from `aethex stage invite` watch
# each other, a one-section viewer gets the mix, one guest leaves) runs on a fourth channel at the
# origin before the edge starts, and again on a fifth with the host on OBS's WebRTC stack
# (tests/peers/obs_peer.py in .venv312, H.264) beside the Chromium guests. Fails if any test
# failed.
# Needs /usr/bin/chromium, node/npm, curl and python3 (see scripts/install-test-deps.sh).
set -euo pipefail

# shellcheck source=tests/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
[[ $# -eq 1 ]] || usage "PATH/TO/aethex"
set_bin "$1"

cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
ensure_playwright

init_run browser server 80
export AETHEX_RELAY_SECRET="browser-test-cluster-secret-0123"
trap cleanup EXIT

PAIR=$(create_channel demo2)
read -r CHANNEL KEY <<<"$PAIR"
PAIR=$(create_channel simul)
read -r SC_CHANNEL SC_KEY <<<"$PAIR"
PAIR=$(create_channel vip)
read -r VIP_CHANNEL VIP_KEY <<<"$PAIR"
"$BIN" channel private vip --data-dir "$DATA" >/dev/null
VIP_TOKEN=$("$BIN" channel token vip --ttl 600 --data-dir "$DATA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
PAIR=$(create_channel stagech)
read -r ST_CHANNEL ST_KEY <<<"$PAIR"
invite_token() { # channel name; prints the token of a new stage invite
  "$BIN" stage invite "$1" --name "$2" --data-dir "$DATA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
ST_INVITE_A=$(invite_token stagech Ann)
ST_INVITE_B=$(invite_token stagech Bob)
PAIR=$(create_channel stageobs)
read -r SO_CHANNEL SO_KEY <<<"$PAIR"
SO_INVITE_A=$(invite_token stageobs Ann)
SO_INVITE_B=$(invite_token stageobs Bob)
OBS_PY="$ROOT/.venv312/bin/python"
[[ -x "$OBS_PY" ]] || { echo "run.sh: $OBS_PY missing (OBS's stack: scripts/install-test-deps.sh)" >&2; exit 1; }
if [[ -z "${CHANNEL:-}" || -z "${KEY:-}" || -z "${SC_CHANNEL:-}" || -z "${SC_KEY:-}" \
  || -z "${ST_CHANNEL:-}" || -z "${ST_KEY:-}" || -z "${ST_INVITE_A:-}" || -z "${ST_INVITE_B:-}" ]]; then
  echo "run.sh: could not create the test channels" >&2
  exit 1
fi

start_origin
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
echo "# ---- stage.test.mjs (channel $ST_CHANNEL, two invites) ----"
AETHEX_URL="$URL" AETHEX_CHANNEL="$ST_CHANNEL" AETHEX_KEY="$ST_KEY" \
  AETHEX_INVITE_A="$ST_INVITE_A" AETHEX_INVITE_B="$ST_INVITE_B" \
  timeout -k 5 160 node "$ROOT/tests/browser/stage.test.mjs"
STAGE_STATUS=$?
echo "# ---- stage.test.mjs, the host on OBS's stack (channel $SO_CHANNEL) ----"
OBS_OUT=$(mktemp)
CLEANUP_FILES+=("$OBS_OUT")
"$OBS_PY" "$ROOT/tests/peers/obs_peer.py" publish --url "$URL/whip" --token "$SO_KEY" \
  --duration 120 >"$OBS_OUT" 2>/dev/null &
OBS_PID=$!
for _ in $(seq 1 100); do grep -q '"live"' "$OBS_OUT" && break; sleep 0.1; done
AETHEX_URL="$URL" AETHEX_CHANNEL="$SO_CHANNEL" AETHEX_KEY="$SO_KEY" AETHEX_HOST=obs \
  AETHEX_INVITE_A="$SO_INVITE_A" AETHEX_INVITE_B="$SO_INVITE_B" \
  timeout -k 5 160 node "$ROOT/tests/browser/stage.test.mjs"
STAGE_OBS_STATUS=$?
stop_pid "$OBS_PID" "OBS-stack publisher"
set -e

start_edge
set +e
echo "# ---- edge.test.mjs (private channel $VIP_CHANNEL, edge $EDGE_URL) ----"
AETHEX_URL="$URL" AETHEX_EDGE_URL="$EDGE_URL" AETHEX_REGION=eu AETHEX_CHANNEL="$VIP_CHANNEL" \
  AETHEX_KEY="$VIP_KEY" AETHEX_TOKEN="$VIP_TOKEN" \
  timeout -k 5 120 node "$ROOT/tests/browser/edge.test.mjs"
EDGE_STATUS=$?
set -e
echo "# watch.test.mjs exit $WATCH_STATUS, simulcast.test.mjs exit $SIMULCAST_STATUS, player-errors.test.mjs exit $PLAYER_ERRORS_STATUS, stage.test.mjs exit $STAGE_STATUS (OBS host: $STAGE_OBS_STATUS), edge.test.mjs exit $EDGE_STATUS"
if [[ $WATCH_STATUS -eq 0 && $SIMULCAST_STATUS -eq 0 && $PLAYER_ERRORS_STATUS -eq 0 && $STAGE_STATUS -eq 0 && $STAGE_OBS_STATUS -eq 0 && $EDGE_STATUS -eq 0 ]]; then STATUS=0; else STATUS=1; fi
exit "$STATUS"
