#!/usr/bin/env bash
# Side-by-side load test: etcd vs ferrocd on this machine, same load
# generator (target/release/ferrocd-perf), same disk, loopback only.
#
# For each workload it runs etcd, ferrocd, etcd, ferrocd (ROUNDS rounds),
# each server started fresh with its own data dir under one temp dir, and
# killed (by its PID) after its run. Results go to
# perf/results/<date>-<shortcommit>.md: one row per run plus medians and
# ferrocd/etcd ratios, stamped with the machine, the disk and the commit.
#
# Environment knobs:
#   DURATION=10   seconds per run        ROUNDS=2      rounds per server
#   ETCD=/usr/bin/etcd                   TMPDIR=/tmp   where data dirs live
#   WORKLOADS="put1 put256 range256"     (names below)
#   QUIET_WAIT_S=0  before each run, wait up to this long for a second in
#                   which other processes use under 0.25 CPU (0: don't wait)
# The "other CPU" column is the average CPUs used by everything but the
# server and the generator during the run (other processes, interrupts):
# well above 0 means the run shared the machine and is noise.
# Runtime with the defaults: about 3-4 minutes plus the release builds.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
ETCD=${ETCD:-/usr/bin/etcd}
WORKLOADS=${WORKLOADS:-"put1 put256 range256"}
QUIET_WAIT_S=${QUIET_WAIT_S:-0}
# shellcheck source=perf/servers.sh
source "$ROOT/perf/servers.sh"

# name -> "label|ferrocd-perf arguments"
workload_def() {
    case $1 in
    put1) echo "put, 1 conn x 1 client|put --conns 1 --clients 1" ;;
    put256) echo "put, 8 conns x 256 clients|put --conns 8 --clients 256" ;;
    range256) echo "range serializable, 8 conns x 256 clients|range --consistency s --conns 8 --clients 256" ;;
    *)
        echo "unknown workload $1" >&2
        exit 2
        ;;
    esac
}

prepare_run compare.sh jq awk ss

# --- machine stamp -----------------------------------------------------------
machine_stamp
echo "== fdatasync floor on $WORK"
FLOOR=$("$PERF" fsync-floor --dir "$WORK" --count 500)
echo "   $FLOOR"

# --- runs ---------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RUNS=$WORK/runs.tsv
: >"$RUNS"
for w in $WORKLOADS; do
    IFS='|' read -r label wargs <<<"$(workload_def "$w")"
    for round in $(seq "$ROUNDS"); do
        for server in etcd ferrocd; do
            id=$w-$server-$round
            wait_quiet
            start_server "$server" "$id"
            echo "== $label: $server round $round (pid $SERVER_PID, port $CLIENT_PORT)"
            # shellcheck disable=SC2086 # wargs is a word list
            if ! "$PERF" $wargs --duration "$DURATION" \
                --endpoints "127.0.0.1:$CLIENT_PORT" \
                --server-pid "$SERVER_PID" --json >"$WORK/$id.json" 2>"$WORK/$id.err"; then
                echo "   load generator failed: $(cat "$WORK/$id.err")" >&2
                echo '{}' >"$WORK/$id.json"
            fi
            alive=yes
            kill -0 "$SERVER_PID" 2>/dev/null || alive="DIED"
            stop_server
            jq -r --arg w "$label" --arg s "$server" --arg r "$round" --arg alive "$alive" '
                [$w, $s, $r,
                 (.rps // "n/a"), (.latency_us.p50 // "n/a"), (.latency_us.p99 // "n/a"),
                 (.latency_us["p99.9"] // "n/a"), (.server_cpu_us_per_req // "n/a"),
                 (.client_cpu_us_per_req // "n/a"), (.errors // "n/a"),
                 ((.error_kinds // {}) | to_entries | map("\(.value)x \(.key)") | join("; ")),
                 (.stalled // 0), $alive, (.other_cpu_cores // "n/a"), (.steal_cores // "n/a")]
                 | @tsv' "$WORK/$id.json" >>"$RUNS"
            tail -1 "$RUNS" | awk -F'\t' '{printf "   %s req/s, p50 %s us, p99 %s us, server %s us/op, generator %s us/op, errors %s, stalled %s, server alive: %s, other CPU %s\n", $4, $5, $6, $8, $9, $10, $12, $13, $14}'
        done
    done
done

# --- report -------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p perf/results
OUT=$(results_path "")
{
    echo "# ferrocd vs etcd, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: \`$COMMIT\`$DIRTY"
    echo "- machine: $(nproc) CPUs ($CPU_MODEL), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "- disk of the data dirs: \`$DISK_SRC\` $DISK_FS; device: $DISK_DEV (lsblk NAME MODEL ROTA SIZE)"
    echo "- fdatasync floor at the start: $FLOOR"
    echo "- load average (1/5/15 min) before the runs: $LOAD_BEFORE; after: $LOAD_AFTER (2 CPUs: above about 2 means other work shared the machine)"
    echo "- etcd: $("$ETCD" --version | head -1); ferrocd: $("$FERROCD" --version 2>&1 | head -1)"
    echo "- load: \`target/release/ferrocd-perf <workload> --duration $DURATION\`, key 8 B, value 8 B; put over 100000 random keys, range over 1000 pre-put keys; client and server share the machine's CPUs"
    echo "- CPU columns: process user+sys time over the timed phase / requests completed; other CPU: average CPUs used by everything else during the run (other processes and interrupt time; well above 0 = noisy run); steal: CPUs taken by the hypervisor"
    echo
    echo "| workload | server | round | req/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/op | generator CPU µs/op | errors | other CPU (cores) | steal (cores) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' '{
        err = $10; if ($11 != "") err = err " (" $11 ")"
        if ($12 > 0) err = err ", STALLED " $12
        if ($13 != "yes") err = err ", server DIED"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, err, $14, $15
    }' "$RUNS"
    echo
    echo "## Medians over rounds, and ferrocd / etcd"
    echo
    echo "| workload | etcd req/s | ferrocd req/s | ratio | etcd p50 µs | ferrocd p50 µs | ratio | etcd p99 µs | ferrocd p99 µs | ratio | etcd server CPU µs/op | ferrocd server CPU µs/op | ratio |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' "$AWK_MEDIANS"'
        {
            if (!($1 in seen)) { seen[$1] = 1; order[++nw] = $1 }
            add($1, $2, "rps", $4); add($1, $2, "p50", $5); add($1, $2, "p99", $6); add($1, $2, "cpu", $8)
        }
        END {
            for (i = 1; i <= nw; i++) {
                w = order[i]; line = "| " w
                split("rps p50 p99 cpu", ms, " ")
                for (m = 1; m <= 4; m++) {
                    e = median(w SUBSEP "etcd" SUBSEP ms[m]); f = median(w SUBSEP "ferrocd" SUBSEP ms[m])
                    line = line " | " fmt(e) " | " fmt(f) " | " ratio(e, f)
                }
                print line " |"
            }
        }' "$RUNS"
    echo
    echo "Ratios are ferrocd / etcd: above 1 is better for req/s, below 1 is better for latency and CPU."
} >"$OUT"

echo
echo "== wrote $OUT"
cat "$OUT"
