#!/usr/bin/env bash
# Checks the dependency arrows in ARCHITECTURE.md: the sans-IO crates never
# pull a runtime, a transport or the Raft library.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
for crate in ferrocd-proto ferrocd-wal ferrocd-core ferrocd-shards; do
    tree=$(cargo tree -q -p "$crate" -e normal,build --prefix none -f '{p} {f}')
    for forbidden in glommio tokio hyper raft tonic; do
        if grep -Eq "^${forbidden} v" <<<"$tree"; then
            echo "check-deps: $crate depends on $forbidden" >&2
            fail=1
        fi
    done
done
if cargo tree -q -p ferrocd-wal -e normal --prefix none | grep -E '^ferrocd-(proto|core|shards) ' >/dev/null; then
    echo "check-deps: ferrocd-wal depends on another ferrocd crate" >&2
    fail=1
fi
[ "$fail" = 0 ] && echo "check-deps: dependency arrows hold"
exit "$fail"
