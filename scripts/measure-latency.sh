#!/usr/bin/env bash
# Stream start time and glass-to-glass delay through a real aethex node, measured with an
# independent WebRTC peer (aiortc). Prints one JSON line per viewer and a summary with medians.
#
#   bash scripts/measure-latency.sh target/release/aethex [VIEWERS=10] [CODEC=vp8]
#   env: WAIT=S seconds between the publisher going live and the first viewer (default 2);
#        DEAF=1 makes the publisher ignore keyframe requests (viewers then start from the
#        SFU's keyframe cache; the publisher sends a keyframe only at its start).
#
# Method: one aiortc publisher (640x360, 30 fps, wallclock barcode in every frame) goes live;
# then VIEWERS aiortc viewers join one after another, each for 4 s. Per viewer:
#   start  = time from just before the WHEP POST to the first decoded video frame;
#   g2g    = decode wallclock - the barcode stamp drawn when the frame was produced (same clock).
# Also runs the aiortc publisher->viewer direct connection (no server) as the floor.
set -euo pipefail
BIN=$(realpath -- "${1:?usage: $0 PATH/TO/aethex [VIEWERS] [CODEC]}")
VIEWERS=${2:-10}
CODEC=${3:-vp8}
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
[[ -x $PY ]] || { echo "missing .venv: run scripts/install-test-deps.sh" >&2; exit 1; }

DATA=$(mktemp -d)
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DATA"' EXIT
KEY=$("$BIN" channel create m --data-dir "$DATA" | $PY -c 'import json,sys; print(json.load(sys.stdin)["stream_key"])')
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve --data-dir "$DATA" --http-listen 127.0.0.1:$PORT --udp-port 0 --advertise-ip 127.0.0.1 >"$OUT/server.out" 2>"$OUT/server.log" &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

DURATION=$(( VIEWERS * 5 + 10 ))
$PY tests/peers/aiortc_peer.py publish --url "http://127.0.0.1:$PORT/whip" --token "$KEY" --codec "$CODEC" \
  --duration "$DURATION" --keyint 100000 $([[ ${DEAF:-0} == 1 ]] && echo --ignore-pli) >"$OUT/publisher.jsonl" &
for _ in $(seq 100); do grep -q '"live"' "$OUT/publisher.jsonl" 2>/dev/null && break; sleep 0.1; done
sleep "${WAIT:-2}"
for i in $(seq "$VIEWERS"); do
  $PY tests/peers/aiortc_peer.py view --url "http://127.0.0.1:$PORT/whep/m" --duration 4 --min-video-frames 30 \
    | tee -a "$OUT/viewers.jsonl"
  sleep 0.5
done
$PY tests/peers/aiortc_peer.py selftest --codec "$CODEC" --duration 4 >"$OUT/direct.jsonl"

$PY - "$OUT" <<'PY'
import json, statistics, sys, os
out = sys.argv[1]
v = [json.loads(l) for l in open(os.path.join(out, "viewers.jsonl")) if l.strip()]
d = [json.loads(l) for l in open(os.path.join(out, "direct.jsonl")) if l.strip() and '"video_frames"' in l]
ok = [x for x in v if x.get("ok")]
med = lambda xs: round(statistics.median(xs), 1) if xs else None
summary = {
    "viewers": len(v), "ok": len(ok),
    "start_ms_median": med([x["first_frame_ms"] for x in ok]),
    "start_ms_max": max((x["first_frame_ms"] for x in ok), default=None),
    "g2g_p50_ms_median": med([x["g2g_ms_p50"] for x in ok if x.get("g2g_ms_p50") is not None]),
    "g2g_p95_ms_median": med([x["g2g_ms_p95"] for x in ok if x.get("g2g_ms_p95") is not None]),
    "direct_g2g_p50_ms": med([x["g2g_ms_p50"] for x in d if x.get("g2g_ms_p50") is not None]),
    "direct_start_ms": med([x["first_frame_ms"] for x in d if x.get("first_frame_ms") is not None]),
}
print(json.dumps({"summary": summary}))
PY
