#!/usr/bin/env bash
# Task events under load: create throughput with EVENTS_SINK=log and with EVENTS_SINK=dapr
# (against a local Dapr publish stand-in, bench/dapr_receiver.mjs), and the relay's
# commit-to-sink lag (median, p99) under that load.
#
#   bench/events.sh [sqlite|postgres|all]        (default: all)
#   DURATION=30 bench/events.sh postgres
#
# Each run: a fresh database, the release binary, one user, wrk creating tasks with
# CONNECTIONS connections for DURATION; then it waits for the relay to drain (/ready's
# events.pending reaches 0) and reads the receiver's lag figures. Lag is measured from the
# event's `time` (written in the change's transaction) to its arrival at the receiver, so it
# includes any backlog the relay built up during the run.
set -euo pipefail

TARGET=${1:-all}
case "$TARGET" in
    sqlite) DATABASES=(sqlite) ;;
    postgres | postgresql) DATABASES=(postgres) ;;
    all) DATABASES=(sqlite postgres) ;;
    *) echo "usage: bench/events.sh [sqlite|postgres|all]" >&2; exit 2 ;;
esac

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-100}
THREADS=${THREADS:-2}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
PG_DB=${PG_DB:-todo_bench_events}
BENCH_SECRET="bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz"

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/service.sh
source "$BENCH_DIR/../scripts/lib/service.sh"
LUA_SCRIPT="$BENCH_DIR/request.lua"
PG_CREATED=0

on_cleanup() {
    if [[ "$PG_CREATED" == 1 ]]; then
        psql_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" || true
        PG_CREATED=0
    fi
}
install_cleanup

RESULTS=()

# bench_one DB SINK: one run; appends a row to RESULTS.
bench_one() {
    local db=$1 sink=$2 database_url receiver_port="" receiver_pid="" sink_env=()
    case "$db" in
        sqlite)
            rm -f "$WORK_DIR"/events.db*
            database_url="sqlite://$WORK_DIR/events.db"
            ;;
        postgres)
            psql_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)"
            PG_CREATED=1
            psql_admin -c "CREATE DATABASE \"$PG_DB\""
            database_url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB"
            ;;
    esac
    if [[ "$sink" == dapr ]]; then
        receiver_port=$(pick_port)
        node "$BENCH_DIR/dapr_receiver.mjs" "$receiver_port" &
        receiver_pid=$!
        BACKGROUND_PIDS+=("$receiver_pid")
        sink_env=(EVENTS_SINK=dapr DAPR_HTTP_PORT="$receiver_port")
        for _ in $(seq 1 50); do port_in_use "$receiver_port" && break; sleep 0.1; done
    else
        sink_env=(EVENTS_SINK=log)
    fi
    start_server "$database_url" BETTER_AUTH_SECRET="$BENCH_SECRET" BCRYPT_COST=4 \
        AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0 "${sink_env[@]}"
    signup "bench_events" "bench_events@example.com" "bench-password-123"

    log "$db $sink: wrk -t$THREADS -c$CONNECTIONS -d$DURATION POST /api/$USER_ID/tasks"
    local out="$WORK_DIR/wrk-$db-$sink.txt"
    BENCH_METHOD=POST BENCH_BODY='{"title": "Benchmark task", "description": "Created by wrk"}' \
        BENCH_TOKEN=$TOKEN wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -s "$LUA_SCRIPT" "$BASE_URL/api/$USER_ID/tasks" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed"; }
    read_bench_result "$out" || { cat "$out" >&2; die "no result line in wrk output"; }

    # The relay drains what the load left behind.
    local drained_at start pending=1
    start=$(date +%s.%N)
    for ((i = 0; i < DRAIN_TIMEOUT * 10; i++)); do
        pending=$(curl -fsS --max-time 5 "$BASE_URL/ready" | jq -r '.events.pending') || pending=1
        [[ "$pending" == 0 ]] && break
        sleep 0.1
    done
    [[ "$pending" == 0 ]] || die "the relay did not drain within ${DRAIN_TIMEOUT}s"
    drained_at=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

    local count="-" median="-" p99="-"
    if [[ -n "$receiver_port" ]]; then
        local stats
        stats=$(curl -fsS "http://127.0.0.1:$receiver_port/stats")
        count=$(jq -r '.count' <<<"$stats")
        median=$(jq -r '.median_ms' <<<"$stats")
        p99=$(jq -r '.p99_ms' <<<"$stats")
    fi
    local created=$((BENCH[requests] - BENCH[non2xx]))
    RESULTS+=("$db|$sink|$(per_second "$created" "${BENCH[duration_us]}")|$(awk -v us="${BENCH[p50_us]}" 'BEGIN { printf "%.2f", us / 1000 }')|$(awk -v us="${BENCH[p99_us]}" 'BEGIN { printf "%.2f", us / 1000 }')|$created|$count|$median|$p99|$drained_at")
    stop_server
    if [[ -n "$receiver_pid" ]]; then
        stop_pid "$receiver_pid"
    fi
    if [[ "$db" == postgres ]]; then
        psql_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)"
        PG_CREATED=0
    fi
}

ensure_tools wrk jq curl node psql:postgresql-client
build_release
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-bench-events.XXXXXX")
for db in "${DATABASES[@]}"; do
    for sink in log dapr; do
        bench_one "$db" "$sink"
    done
done

echo
echo "todo-api task events under create load ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(commit_description))"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION on this machine ($(nproc) cores), release build, RUST_LOG=warn"
echo
{
    echo "database|sink|creates/s|p50 ms|p99 ms|events|delivered|lag median ms|lag p99 ms|drain s"
    printf '%s\n' "${RESULTS[@]}"
} | print_columns 1 2
