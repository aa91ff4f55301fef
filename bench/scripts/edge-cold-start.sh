#!/usr/bin/env bash
# Run from the repo root after `cargo build --bin aethex` and scripts/install-test-deps.sh
# (the aiortc venv). Uses fixed loopback ports 18400-18421.
# Cold-edge first-frame measurement: origin + edge (grace 300 ms), aiortc VP8 publisher at the
# origin, 5 viewers at the edge, each after the edge has let go of the channel.
set -euo pipefail
BIN=${BIN:-target/debug/aethex}
PY=.venv/bin/python
export AETHEX_RELAY_SECRET=measure-secret-0123456789
export AETHEX_LOG=info,str0m=warn
D=$(mktemp -d); E=$(mktemp -d)
KEY=$($BIN channel create show --data-dir $D | python3 -c 'import json,sys; print(json.load(sys.stdin)["stream_key"])')
printf '[relay]\ngrace_ms = 300\n' > $E/edge.toml
$BIN serve --data-dir $D --http-listen 127.0.0.1:18400 --udp-port 18401 --advertise-ip 127.0.0.1 --relay-listen 127.0.0.1:18402 > $D/out.log 2>&1 &
O=$!
sleep 1.5
$BIN edge --config $E/edge.toml --origin 127.0.0.1:18402 --region eu --data-dir $E --http-listen 127.0.0.1:18410 --udp-port 18411 --advertise-ip 127.0.0.1 > $E/out.log 2>&1 &
G=$!
sleep 1.5
$PY tests/peers/aiortc_peer.py publish --url http://127.0.0.1:18400/whip --token $KEY --codec vp8 --duration ${SECS:-60} --width 320 --height 240 --keyint 60 > $D/pub.json 2>/dev/null &
P=$!
sleep 3
for i in 1 2 3 4 5; do
  $PY tests/peers/aiortc_peer.py view --url http://127.0.0.1:18410/whep/show --duration 2 --min-video-frames 1 2>/dev/null | tail -1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print("cold edge viewer", d.get("first_frame_ms"), "ok", d.get("ok"))'
  sleep 1.5   # > grace: the edge unsubscribes, the next viewer finds it cold
done
for i in 1 2 3; do
  $PY tests/peers/aiortc_peer.py view --url http://127.0.0.1:18400/whep/show --duration 2 --min-video-frames 1 2>/dev/null | tail -1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print("origin viewer", d.get("first_frame_ms"), "ok", d.get("ok"))'
done
echo "edge went live (cold starts): $(grep -c "relayed stream live" $E/out.log)"; echo "edge stream offline/unsubscribed: $(grep -c "stream offline\|session closed" $E/out.log)"
kill $P $G $O 2>/dev/null || true
wait 2>/dev/null || true

rm -rf "$D" "$E"
