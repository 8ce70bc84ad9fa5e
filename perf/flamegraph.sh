#!/usr/bin/env bash
# Flame graphs of ferrocd under load: starts a release ferrocd on free
# loopback ports with a fresh data dir, drives it with ferrocd-perf, and
# samples the server only (perf record, DWARF call graphs from the release
# build's debug info) for the middle of the run. Writes
# perf/results/<date>-<commit>-flame-<workload>.svg (inferno) and prints the
# hottest symbols (self time) for the closing note.
#
#   perf/flamegraph.sh put      # put, 8 conns x 256 clients
#   perf/flamegraph.sh range    # serializable range, 8 conns x 256 clients
#
# Needs perf (Debian: linux-perf) and inferno (cargo install inferno; done
# here if missing). Knobs: DURATION=12 (load seconds), SAMPLE_S=6 (seconds
# sampled), FREQ=499 (Hz).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORKLOAD=${1:-put}
DURATION=${DURATION:-12}
SAMPLE_S=${SAMPLE_S:-6}
FREQ=${FREQ:-499}
ETCD=${ETCD:-/usr/bin/etcd}
QUIET_WAIT_S=${QUIET_WAIT_S:-0}
# shellcheck source=perf/servers.sh
source "$ROOT/perf/servers.sh"

case $WORKLOAD in
put) LOAD="put --conns 8 --clients 256" ;;
range) LOAD="range --consistency s --conns 8 --clients 256" ;;
*)
    echo "usage: perf/flamegraph.sh put|range" >&2
    exit 2
    ;;
esac
command -v perf >/dev/null || {
    echo "flamegraph.sh needs perf (apt-get install linux-perf)" >&2
    exit 2
}
if ! command -v inferno-flamegraph >/dev/null; then
    cargo install inferno --locked
fi
export PATH=$PATH:${CARGO_HOME:-$HOME/.cargo}/bin

prepare_run flamegraph.sh ss
machine_stamp
start_server ferrocd "flame-$WORKLOAD"
echo "== $WORKLOAD load on ferrocd pid $SERVER_PID, port $CLIENT_PORT, ${DURATION}s"
# shellcheck disable=SC2086 # LOAD is a word list
"$PERF" $LOAD --duration "$DURATION" --endpoints "127.0.0.1:$CLIENT_PORT" \
    --server-pid "$SERVER_PID" >"$WORK/load.txt" 2>&1 &
LOAD_PID=$!
# Skip the range workload's populate phase and the first seconds.
sleep $(((DURATION - SAMPLE_S) / 2))
perf record -F "$FREQ" --call-graph dwarf,16384 -p "$SERVER_PID" -o "$WORK/perf.data" \
    -- sleep "$SAMPLE_S" 2>"$WORK/record.err" >/dev/null
wait "$LOAD_PID"
cat "$WORK/load.txt"
stop_server

OUT=$(results_path "-flame-$WORKLOAD")
OUT=${OUT%.md}.svg
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/folded.txt"
inferno-flamegraph --title "ferrocd $WORKLOAD (${LOAD}), commit $COMMIT$DIRTY" \
    <"$WORK/folded.txt" >"$OUT"
echo "== wrote $OUT"
echo "== hottest symbols, self time (perf report --no-children)"
perf report -i "$WORK/perf.data" --no-children -g none --sort symbol --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | sed -E 's/ +(- +)*$//' | cut -c1-160 | head -25
