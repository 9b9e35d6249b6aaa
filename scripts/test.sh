#!/usr/bin/env bash
# The whole test suite: set up, check formatting and lints, run every test (unit tests and the
# integration tests that start the real binary under the real mpirun).
set -euo pipefail
cd "$(dirname "$0")/.."
export COLLBENCH_TEST_DEPS=1
source scripts/setup.sh
if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
    runner=(cargo test --locked)
else
    runner=(cargo nextest run --locked --no-fail-fast)
fi
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
"${runner[@]}"
