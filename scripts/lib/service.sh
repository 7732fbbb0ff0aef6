# shellcheck shell=bash
# Sourced (not run) by bench/run.sh, bench/login_flood.sh and scripts/schemathesis.sh: what
# they do alike to run the service on this machine. Logging, tool installation, the todo-api
# binary started on a free port in a clean environment, cleanup by PID, curl helpers for the
# API, the sign-up and seed steps, and (for bench/) the release build and the report bits.
#
# The sourcing script sets BIN (the binary) and WORK_DIR (a temporary directory, removed on
# exit), calls install_cleanup, and may change these after sourcing:
#   SERVICE_NAME            what the start-up log and error lines call the process ("server")
#   SERVICE_HEALTH_TIMEOUT  seconds start_server waits for /health (60)
#   API_MAX_TIME            curl --max-time of api(), in seconds (30)
# Set here: REPO_ROOT; SERVER_PID and BASE_URL by start_server; USER_ID, TOKEN and
# LOGIN_BODY by signup.

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
SERVICE_NAME=server
SERVICE_HEALTH_TIMEOUT=60
API_MAX_TIME=30

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Cleanup: stop what was started (by PID), remove the temp dir, also on failure or Ctrl-C.
# ---------------------------------------------------------------------------------------
WORK_DIR=""
SERVER_PID=""
BACKGROUND_PIDS=()   # other processes the script runs beside the server (load generators)

# stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1 i
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
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

stop_server() {
    local pid=$SERVER_PID
    SERVER_PID=""
    stop_pid "$pid"
}

# The EXIT trap: stops BACKGROUND_PIDS, then the server; drops the scratch database, if any;
# runs the script's on_cleanup, if it defines one; removes WORK_DIR; exits with the script's
# status.
cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in ${BACKGROUND_PIDS[@]+"${BACKGROUND_PIDS[@]}"}; do
        stop_pid "$pid"
    done
    stop_server
    drop_scratch_database 2>/dev/null || true
    if declare -F on_cleanup >/dev/null; then
        on_cleanup
    fi
    if [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
        rm -rf -- "$WORK_DIR"
    fi
    exit "$status"
}

install_cleanup() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

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

# ensure_tools COMMAND[:PACKAGE]...: installs, with apt-get, the package of each command
# that is missing (the command's own name unless given); then checks that cargo is there.
ensure_tools() {
    local tool missing=()
    for tool in "$@"; do
        command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
    done
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
    command -v cargo >/dev/null || die "cargo is not on PATH"
}

# build_release: `cargo build --profile $BUILD_PROFILE --locked` (default `release`; the
# deployments' `production` profile with BUILD_PROFILE=production) in REPO_ROOT, which stays
# the working directory; sets BIN, honouring CARGO_TARGET_DIR and .cargo/config.toml like
# cargo itself. With TODO_API_BIN (a binary built already, say another commit's for an A/B
# comparison) nothing is built and BIN is that binary.
build_release() {
    local profile=${BUILD_PROFILE:-release}
    if [[ -n "${TODO_API_BIN:-}" ]]; then
        # Resolved before moving to REPO_ROOT: a relative path is the caller's.
        BIN=$(realpath -- "$TODO_API_BIN") || die "TODO_API_BIN: $TODO_API_BIN does not exist"
        cd "$REPO_ROOT" || exit
        [[ -x "$BIN" ]] || die "TODO_API_BIN: $BIN is not an executable"
        log "not building: TODO_API_BIN=$BIN"
        return
    fi
    cd "$REPO_ROOT" || exit
    log "building: cargo build --profile $profile --locked"
    cargo build --profile "$profile" --locked
    BIN="$(cargo metadata --format-version 1 --no-deps --locked | jq -r '.target_directory')/$profile/todo-api"
    [[ -x "$BIN" ]] || die "$BIN was not built"
}

# ---------------------------------------------------------------------------------------
# The service
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

# server_env_items SPEC: SPEC's space-separated NAME=value pairs (the format of the scripts'
# SERVER_ENV), each checked, into the array SERVER_ENV_ITEMS.
server_env_items() {
    local item
    local -a items=()
    SERVER_ENV_ITEMS=()
    read -ra items <<<"$1"
    for item in ${items[@]+"${items[@]}"}; do
        [[ "$item" =~ ^[A-Z_][A-Z0-9_]*= ]] || die "SERVER_ENV: '$item' is not NAME=value"
        SERVER_ENV_ITEMS+=("$item")
    done
}

# start_server DATABASE_URL [NAME=value...]: starts `$BIN serve` on a free port of 127.0.0.1,
# output to $WORK_DIR/server.log, and waits for /health; another port when the one picked
# was taken meanwhile. Sets SERVER_PID and BASE_URL.
start_server() {
    local database_url=$1 attempt port i
    local server_log="$WORK_DIR/server.log"
    shift
    for ((attempt = 0; attempt < 5; attempt++)); do
        port=$(pick_port)
        # A clean environment, and the temp dir as working directory, so that no .env file
        # or stray variable (JWT_ISSUER, BETTER_AUTH_URL, …) changes what is measured or
        # tested: only these settings, then the caller's (which may override them).
        (
            cd -- "$WORK_DIR" || exit
            exec env -i PATH="$PATH" HOME="${HOME:-/root}" \
                HOST=127.0.0.1 PORT="$port" APP_ENV=development \
                DATABASE_URL="$database_url" RUST_LOG=warn NO_COLOR=1 "$@" \
                "$BIN" serve
        ) >"$server_log" 2>&1 &
        SERVER_PID=$!
        BASE_URL="http://127.0.0.1:$port"
        for ((i = 0; i < SERVICE_HEALTH_TIMEOUT * 10; i++)); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            if curl -fsS -o /dev/null --max-time 1 "$BASE_URL/health" 2>/dev/null; then
                log "$SERVICE_NAME up at $BASE_URL (pid $SERVER_PID)"
                return 0
            fi
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            cat -- "$server_log" >&2
            die "$SERVICE_NAME did not answer /health within ${SERVICE_HEALTH_TIMEOUT}s"
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
        if grep -qi "address.*in use" "$server_log"; then
            log "port $port was taken meanwhile; retrying"
            continue
        fi
        cat -- "$server_log" >&2
        die "$SERVICE_NAME exited during start-up"
    done
    die "could not start the $SERVICE_NAME on a free port"
}

# ---------------------------------------------------------------------------------------
# PostgreSQL, for the bench scripts: PG_HOST, PG_PORT, PG_USER and PG_DB are the caller's.
# ---------------------------------------------------------------------------------------
# psql_admin ARGS...: psql on the `postgres` database, quiet, stopping at the first error.
psql_admin() {
    PGOPTIONS="-c client_min_messages=warning" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
        -d postgres -X -q -v ON_ERROR_STOP=1 "$@"
}

# create_scratch_database: drops PG_DB if it exists and creates it empty; cleanup drops it
# again on exit.
SCRATCH_DATABASE=""
create_scratch_database() {
    psql_admin -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
    psql_admin -c "CREATE DATABASE $PG_DB" >/dev/null
    SCRATCH_DATABASE=$PG_DB
}

# drop_scratch_database: drops the database create_scratch_database made, now.
drop_scratch_database() {
    [[ -n "$SCRATCH_DATABASE" ]] || return 0
    psql_admin -c "DROP DATABASE IF EXISTS $SCRATCH_DATABASE WITH (FORCE)" >/dev/null
    SCRATCH_DATABASE=""
}

# psql_bench ARGS...: the same on the scratch database PG_DB.
psql_bench() {
    PGOPTIONS="-c client_min_messages=warning" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
        -d "$PG_DB" -X -q -v ON_ERROR_STOP=1 "$@"
}

# ---------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------
# api METHOD PATH [BODY]: prints the body, then a last line with the status code; with
# TOKEN's bearer token when TOKEN is set.
api() {
    local method=$1 path=$2 body=${3:-}
    local args=(-sS -X "$method" -w '\n%{http_code}' --max-time "$API_MAX_TIME")
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

# signup USERNAME EMAIL PASSWORD: signs the user up; sets USER_ID, TOKEN (its access token)
# and LOGIN_BODY (its JSON login body). Needs jq.
signup() {
    local username=$1 email=$2 password=$3 response body
    TOKEN=""
    response=$(api POST /api/auth/signup "$(jq -cn \
        --arg u "$username" --arg e "$email" --arg p "$password" \
        '{username: $u, email: $e, password: $p, confirm_password: $p}')")
    body=$(expect 201 "$response")
    USER_ID=$(jq -er '.user.id' <<<"$body")
    TOKEN=$(jq -er '.access_token' <<<"$body")
    # shellcheck disable=SC2034  # for the caller
    LOGIN_BODY=$(jq -cn --arg u "$username" --arg p "$password" '{username: $u, password: $p}')
}

# create_tasks COUNT TITLE DESCRIPTION: COUNT tasks for USER_ID, with curl, 8 in parallel;
# `{}` in TITLE and DESCRIPTION is the task's number. Anything but 201 aborts the run.
create_tasks() {
    local count=$1 title=$2 description=$3 codes failed
    # Each line of output is one status code.
    codes=$(seq 1 "$count" | xargs -P 8 -I '{}' \
        curl -sS -o /dev/null -w '%{http_code}\n' --max-time 30 -X POST \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        --data "{\"title\": \"$title\", \"description\": \"$description\"}" \
        "$BASE_URL/api/$USER_ID/tasks" || true)
    failed=$(grep -cv '^201$' <<<"$codes" || true)
    ((failed == 0)) || die "$failed of $count task creations did not return 201"
}

# expect_task_total COUNT [QUERY]: GET /api/$USER_ID/tasks[QUERY] must answer 200 with a
# total of COUNT; the body is left in TASKS_BODY. Needs jq.
expect_task_total() {
    local count=$1 query=${2:-}
    TASKS_BODY=$(expect 200 "$(api GET "/api/$USER_ID/tasks$query")")
    [[ $(jq -r '.total' <<<"$TASKS_BODY") == "$count" ]] ||
        die "expected $count tasks, the list says $(jq -r '.total' <<<"$TASKS_BODY")"
}

# ---------------------------------------------------------------------------------------
# bench/ reports
# ---------------------------------------------------------------------------------------
# commit_description: the short commit, and whether anything outside bench/ (which does not
# change what is measured) differs from it.
commit_description() {
    local commit
    commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$REPO_ROOT" status --porcelain -- . ':(exclude)bench' 2>/dev/null) ]]; then
        commit="$commit (with uncommitted changes)"
    fi
    printf '%s\n' "$commit"
}

# read_bench_result FILE: the key=value pairs of the BENCH_RESULT line that bench/request.lua
# has wrk print, from FILE into the associative array BENCH; false without such a line.
# shellcheck disable=SC2034  # BENCH is for the caller
read_bench_result() {
    local line fields kv
    line=$(grep '^BENCH_RESULT ' "$1") || return 1
    declare -gA BENCH=()
    read -ra fields <<<"${line#BENCH_RESULT }"
    for kv in "${fields[@]}"; do
        BENCH[${kv%%=*}]=${kv#*=}
    done
}

# failed_requests: of the run read by read_bench_result, the responses that were not 2xx plus
# the socket errors (connect, read, write, timeout).
failed_requests() {
    echo $((BENCH[non2xx] + BENCH[connect] + BENCH[read] + BENCH[write] + BENCH[timeout]))
}

per_second() { awk -v n="$1" -v us="$2" 'BEGIN { printf "%.1f", (us > 0 ? n / (us / 1e6) : 0) }'; }

# print_columns LEFT...: the |-separated lines on stdin as a table, a rule under the first
# (the header); text columns (the numbers LEFT, and the last) left-aligned, the others right.
print_columns() {
    awk -F'|' -v left=" $* " '
        { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR; nf = NF }
        END {
            for (r = 1; r <= n; r++) {
                line = ""
                for (i = 1; i <= nf; i++) {
                    fmt = (i == nf) ? "%s" : index(left, " " i " ") ? "%-" w[i] "s" : "%" w[i] "s"
                    line = line (i > 1 ? "  " : "") sprintf(fmt, cell[r, i])
                }
                print line
                if (r == 1) { sep = line; gsub(/./, "-", sep); print sep }
            }
        }'
}
