#!/usr/bin/env bash
# Start-up time of the todo-api release binary on SQLite, with the default settings: the
# wall time from the exec of `todo-api serve` to its first `200` on GET /health (the process
# is listening: the database is created and migrated, the router built) and then to its
# first `200` on GET /ready (the database answers a query), over RUNS starts, each on a
# fresh SQLite file. Prints min, median and max of each in milliseconds.
#
#   bench/startup.sh                   (from any directory; 20 starts)
#   RUNS=50 bench/startup.sh
#
# Builds the release binary once (`cargo build --profile ${BUILD_PROFILE:-release} --locked`). Each start gets a new
# temporary working directory and a clean environment holding only PATH, HOME,
# BETTER_AUTH_SECRET (a fixed 32+ byte test secret, so that no warning about a random one is
# logged) and PORT (a free one); everything else is at its default — DATABASE_URL is
# `sqlite://todo.db`, so a fresh file in that directory, created and migrated by the start-up;
# BCRYPT_COST is 12; HOST is 127.0.0.1; RUST_LOG is info (to a file). The clock starts in
# the forked shell just before it execs the binary, and stops when the status line of a 200
# has been read. The endpoints are polled with bash's /dev/tcp (no process per attempt, so
# the poller costs the server little CPU), pausing POLL_MS between attempts. The server is
# stopped with SIGTERM after each start.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/startup.sh

Environment (all optional):
  RUNS        starts measured (default 20)
  WARMUP      starts run first and not counted, to load the binary into the page cache
              (default 1)
  POLL_MS     pause between two polls of an endpoint, in whole milliseconds (default 1;
              0 polls without pause, taking a core)
  TIMEOUT     seconds one start may take before the run fails (default 30)
  SERVER_ENV  extra server settings, space-separated NAME=value pairs, e.g.
              SERVER_ENV="BCRYPT_COST=14"
EOF
}
case "${1:-}" in
    "") ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

RUNS=${RUNS:-20}
WARMUP=${WARMUP:-1}
POLL_MS=${POLL_MS:-1}
TIMEOUT=${TIMEOUT:-30}
SERVER_ENV=${SERVER_ENV:-}
for setting in RUNS WARMUP POLL_MS TIMEOUT; do
    [[ "${!setting}" =~ ^[0-9]+$ ]] || { echo "error: $setting must be a whole number" >&2; exit 2; }
done
((RUNS > 0)) || { echo "error: RUNS must be at least 1" >&2; exit 2; }

# Fixed, documented test data (as in bench/run.sh).
BENCH_SECRET="bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz"

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/service.sh
source "$BENCH_DIR/../scripts/lib/service.sh"

# Cleanup (scripts/lib/service.sh): stops the server (by PID), removes the temp dir.
install_cleanup

# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------
# A descriptor nothing is ever written to: `read -t` on it is a sleep without a process.
exec {PAUSE_FD}<> <(:)
PAUSE_SECONDS=$(printf '%d.%03d' "$((POLL_MS / 1000))" "$((POLL_MS % 1000))")
pause() {
    ((POLL_MS > 0)) || return 0
    read -r -t "$PAUSE_SECONDS" -u "$PAUSE_FD" _ || true
}

# answers_200 PORT PATH: true when GET PATH on 127.0.0.1:PORT answers 200. No connection
# (not listening yet) fails at once.
answers_200() {
    local port=$1 path=$2 fd line=""
    { exec {fd}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    { printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&"$fd"; } 2>/dev/null || true
    read -r -t 5 -u "$fd" line 2>/dev/null || true
    exec {fd}>&-
    [[ "$line" == "HTTP/1.1 200 "* ]]
}

# now_us: NOW = microseconds since the epoch, from bash's own clock (no process).
now_us() {
    NOW=${EPOCHREALTIME/[.,]/}
    NOW=$((10#$NOW))
}

# wait_for_200 PORT PATH: polls until PATH answers 200; sets AT to the time it did (now_us).
# Fails when the server exits; dies when TIMEOUT passes.
wait_for_200() {
    local port=$1 path=$2 deadline
    now_us
    deadline=$((NOW + TIMEOUT * 1000000))
    until answers_200 "$port" "$path"; do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        now_us
        ((NOW < deadline)) || {
            cat -- "$RUN_DIR/server.log" >&2
            die "$path did not answer 200 within ${TIMEOUT}s"
        }
        pause
    done
    now_us
    AT=$NOW
}

HEALTH_MS=()
READY_MS=()

# one_start NUMBER: starts the binary in a fresh directory, times /health and /ready, stops
# it. Appends to HEALTH_MS and READY_MS unless it is a warm-up start (NUMBER 0 or less).
one_start() {
    local number=$1 port started health="" ready attempt
    RUN_DIR="$WORK_DIR/run-$number"
    for ((attempt = 0; attempt < 5; attempt++)); do
        rm -rf -- "$RUN_DIR"
        mkdir -p -- "$RUN_DIR"
        port=$(pick_port)
        (
            cd -- "$RUN_DIR" || exit
            # The clock starts here, in the process that becomes the server.
            now_us
            printf '%s\n' "$NOW" >started
            exec env -i PATH="$PATH" HOME="${HOME:-/root}" \
                BETTER_AUTH_SECRET="$BENCH_SECRET" PORT="$port" \
                ${SERVER_ENV_ITEMS[@]+"${SERVER_ENV_ITEMS[@]}"} "$BIN" serve
        ) >"$RUN_DIR/server.log" 2>&1 &
        SERVER_PID=$!
        if wait_for_200 "$port" /health; then
            health=$AT
            break
        fi
        # The server exited: the port may have been taken between pick_port and the bind.
        stop_server
        if grep -qi "address.*in use" "$RUN_DIR/server.log"; then
            log "port $port was taken meanwhile; retrying"
            continue
        fi
        cat -- "$RUN_DIR/server.log" >&2
        die "the server exited during start-up"
    done
    [[ -n "$health" ]] || die "could not start the server on a free port"
    wait_for_200 "$port" /ready || {
        cat -- "$RUN_DIR/server.log" >&2
        die "the server exited before /ready answered 200"
    }
    ready=$AT
    started=$(<"$RUN_DIR/started")
    stop_server
    if ((number > 0)); then
        HEALTH_MS+=("$(awk -v us="$((health - started))" 'BEGIN { printf "%.1f", us / 1000 }')")
        READY_MS+=("$(awk -v us="$((ready - started))" 'BEGIN { printf "%.1f", us / 1000 }')")
        log "start $number: /health ${HEALTH_MS[-1]} ms, /ready ${READY_MS[-1]} ms"
    fi
    rm -rf -- "$RUN_DIR"
}

# summary MS...: "min median max" of the numbers.
summary() {
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END {
            median = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.1f|%.1f|%.1f\n", v[1], median, v[NR]
        }'
}

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
ensure_tools jq
build_release
server_env_items "$SERVER_ENV"

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-startup.XXXXXX")
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "$WARMUP warm-up start(s), then $RUNS measured"
for ((n = 1 - WARMUP; n <= RUNS; n++)); do
    one_start "$n"
done

echo
echo "todo-api start-up time (SQLite, a fresh file per start)"
echo "  date:       $STARTED"
echo "  machine:    $(nproc) cores ($(uname -sr)); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "  build:      $(commit_description), ${BIN#"$REPO_ROOT"/}"
echo "  server:     BETTER_AUTH_SECRET and PORT set${SERVER_ENV:+, $SERVER_ENV}; every other setting at its default"
echo "  measured:   wall time from the exec of \`todo-api serve\` to the first 200, polled every ${POLL_MS} ms over /dev/tcp;"
echo "              $RUNS starts after $WARMUP warm-up start(s)"
echo
{
    echo "endpoint|starts|min ms|median ms|max ms"
    echo "GET /health|$RUNS|$(summary "${HEALTH_MS[@]}")"
    echo "GET /ready|$RUNS|$(summary "${READY_MS[@]}")"
} | print_columns 1
