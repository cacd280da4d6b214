#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, formatting, lints, then every test.
# (.ci/run runs exactly this.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# One libtorch thread per test process: the test harness already runs tests in parallel, and
# OpenMP threads of parallel tests spinning against each other made the suite up to 15x slower.
OMP_NUM_THREADS=1 cargo test --workspace --locked
