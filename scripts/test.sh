#!/usr/bin/env bash
# The test command: installs what the tests need (Chromium, playwright-core, aiortc in .venv),
# runs every Rust test (unit, property, scenario, end-to-end with aiortc), then the headless
# Chromium test of the web client against the real binary.
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
