#!/usr/bin/env bash
# The test command: installs what the tests need (Chromium, playwright-core, aiortc in .venv),
# runs every Rust test (unit, property, scenario, end-to-end with aiortc), then the headless
# Chromium test of the web client against the real binary, then the schema tests
# (schemathesis against /api/openapi.json), then the interop matrix.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

bash scripts/install-test-deps.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked
else
  echo "test.sh: cargo-nextest not found, using cargo test (install: cargo install cargo-nextest)"
  cargo test --workspace --locked
fi

cargo build --locked --bin aethex
bash tests/browser/run.sh "${CARGO_TARGET_DIR:-target}/debug/aethex"

# Schema tests (docs/security.md): schemathesis against /api/openapi.json of the real binary,
# signed in and not: no 5xx, every answer as documented.
bash tests/schema/run.sh "${CARGO_TARGET_DIR:-target}/debug/aethex"

# The interop matrix (docs/interop.md): every publisher stack (Chromium, aiortc, OBS's
# libdatachannel, GStreamer, webrtc-rs) x every viewer stack (Chromium, aiortc, webrtc-rs), at
# the origin and at an edge. webrtc-rs is a package of its own (not in the workspace), built
# into the same target dir.
cargo build --locked --manifest-path tests/peers/webrtc-rs/Cargo.toml \
  --target-dir "${CARGO_TARGET_DIR:-target}"
bash tests/interop/run.sh "${CARGO_TARGET_DIR:-target}/debug/aethex"
