#!/usr/bin/env bash
# The one test command (README): formatting, lints, dependency arrows, and
# every test target in the workspace: unit and integration tests (the MVCC
# property test at 10,000 cases) and the criterion benches, which
# `--all-targets` runs once each in test mode so they do not rot.
set -euo pipefail
cd "$(dirname "$0")/.."

export PROPTEST_CASES="${PROPTEST_CASES:-10000}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "dependency arrows (ARCHITECTURE.md)"
./scripts/check-deps.sh

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (PROPTEST_CASES=$PROPTEST_CASES)"
cargo test --workspace --all-targets

echo
echo "test.sh: all green"
