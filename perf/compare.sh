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
# It also draws latency (p99, medians) against throughput for the put and
# serializable-range client sweeps into <result>-put.svg / -range.svg, and
# states where each target of the perf issue stands (put at 1 client
# against the floor: 1.2 x (fdatasync p99 + loopback gRPC round trip), the
# round trip being the lower of the two servers' median p99 for a
# serializable get at 1 client).
#
# Environment knobs:
#   DURATION=10   seconds per run        ROUNDS=2      rounds per server
#   ETCD=/usr/bin/etcd                   TMPDIR=/tmp   where data dirs live
#   WORKLOADS="..."                      (names below; default: all)
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
WORKLOADS=${WORKLOADS:-"put1 put16 put64 put256 putrate range1 range16 range256 rangel256 txn64 mixed256 mem1m"}
QUIET_WAIT_S=${QUIET_WAIT_S:-0}
# shellcheck source=perf/servers.sh
source "$ROOT/perf/servers.sh"

# Fixed offered load of putrate (req/s): below both servers' saturation, so
# CPU per put compares equal work.
PUT_RATE=${PUT_RATE:-10000}
# name -> "label|ferrocd-perf arguments|stop" (stop empty: --duration)
workload_def() {
    case $1 in
    put1) echo "put, 1 conn x 1 client|put --conns 1 --clients 1|" ;;
    put16) echo "put, 2 conns x 16 clients|put --conns 2 --clients 16|" ;;
    put64) echo "put, 4 conns x 64 clients|put --conns 4 --clients 64|" ;;
    put256) echo "put, 8 conns x 256 clients|put --conns 8 --clients 256|" ;;
    putrate) echo "put at $PUT_RATE/s, 8 conns x 256 clients|put --conns 8 --clients 256 --rate $PUT_RATE|" ;;
    range1) echo "range serializable, 1 conn x 1 client|range --consistency s --conns 1 --clients 1|" ;;
    range16) echo "range serializable, 2 conns x 16 clients|range --consistency s --conns 2 --clients 16|" ;;
    range256) echo "range serializable, 8 conns x 256 clients|range --consistency s --conns 8 --clients 256|" ;;
    rangel256) echo "range linearizable, 8 conns x 256 clients|range --consistency l --conns 8 --clients 256|" ;;
    txn64) echo "txn-put, 4 conns x 64 clients|txn-put --conns 4 --clients 64|" ;;
    mixed256) echo "mixed 90% linearizable gets, 8 conns x 256 clients|mixed --read-percent 90 --conns 8 --clients 256|" ;;
    mem1m) echo "memory: 1M keys x 256 B values, 8 conns x 256 clients|put --sequential --key-space 1000000 --val-size 256 --conns 8 --clients 256|--total 1000000 --stall-secs 60" ;;
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
    IFS='|' read -r label wargs stop <<<"$(workload_def "$w")"
    [[ -n $stop ]] || stop="--duration $DURATION"
    for round in $(seq "$ROUNDS"); do
        for server in etcd ferrocd; do
            id=$w-$server-$round
            wait_quiet
            start_server "$server" "$id"
            echo "== $label: $server round $round (pid $SERVER_PID, port $CLIENT_PORT)"
            # shellcheck disable=SC2086 # wargs and stop are word lists
            if ! "$PERF" $wargs $stop \
                --endpoints "127.0.0.1:$CLIENT_PORT" \
                --server-pid "$SERVER_PID" --json >"$WORK/$id.json" 2>"$WORK/$id.err"; then
                echo "   load generator failed: $(cat "$WORK/$id.err")" >&2
                echo '{}' >"$WORK/$id.json"
            fi
            alive=yes
            kill -0 "$SERVER_PID" 2>/dev/null || alive="DIED"
            stop_server
            jq -r --arg name "$w" --arg w "$label" --arg s "$server" --arg r "$round" --arg alive "$alive" '
                [$w, $s, $r,
                 (.rps // "n/a"), (.latency_us.p50 // "n/a"), (.latency_us.p99 // "n/a"),
                 (.latency_us["p99.9"] // "n/a"), (.server_cpu_us_per_req // "n/a"),
                 (.client_cpu_us_per_req // "n/a"), (.errors // "n/a"),
                 ((.error_kinds // {}) | to_entries | map("\(.value)x \(.key)") | join("; ")),
                 (.stalled // 0), $alive, (.other_cpu_cores // "n/a"), (.steal_cores // "n/a"),
                 (if .server_rss_bytes then (.server_rss_bytes / 1048576 | floor) else "n/a" end),
                 (.conflicts // 0), $name,
                 (if .server_peak_rss_bytes then (.server_peak_rss_bytes / 1048576 | floor) else "n/a" end)]
                 | @tsv' "$WORK/$id.json" >>"$RUNS"
            tail -1 "$RUNS" | awk -F'\t' '{printf "   %s req/s, p50 %s us, p99 %s us, server %s us/op, generator %s us/op, errors %s, stalled %s, server alive: %s, other CPU %s, server RSS %s MiB\n", $4, $5, $6, $8, $9, $10, $12, $13, $14, $16}'
        done
    done
done

# --- report -------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p perf/results
OUT=$(results_path "")
FSYNC_P99=$(sed -n 's/.* p99 \([0-9]*\) us.*/\1/p' <<<"$FLOOR")
# One line per workload name and server: name, server, medians of rps,
# p50, p99, server CPU, RSS MiB (the summary, the charts and the targets).
MEDIANS=$WORK/medians.tsv
awk -F'\t' "$AWK_MEDIANS"'
    {
        k = $18 SUBSEP $2
        if (!(k in seen)) { seen[k] = 1; order[++n] = k }
        add($18, $2, "rps", $4); add($18, $2, "p50", $5); add($18, $2, "p99", $6)
        add($18, $2, "cpu", $8); add($18, $2, "rss", $16)
    }
    END {
        for (i = 1; i <= n; i++) {
            split(order[i], ks, SUBSEP); line = ks[1] "\t" ks[2]
            split("rps p50 p99 cpu rss", ms, " ")
            for (m = 1; m <= 5; m++) line = line "\t" median(order[i] SUBSEP ms[m])
            print line
        }
    }' "$RUNS" >"$MEDIANS"
# chart FAMILY TITLE: p99 (ms) against req/s of FAMILY<clients> workloads.
CHARTS=""
chart() {
    local family=$1 title=$2 tsv=$WORK/chart-$1.tsv svg=${OUT%.md}-$1.svg
    awk -F'\t' -v f="$family" '
        $1 ~ "^" f "[0-9]+$" && $3 != "n/a" && $5 != "n/a" && $5 > 0 {
            c = substr($1, length(f) + 1); printf "%s\t%s\t%s\t%s clients\n", $2, $3, $5 / 1000, c
        }' "$MEDIANS" >"$tsv"
    [[ -s $tsv ]] || return 0
    if "$PERF" chart --input "$tsv" --out "$svg" --title "$title" \
        --x-label "throughput (req/s, median of $ROUNDS rounds)" --y-label "p99 latency (ms, log scale)"; then
        CHARTS="$CHARTS $svg"
    fi
}
chart put "put: p99 latency against throughput (1 to 256 clients)"
chart range "serializable range: p99 latency against throughput (1 to 256 clients)"
{
    echo "# ferrocd vs etcd, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- command: \`DURATION=$DURATION ROUNDS=$ROUNDS QUIET_WAIT_S=$QUIET_WAIT_S WORKLOADS=\"$WORKLOADS\" perf/compare.sh\`"
    echo "- commit: \`$COMMIT\`$DIRTY"
    echo "- machine: $(nproc) CPUs ($CPU_MODEL), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "- disk of the data dirs: \`$DISK_SRC\` $DISK_FS; device: $DISK_DEV (lsblk NAME MODEL ROTA SIZE)"
    echo "- fdatasync floor at the start: $FLOOR"
    echo "- load average (1/5/15 min) before the runs: $LOAD_BEFORE; after: $LOAD_AFTER (2 CPUs: above about 2 means other work shared the machine)"
    echo "- etcd: $("$ETCD" --version | head -1); ferrocd: $("$FERROCD" --version 2>&1 | head -1); both with their default flags (fsync on every commit)"
    echo "- load: \`target/release/ferrocd-perf <workload> --duration $DURATION\` (mem1m: \`--total 1000000\`), key 8 B, value 8 B unless stated; put and txn-put over 100000 random keys, range and mixed over 1000 pre-put keys; client and server share the machine's CPUs"
    echo "- CPU columns: process user+sys time over the timed phase / requests completed; RSS: the server's VmRSS at the end of the run, peak: its VmHWM then; other CPU: average CPUs used by everything else during the run (other processes and interrupt time; well above 0 = noisy run); steal: CPUs taken by the hypervisor; conflicts: txn-puts whose compare failed (answered with a get)"
    echo
    echo "| workload | server | round | req/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/op | generator CPU µs/op | server RSS MiB | server peak RSS MiB | errors | conflicts | other CPU (cores) | steal (cores) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' '{
        err = $10; if ($11 != "") err = err " (" $11 ")"
        if ($12 > 0) err = err ", STALLED " $12
        if ($13 != "yes") err = err ", server DIED"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $16, $19, err, $17, $14, $15
    }' "$RUNS"
    echo
    echo "## Medians over rounds, and ferrocd / etcd"
    echo
    echo "| workload | etcd req/s | ferrocd req/s | ratio | etcd p50 µs | ferrocd p50 µs | ratio | etcd p99 µs | ferrocd p99 µs | ratio | etcd server CPU µs/op | ferrocd server CPU µs/op | ratio | etcd RSS MiB | ferrocd RSS MiB | ratio |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' "$AWK_MEDIANS"'
        {
            if (!($1 in seen)) { seen[$1] = 1; order[++nw] = $1 }
            add($1, $2, "rps", $4); add($1, $2, "p50", $5); add($1, $2, "p99", $6); add($1, $2, "cpu", $8); add($1, $2, "rss", $16)
        }
        END {
            for (i = 1; i <= nw; i++) {
                w = order[i]; line = "| " w
                split("rps p50 p99 cpu rss", ms, " ")
                for (m = 1; m <= 5; m++) {
                    e = median(w SUBSEP "etcd" SUBSEP ms[m]); f = median(w SUBSEP "ferrocd" SUBSEP ms[m])
                    line = line " | " fmt(e) " | " fmt(f) " | " ratio(e, f)
                }
                print line " |"
            }
        }' "$RUNS"
    echo
    echo "Ratios are ferrocd / etcd: above 1 is better for req/s, below 1 is better for latency, CPU and memory."
    for svg in $CHARTS; do
        echo
        echo "![$(basename "$svg" .svg)]($(basename "$svg"))"
    done
    echo
    echo "## Targets (perf issue), from the medians above"
    echo
    echo "| target | measured | met |"
    echo "|---|---|---|"
    awk -F'\t' -v fsync="$FSYNC_P99" '
        { for (m = 3; m <= 7; m++) v[$1, $2, m] = $m; have[$1] = 1 }
        function r(w, m) { return (v[w, "etcd", m] == "" || v[w, "etcd", m] == "n/a" || v[w, "etcd", m] == 0 || v[w, "ferrocd", m] == "n/a") ? -1 : v[w, "ferrocd", m] / v[w, "etcd", m] }
        function row(t, meas, ok) { printf "| %s | %s | %s |\n", t, meas, (ok ? "yes" : "**no**") }
        END {
            if (have["put256"]) row("put, 256 clients: >= 3x etcd req/s with lower p99", sprintf("%.2fx req/s, p99 %.2fx", r("put256", 3), r("put256", 5)), r("put256", 3) >= 3 && r("put256", 5) < 1)
            if (have["putrate"]) row("put at a fixed rate: server CPU/op <= 1/3 of etcd", sprintf("%.2fx (%.1f vs %.1f us)", r("putrate", 6), v["putrate", "ferrocd", 6], v["putrate", "etcd", 6]), r("putrate", 6) >= 0 && r("putrate", 6) <= 1/3)
            if (have["put1"] && have["range1"] && fsync != "") {
                rtt = v["range1", "etcd", 5]; if (v["range1", "ferrocd", 5] < rtt) rtt = v["range1", "ferrocd", 5]
                bound = 1.2 * (fsync + rtt)
                row("put, 1 client: p99 <= 1.2 x (fdatasync p99 + loopback gRPC round trip)", sprintf("p99 %d us vs bound %d us = 1.2 x (%d + %d)", v["put1", "ferrocd", 5], bound, fsync, rtt), v["put1", "ferrocd", 5] <= bound)
            }
            if (have["range256"]) row("serializable range, 256 clients: >= 3x etcd, CPU/op <= 1/3", sprintf("%.2fx req/s, CPU %.2fx", r("range256", 3), r("range256", 6)), r("range256", 3) >= 3 && r("range256", 6) >= 0 && r("range256", 6) <= 1/3)
            if (have["rangel256"]) row("linearizable range, 256 clients: >= 2x etcd", sprintf("%.2fx req/s", r("rangel256", 3)), r("rangel256", 3) >= 2)
            if (have["txn64"]) row("txn-put, 64 clients: >= 3x etcd", sprintf("%.2fx req/s", r("txn64", 3)), r("txn64", 3) >= 3)
            if (have["mem1m"]) row("memory, 1M keys x 256 B: RSS <= 0.6x etcd", sprintf("%.2fx (%d vs %d MiB)", r("mem1m", 7), v["mem1m", "ferrocd", 7], v["mem1m", "etcd", 7]), r("mem1m", 7) >= 0 && r("mem1m", 7) <= 0.6)
        }' "$MEDIANS"
} >"$OUT"

echo
echo "== wrote $OUT $CHARTS"
cat "$OUT"
