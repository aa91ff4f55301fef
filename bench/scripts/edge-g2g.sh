#!/usr/bin/env bash
# Run from the repo root after `cargo build --bin aethex` and scripts/install-test-deps.sh
# (the aiortc venv). Uses fixed loopback ports 18400-18421.
# Glass-to-glass at the origin, at an edge and at a tier-2 edge, viewers watching at the same
# time for 10 s (aiortc publisher stamps frames; viewers decode the stamp).
set -euo pipefail
BIN=${BIN:-target/debug/aethex}
PY=.venv/bin/python
export AETHEX_RELAY_SECRET=measure-secret-0123456789
export AETHEX_LOG=info,str0m=warn
D=$(mktemp -d); E=$(mktemp -d); F=$(mktemp -d)
KEY=$($BIN channel create show --data-dir $D | python3 -c 'import json,sys; print(json.load(sys.stdin)["stream_key"])')
$BIN serve --data-dir $D --http-listen 127.0.0.1:18400 --udp-port 18401 --advertise-ip 127.0.0.1 --relay-listen 127.0.0.1:18402 > $D/out.log 2>&1 &
sleep 1.5
$BIN edge --origin 127.0.0.1:18402 --region eu --data-dir $E --http-listen 127.0.0.1:18410 --udp-port 18411 --advertise-ip 127.0.0.1 --relay-listen 127.0.0.1:18412 > $E/out.log 2>&1 &
sleep 1
$BIN edge --origin 127.0.0.1:18412 --region eu2 --data-dir $F --http-listen 127.0.0.1:18420 --udp-port 18421 --advertise-ip 127.0.0.1 > $F/out.log 2>&1 &
sleep 1.5
$PY tests/peers/aiortc_peer.py publish --url http://127.0.0.1:18400/whip --token $KEY --codec vp8 --duration 25 --width 320 --height 240 --keyint 60 > /dev/null 2>&1 &
sleep 3
for port in 18400 18410 18420; do
  $PY tests/peers/aiortc_peer.py view --url http://127.0.0.1:$port/whep/show --duration 12 --min-video-frames 1 2>/dev/null | tail -1 > /tmp/g2g-$port.json &
done
wait %5 %6 %7 2>/dev/null || sleep 14
sleep 1
for port in 18400 18410 18420; do python3 -c "import json; d=json.load(open('/tmp/g2g-$port.json')); print($port, 'first', d.get('first_frame_ms'), 'g2g p50', d.get('g2g_ms_p50'), 'p95', d.get('g2g_ms_p95'), 'samples', d.get('g2g_samples'), 'ok', d.get('ok'))"; done
kill $(jobs -p) 2>/dev/null || true
rm -rf $D $E $F
