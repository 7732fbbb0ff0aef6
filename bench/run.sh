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
  SEED_TASKS      tasks created for the benchmark user before the runs (default 1000)
  PG_HOST, PG_PORT, PG_USER, PG_DB
                  PostgreSQL server and the scratch database that is dropped and
                  re-created (default 127.0.0.1, 5432, postgres, todo_bench)
  SERVER_ENV      extra server settings, space-separated NAME=value pairs, e.g.
                  SERVER_ENV="DATABASE_MAX_CONNECTIONS=20 PASSWORD_HASH_QUEUE=128"
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
ENDPOINTS=(list get create login)
# All the load comes from one address and one account, so per-client login rate limits
# would turn the login run into a measurement of 429 responses: they are switched off.
# Everything else (bcrypt cost, hashing concurrency and queue, timeouts) stays at the
# server's defaults. SERVER_ENV can override any of it.
SERVER_DEFAULT_ENV=(AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0)

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$BENCH_DIR/.." && pwd)
LUA_SCRIPT="$BENCH_DIR/request.lua"
BIN=""   # set after the build, from cargo's own idea of the target directory

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Cleanup: always stop the server (by PID), drop the scratch database, remove the temp dir.
# ---------------------------------------------------------------------------------------
WORK_DIR=""
SERVER_PID=""
PG_CREATED=0

stop_server() {
    local pid=$SERVER_PID
    SERVER_PID=""
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

psql_admin() {
    PGOPTIONS="-c client_min_messages=warning" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -X -q -v ON_ERROR_STOP=1 "$@"
}

drop_pg_db() {
    psql_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)"
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_server
    if [[ "$PG_CREATED" == 1 ]]; then
        drop_pg_db || printf 'warning: could not drop database %s\n' "$PG_DB" >&2
        PG_CREATED=0
    fi
    if [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
        rm -rf -- "$WORK_DIR"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------
APT_UPDATED=0
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null || die "missing $*, and apt-get is not available to install it"
    log "installing $* with apt-get"
    # Refresh the package lists only when the install cannot proceed without it.
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; then
        if [[ "$APT_UPDATED" == 0 ]]; then
            log "apt-get update"
            as_root apt-get update -qq >/dev/null
            APT_UPDATED=1
        fi
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    fi
}

ensure_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v jq >/dev/null || missing+=(jq)
    command -v curl >/dev/null || missing+=(curl)
    if [[ " ${DATABASES[*]} " == *" postgres "* ]] && ! command -v psql >/dev/null; then
        missing+=(postgresql-client)
    fi
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
    command -v cargo >/dev/null || die "cargo is not on PATH"
}

# ---------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local i port
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 40000))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found"
}

# start_server DATABASE_URL: starts the server on a free port; sets SERVER_PID and BASE_URL.
start_server() {
    local database_url=$1 attempt port i
    local server_log="$WORK_DIR/server.log"
    local extra_env=("${SERVER_DEFAULT_ENV[@]}") item
    local -a user_env=()
    read -ra user_env <<<"$SERVER_ENV"
    for item in ${user_env[@]+"${user_env[@]}"}; do
        [[ "$item" =~ ^[A-Z_][A-Z0-9_]*= ]] || die "SERVER_ENV: '$item' is not NAME=value"
        extra_env+=("$item")
    done
    for ((attempt = 0; attempt < 5; attempt++)); do
        port=$(pick_port)
        # A clean environment, and the temp dir as working directory so that no .env file
        # or stray variable (JWT_ISSUER, BETTER_AUTH_URL, …) changes what is measured.
        (
            cd "$WORK_DIR"
            exec env -i PATH="$PATH" HOME="${HOME:-/root}" \
                HOST=127.0.0.1 PORT="$port" APP_ENV=development \
                DATABASE_URL="$database_url" BETTER_AUTH_SECRET="$BENCH_SECRET" \
                BCRYPT_COST=12 RUST_LOG=warn NO_COLOR=1 "${extra_env[@]}" \
                "$BIN" serve
        ) >"$server_log" 2>&1 &
        SERVER_PID=$!
        BASE_URL="http://127.0.0.1:$port"
        for ((i = 0; i < 600; i++)); do
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                break
            fi
            if curl -fsS -o /dev/null --max-time 1 "$BASE_URL/health" 2>/dev/null; then
                log "server up at $BASE_URL (pid $SERVER_PID)"
                return 0
            fi
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$server_log" >&2
            die "server did not answer /health within 60s"
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
        if grep -qi "address.*in use" "$server_log"; then
            log "port $port was taken meanwhile; retrying"
            continue
        fi
        cat "$server_log" >&2
        die "server exited during start-up"
    done
    die "could not start the server on a free port"
}

# ---------------------------------------------------------------------------------------
# Data set-up
# ---------------------------------------------------------------------------------------
# api METHOD PATH [BODY]: prints the body, then a last line with the status code.
api() {
    local method=$1 path=$2 body=${3:-}
    local args=(-sS -X "$method" -w '\n%{http_code}' --max-time 30)
    [[ -n "${TOKEN:-}" ]] && args+=(-H "Authorization: Bearer $TOKEN")
    [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data "$body")
    curl "${args[@]}" "$BASE_URL$path"
}

# expect STATUS RESPONSE: checks the status line of an api() response, prints the body.
expect() {
    local want=$1 response=$2 status body
    status=${response##*$'\n'}
    body=${response%$'\n'*}
    [[ "$status" == "$want" ]] || die "expected HTTP $want, got $status: $body"
    printf '%s' "$body"
}

seed() {
    local response body codes failed
    TOKEN=""
    response=$(api POST /api/auth/signup "$(jq -cn \
        --arg u "$BENCH_USERNAME" --arg e "$BENCH_EMAIL" --arg p "$BENCH_PASSWORD" \
        '{username: $u, email: $e, password: $p, confirm_password: $p}')")
    body=$(expect 201 "$response")
    USER_ID=$(jq -er '.user.id' <<<"$body")
    TOKEN=$(jq -er '.access_token' <<<"$body")
    log "signed up $BENCH_USERNAME ($USER_ID)"

    log "creating $SEED_TASKS tasks (curl, 8 in parallel)"
    # Each line of output is one status code; anything but 201 aborts the run.
    codes=$(seq 1 "$SEED_TASKS" | xargs -P 8 -I '{}' \
        curl -sS -o /dev/null -w '%{http_code}\n' --max-time 30 -X POST \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        --data '{"title": "Seed task {}", "description": "Benchmark seed task number {}"}' \
        "$BASE_URL/api/$USER_ID/tasks" || true)
    failed=$(grep -cv '^201$' <<<"$codes" || true)
    ((failed == 0)) || die "$failed of $SEED_TASKS task creations did not return 201"

    # One task from the middle of the list, for the GET benchmark; also checks the count.
    body=$(expect 200 "$(api GET "/api/$USER_ID/tasks?page_size=1&page=$(((SEED_TASKS + 1) / 2))")")
    [[ $(jq -r '.total' <<<"$body") == "$SEED_TASKS" ]] ||
        die "expected $SEED_TASKS tasks, the list says $(jq -r '.total' <<<"$body")"
    TASK_ID=$(jq -er '.items[0].id' <<<"$body")

    # The login body must work before it is measured.
    LOGIN_BODY=$(jq -cn --arg u "$BENCH_USERNAME" --arg p "$BENCH_PASSWORD" \
        '{username: $u, password: $p}')
    TOKEN=""
    body=$(expect 200 "$(api POST /api/auth/login "$LOGIN_BODY")")
    TOKEN=$(jq -er '.access_token' <<<"$body")
}

# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------
RESULTS=()   # "db|endpoint|requests|req/s|ok/s|p50 ms|p99 ms|non2xx|connect/read/write/timeout"
ANY_ERRORS=0

fmt_ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
per_second() { awk -v n="$1" -v us="$2" 'BEGIN { printf "%.1f", (us > 0 ? n / (us / 1e6) : 0) }'; }

# run_wrk DB ENDPOINT
run_wrk() {
    local db=$1 endpoint=$2 method=GET path body="" token="$TOKEN" timeout=$WRK_TIMEOUT
    case "$endpoint" in
        list) path="/api/$USER_ID/tasks" ;;
        get) path="/api/$USER_ID/tasks/$TASK_ID" ;;
        create)
            method=POST
            path="/api/$USER_ID/tasks"
            body='{"title": "Benchmark task", "description": "Created by wrk"}'
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

    log "$db $endpoint: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --timeout $timeout $method $path"
    local out="$WORK_DIR/wrk-$db-$endpoint.txt"
    BENCH_METHOD=$method BENCH_BODY=$body BENCH_TOKEN=$token \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout "$timeout" --latency \
        -s "$LUA_SCRIPT" "$BASE_URL$path" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed"; }
    [[ "$VERBOSE" == 1 ]] && cat "$out" >&2

    local line
    line=$(grep '^BENCH_RESULT ' "$out") || { cat "$out" >&2; die "no result line in wrk output"; }
    # key=value pairs after the tag, into an associative array.
    local -A r=()
    local fields kv
    read -ra fields <<<"${line#BENCH_RESULT }"
    for kv in "${fields[@]}"; do
        r[${kv%%=*}]=${kv#*=}
    done
    local requests=${r[requests]} non2xx=${r[non2xx]}
    local connect=${r[connect]} reads=${r[read]} writes=${r[write]} timeouts=${r[timeout]}

    local rps ok_rps p50 p99
    rps=$(per_second "$requests" "${r[duration_us]}")
    ok_rps=$(per_second "$((requests - non2xx))" "${r[duration_us]}")
    if ((requests > 0)); then
        p50=$(fmt_ms "${r[p50_us]}")
        p99=$(fmt_ms "${r[p99_us]}")
    else
        p50="-"
        p99="-"
    fi
    local socket="$connect/$reads/$writes/$timeouts"
    local flag=""
    if ((non2xx + connect + reads + writes + timeouts > 0 || requests == 0)); then
        flag=" !"
        ANY_ERRORS=1
    fi
    RESULTS+=("$db|$endpoint|$requests|$rps|$ok_rps|$p50|$p99|$non2xx|$socket$flag")
    kill -0 "$SERVER_PID" 2>/dev/null || {
        cat "$WORK_DIR/server.log" >&2
        die "the server died during the $endpoint run"
    }
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
    start_server "$database_url"
    seed
    local endpoint
    for endpoint in "${ENDPOINTS[@]}"; do
        run_wrk "$db" "$endpoint"
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
    local header="database|endpoint|requests|req/s|ok/s|p50 ms|p99 ms|non-2xx|socket errors (conn/read/write/timeout)"
    {
        echo "$header"
        printf '%s\n' "${RESULTS[@]}"
    } | awk -F'|' '
        { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR; nf = NF }
        END {
            for (r = 1; r <= n; r++) {
                line = ""
                for (i = 1; i <= nf; i++) {
                    # text columns left-aligned, numbers right-aligned
                    fmt = (i == nf) ? "%s" : (i <= 2) ? "%-" w[i] "s" : "%" w[i] "s"
                    line = line (i > 1 ? "  " : "") sprintf(fmt, cell[r, i])
                }
                print line
                if (r == 1) { sep = line; gsub(/./, "-", sep); print sep }
            }
        }'
}

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
ensure_tools

cd "$REPO_ROOT"
log "building: cargo build --release --locked"
cargo build --release --locked
# Honours CARGO_TARGET_DIR and .cargo/config.toml, like cargo itself.
BIN="$(cargo metadata --format-version 1 --no-deps --locked | jq -r '.target_directory')/release/todo-api"
[[ -x "$BIN" ]] || die "$BIN was not built"

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-bench.XXXXXX")

STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load generator wrk runs on this machine ($(nproc) cores), beside the server and the database"
for db in "${DATABASES[@]}"; do
    bench_database "$db"
done

COMMIT=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
# bench/ itself does not change what is measured.
if [[ -n $(git -C "$REPO_ROOT" status --porcelain -- . ':(exclude)bench' 2>/dev/null) ]]; then
    COMMIT="$COMMIT (with uncommitted changes)"
fi

echo
echo "todo-api load benchmark"
echo "  date:       $STARTED"
echo "  machine:    $(nproc) cores ($(uname -sr)); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "  NOTE:       wrk (the load generator) runs on this same machine, sharing its $(nproc) cores"
echo "              with the server (and PostgreSQL): figures are a lower bound, not a capacity."
echo "  build:      $COMMIT, ${BIN#"$REPO_ROOT"/}"
echo "  server:     RUST_LOG=warn BCRYPT_COST=12 ${SERVER_DEFAULT_ENV[*]}${SERVER_ENV:+ $SERVER_ENV}; other settings at their defaults"
echo "  wrk:        -t$THREADS -c$CONNECTIONS -d$DURATION --latency; timeout $WRK_TIMEOUT (tasks), $LOGIN_TIMEOUT (login)"
echo "  data:       1 user with $SEED_TASKS seeded tasks; list = first page of 20 (runs before create)"
echo "  columns:    req/s counts every response, ok/s only those below 400; latencies are of all responses"
echo
print_table
echo
if ((ANY_ERRORS)); then
    echo "WARNING: rows marked '!' had non-2xx responses, socket errors or no completed requests;"
    echo "         their throughput and latency figures do not describe successful requests."
else
    echo "All requests returned 2xx; no socket errors."
fi
