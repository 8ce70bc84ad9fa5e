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

# The integration tests talk to real clients (etcdctl) and compare with a
# real etcd; the etcd-client crate's build needs protoc. Debian packages
# provide all three; install whatever is missing.
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if ((${#need[@]})); then
    step "installing ${need[*]} (apt-get)"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
    # Debian starts the packaged etcd as a service on 2379; tests use their
    # own ephemeral ports, but do not leave a stray daemon behind.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
        $SUDO systemctl stop etcd || true
    fi
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
