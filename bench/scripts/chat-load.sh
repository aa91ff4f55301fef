#!/usr/bin/env bash
# Chat fan-out latency (1,000 and 10,000 WebSocket clients) and platform API latency
# (GET /api/channels/{name} at a steady rate), against a release build on loopback, on SQLite
# and on PostgreSQL. Run from the repo root after
#   cargo build --release -p aethex --bin aethex -p bench --bin chatload
# Uses loopback port 18470-18471. Each of the server and the load tool holds one socket per
# client: the open-file limit (raised here to the hard limit) must exceed the largest count.
# PIN=1 runs the server on CPU 0 and the load tool on CPU 1 (taskset), so the two do not take
# each other's core: the chat figures are then closer to the server's own share.
# DATABASES="sqlite postgres" (default) picks the runs.
set -euo pipefail
BIN=${BIN:-target/release/aethex}
LOAD=${LOAD:-target/release/chatload}
CLIENTS=${CLIENTS:-1000 10000}
DATABASES=${DATABASES:-sqlite postgres}
SERVER_CPU=() LOAD_CPU=()
if [[ ${PIN:-0} == 1 ]]; then SERVER_CPU=(taskset -c 0); LOAD_CPU=(taskset -c 1); fi
ulimit -n "$(ulimit -Hn)"
for n in $CLIENTS; do
  if (( n + 200 > $(ulimit -n) )); then
    echo "chat-load.sh: $n clients need an open-file limit above $((n + 200)); it is $(ulimit -n)" >&2
    exit 1
  fi
done
export AETHEX_LOG=warn
run() { # label, then env for the server
  local label=$1; shift
  local D; D=$(mktemp -d)
  env "$@" "${SERVER_CPU[@]}" $BIN serve --data-dir "$D" --http-listen 127.0.0.1:18470 --udp-port 18471 \
    --advertise-ip 127.0.0.1 > "$D/out.log" 2>&1 &
  local S=$!
  for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:18470/healthz && break; sleep 0.1; done
  echo "== $label"
  local first=1
  for n in $CLIENTS; do
    if [[ $first -eq 1 ]]; then api=200; first=0; else api=0; fi
    "${LOAD_CPU[@]}" $LOAD --base http://127.0.0.1:18470 --clients "$n" --messages 10 --api-rps $api --api-secs 10
    echo "server RSS after $n clients: $(awk '/VmHWM/ {print $2, $3}' /proc/$S/status) (peak)"
  done
  kill $S; wait $S 2>/dev/null || true
  rm -rf "$D"
}
if [[ $DATABASES == *sqlite* ]]; then run "SQLite (default)"; fi
if [[ $DATABASES == *postgres* ]]; then
  DB="aethex_chatload_$$"
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
  run "PostgreSQL" AETHEX_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $DB WITH (FORCE)"
fi
