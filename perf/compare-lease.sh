#!/usr/bin/env bash
# Side-by-side lease test: etcd vs ferrocd on this machine, same load
# generator (target/release/ferrocd-perf lease-keepalive / lease-expire),
# loopback only.
#
# For each workload it runs etcd, ferrocd, etcd, ferrocd (ROUNDS rounds),
# each server started fresh with its own data dir, stopped by its PID after
# its run (helpers in perf/servers.sh). Results go to
# perf/results/<date>-<shortcommit>-lease.md: one row per run, then
# medians and ferrocd/etcd ratios.
#
# Workloads (WORKLOADS, names below):
#   ka10k        10,000 leases (TTL 30 s) kept alive over 100 streams / 4
#                conns, 1 keep-alive in flight per stream, as fast as
#                answered: keep-alive throughput, latency, CPU
#   ka10k-paced  10,000 leases (TTL 6 s) renewed at 5,000/s in all, each
#                lease every 2 s (a third of its TTL, as etcd's clients
#                do): CPU per keep-alive at a fixed rate; no lease may
#                expire
#   expire10k    10,000 leases (TTL 5 s), one key each, renewed at once and
#                left to expire; 2 conns x 16 clients put other keys from
#                1 s before the expiry until 1 s after the last leased key
#                is gone: put latency before / during the expiry window,
#                how long the server takes to delete them all
# Every keep-alive answer is checked (lease id, TTL = granted TTL; TTL 0 =
# "expired"), and every leased key must be deleted exactly once, not before
# its TTL, and none left (see perf/src/lease.rs, perf/src/lease_expire.rs).
#
# Environment knobs:
#   DURATION=10  seconds of keep-alives per run   ROUNDS=2  rounds per server
#   ETCD=/usr/bin/etcd   TMPDIR=/tmp (data dirs)   QUIET_WAIT_S=0 (see compare.sh)
#   WORKLOADS="ka10k ka10k-paced expire10k"
# Runtime with the defaults: about 5 minutes plus the release builds.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
ETCD=${ETCD:-/usr/bin/etcd}
WORKLOADS=${WORKLOADS:-"ka10k ka10k-paced expire10k"}
QUIET_WAIT_S=${QUIET_WAIT_S:-0}
# Upper bound on one load-generator run beyond DURATION (grants, the wait
# for the deletes); the generator stops by itself well before, this is a
# backstop.
RUN_SLACK_S=240
# shellcheck source=perf/servers.sh
source "$ROOT/perf/servers.sh"

# name -> "kind|label|ferrocd-perf arguments"
workload_def() {
    case $1 in
    ka10k) echo "ka|keep-alive, 10k leases (TTL 30 s) / 100 streams / 4 conns, as fast as answered|lease-keepalive --leases 10000 --ttl 30 --streams 100 --conns 4 --duration $DURATION" ;;
    ka10k-paced) echo "ka|keep-alive, 10k leases (TTL 6 s) / 100 streams / 4 conns, 5000/s (each lease every 2 s)|lease-keepalive --leases 10000 --ttl 6 --streams 100 --conns 4 --rate 5000 --duration $DURATION" ;;
    expire10k) echo "expire|10k leases (TTL 5 s, 1 key each) expiring at once, puts 2 conns x 16 clients|lease-expire --leases 10000 --ttl 5 --clients 16 --conns 2" ;;
    *)
        echo "unknown workload $1" >&2
        exit 2
        ;;
    esac
}

prepare_run compare-lease.sh jq awk ss timeout

machine_stamp
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
KA_RUNS=$WORK/ka.tsv
EXPIRE_RUNS=$WORK/expire.tsv
: >"$KA_RUNS"
: >"$EXPIRE_RUNS"
for w in $WORKLOADS; do
    IFS='|' read -r kind label wargs <<<"$(workload_def "$w")"
    for round in $(seq "$ROUNDS"); do
        for server in etcd ferrocd; do
            id=$w-$server-$round
            wait_quiet
            start_server "$server" "$id"
            echo "== $label: $server round $round (pid $SERVER_PID, port $CLIENT_PORT)"
            # shellcheck disable=SC2086 # wargs is a word list
            if ! timeout -s KILL $((DURATION + RUN_SLACK_S)) "$PERF" $wargs \
                --endpoints "127.0.0.1:$CLIENT_PORT" \
                --server-pid "$SERVER_PID" --json >"$WORK/$id.json" 2>"$WORK/$id.err"; then
                echo "   load generator failed: $(cat "$WORK/$id.err")" >&2
                jq -n --arg e "$(head -c 300 "$WORK/$id.err")" \
                    '{errors: 1, error_kinds: {("generator failed: " + $e): 1}}' >"$WORK/$id.json"
            fi
            alive=yes
            kill -0 "$SERVER_PID" 2>/dev/null || alive="DIED"
            stop_server
            if [[ $kind == ka ]]; then
                jq -r --arg w "$label" --arg s "$server" --arg r "$round" --arg alive "$alive" '
                    def na: if . == null then "n/a" else . end;
                    [$w, $s, $r,
                     (.grants_per_s | na), (.kps | na),
                     (.latency_us.p50 | na), (.latency_us.p99 | na), (.latency_us["p99.9"] | na),
                     (.latency_us.max | na),
                     (.server_cpu_us_per_ka | na), (.client_cpu_us_per_ka | na),
                     (.leases_expired | na), (.max_renew_gap_ms | na),
                     (.leases_listed_at_end | na), (.errors | na),
                     ((.error_kinds // {}) | to_entries | map("\(.value)x \(.key)") | join("; ")),
                     $alive, (.other_cpu_cores | na), (.steal_cores | na)]
                     | @tsv' "$WORK/$id.json" >>"$KA_RUNS"
                tail -1 "$KA_RUNS" | awk -F'\t' '{printf "   %s keep-alives/s, p50 %s us, p99 %s us, server %s us/ka, generator %s us/ka, expired %s, max gap %s ms, listed %s, errors %s, server alive: %s, other CPU %s\n", $5, $6, $7, $10, $11, $12, $13, $14, $15, $17, $18}'
            else
                jq -r --arg w "$label" --arg s "$server" --arg r "$round" --arg alive "$alive" '
                    def na: if . == null then "n/a" else . end;
                    def win(n): .windows[n] // {};
                    [$w, $s, $r,
                     (.setup_s | na), (.arm_s | na), (.first_delete_s | na), (.all_gone_s | na),
                     (.deleted | na), (.remaining_keys | na),
                     (win("before").puts_per_s | na), (win("before").latency_us.p50 | na),
                     (win("before").latency_us.p99 | na), (win("before").server_cores | na),
                     (win("during").puts_per_s | na), (win("during").latency_us.p50 | na),
                     (win("during").latency_us.p99 | na), (win("during").latency_us.max | na),
                     (win("during").server_cores | na),
                     (.errors | na),
                     ((.error_kinds // {}) | to_entries | map("\(.value)x \(.key)") | join("; ")),
                     $alive, (win("during").other_cpu_cores | na), (win("during").secs | na)]
                     | @tsv' "$WORK/$id.json" >>"$EXPIRE_RUNS"
                tail -1 "$EXPIRE_RUNS" | awk -F'\t' '{printf "   setup %s s, deletes from %s s to %s s after the TTL (%s deleted, %s left), puts/s before %s / during %s, p99 before %s us / during %s us, server cores before %s / during %s, errors %s, server alive: %s\n", $4, $6, $7, $8, $9, $10, $14, $12, $16, $13, $18, $19, $21}'
            fi
        done
    done
done

# --- report -------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p perf/results
OUT=$(results_path "-lease")
# median_table FILE "col:name ..." -> rows of medians per workload, etcd vs ferrocd
median_table() {
    awk -F'\t' -v cols="$2" "$AWK_MEDIANS"'
        BEGIN { nc = split(cols, cs, " ") }
        {
            if (!($1 in seen)) { seen[$1] = 1; order[++nw] = $1 }
            for (c = 1; c <= nc; c++) {
                v = $(cs[c])
                if (v == "n/a" || v == "") continue
                k = $1 SUBSEP $2 SUBSEP c; val[k, ++cnt[k]] = v
            }
        }
        END {
            for (i = 1; i <= nw; i++) {
                w = order[i]; line = "| " w
                for (c = 1; c <= nc; c++) {
                    e = median(w SUBSEP "etcd" SUBSEP c); f = median(w SUBSEP "ferrocd" SUBSEP c)
                    line = line " | " fmt(e) " | " fmt(f) " | " ratio(e, f)
                }
                print line " |"
            }
        }' "$1"
}
{
    echo "# ferrocd vs etcd: leases, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: \`$COMMIT\`$DIRTY"
    echo "- machine: $(nproc) CPUs ($CPU_MODEL), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "- disk of the data dirs: \`$DISK_SRC\` $DISK_FS; device: $DISK_DEV"
    echo "- load average (1/5/15 min) before the runs: $LOAD_BEFORE; after: $LOAD_AFTER (2 CPUs: above about 2 means other work shared the machine)"
    echo "- etcd: $("$ETCD" --version | head -1); ferrocd: $("$FERROCD" --version 2>&1 | head -1)"
    echo "- load: \`target/release/ferrocd-perf lease-keepalive|lease-expire ...\` (arguments per workload in \`perf/compare-lease.sh\`, keep-alive runs $DURATION s); each server fresh per run; client and server share the machine's CPUs"
    echo
    if [[ -s $KA_RUNS ]]; then
        echo "## Keep-alive"
        echo
        echo "- keep-alives/s: answers with the full TTL per second over the run; latency: send to answer on the stream; CPU: user+sys over the run / keep-alives"
        echo "- expired: leases that got a TTL 0 answer although kept alive; max gap: longest send-to-send time between two confirmed renewals of one lease; listed: leases LeaseLeases still lists at the end (all 10000 expected)"
        echo
        echo "| workload | server | round | grants/s (setup) | keep-alives/s | p50 µs | p99 µs | p99.9 µs | max µs | server CPU µs/ka | generator CPU µs/ka | expired | max gap ms | listed | errors | other CPU (cores) | steal (cores) |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        awk -F'\t' '{
            err = $15; if ($16 != "") err = err " (" $16 ")"
            if ($17 != "yes") err = err ", server DIED"
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, err, $18, $19
        }' "$KA_RUNS"
        echo
        echo "Medians over rounds, and ferrocd / etcd:"
        echo
        echo "| workload | etcd keep-alives/s | ferrocd keep-alives/s | ratio | etcd p50 µs | ferrocd p50 µs | ratio | etcd p99 µs | ferrocd p99 µs | ratio | etcd server CPU µs/ka | ferrocd server CPU µs/ka | ratio | etcd grants/s | ferrocd grants/s | ratio |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        median_table "$KA_RUNS" "5 6 7 10 4"
        echo
        echo "Ratios are ferrocd / etcd: above 1 is better for keep-alives/s and grants/s, below 1 for latency and CPU."
        echo
    fi
    if [[ -s $EXPIRE_RUNS ]]; then
        echo "## Expiry of many leases at once"
        echo
        echo "- setup: granting the leases and putting their keys (kept alive meanwhile); arm: renewing all of them once more, back to back, after which they are left to expire: the deadlines spread over that time"
        echo "- first / all gone: first and last DELETE event of a leased key (watch on their prefix), seconds after the first lease's deadline (renewal + TTL; negative would be a key deleted early); left: leased keys a count-only range still finds at the end"
        echo "- before: puts sent from 1 s before that deadline up to it; during: puts sent from it until the last leased key was gone; cores: the server's CPU use (utime+stime / wall time) in that window"
        echo
        echo "| workload | server | round | setup s | arm s | first delete s | all gone s | deleted | left | puts/s before | p50 µs before | p99 µs before | server cores before | puts/s during | p50 µs during | p99 µs during | max µs during | server cores during | errors | other CPU during (cores) |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        awk -F'\t' '{
            err = $19; if ($20 != "") err = err " (" $20 ")"
            if ($21 != "yes") err = err ", server DIED"
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, err, $22
        }' "$EXPIRE_RUNS"
        echo
        echo "Medians over rounds, and ferrocd / etcd:"
        echo
        echo "| workload | etcd all gone s | ferrocd all gone s | ratio | etcd p99 µs before | ferrocd p99 µs before | ratio | etcd p99 µs during | ferrocd p99 µs during | ratio | etcd puts/s during | ferrocd puts/s during | ratio | etcd server cores during | ferrocd server cores during | ratio |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        median_table "$EXPIRE_RUNS" "7 12 16 14 18"
        echo
        echo "Ratios are ferrocd / etcd: below 1 is better for the time until all keys are gone and for latency; above 1 for puts/s."
    fi
} >"$OUT"

echo
echo "== wrote $OUT"
cat "$OUT"
