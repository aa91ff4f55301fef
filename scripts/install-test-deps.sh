#!/usr/bin/env bash
# Install what the test suites need on a Debian machine. Idempotent, quiet and fast when
# everything is already there.
#   - /usr/bin/chromium (Debian package; never a downloaded browser build)
#   - node >= 20 + npm, and tests/browser/node_modules (npm ci)
#   - curl, python3 and a venv at .venv with tests/peers/requirements.txt
#   - Python 3.12 and a venv at .venv312 with tests/peers/requirements-obs.txt (libdatachannel-py)
#   - cmake and nasm (used by the aws-lc-rs crypto backend when building the server)
#   - libopus (libopus-dev + pkg-config) for the bench's Opus encoder; without them the opus
#     crate builds its bundled libopus with cmake
#   - PostgreSQL on 127.0.0.1:5432 (or AETHEX_TEST_POSTGRES_URL) for the storage and platform
#     tests, which run on SQLite and PostgreSQL alike: started when it is not answering and we may
#   - a Redis server on 127.0.0.1:6379 (or AETHEX_TEST_REDIS_URL) for the registry tests: started
#     (and installed from Debian's redis-server) when it is not answering and we may
# Installs Debian packages only when running as root; otherwise says what is missing.
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1
APT_UPDATED=0
MISSING=()
SUMMARY=()

apt_install() { # packages...
  if [[ $APT_UPDATED -eq 0 ]]; then
    echo "install-test-deps: apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  echo "install-test-deps: apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Make sure a command exists, installing Debian package $2 if we may. Returns 1 if still missing.
need_cmd() { # cmd package [required|optional]
  local cmd=$1 pkg=$2 kind=${3:-required}
  if command -v "$cmd" >/dev/null 2>&1; then return 0; fi
  if [[ $IS_ROOT -eq 1 ]] && command -v apt-get >/dev/null 2>&1; then
    apt_install "$pkg" || true
    command -v "$cmd" >/dev/null 2>&1 && return 0
  fi
  if [[ $kind == required ]]; then
    MISSING+=("$cmd (Debian package '$pkg': apt-get install -y $pkg)")
  else
    SUMMARY+=("note: $cmd not installed (Debian package '$pkg'); only needed to build the server")
  fi
  return 1
}

# --- Chromium -------------------------------------------------------------------------------
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ $IS_ROOT -eq 1 ]] && command -v apt-get >/dev/null 2>&1; then
    apt_install chromium || true
  fi
fi
if [[ -x /usr/bin/chromium ]]; then
  SUMMARY+=("chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n1)")
else
  MISSING+=("/usr/bin/chromium (Debian package 'chromium': apt-get update && apt-get install -y chromium)")
fi

# --- small tools ------------------------------------------------------------------------------
need_cmd curl curl && SUMMARY+=("curl: $(command -v curl)")
need_cmd cmake cmake optional && SUMMARY+=("cmake: $(cmake --version | head -n1)")
need_cmd nasm nasm optional && SUMMARY+=("nasm: $(nasm -v | head -n1)")

# --- libopus for the bench (the `opus` crate) -------------------------------------------------
if pkg-config --exists opus 2>/dev/null; then
  SUMMARY+=("libopus: $(pkg-config --modversion opus) (pkg-config)")
else
  if [[ $IS_ROOT -eq 1 ]] && command -v apt-get >/dev/null 2>&1; then
    apt_install libopus-dev pkg-config || true
  fi
  if pkg-config --exists opus 2>/dev/null; then
    SUMMARY+=("libopus: $(pkg-config --modversion opus) (pkg-config)")
  elif command -v cmake >/dev/null 2>&1; then
    SUMMARY+=("libopus: not installed; the opus crate will build its bundled copy with cmake")
  else
    MISSING+=("libopus for the bench's Opus encoder: apt-get install -y libopus-dev pkg-config (or cmake, to build the bundled copy)")
  fi
fi

# --- node / npm / playwright-core -------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  MISSING+=("node >= 20 and npm (not installed; Debian's nodejs may be too old for playwright-core)")
else
  NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
  if [[ $NODE_MAJOR -lt 20 ]]; then
    MISSING+=("node >= 20 (found $(node --version))")
  else
    # Skip npm ci when the installed playwright-core already matches the lock file.
    want=$(cd tests/browser && node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')
    have=$(cd tests/browser && node -p 'try { require("./node_modules/playwright-core/package.json").version } catch (e) { "" }')
    if [[ "$want" != "$have" ]]; then
      echo "install-test-deps: npm ci in tests/browser"
      (cd tests/browser && npm ci --silent --no-audit --no-fund)
      have=$(cd tests/browser && node -p 'require("./node_modules/playwright-core/package.json").version')
    fi
    SUMMARY+=("node: $(node --version), playwright-core $have (tests/browser/node_modules)")
  fi
fi

# --- python venv ------------------------------------------------------------------------------
if need_cmd python3 python3; then
  REQ=tests/peers/requirements.txt
  if [[ ! -x .venv/bin/python ]]; then
    echo "install-test-deps: creating .venv"
    if ! python3 -m venv .venv >/dev/null 2>&1; then
      if [[ $IS_ROOT -eq 1 ]] && command -v apt-get >/dev/null 2>&1; then
        rm -rf .venv
        apt_install python3-venv || true
        python3 -m venv .venv >/dev/null 2>&1 || true
      fi
    fi
  fi
  if [[ ! -x .venv/bin/python ]]; then
    rm -rf .venv
    MISSING+=("a working 'python3 -m venv' (Debian package 'python3-venv')")
  elif [[ ! -f $REQ ]]; then
    SUMMARY+=("python: .venv ($(.venv/bin/python --version 2>&1)); $REQ not found, skipped")
  else
    # Reinstall only when the requirements changed since the last successful install.
    stamp=.venv/.aethex-requirements.sha256
    sum=$(sha256sum "$REQ" | cut -d' ' -f1)
    if [[ ! -f $stamp || $(cat "$stamp") != "$sum" ]]; then
      echo "install-test-deps: pip install -r $REQ into .venv"
      .venv/bin/pip install -q --disable-pip-version-check -r "$REQ"
      echo "$sum" >"$stamp"
    fi
    SUMMARY+=("python: .venv ($(.venv/bin/python --version 2>&1)) with $REQ")
  fi
fi

# --- python 3.12 venv for the OBS-like publisher (tests/peers/obs_peer.py) --------------------
# libdatachannel-py ships cp312 wheels only, so it gets a venv of its own (.venv312). Python
# 3.12 comes from PATH, pyenv or /root/.pyenv; Debian 12 has no python3.12 package.
py312_ok() { [[ -n $1 && -x $1 ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; }
PY312=""
py312_candidates=("$(command -v python3.12 2>/dev/null || true)")  # may be a pyenv shim that fails
if command -v pyenv >/dev/null 2>&1; then
  py312_candidates+=("$(pyenv prefix 3.12 2>/dev/null | head -n1)/bin/python3.12")
fi
py312_candidates+=("${PYENV_ROOT:-${HOME:-/root}/.pyenv}"/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12)
for c in "${py312_candidates[@]}"; do
  if py312_ok "$c"; then PY312=$c; break; fi
done
REQ_OBS=tests/peers/requirements-obs.txt
if [[ -z $PY312 ]]; then
  MISSING+=("Python 3.12 for libdatachannel-py (cp312-only wheel) in .venv312: pyenv install 3.12 (Debian 12 has no python3.12 package; on Debian 13 / Ubuntu 24.04: apt-get install python3.12 python3.12-venv)")
else
  if ! py312_ok .venv312/bin/python; then
    echo "install-test-deps: creating .venv312 with $PY312"
    rm -rf .venv312
    "$PY312" -m venv .venv312 >/dev/null 2>&1 || true
  fi
  if ! py312_ok .venv312/bin/python; then
    rm -rf .venv312
    MISSING+=("a working '$PY312 -m venv .venv312' (Python 3.12 with its venv module)")
  else
    # Reinstall only when the requirements changed since the last successful install.
    stamp=.venv312/.aethex-requirements.sha256
    sum=$(sha256sum "$REQ_OBS" | cut -d' ' -f1)
    if [[ ! -f $stamp || $(cat "$stamp") != "$sum" ]]; then
      echo "install-test-deps: pip install -r $REQ_OBS into .venv312"
      .venv312/bin/pip install -q --disable-pip-version-check --only-binary=:all: -r "$REQ_OBS"
      echo "$sum" >"$stamp"
    fi
    SUMMARY+=("python 3.12: .venv312 ($(.venv312/bin/python --version 2>&1), from $PY312) with $REQ_OBS")
  fi
fi

# --- GStreamer webrtcbin for the GStreamer publisher (tests/peers/gst_peer.py) ----------------
# Debian's packages, used with Debian's interpreter /usr/bin/python3 (PyGObject is a Debian
# package too, so this is not part of any venv). openssl makes the --dtls-cert ecdsa certificate.
GST_PKGS=(python3-gst-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-nice openssl)
gst_ok() {
  command -v openssl >/dev/null 2>&1 && [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import gi; gi.require_version("Gst","1.0");
gi.require_version("GstWebRTC","1.0"); from gi.repository import Gst, GstWebRTC; Gst.init(None)
assert all(Gst.ElementFactory.find(e) for e in ("webrtcbin", "nicesrc", "vp8enc", "x264enc", "opusenc"))' >/dev/null 2>&1
}
if ! gst_ok && [[ $IS_ROOT -eq 1 ]] && command -v apt-get >/dev/null 2>&1; then
  apt_install "${GST_PKGS[@]}" || true
fi
if gst_ok; then
  SUMMARY+=("gstreamer: $(/usr/bin/python3 -c 'import gi; gi.require_version("Gst","1.0"); from gi.repository import Gst; Gst.init(None); print(Gst.version_string())') with webrtcbin (/usr/bin/python3)")
else
  MISSING+=("GStreamer webrtcbin for /usr/bin/python3 (Debian packages: apt-get install -y ${GST_PKGS[*]})")
fi

# --- Redis (the cluster registry's tests run against a real server) ----------------------------
redis_up() { # host port: answers PING?
  exec 3<>"/dev/tcp/$1/$2" 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  local reply=""
  read -r -t 2 reply <&3 || true
  exec 3<&- 3>&-
  [[ $reply == +PONG* ]]
}
REDIS_URL=${AETHEX_TEST_REDIS_URL:-redis://127.0.0.1:6379}
REDIS_HOSTPORT=${REDIS_URL#*://}; REDIS_HOSTPORT=${REDIS_HOSTPORT#*@}; REDIS_HOSTPORT=${REDIS_HOSTPORT%%/*}
REDIS_HOST=${REDIS_HOSTPORT%:*}; REDIS_PORT=${REDIS_HOSTPORT##*:}
if ! redis_up "$REDIS_HOST" "$REDIS_PORT"; then
  if [[ $IS_ROOT -eq 1 && $REDIS_HOST == 127.0.0.1 ]]; then
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server || true
    echo "install-test-deps: starting redis-server"
    service redis-server start >/dev/null 2>&1 \
      || redis-server --port "$REDIS_PORT" --save '' --daemonize yes >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do redis_up "$REDIS_HOST" "$REDIS_PORT" && break; sleep 0.25; done
  fi
fi
if redis_up "$REDIS_HOST" "$REDIS_PORT"; then
  SUMMARY+=("redis: answering at $REDIS_HOST:$REDIS_PORT")
else
  MISSING+=("a Redis server answering at $REDIS_HOST:$REDIS_PORT (apt-get install redis-server && service redis-server start, or set AETHEX_TEST_REDIS_URL)")
fi

# --- PostgreSQL (the storage and platform suites run on it as well as on SQLite) ---------------
PG_URL=${AETHEX_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_HOSTPORT=${PG_URL#*://}; PG_HOSTPORT=${PG_HOSTPORT#*@}; PG_HOSTPORT=${PG_HOSTPORT%%/*}
PG_HOST=${PG_HOSTPORT%:*}; PG_PORT=${PG_HOSTPORT##*:}
pg_up() { (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null; }
if ! pg_up && [[ $IS_ROOT -eq 1 && $PG_HOST == 127.0.0.1 ]]; then
  command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql || true
  echo "install-test-deps: starting postgresql"
  service postgresql start >/dev/null 2>&1 || true
  for _ in $(seq 1 40); do pg_up && break; sleep 0.25; done
fi
if pg_up; then
  SUMMARY+=("postgres: answering at $PG_HOST:$PG_PORT")
else
  MISSING+=("PostgreSQL answering at $PG_HOST:$PG_PORT with trust auth for user postgres (apt-get install postgresql && service postgresql start, or set AETHEX_TEST_POSTGRES_URL)")
fi

# --- summary ----------------------------------------------------------------------------------
for line in "${SUMMARY[@]}"; do echo "  $line"; done
if [[ ${#MISSING[@]} -gt 0 ]]; then
  echo "install-test-deps: missing (install as root, or run this script as root):" >&2
  for m in "${MISSING[@]}"; do echo "  - $m" >&2; done
  exit 1
fi
echo "install-test-deps: all test dependencies present ($ROOT)"
