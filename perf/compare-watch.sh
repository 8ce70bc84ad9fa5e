#!/usr/bin/env bash
# Side-by-side watch test: etcd vs ferrocd on this machine, same load
# generator (target/release/ferrocd-perf watch), loopback only.
#
# For each workload it runs etcd, ferrocd, etcd, ferrocd (ROUNDS rounds),
# each server started fresh with its own data dir, killed by its PID after
# its run (helpers in perf/servers.sh). Results go to
# perf/results/<date>-<shortcommit>-watch.md: one row per run, then
# medians and ferrocd/etcd ratios.
#
# Workloads (WORKLOADS, names below):
#   w1       put-to-event latency, 1 watcher, 1000 puts/s
#   w10k     put-to-event latency, 10,000 single-key watchers over 100
#            streams / 4 conns, 1000 puts/s round-robin over their keys
#   mem100k  memory: 100,000 watchers (half single keys, half prefixes)
#            over 256 streams / 8 conns; server RSS delta per watcher
#   fanout1k 1,000 watchers on ONE key over 10 streams, 1000 puts/s: a
#            million events/s, more than the client reads, so the server's
#            slow-watcher path (etcd's victims) is exercised
# Every run checks that each acknowledged put produced exactly one event
# per watcher of its key, in revision order (missing / duplicate / out of
# order columns: anything but 0 is a bug).
#
# Environment knobs:
#   DURATION=10  seconds of puts per run    ROUNDS=2  rounds per server
#   ETCD=/usr/bin/etcd   TMPDIR=/tmp (data dirs)   QUIET_WAIT_S=0 (see compare.sh)
#   WORKLOADS="w1 w10k mem100k fanout1k"
# Runtime with the defaults: about 4 minutes plus the release builds.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
ETCD=${ETCD:-/usr/bin/etcd}
WORKLOADS=${WORKLOADS:-"w1 w10k mem100k fanout1k"}
QUIET_WAIT_S=${QUIET_WAIT_S:-0}
# Upper bound on one load-generator run beyond DURATION (setup, drain);
# the generator stops by itself well before, this is a backstop.
RUN_SLACK_S=240
# Below this many watchers the RSS delta is page and allocator noise: no
# bytes-per-watcher figure.
RSS_PER_WATCHER_MIN_WATCHERS=1000
# shellcheck source=perf/servers.sh
source "$ROOT/perf/servers.sh"

# name -> "label|ferrocd-perf arguments"
workload_def() {
    case $1 in
    w1) echo "watch latency, 1 watcher, 1000 puts/s|watch --watchers 1 --streams 1 --conns 1 --rate 1000 --duration $DURATION" ;;
    w10k) echo "watch latency, 10k watchers / 100 streams / 4 conns, 1000 puts/s|watch --watchers 10000 --streams 100 --conns 4 --rate 1000 --duration $DURATION" ;;
    mem100k) echo "watch memory, 100k watchers (keys+prefixes) / 256 streams / 8 conns|watch --memory-only --mixed --watchers 100000 --streams 256 --conns 8" ;;
    fanout1k) echo "watch fan-out, 1k watchers on 1 key / 10 streams, 1000 puts/s|watch --watchers 1000 --keys 1 --streams 10 --conns 1 --rate 1000 --duration $DURATION" ;;
    *)
        echo "unknown workload $1" >&2
        exit 2
        ;;
    esac
}

prepare_run compare-watch.sh jq awk ss timeout

machine_stamp
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
            jq -r --arg w "$label" --arg s "$server" --arg r "$round" --arg alive "$alive" \
                --argjson min_w "$RSS_PER_WATCHER_MIN_WATCHERS" '
                def mib: if . == null then "n/a" else (. / 1048576 * 10 | round / 10) end;
                def na: if . == null then "n/a" else . end;
                [$w, $s, $r,
                 (.puts.rate | na), (.events.expected | na), (.events.delivered | na),
                 (.events.missing | na), (.events.duplicate | na), (.events.out_of_order | na),
                 (.latency_us.p50 | na), (.latency_us.p90 | na), (.latency_us.p99 | na),
                 (.latency_us["p99.9"] | na), (.latency_us.max | na),
                 (.server_cpu_us_per_put | na),
                 (.rss_bytes.before | mib), (.rss_bytes.created | mib),
                 (if .rss_bytes_per_watcher == null or .watchers < $min_w then "n/a"
                  else (.rss_bytes_per_watcher | round) end),
                 (.setup_s | na), (.errors | na),
                 ((.error_kinds // {}) | to_entries | map("\(.value)x \(.key)") | join("; ")),
                 $alive, (.other_cpu_cores | na), (.steal_cores | na),
                 (.events.out_of_order_example | na)]
                 | @tsv' "$WORK/$id.json" >>"$RUNS"
            tail -1 "$RUNS" | awk -F'\t' '{printf "   puts/s %s, events %s/%s (missing %s, dup %s, out of order %s), p50 %s us, p99 %s us, server %s us/put, RSS %s -> %s MiB (%s B/watcher), setup %s s, errors %s, server alive: %s, other CPU %s\n", $4, $6, $5, $7, $8, $9, $10, $12, $15, $16, $17, $18, $19, $20, $22, $23}'
        done
    done
done

# --- report -------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p perf/results
OUT=$(results_path "-watch")
{
    echo "# ferrocd vs etcd: watch, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: \`$COMMIT\`$DIRTY"
    echo "- machine: $(nproc) CPUs ($CPU_MODEL), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "- disk of the data dirs: \`$DISK_SRC\` $DISK_FS; device: $DISK_DEV"
    echo "- load average (1/5/15 min) before the runs: $LOAD_BEFORE; after: $LOAD_AFTER (2 CPUs: above about 2 means other work shared the machine)"
    echo "- etcd: $("$ETCD" --version | head -1); ferrocd: $("$FERROCD" --version 2>&1 | head -1)"
    echo "- load: \`target/release/ferrocd-perf watch ... --duration $DURATION\` (arguments per workload in \`perf/compare-watch.sh\`); each server fresh per run; client and server share the machine's CPUs"
    echo "- latency: receive time of the event minus send time of its put (one clock, the generator's); put latency (commit + fsync) is part of it"
    echo "- events: every acknowledged put must reach every watcher of its key exactly once and in revision order; missing / dup / out of order count the deliveries that did not"
    echo "- server CPU: utime+stime over the puts and the event drain / puts issued; RSS: VmRSS before the watch streams are opened and 1 s after the last watcher is created; B/watcher = delta / watchers (stream overhead included; not shown below $RSS_PER_WATCHER_MIN_WATCHERS watchers, where it is page noise)"
    echo
    echo "| workload | server | round | puts/s | events expected | delivered | missing | dup | out of order | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | server CPU µs/put | RSS before MiB | RSS with watchers MiB | B/watcher | create s | errors | other CPU (cores) | steal (cores) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' '{
        err = $20; if ($21 != "") err = err " (" $21 ")"
        if ($22 != "yes") err = err ", server DIED"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, err, $23, $24
    }' "$RUNS"
    if awk -F'\t' '$25 != "n/a" {found = 1} END {exit !found}' "$RUNS"; then
        echo
        echo "First out-of-order delivery per run that had one:"
        echo
        awk -F'\t' '$25 != "n/a" {printf "- %s, %s round %s: %s\n", $1, $2, $3, $25}' "$RUNS"
    fi
    echo
    echo "## Medians over rounds, and ferrocd / etcd"
    echo
    echo "| workload | etcd p50 µs | ferrocd p50 µs | ratio | etcd p99 µs | ferrocd p99 µs | ratio | etcd server CPU µs/put | ferrocd server CPU µs/put | ratio | etcd B/watcher | ferrocd B/watcher | ratio | etcd create s | ferrocd create s | ratio |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' "$AWK_MEDIANS"'
        {
            if (!($1 in seen)) { seen[$1] = 1; order[++nw] = $1 }
            add($1, $2, "p50", $10); add($1, $2, "p99", $12); add($1, $2, "cpu", $15)
            add($1, $2, "bpw", $18); add($1, $2, "setup", $19)
        }
        END {
            split("p50 p99 cpu bpw setup", ms, " ")
            for (i = 1; i <= nw; i++) {
                w = order[i]; line = "| " w
                for (m = 1; m <= 5; m++) {
                    e = median(w SUBSEP "etcd" SUBSEP ms[m]); f = median(w SUBSEP "ferrocd" SUBSEP ms[m])
                    line = line " | " fmt(e) " | " fmt(f) " | " ratio(e, f)
                }
                print line " |"
            }
        }' "$RUNS"
    echo
    echo "Ratios are ferrocd / etcd: below 1 is better for all of these. B/watcher and create s only mean much for the 10k and 100k rows; latency and CPU only for the rows with puts."
} >"$OUT"

echo
echo "== wrote $OUT"
cat "$OUT"
