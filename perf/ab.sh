#!/usr/bin/env bash
# Before/after for one change: two ferrocd binaries, the same load,
# alternating before/after/before/after (ROUNDS rounds), each run on a
# fresh server and data dir. Prints a Markdown table of every run and the
# medians with after/before ratios (for perf/results/).
#
#   perf/ab.sh BEFORE_BIN AFTER_BIN [ferrocd-perf workload args...]
#   e.g. perf/ab.sh /tmp/ferrocd-old target/release/ferrocd put --conns 8 --clients 256
#
# Knobs: DURATION=10, ROUNDS=3, QUIET_WAIT_S=5 (see compare.sh); STOP
# replaces "--duration $DURATION" (e.g. STOP="--total 1000000").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[[ $# -ge 3 ]] || {
    echo "usage: perf/ab.sh BEFORE_BIN AFTER_BIN WORKLOAD [ARGS...]" >&2
    exit 2
}
BEFORE=$(realpath "$1")
AFTER=$(realpath "$2")
shift 2
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
QUIET_WAIT_S=${QUIET_WAIT_S:-5}
ETCD=${ETCD:-/usr/bin/etcd}
# shellcheck source=perf/servers.sh
source "$ROOT/perf/servers.sh"
prepare_run ab.sh jq awk ss
RUNS=$WORK/runs.tsv
: >"$RUNS"
for round in $(seq "$ROUNDS"); do
    for side in before after; do
        if [[ $side == before ]]; then FERROCD=$BEFORE; else FERROCD=$AFTER; fi
        wait_quiet
        start_server ferrocd "$side-$round"
        # shellcheck disable=SC2086 # STOP is a word list
        "$PERF" "$@" ${STOP:---duration $DURATION} --endpoints "127.0.0.1:$CLIENT_PORT" \
            --server-pid "$SERVER_PID" --json >"$WORK/$side-$round.json"
        stop_server
        jq -r --arg s "$side" --arg r "$round" \
            '[$s, $r, .rps, .latency_us.p50, .latency_us.p99, .server_cpu_us_per_req, .client_cpu_us_per_req, .errors, .other_cpu_cores, .latency_us["p99.9"], .latency_us.max, ((.server_rss_bytes // 0) / 1048576 | floor), ((.server_peak_rss_bytes // 0) / 1048576 | floor)] | @tsv' \
            "$WORK/$side-$round.json" >>"$RUNS"
        tail -1 "$RUNS"
    done
done
echo
echo "\`perf/ab.sh $BEFORE $AFTER $*\` (${STOP:-DURATION=$DURATION} ROUNDS=$ROUNDS), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| side | round | req/s | p50 µs | p99 µs | p99.9 µs | max µs | server CPU µs/op | generator CPU µs/op | errors | other CPU | server RSS MiB | server peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $10, $11, $6, $7, $8, $9, $12, $13}' "$RUNS"
echo
echo "| median | before | after | after / before |"
echo "|---|---|---|---|"
awk -F'\t' "$AWK_MEDIANS"'
    { add("x", $1, "req/s", $3); add("x", $1, "p50 µs", $4); add("x", $1, "p99 µs", $5); add("x", $1, "p99.9 µs", $10); add("x", $1, "server CPU µs/op", $6); add("x", $1, "server RSS MiB", $12); add("x", $1, "server peak RSS MiB", $13) }
    END {
        split("req/s,p50 µs,p99 µs,p99.9 µs,server CPU µs/op,server RSS MiB,server peak RSS MiB", ms, ",")
        for (m = 1; m <= 7; m++) {
            b = median("x" SUBSEP "before" SUBSEP ms[m]); a = median("x" SUBSEP "after" SUBSEP ms[m])
            printf "| %s | %s | %s | %s |\n", ms[m], fmt(b), fmt(a), ratio(b, a)
        }
    }' "$RUNS"
