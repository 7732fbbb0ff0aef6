#!/usr/bin/env bash
# Load benchmark of the todo-api release binary with wrk, on SQLite and/or PostgreSQL.
#
#   bench/run.sh [sqlite|postgres|all]        (default: all)
#   DURATION=30 bench/run.sh postgres
#
# See bench/README.md for what is measured and how to read the table.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/run.sh [sqlite|postgres|all]

Environment (all optional):
  DURATION        wrk duration per endpoint (default 15s)
  CONNECTIONS     wrk connections (default 100)
  THREADS         wrk threads (default 2)
  WRK_TIMEOUT     wrk request timeout for the task endpoints (default 2s, wrk's default)
  LOGIN_TIMEOUT   wrk request timeout for login (default 60s: logins queue behind bcrypt)
  LIST_CONNECTIONS
                  connections of the list load measured alone and during the login flood
                  (default 20, one wrk thread)
  SEED_TASKS      tasks created for the benchmark user before the runs (default 1000)
  PG_HOST, PG_PORT, PG_USER, PG_DB
                  PostgreSQL server and the scratch database that is dropped and
                  re-created (default 127.0.0.1, 5432, postgres, todo_bench)
  ENDPOINTS       the runs, space-separated, in order (default "list get create login";
                  "update" adds PATCHes spread over the seeded tasks)
  UPDATE_TASKS    how many of the seeded tasks the update run PATCHes in turn (default 100,
                  at most 100; 1 makes every PATCH contend for one task)
  SERVER_ENV      extra server settings, space-separated NAME=value pairs, e.g.
                  SERVER_ENV="DATABASE_MAX_CONNECTIONS=20 PASSWORD_HASH_QUEUE=128"
  TODO_API_BIN    a todo-api binary to run instead of building this checkout (A/B runs)
  VERBOSE=1       also print wrk's own output for every run
EOF
}

TARGET=${1:-all}
case "$TARGET" in
    sqlite) DATABASES=(sqlite) ;;
    postgres | postgresql) DATABASES=(postgres) ;;
    all) DATABASES=(sqlite postgres) ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-100}
THREADS=${THREADS:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-2s}
LOGIN_TIMEOUT=${LOGIN_TIMEOUT:-60s}
LIST_CONNECTIONS=${LIST_CONNECTIONS:-20}
SEED_TASKS=${SEED_TASKS:-1000}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
PG_DB=${PG_DB:-todo_bench}
VERBOSE=${VERBOSE:-0}
SERVER_ENV=${SERVER_ENV:-}

# Fixed, documented test data.
BENCH_SECRET="bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz"
BENCH_USERNAME="bench_user"
BENCH_EMAIL="bench_user@example.com"
BENCH_PASSWORD="bench-password-123"
# ENDPOINTS: which runs, in this order (default all four), e.g. ENDPOINTS="create".
read -ra ENDPOINTS <<<"${ENDPOINTS:-list get create login}"
UPDATE_TASKS=${UPDATE_TASKS:-100}
if ! [[ "$UPDATE_TASKS" =~ ^[0-9]+$ ]] || ((UPDATE_TASKS < 1 || UPDATE_TASKS > 100)); then
    echo "error: UPDATE_TASKS must be 1 to 100" >&2
    exit 2
fi
for endpoint in "${ENDPOINTS[@]}"; do
    case "$endpoint" in
        list | get | create | update | login) ;;
        *) echo "error: ENDPOINTS: unknown endpoint $endpoint (list, get, create, update, login)" >&2; exit 2 ;;
    esac
done
# All the load comes from one address and one account, so per-client login rate limits
# would turn the login run into a measurement of 429 responses: they are switched off.
# Everything else (bcrypt cost, hashing concurrency and queue, timeouts) stays at the
# server's defaults. SERVER_ENV can override any of it.
SERVER_DEFAULT_ENV=(AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0)

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/service.sh
source "$BENCH_DIR/../scripts/lib/service.sh"
LUA_SCRIPT="$BENCH_DIR/request.lua"
# request.lua plus a count of the responses by status, for the login flood and the list
# load beside it (its per-response hook is why the task endpoints' own runs do not use it).
STATUS_LUA_SCRIPT="$BENCH_DIR/login_flood.lua"
BIN=""   # set after the build, from cargo's own idea of the target directory

# ---------------------------------------------------------------------------------------
# Cleanup: always stop the server (by PID), drop the scratch database, remove the temp dir.
# ---------------------------------------------------------------------------------------
PG_CREATED=0

drop_pg_db() {
    psql_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)"
}

# Run by cleanup (scripts/lib/service.sh) once the server is stopped.
on_cleanup() {
    if [[ "$PG_CREATED" == 1 ]]; then
        drop_pg_db || printf 'warning: could not drop database %s\n' "$PG_DB" >&2
        PG_CREATED=0
    fi
}
install_cleanup

# ---------------------------------------------------------------------------------------
# Data set-up
# ---------------------------------------------------------------------------------------
seed() {
    local body
    signup "$BENCH_USERNAME" "$BENCH_EMAIL" "$BENCH_PASSWORD"
    log "signed up $BENCH_USERNAME ($USER_ID)"

    log "creating $SEED_TASKS tasks (curl, 8 in parallel)"
    create_tasks "$SEED_TASKS" "Seed task {}" "Benchmark seed task number {}"

    # One task from the middle of the list, for the GET benchmark; also checks the count.
    expect_task_total "$SEED_TASKS" "?page_size=1&page=$(((SEED_TASKS + 1) / 2))"
    TASK_ID=$(jq -er '.items[0].id' <<<"$TASKS_BODY")
    # The first UPDATE_TASKS tasks, for the update run: PATCHes spread over 100 rarely meet
    # on a row; over 1, every one does.
    UPDATE_PATHS=$(jq -er --arg base "/api/$USER_ID/tasks/" '[.items[].id | $base + .] | join(" ")' \
        <<<"$(expect 200 "$(api GET "/api/$USER_ID/tasks?page_size=$UPDATE_TASKS")")")

    # The login body must work before it is measured.
    TOKEN=""
    body=$(expect 200 "$(api POST /api/auth/login "$LOGIN_BODY")")
    TOKEN=$(jq -er '.access_token' <<<"$body")
}

# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------
RESULTS=()   # "db|endpoint|conns|requests|req/s|ok/s|p50 ms|p99 ms|non2xx|socket|statuses"
ANY_ERRORS=0
declare -A LIST_P50=() LIST_P99=()
LOGIN_SUMMARIES=()

fmt_ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

# start_wrk DB ENDPOINT NAME CONNECTIONS THREADS SCRIPT: runs wrk in the background, its
# output in $WORK_DIR/wrk-DB-NAME.txt.
start_wrk() {
    local db=$1 endpoint=$2 name=$3 connections=$4 threads=$5 script=$6
    local method=GET path paths="" body="" token="$TOKEN" timeout=$WRK_TIMEOUT
    case "$endpoint" in
        list) path="/api/$USER_ID/tasks" ;;
        get) path="/api/$USER_ID/tasks/$TASK_ID" ;;
        create)
            method=POST
            path="/api/$USER_ID/tasks"
            body='{"title": "Benchmark task", "description": "Created by wrk"}'
            ;;
        update)
            method=PATCH
            path="/api/$USER_ID/tasks/$TASK_ID"
            paths=$UPDATE_PATHS
            body='{"description": "Patched by wrk"}'
            ;;
        login)
            method=POST
            path="/api/auth/login"
            body=$LOGIN_BODY
            token=""
            timeout=$LOGIN_TIMEOUT
            ;;
        *) die "unknown endpoint $endpoint" ;;
    esac
    log "$db $name: wrk -t$threads -c$connections -d$DURATION --timeout $timeout $method $path"
    BENCH_METHOD=$method BENCH_BODY=$body BENCH_TOKEN=$token BENCH_PATHS=$paths \
        wrk -t"$threads" -c"$connections" -d"$DURATION" --timeout "$timeout" --latency \
        -s "$script" "$BASE_URL$path" >"$WORK_DIR/wrk-$db-$name.txt" 2>&1 &
    BACKGROUND_PIDS+=($!)
}

# wait_wrk: waits for every wrk started; dies (printing their output) if one failed.
wait_wrk() {
    local pid status=0
    for pid in "${BACKGROUND_PIDS[@]}"; do
        wait "$pid" || status=$?
    done
    BACKGROUND_PIDS=()
    ((status == 0)) || { cat "$WORK_DIR"/wrk-*.txt >&2; die "wrk failed"; }
}

# record DB NAME CONNECTIONS: parses $WORK_DIR/wrk-DB-NAME.txt into a table row.
record() {
    local db=$1 name=$2 connections=$3 out="$WORK_DIR/wrk-$1-$2.txt"
    [[ "$VERBOSE" == 1 ]] && cat "$out" >&2
    read_bench_result "$out" || { cat "$out" >&2; die "no result line in wrk output"; }
    local requests=${BENCH[requests]} non2xx=${BENCH[non2xx]}
    local connect=${BENCH[connect]} reads=${BENCH[read]} writes=${BENCH[write]} timeouts=${BENCH[timeout]}

    local rps ok_rps p50 p99
    rps=$(per_second "$requests" "${BENCH[duration_us]}")
    ok_rps=$(per_second "$((requests - non2xx))" "${BENCH[duration_us]}")
    if ((requests > 0)); then
        p50=$(fmt_ms "${BENCH[p50_us]}")
        p99=$(fmt_ms "${BENCH[p99_us]}")
    else
        p50="-"
        p99="-"
    fi
    # The status counts, where the script kept them (login_flood.lua): "200:n 503:m".
    local statuses="-" fields kv
    if grep -q '^BENCH_STATUS' "$out"; then
        read -ra fields <<<"$(grep '^BENCH_STATUS' "$out" | sed 's/^BENCH_STATUS//')"
        statuses=""
        for kv in ${fields[@]+"${fields[@]}"}; do
            statuses+="${statuses:+ }${kv%%=*}:${kv#*=}"
        done
        statuses=${statuses:-none}
    fi
    local socket="$connect/$reads/$writes/$timeouts"
    local flag=""
    if ((non2xx + connect + reads + writes + timeouts > 0 || requests == 0)); then
        flag=" !"
        ANY_ERRORS=1
    fi
    RESULTS+=("$db|$name|$connections|$requests|$rps|$ok_rps|$p50|$p99|$non2xx|$socket$flag|$statuses")
    case "$name" in
        login | login-with-list) LOGIN_OK_RPS=$ok_rps ;;
        list-alone | list-during-login)
            LIST_P50[$db-$name]=$p50
            LIST_P99[$db-$name]=$p99
            ;;
    esac
    kill -0 "$SERVER_PID" 2>/dev/null || {
        cat "$WORK_DIR/server.log" >&2
        die "the server died during the $name run"
    }
}

# run_wrk DB ENDPOINT: one endpoint alone, at CONNECTIONS and THREADS.
run_wrk() {
    start_wrk "$1" "$2" "$2" "$CONNECTIONS" "$THREADS" "$LUA_SCRIPT"
    wait_wrk
    record "$1" "$2" "$CONNECTIONS"
}

# run_login DB: a list load of LIST_CONNECTIONS alone, the login flood (CONNECTIONS,
# THREADS) alone, then the two together: what a flood gets of the bcrypt ceiling, and what
# it costs the task routes (the hashing threads yield to them, so the flood gets less then).
run_login() {
    local db=$1
    start_wrk "$db" list list-alone "$LIST_CONNECTIONS" 1 "$STATUS_LUA_SCRIPT"
    wait_wrk
    record "$db" list-alone "$LIST_CONNECTIONS"
    start_wrk "$db" login login "$CONNECTIONS" "$THREADS" "$STATUS_LUA_SCRIPT"
    wait_wrk
    record "$db" login "$CONNECTIONS"
    local alone=$LOGIN_OK_RPS
    start_wrk "$db" login login-with-list "$CONNECTIONS" "$THREADS" "$STATUS_LUA_SCRIPT"
    start_wrk "$db" list list-during-login "$LIST_CONNECTIONS" 1 "$STATUS_LUA_SCRIPT"
    wait_wrk
    record "$db" login-with-list "$CONNECTIONS"
    record "$db" list-during-login "$LIST_CONNECTIONS"
    local summary="$db: $alone logins/s alone, $LOGIN_OK_RPS beside the list load; list at $LIST_CONNECTIONS connections:"
    summary+=" p50 ${LIST_P50[$db-list-alone]} ms alone, ${LIST_P50[$db-list-during-login]} ms during the flood;"
    summary+=" p99 ${LIST_P99[$db-list-alone]} ms alone, ${LIST_P99[$db-list-during-login]} ms during the flood"
    LOGIN_SUMMARIES+=("$summary")
}

bench_database() {
    local db=$1 database_url
    case "$db" in
        sqlite)
            rm -f "$WORK_DIR"/bench.db*
            database_url="sqlite://$WORK_DIR/bench.db"
            ;;
        postgres)
            log "re-creating PostgreSQL database $PG_DB"
            drop_pg_db
            PG_CREATED=1
            psql_admin -c "CREATE DATABASE \"$PG_DB\""
            database_url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB"
            ;;
    esac
    server_env_items "$SERVER_ENV"
    start_server "$database_url" BETTER_AUTH_SECRET="$BENCH_SECRET" BCRYPT_COST=12 \
        "${SERVER_DEFAULT_ENV[@]}" ${SERVER_ENV_ITEMS[@]+"${SERVER_ENV_ITEMS[@]}"}
    seed
    local endpoint
    for endpoint in "${ENDPOINTS[@]}"; do
        if [[ "$endpoint" == login ]]; then
            run_login "$db"
        else
            run_wrk "$db" "$endpoint"
        fi
    done
    if [[ -s "$WORK_DIR/server.log" ]]; then
        log "the server logged $(wc -l <"$WORK_DIR/server.log") warning/error lines during the $db runs; the last 10:"
        tail -n 10 "$WORK_DIR/server.log" >&2
    fi
    stop_server
    if [[ "$db" == postgres ]]; then
        drop_pg_db
        PG_CREATED=0
    fi
}

print_table() {
    local header="database|run|conns|requests|req/s|ok/s|p50 ms|p99 ms|non-2xx|socket errors (conn/read/write/timeout)|responses by status"
    {
        echo "$header"
        printf '%s\n' "${RESULTS[@]}"
    } | print_columns 1 2 10
}

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
TOOLS=(wrk jq curl)
if [[ " ${DATABASES[*]} " == *" postgres "* ]]; then
    TOOLS+=(psql:postgresql-client)
fi
ensure_tools "${TOOLS[@]}"

build_release

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-bench.XXXXXX")

STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load generator wrk runs on this machine ($(nproc) cores), beside the server and the database"
for db in "${DATABASES[@]}"; do
    bench_database "$db"
done

COMMIT=$(commit_description)

echo
echo "todo-api load benchmark"
echo "  date:       $STARTED"
echo "  machine:    $(nproc) cores ($(uname -sr)); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "  NOTE:       wrk (the load generator) runs on this same machine, sharing its $(nproc) cores"
echo "              with the server (and PostgreSQL): figures are a lower bound, not a capacity."
echo "  build:      $COMMIT, ${BIN#"$REPO_ROOT"/}"
echo "  server:     RUST_LOG=warn BCRYPT_COST=12 ${SERVER_DEFAULT_ENV[*]}${SERVER_ENV:+ $SERVER_ENV}; other settings at their defaults"
echo "  wrk:        -t$THREADS -c$CONNECTIONS -d$DURATION --latency; timeout $WRK_TIMEOUT (tasks), $LOGIN_TIMEOUT (login);"
echo "              list-alone and list-during-login: -t1 -c$LIST_CONNECTIONS, the second while the login run goes on"
echo "  data:       1 user with $SEED_TASKS seeded tasks; list = first page of 20 (runs before create)"
echo "  columns:    req/s counts every response, ok/s only those below 400; latencies are of all responses"
echo
print_table
echo
for summary in ${LOGIN_SUMMARIES[@]+"${LOGIN_SUMMARIES[@]}"}; do
    echo "Login flood, $summary."
done
echo
if ((ANY_ERRORS)); then
    echo "WARNING: rows marked '!' had non-2xx responses, socket errors or no completed requests;"
    echo "         their throughput and latency figures do not describe successful requests."
else
    echo "All requests returned 2xx; no socket errors."
fi
