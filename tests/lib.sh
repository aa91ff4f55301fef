# Shared helpers of the shell test drivers (tests/browser/run.sh, tests/interop/run.sh): an origin
# (`aethex serve --relay-listen`) and a regional edge on free loopback ports, their temporary data
# dirs and logs, and the cleanup on exit. Source it (bash, `set -euo pipefail`), then:
#
#   [[ $# -ge 1 ]] || usage "ARGS"      # "usage: SCRIPT ARGS" on stderr, exit 2
#   set_bin "$1"                        # BIN
#   cd REPO_ROOT                        # the functions below take paths from the repository root
#   init_run PREFIX ORIGIN_NAME LINES   # temp dirs and logs, SERVER_PID/EDGE_PID/STATUS
#   trap cleanup EXIT
#   start_origin; ...; start_edge; ...; STATUS=$?; exit "$STATUS"
#
# Functions (and the globals each one reads or sets):
#   usage ARGS           prints "usage: $0 ARGS" on stderr and exits 2.
#   set_bin PATH         BIN := realpath of PATH; exits 2 if it is not an executable.
#   ensure_playwright    npm ci in tests/browser if its node_modules lack playwright-core.
#   init_run PREFIX ORIGIN_NAME LINES
#                        DATA, EDGE_DATA (temp dirs aethex-PREFIX-data/-edge), LOG, EDGE_LOG (temp
#                        files aethex-PREFIX-ORIGIN_NAME.log/-edge.log), ORIGIN_NAME (what messages
#                        call the origin), LOG_TAIL_LINES := LINES, SERVER_PID := EDGE_PID := "",
#                        STATUS := 1, CLEANUP_FILES := () (more files for cleanup to remove).
#   stop_pid PID NAME    SIGTERM, up to 5 s, then SIGKILL (said on stdout) and reap; no-op for "".
#   cleanup              the EXIT trap: exit code 0 if STATUS is 0, else the shell's; stops EDGE_PID
#                        and SERVER_PID; on failure prints the last LOG_TAIL_LINES lines of LOG and
#                        EDGE_LOG as `# ` comments; removes LOG, EDGE_LOG, CLEANUP_FILES, DATA, EDGE_DATA.
#   free_port tcp|udp    prints a loopback port the kernel just handed out (bind to 0, close).
#   create_channel NAME  `BIN channel create NAME --data-dir DATA`; prints "channel stream_key".
#   wait_healthy PID URL NAME
#                        polls URL/healthz until 200 (20 s at most); fails if PID exits first.
#   start_origin         HTTP_PORT, UDP_PORT, RELAY_PORT, URL, SERVER_PID: starts `BIN serve` on DATA
#                        (output to LOG) and waits until it is healthy.
#   start_edge           EDGE_HTTP_PORT, EDGE_UDP_PORT, EDGE_URL, EDGE_PID: starts `BIN edge --origin
#                        127.0.0.1:RELAY_PORT --region eu` on EDGE_DATA (output to EDGE_LOG), waits.
# The origin and the edge share the caller's exported AETHEX_RELAY_SECRET.

usage() { # args
  echo "usage: $0 $1" >&2
  exit 2
}

set_bin() { # path
  BIN=$(realpath -- "$1")
  if [[ ! -x "$BIN" ]]; then
    echo "run.sh: $BIN is not an executable" >&2
    exit 2
  fi
}

ensure_playwright() {
  if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    (cd tests/browser && npm ci --silent --no-audit --no-fund)
  fi
}

init_run() { # prefix origin-name log-tail-lines
  DATA=$(mktemp -d -t "aethex-$1-data.XXXXXX")
  EDGE_DATA=$(mktemp -d -t "aethex-$1-edge.XXXXXX")
  LOG=$(mktemp -t "aethex-$1-$2.XXXXXX.log")
  EDGE_LOG=$(mktemp -t "aethex-$1-edge.XXXXXX.log")
  ORIGIN_NAME=$2
  LOG_TAIL_LINES=$3
  SERVER_PID=""
  EDGE_PID=""
  STATUS=1
  CLEANUP_FILES=()
}

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
  local rc=$? f
  [[ $STATUS -ne 0 ]] || rc=0
  stop_pid "$EDGE_PID" edge
  stop_pid "$SERVER_PID" "$ORIGIN_NAME"
  if [[ $rc -ne 0 ]]; then
    for f in "$LOG" "$EDGE_LOG"; do
      [[ -s "$f" ]] || continue
      echo "# ---- log (last $LOG_TAIL_LINES lines of $f) ----"
      tail -n "$LOG_TAIL_LINES" "$f" | sed 's/^/# /'
    done
  fi
  rm -f "$LOG" "$EDGE_LOG" "${CLEANUP_FILES[@]}"
  rm -rf "$DATA" "$EDGE_DATA"
  exit "$rc"
}

free_port() { # tcp|udp
  python3 -c 'import socket,sys
t = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, t); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' "$1"
}

create_channel() { # name; prints "channel stream_key"
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

start_origin() {
  HTTP_PORT=$(free_port tcp)
  UDP_PORT=$(free_port udp)
  RELAY_PORT=$(free_port udp)
  URL="http://127.0.0.1:$HTTP_PORT"
  "$BIN" serve --data-dir "$DATA" --http-listen "127.0.0.1:$HTTP_PORT" --udp-port "$UDP_PORT" \
    --advertise-ip 127.0.0.1 --relay-listen "127.0.0.1:$RELAY_PORT" >"$LOG" 2>&1 &
  SERVER_PID=$!
  wait_healthy "$SERVER_PID" "$URL" "$ORIGIN_NAME"
}

start_edge() {
  EDGE_HTTP_PORT=$(free_port tcp)
  EDGE_UDP_PORT=$(free_port udp)
  EDGE_URL="http://127.0.0.1:$EDGE_HTTP_PORT"
  "$BIN" edge --origin "127.0.0.1:$RELAY_PORT" --region eu --data-dir "$EDGE_DATA" \
    --http-listen "127.0.0.1:$EDGE_HTTP_PORT" --udp-port "$EDGE_UDP_PORT" --advertise-ip 127.0.0.1 \
    >"$EDGE_LOG" 2>&1 &
  EDGE_PID=$!
  wait_healthy "$EDGE_PID" "$EDGE_URL" edge
}
