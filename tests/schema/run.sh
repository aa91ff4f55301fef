#!/usr/bin/env bash
# Schema tests: schemathesis against GET /api/openapi.json of a freshly started aethex server.
#
#   bash tests/schema/run.sh target/debug/aethex
#
# Installs the pinned schemathesis (tests/schema/requirements.txt) into .venv-schema (reused while
# the pins are unchanged), then, inside a network namespace of its own with only loopback (so no
# fuzzed webhook URL can ever be sent anything), starts `aethex serve` on free loopback ports with
# a temporary data dir, registers two users, creates a channel, a webhook and two API keys (one of
# them pro), and runs schemathesis over every operation twice: without a session (no, random or
# the real X-Api-Key), and with `Authorization: Bearer` of the channel's owner. Path parameters are
# the real channel/user/ids half of the time, random the other half. Checks: no 5xx, and status
# code, content type, headers and body as documented. Fails if either run finds anything, or if
# the server panicked (a dropped connection to the client) or died. See tests/schema/README.md.
# Needs python3 >= 3.11 with venv (Debian: python3-venv), PyPI, curl, unshare and ip.
set -euo pipefail

# shellcheck source=tests/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
[[ $# -eq 1 ]] || usage "PATH/TO/aethex"
set_bin "$1"
[[ -z "${AETHEX_SCHEMA_REPORT_DIR:-}" ]] || export AETHEX_SCHEMA_REPORT_DIR="$(realpath -m -- "$AETHEX_SCHEMA_REPORT_DIR")"

cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
VENV=${AETHEX_SCHEMA_VENV:-$ROOT/.venv-schema}
REQS=$ROOT/tests/schema/requirements.txt
CHECKS=${AETHEX_SCHEMA_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}
MAX_EXAMPLES=${AETHEX_SCHEMA_MAX_EXAMPLES:-20} # fuzzed cases per operation (coverage: its own)
RUN_TIMEOUT=${AETHEX_SCHEMA_RUN_TIMEOUT:-150}  # seconds, per schemathesis run
SEED=${AETHEX_SCHEMA_SEED:-14011}               # fixed: the same inputs on every CI run
# AETHEX_SCHEMA_REPORT_DIR=DIR keeps JUnit and HAR reports of both runs and the server log there.

die() {
  echo "run.sh: $*" >&2
  exit 1
}

if [[ "${AETHEX_SCHEMA_IN_NETNS:-}" != 1 ]]; then
  # ---- outside the namespace (PyPI is reachable here): the venv, then re-run inside ----
  PY=""
  for p in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [[ -x "$p" ]] && "$p" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PY=$p
      break
    fi
  done
  [[ -n "$PY" ]] || die "no python3 >= 3.11 with the venv and ensurepip modules (tried /usr/bin/python3 and" \
    "python3 on PATH: $(command -v python3 || echo none)); on Debian: apt-get install python3 python3-venv"
  if [[ ! -x "$VENV/bin/schemathesis" ]] || ! cmp -s "$REQS" "$VENV/.aethex-requirements.txt"; then
    echo "# installing $(grep '^schemathesis==' "$REQS") into $VENV (python: $PY)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || die "'$PY -m venv $VENV' failed (on Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS" ||
      die "pip could not install $REQS into $VENV (is PyPI reachable?)"
    cp "$REQS" "$VENV/.aethex-requirements.txt"
  fi
  for tool in curl unshare ip timeout; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian: curl, util-linux, iproute2, coreutils)"
  done
  if [[ $(id -u) -eq 0 ]]; then NETNS=(unshare --net); else NETNS=(unshare --net --map-root-user); fi
  "${NETNS[@]}" true 2>/dev/null || die "cannot make a network namespace with '${NETNS[*]}'" \
    "(needed so that webhook deliveries to fuzzed URLs cannot leave the machine)"
  export AETHEX_SCHEMA_IN_NETNS=1 AETHEX_SCHEMA_VENV="$VENV"
  exec "${NETNS[@]}" -- bash -c 'ip link set lo up || exit 1; exec bash "$@"' run.sh \
    "$ROOT/tests/schema/run.sh" "$BIN"
fi

# ---- inside the namespace: only loopback exists ----
init_run schema server 60
export AETHEX_RELAY_SECRET="schema-test-cluster-secret-0123"
trap cleanup EXIT
CONF=$(mktemp -t aethex-schema.XXXXXX.toml)
CLEANUP_FILES=("$CONF")
export RUST_BACKTRACE=0 # a panic is one line in the log (it is reported below), not 90
start_origin
echo "# server pid $SERVER_PID on $URL, schemathesis $("$VENV/bin/schemathesis" --version | awk '{print $NF}')"

api() { # method path [json body] [token]: prints the answer; fails on a non-2xx
  local args=(-sS --fail-with-body --max-time 10 -X "$1" "$URL$2") out
  [[ -z "${3:-}" ]] || args+=(-H 'Content-Type: application/json' -d "$3")
  [[ -z "${4:-}" ]] || args+=(-H "Authorization: Bearer $4")
  out=$(curl "${args[@]}") || die "setup: $1 $2 failed: $out"
  printf '%s\n' "$out"
}
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# schemathesis leaves out the operation that serves the document: it is checked here.
TYPE=$(curl -sS --fail --max-time 10 -o /dev/null -w '%{content_type}' "$URL/api/openapi.json") ||
  die "GET /api/openapi.json failed"
[[ "$TYPE" == application/json* ]] || die "GET /api/openapi.json: Content-Type $TYPE"
TOKEN=$(api POST /api/users '{"name":"schema-owner","password":"schema-owner-pw"}' | field token)
api POST /api/users '{"name":"schema-viewer","password":"schema-viewer-pw"}' >/dev/null
api POST /api/channels '{"name":"schema-chan"}' "$TOKEN" >/dev/null
# 192.0.2.1: TEST-NET-1, a public (allowed) address that nothing answers, least of all in here.
HOOK=$(api POST /api/channels/schema-chan/webhooks \
  '{"url":"http://192.0.2.1/hook","events":["follow","donation"]}' "$TOKEN" | field id)
KEY_ID=$(api POST /api/keys '' "$TOKEN" | field id) # for DELETE /api/keys/{id}
KEY_JSON=$(api POST /api/keys '' "$TOKEN")             # sent as X-Api-Key, never deleted
API_KEY=$(field key <<<"$KEY_JSON")
"$BIN" api-key-tier "$(field id <<<"$KEY_JSON")" pro --data-dir "$DATA" >/dev/null # free is GET-only
echo "# owner schema-owner (channel schema-chan, webhook $HOOK, API keys), user schema-viewer"

# Real names and ids for path parameters half of the time (else only 404s are ever tested), and
# webhook URLs and events the server accepts (the document only says "string").
cat >"$CONF" <<EOF
[dictionaries.names]
values = ["schema-chan", "schema-owner"]
[dictionaries.users]
values = ["schema-viewer", "schema-owner"]
[dictionaries.ids]
values = ["$HOOK", "$KEY_ID"]
[dictionaries.keys]
values = ["$API_KEY"]
[dictionaries.urls]
values = ["http://192.0.2.1/hook", "https://192.0.2.1/hook"]
[dictionaries.events]
values = ["stream.live", "stream.offline", "follow", "donation"]
[parameters]
"path.name" = { dictionary = "names", probability = 0.5 }
"path.user" = { dictionary = "users", probability = 0.5 }
"path.id" = { dictionary = "ids", probability = 0.5 }
"header.X-Api-Key" = { dictionary = "keys", probability = 0.5 }
"body.url" = { dictionary = "urls", probability = 0.5 }
"body.events[*]" = { dictionary = "events", probability = 0.7 }
[warnings]
fail-on = ["rate_limited"] # a 429 means the run tested the rate limit, not the operation
[cache]
enabled = false # no crashes replayed from an earlier run: the seed alone decides the inputs
EOF
WORK=$DATA/schemathesis # its cwd (hypothesis keeps .hypothesis/ there), removed with DATA
mkdir "$WORK"

run_st() { # label [extra schemathesis args]: exit code of schemathesis (124: timed out)
  local label=$1 rc=0 report=()
  shift
  [[ -z "${AETHEX_SCHEMA_REPORT_DIR:-}" ]] ||
    report=(--report junit,har --report-dir "$AETHEX_SCHEMA_REPORT_DIR/$label")
  echo "# ---- schemathesis: $label ----"
  (cd "$WORK" && exec timeout -k 5 "$RUN_TIMEOUT" "$VENV/bin/schemathesis" --config-file "$CONF" --no-color \
    run "$URL/api/openapi.json" --checks "$CHECKS" --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" --rate-limit 18/s --workers 1 --request-timeout 10 \
    --generation-database none --output-sanitize false "${report[@]}" "$@") || rc=$?
  [[ $rc -ne 124 ]] || echo "run.sh: schemathesis ($label) did not finish within $RUN_TIMEOUT s" >&2
  return "$rc"
}

START=$(date +%s)
UNAUTH=0
AUTH=0
SERVER=0
run_st unauthenticated || UNAUTH=$?
# Signing out (DELETE /api/sessions) would end the token mid-run: only the first run does it.
# Random X-Api-Key values (401 before any handler) were tested by the first run: none here.
run_st authenticated -H "Authorization: Bearer $TOKEN" --exclude-operation-id logout \
  --generation-with-security-parameters false || AUTH=$?

[[ -z "${AETHEX_SCHEMA_REPORT_DIR:-}" ]] ||
  { mkdir -p "$AETHEX_SCHEMA_REPORT_DIR" && cp "$LOG" "$AETHEX_SCHEMA_REPORT_DIR/server.log"; }
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "run.sh: the server died during the run" >&2
  SERVER=1
fi
if grep -q 'panicked at' "$LOG"; then # what the client saw was only a dropped connection
  echo "run.sh: the server panicked (count, where, why):" >&2
  grep -A1 'panicked at' "$LOG" | grep -v '^--$' | sed 's/^thread .* panicked at/panicked at/' |
    paste - - | sort | uniq -c >&2
  SERVER=1
fi
echo "# schemathesis unauthenticated: exit $UNAUTH; authenticated: exit $AUTH; server: $([[ $SERVER -eq 0 ]] && echo ok || echo FAILED); $(($(date +%s) - START)) s"
FAILED=$(((UNAUTH != 0) + (AUTH != 0) + SERVER))
echo "schema: $((3 - FAILED)) passed, $FAILED failed"
[[ $FAILED -eq 0 ]] && STATUS=0 || STATUS=1
exit "$STATUS"
