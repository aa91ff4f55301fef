#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ in turn, each for SECONDS (default 600) or 10 M
# executions, whichever comes first, and print one line per target: executions, corpus size,
# crashes. Needs rustup's nightly toolchain and cargo-fuzz (installed here when missing and
# possible). Crashes are kept in fuzz/artifacts/<target>/; the corpus in fuzz/corpus/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

SECONDS_EACH=${1:-600}
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked || {
    echo "fuzz.sh: cargo-fuzz could not be installed; install it: cargo install cargo-fuzz" >&2
    exit 1
  }
fi

TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
  mapfile -t TARGETS < <(cd fuzz && cargo +nightly fuzz list)
fi
cd fuzz
cargo +nightly fuzz build
status=0
for t in "${TARGETS[@]}"; do
  log=$(mktemp)
  if cargo +nightly fuzz run "$t" -- -max_total_time="$SECONDS_EACH" -runs=10000000 \
      -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -1)
  corpus=$(find "corpus/$t" -type f 2>/dev/null | wc -l)
  echo "fuzz $t: $result, ${runs:-?} executions in ${secs:-$SECONDS_EACH} s, corpus $corpus"
  [[ $result == ok ]] || tail -40 "$log"
  rm -f "$log"
done
exit $status
