# Shared by compare.sh, compare-watch.sh and compare-lease.sh (sourced,
# not run): starting and stopping one etcd or ferrocd at a time, on free
# loopback ports, with its own data dir under $WORK, and the machine stamp
# of the results.
#
# The sourcing script sets ROOT, ETCD and QUIET_WAIT_S, then calls
# prepare_run (which sets FERROCD, PERF and WORK). Servers are stopped only
# by the PID this shell started.

# prepare_run SCRIPT TOOL... : checks the tools and $ETCD, builds the
# release binaries (FERROCD, PERF), makes $WORK and removes it (and stops
# the server) on exit.
prepare_run() {
    local script=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || {
            echo "$script needs $tool" >&2
            exit 2
        }
    done
    [[ -x $ETCD ]] || {
        echo "no etcd at $ETCD (apt-get install etcd-server)" >&2
        exit 2
    }
    echo "== building release binaries"
    # Two invocations so that ferrocd is built with exactly its own feature
    # set (building both packages at once would unify tonic's features
    # into it).
    cargo build --release -p ferrocd
    cargo build --release -p ferrocd-perf
    FERROCD=$ROOT/target/release/ferrocd
    PERF=$ROOT/target/release/ferrocd-perf
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferrocd-${script%.sh}.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}

# awk functions the result tables share: add(workload, server, metric,
# value) collects a run's value; median(workload SUBSEP server SUBSEP
# metric), ratio(etcd, ferrocd) and fmt(v) summarize. Prepend to a program.
# shellcheck disable=SC2016
AWK_MEDIANS='
        function median(key,   n, i, j, t, a) {
            n = cnt[key]
            for (i = 1; i <= n; i++) a[i] = val[key, i]
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            if (n == 0) return "n/a"
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function add(w, s, m, v) { if (v == "n/a" || v == "") return; k = w SUBSEP s SUBSEP m; val[k, ++cnt[k]] = v }
        function ratio(a, b) { return (a == "n/a" || b == "n/a" || a == 0) ? "n/a" : sprintf("%.2f", b / a) }
        function fmt(v) { return (v == "n/a") ? v : sprintf("%.1f", v) }
'

READY_TIMEOUT_S=30
STOP_TIMEOUT_S=10
SERVER_PID=

stop_server() {
    local pid=$SERVER_PID
    [[ -n $pid ]] || return 0
    SERVER_PID=
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((STOP_TIMEOUT_S * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "   server $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s; SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# A port no socket uses in any state. Ports are picked below the kernel's
# ephemeral range (32768+ by default), where the load generator's own client
# sockets would otherwise collide with a server's listener.
port_free() { ! ss -Htan "sport = :$1" | grep -q .; }
pick_ports() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        if port_free "$p" && port_free $((p + 1)); then
            echo "$p $((p + 1))"
            return
        fi
    done
}

# start_server NAME RUN_ID -> sets SERVER_PID, CLIENT_PORT, SERVER_LOG
start_server() {
    local name=$1 id=$2 bin peer
    case $name in
    etcd) bin=$ETCD ;;
    ferrocd) bin=$FERROCD ;;
    esac
    read -r CLIENT_PORT peer <<<"$(pick_ports)"
    local dir=$WORK/$id.data
    SERVER_LOG=$WORK/$id.log
    "$bin" --name default --data-dir "$dir" \
        --listen-client-urls "http://127.0.0.1:$CLIENT_PORT" \
        --advertise-client-urls "http://127.0.0.1:$CLIENT_PORT" \
        --listen-peer-urls "http://127.0.0.1:$peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "default=http://127.0.0.1:$peer" \
        >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq $((READY_TIMEOUT_S * 20))); do
        if grep -q 'ready to serve client requests' "$SERVER_LOG"; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$name exited before it was ready; log:" >&2
            tail -20 "$SERVER_LOG" >&2
            SERVER_PID=
            exit 1
        fi
        sleep 0.05
    done
    echo "$name not ready after ${READY_TIMEOUT_S}s; log:" >&2
    tail -20 "$SERVER_LOG" >&2
    exit 1
}

# Busy ticks of the whole machine over one second (minus steal).
busy_ticks_1s() {
    local a b
    a=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat)
    echo $((b - a))
}
wait_quiet() {
    [[ $QUIET_WAIT_S -gt 0 ]] || return 0
    local hz limit waited=0
    hz=$(getconf CLK_TCK)
    limit=$((hz / 4))
    while [[ $(busy_ticks_1s) -gt $limit ]]; do
        waited=$((waited + 1))
        if [[ $waited -ge $QUIET_WAIT_S ]]; then
            echo "   machine still busy after ${QUIET_WAIT_S}s; running anyway" >&2
            return 0
        fi
    done
}

# Sets COMMIT, DIRTY, DISK_SRC, DISK_FS, DISK_DEV, CPU_MODEL.
machine_stamp() {
    COMMIT=$(git rev-parse --short HEAD)
    DIRTY=""
    git diff --quiet HEAD 2>/dev/null || DIRTY=" (working tree has uncommitted changes)"
    DISK_SRC=$(findmnt -n -o SOURCE -T "$WORK" || echo "?")
    DISK_FS=$(findmnt -n -o FSTYPE,OPTIONS -T "$WORK" || echo "?")
    DISK_DEV=$(lsblk -dn -o NAME,MODEL,ROTA,SIZE "$DISK_SRC" 2>/dev/null | tr -s ' ' || echo "?")
    CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
}

# results_path SUFFIX -> a new perf/results/<date>-<commit><SUFFIX>.md
results_path() {
    local out n=2
    out=perf/results/$(date -u +%Y-%m-%d)-$COMMIT$1.md
    while [[ -e $out ]]; do
        out=perf/results/$(date -u +%Y-%m-%d)-$COMMIT$1-$n.md
        n=$((n + 1))
    done
    echo "$out"
}
