#!/usr/bin/env bash
# Run from the repo root after `cargo build --bin aethex` and scripts/install-test-deps.sh
# (the aiortc venv). Uses fixed loopback ports 18430-18462.
# Routing and failure figures of regional edges (docs/benchmarks.md, "Edges: routing and
# failure"):
#   1. what a 307 from the origin to an edge adds to a viewer's start (redirected vs direct);
#   2. how long a killed (SIGKILL) edge stays in routing;
#   3. how long an edge's viewer freezes when the origin is killed and restarted (and the
#      creator publishes again), and whether it stays connected;
#   4. the origin's egress to the edge as the edge's viewers grow (one copy per edge).
set -euo pipefail
BIN=${BIN:-target/debug/aethex}
PY=.venv/bin/python
RUNS=${RUNS:-5}
SECTIONS=${SECTIONS:-1 2 3 4}   # which measurements to run
KEEP=${KEEP:-}                # set: keep the logs (their directories are printed)
export AETHEX_RELAY_SECRET=measure-secret-0123456789
export AETHEX_LOG=info,str0m=warn
D=$(mktemp -d); E=$(mktemp -d); U=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; if [[ -n $KEEP ]]; then echo "logs: $D $E $U"; else rm -rf "$D" "$E" "$U"; fi' EXIT
KEY=$($BIN channel create show --data-dir $D | python3 -c 'import json,sys; print(json.load(sys.stdin)["stream_key"])')
origin() {
  $BIN serve --data-dir $D --http-listen 127.0.0.1:18430 --udp-port 18431 --advertise-ip 127.0.0.1 --relay-listen 127.0.0.1:18432 >> $D/out.log 2>&1 &
  O=$!; PIDS+=($O)
  for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:18430/healthz && return; sleep 0.05; done
}
publish() { # seconds
  $PY tests/peers/aiortc_peer.py publish --url http://127.0.0.1:18430/whip --token $KEY --codec vp8 --duration $1 --width 320 --height 240 --keyint 60 > /dev/null 2>&1 &
  P=$!; PIDS+=($P)
}
field() { python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(*[d.get(k) for k in sys.argv[1:]])" "$@"; }
probe() { # url -> HTTP status of a placeholder WHEP POST, redirects not followed
  curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/sdp' --data $'v=0\r\n' "$1"
}

origin
$BIN edge --origin 127.0.0.1:18432 --region eu --data-dir $E --http-listen 127.0.0.1:18440 --udp-port 18441 --advertise-ip 127.0.0.1 > $E/out.log 2>&1 &
G=$!; PIDS+=($G)
sleep 1.5
publish 600
sleep 3

[[ " $SECTIONS " == *" 1 "* ]] && echo "== 1. redirect cost (first frame from the first POST, warm edge)"
[[ " $SECTIONS " == *" 1 "* ]] && for i in $(seq 1 $RUNS); do
  r=$($PY tests/peers/aiortc_peer.py view --url "http://127.0.0.1:18430/whep/show?region=eu" --duration 1.5 --min-video-frames 1 2>/dev/null | field redirect_ms first_frame_ms)
  d=$($PY tests/peers/aiortc_peer.py view --url "http://127.0.0.1:18440/whep/show" --duration 1.5 --min-video-frames 1 2>/dev/null | field first_frame_ms)
  echo "via origin 307: redirect_ms first_frame_ms = $r   direct at the edge: first_frame_ms = $d"
done

[[ " $SECTIONS " == *" 2 "* ]] && echo "== 2. a killed edge leaves routing (edge TTL 6 s, load every 2 s, QUIC idle timeout 3 s)"
[[ " $SECTIONS " == *" 2 "* ]] && for i in $(seq 1 $RUNS); do
  $BIN edge --origin 127.0.0.1:18432 --region us --data-dir $U --http-listen 127.0.0.1:18450 --udp-port 18451 --advertise-ip 127.0.0.1 > $U/out.log 2>&1 &
  X=$!
  for _ in $(seq 1 100); do [[ $(probe "http://127.0.0.1:18430/whep/show?region=us") == 307 ]] && break; sleep 0.05; done
  sleep $(python3 -c "import random; print(round(random.uniform(0, 2), 2))")  # at a random point of the 2 s report cycle
  kill -KILL $X; wait $X 2>/dev/null || true
  t0=$(date +%s%N)
  for _ in $(seq 1 400); do [[ $(probe "http://127.0.0.1:18430/whep/show?region=us") != 307 ]] && break; sleep 0.025; done
  echo "killed edge out of routing after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done

[[ " $SECTIONS " == *" 3 "* ]] && echo "== 3. origin killed and restarted under an edge viewer"
[[ " $SECTIONS " == *" 3 "* ]] && for i in $(seq 1 $RUNS); do
  $PY tests/peers/aiortc_peer.py view --url http://127.0.0.1:18440/whep/show --duration 14 --min-video-frames 1 > $E/view.json 2>/dev/null &
  V=$!
  sleep 4
  kill -KILL $O $P 2>/dev/null || true; wait $O $P 2>/dev/null || true
  t0=$(date +%s%N)
  origin
  publish 600
  echo "origin back (healthy) after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  wait $V || true
  echo "edge viewer: ok video_frames max_video_gap_ms = $(field ok video_frames max_video_gap_ms < $E/view.json)"
done
echo "edge log: $(grep -c 'relay connected' $E/out.log) relay connections, $(grep -c 'relay connection failed' $E/out.log) failed attempts"

if [[ " $SECTIONS " == *" 4 "* ]]; then
  echo "== 4. origin egress to one edge while the edge's viewers grow (5 s windows)"
  sent() { curl -s http://127.0.0.1:18430/metrics | awk '/^aethex_relay_edge_sent_bytes_total\{edge="eu-18440"\}/ {print $2}'; }
  VIEWERS=()
  for n in 1 3 6; do
    while [[ ${#VIEWERS[@]} -lt $n ]]; do
      $PY tests/peers/aiortc_peer.py view --url http://127.0.0.1:18440/whep/show --duration 40 --min-video-frames 1 > /dev/null 2>&1 &
      VIEWERS+=($!); PIDS+=($!)
    done
    sleep 4
    a=$(sent); sleep 5; b=$(sent)
    python3 -c "import sys; a,b,n=float(sys.argv[1]),float(sys.argv[2]),int(sys.argv[3]); r=(b-a)*8/5/1000; print(f'{n} viewers at the edge: origin -> edge {r:.0f} kbit/s, {r/n:.0f} kbit/s per viewer')" "$a" "$b" "$n"
  done
  kill "${VIEWERS[@]}" 2>/dev/null || true
fi
