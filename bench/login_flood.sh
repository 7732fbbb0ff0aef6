#!/usr/bin/env bash
# Shows what a login flood gets and what it costs the task routes, with the default settings:
# logins/s (against the machine's bcrypt ceiling), the responses by status, and the task
# list's latency alone and during the flood.
#
#   bench/login_flood.sh                   (from any directory)
#   DURATION=5 bench/login_flood.sh
#
# Builds the release binary, starts it on SQLite with BCRYPT_COST=12 (the default) and the
# auth rate limits off, every other setting at its default, signs up one user with 100
# tasks, then measures with wrk:
#   1. the task-list load alone:   GET /api/{id}/tasks, bearer token, 20 connections;
#   2. a login flood alone:        POST /api/auth/login (JSON), 100 connections;
#   3. the two at the same time.
# and prints, for each, requests/s, median and p99 latency and the responses by status.
# Logins wait for the hashing pool (one low-priority thread per core); one that would wait
# longer than PASSWORD_HASH_MAX_WAIT_SECONDS gets a 503 at once: that is the bound at work.
# Exit status: 1 when a list request failed or timed out during the flood, or none
# completed (the routes were starved); 0 otherwise.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/login_flood.sh

Environment (all optional):
  DURATION           seconds of each measurement (default 15; "15s" works too)
  FLOOD_CONNECTIONS  wrk connections of the login flood (default 100)
  LIST_CONNECTIONS   wrk connections of the list load (default 20)
  SEED_TASKS         tasks created for the user (default 100)
  LIST_TIMEOUT       wrk timeout of a list request (default 2s: slower counts as starved)
  LOGIN_TIMEOUT      wrk timeout of a login (default 60s: logins queue behind bcrypt)
  SERVER_ENV         extra server settings, space-separated NAME=value pairs, e.g.
                     SERVER_ENV="PASSWORD_HASH_CONCURRENCY=1"
  VERBOSE=1          also print wrk's own output
EOF
}
case "${1:-}" in
    "") ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

DURATION=${DURATION:-15}
DURATION=${DURATION%s}
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || { echo "error: DURATION must be whole seconds" >&2; exit 2; }
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-100}
LIST_CONNECTIONS=${LIST_CONNECTIONS:-20}
SEED_TASKS=${SEED_TASKS:-100}
LIST_TIMEOUT=${LIST_TIMEOUT:-2s}
LOGIN_TIMEOUT=${LOGIN_TIMEOUT:-60s}
SERVER_ENV=${SERVER_ENV:-}
VERBOSE=${VERBOSE:-0}

# Fixed, documented test data (as in bench/run.sh).
BENCH_SECRET="bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz"
BENCH_USERNAME="flood_user"
BENCH_EMAIL="flood_user@example.com"
BENCH_PASSWORD="flood-password-123"
# One address and one account: per-client limits would turn the flood into 429s.
SERVER_DEFAULT_ENV=(BCRYPT_COST=12 AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0)

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/service.sh
source "$BENCH_DIR/../scripts/lib/service.sh"
LUA_SCRIPT="$BENCH_DIR/login_flood.lua"
API_MAX_TIME=60

# Cleanup (scripts/lib/service.sh): stops the server and any wrk still running (by PID),
# removes the temp dir.
install_cleanup

# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
seed() {
    signup "$BENCH_USERNAME" "$BENCH_EMAIL" "$BENCH_PASSWORD"
    log "signed up $BENCH_USERNAME ($USER_ID); creating $SEED_TASKS tasks"
    create_tasks "$SEED_TASKS" "Flood task {}" "Login flood benchmark task {}"
    expect_task_total "$SEED_TASKS"

    # One login on an idle server: what one bcrypt verification costs here.
    local out
    out=$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' --max-time 60 \
        -H 'Content-Type: application/json' --data "$LOGIN_BODY" "$BASE_URL/api/auth/login")
    [[ "${out%% *}" == 200 ]] || die "login answered HTTP ${out%% *}"
    SINGLE_LOGIN_MS=$(awk -v s="${out#* }" 'BEGIN { printf "%.0f", s * 1000 }')
}

# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------
# start_wrk NAME KIND CONNECTIONS: runs wrk in the background, output in $WORK_DIR/NAME.txt.
start_wrk() {
    local name=$1 kind=$2 connections=$3 method path body token timeout
    case "$kind" in
        list)
            method=GET path="/api/$USER_ID/tasks" body="" token=$TOKEN timeout=$LIST_TIMEOUT
            ;;
        login)
            method=POST path="/api/auth/login" body=$LOGIN_BODY token="" timeout=$LOGIN_TIMEOUT
            ;;
    esac
    log "$name: wrk -t1 -c$connections -d${DURATION}s --timeout $timeout $method $path"
    BENCH_METHOD=$method BENCH_BODY=$body BENCH_TOKEN=$token \
        wrk -t1 -c"$connections" -d"${DURATION}s" --timeout "$timeout" --latency \
        -s "$LUA_SCRIPT" "$BASE_URL$path" >"$WORK_DIR/$name.txt" 2>&1 &
    BACKGROUND_PIDS+=($!)
}

wait_wrk() {
    local pid status=0
    for pid in "${BACKGROUND_PIDS[@]}"; do
        wait "$pid" || status=$?
    done
    BACKGROUND_PIDS=()
    return "$status"
}

ROWS=()        # "measurement|load|conns|requests|req/s|ok/s|p50 ms|p99 ms|max ms|statuses|socket"
declare -A LIST_OK=() LIST_RPS=() LIST_P50=() LIST_P99=()
declare -A FLOOD_OK=() FLOOD_OK_RPS=() FLOOD_503=()

fmt_ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }

# record NAME MEASUREMENT LOAD CONNECTIONS: parses $WORK_DIR/NAME.txt into a table row.
record() {
    local name=$1 measurement=$2 load=$3 connections=$4 out="$WORK_DIR/$1.txt"
    [[ "$VERBOSE" == 1 ]] && cat "$out" >&2
    local status_line fields kv
    read_bench_result "$out" || { cat "$out" >&2; die "no result line from wrk ($name)"; }
    status_line=$(grep '^BENCH_STATUS' "$out" || echo BENCH_STATUS)
    local requests=${BENCH[requests]} ok=0 code n statuses=""
    read -ra fields <<<"${status_line#BENCH_STATUS}"
    for kv in ${fields[@]+"${fields[@]}"}; do
        code=${kv%%=*} n=${kv#*=}
        [[ "$code" == 2* ]] && ok=$((ok + n))
        statuses+="${statuses:+ }$code:$n"
    done
    local rps ok_rps p50="-" p99="-" max="-"
    rps=$(per_second "$requests" "${BENCH[duration_us]}")
    ok_rps=$(per_second "$ok" "${BENCH[duration_us]}")
    if ((requests > 0)); then
        p50=$(fmt_ms "${BENCH[p50_us]}")
        p99=$(fmt_ms "${BENCH[p99_us]}")
        max=$(fmt_ms "${BENCH[max_us]}")
    fi
    local socket="${BENCH[connect]}/${BENCH[read]}/${BENCH[write]}/${BENCH[timeout]}"
    local socket_errors=$((BENCH[connect] + BENCH[read] + BENCH[write] + BENCH[timeout]))
    ROWS+=("$measurement|$load|$connections|$requests|$rps|$ok_rps|$p50|$p99|$max|${statuses:-none}|$socket")
    if [[ "$load" == login ]]; then
        FLOOD_OK[$measurement]=$ok
        FLOOD_OK_RPS[$measurement]=$ok_rps
        FLOOD_503[$measurement]=0
        [[ " ${statuses} " =~ \ 503:([0-9]+)\  ]] && FLOOD_503[$measurement]=${BASH_REMATCH[1]}
    fi
    if [[ "$load" == list ]]; then
        LIST_OK[$measurement]=$((ok == requests && socket_errors == 0 && requests > 0))
        LIST_RPS[$measurement]=$rps
        LIST_P50[$measurement]=$p50
        LIST_P99[$measurement]=$p99
    fi
}

print_table() {
    {
        echo "measurement|load|conns|requests|req/s|ok/s|p50 ms|p99 ms|max ms|responses by status (code:count)|socket errors (conn/read/write/timeout)"
        printf '%s\n' "${ROWS[@]}"
    } | print_columns 1 2 10
}

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
ensure_tools wrk jq curl
build_release

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-login-flood.XXXXXX")
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
server_env_items "$SERVER_ENV"
# SQLite in the temp dir.
start_server "sqlite://$WORK_DIR/flood.db" BETTER_AUTH_SECRET="$BENCH_SECRET" \
    "${SERVER_DEFAULT_ENV[@]}" ${SERVER_ENV_ITEMS[@]+"${SERVER_ENV_ITEMS[@]}"}
seed
log "one login on the idle server took ${SINGLE_LOGIN_MS} ms (bcrypt cost 12)"

# 1. The list load alone, for comparison.
start_wrk list-alone list "$LIST_CONNECTIONS"
wait_wrk || { cat "$WORK_DIR/list-alone.txt" >&2; die "wrk failed"; }
record list-alone alone list "$LIST_CONNECTIONS"

# 2. The login flood alone: what logins get of the machine's bcrypt ceiling.
start_wrk flood-alone login "$FLOOD_CONNECTIONS"
wait_wrk || { cat "$WORK_DIR/flood-alone.txt" >&2; die "wrk failed"; }
record flood-alone alone login "$FLOOD_CONNECTIONS"

# 3. The login flood and the list load at the same time, for the same duration: what the
# flood costs the task routes (the hashing threads yield to them, so the flood gets less).
start_wrk flood login "$FLOOD_CONNECTIONS"
start_wrk list-flood list "$LIST_CONNECTIONS"
wait_wrk || { cat "$WORK_DIR/flood.txt" "$WORK_DIR/list-flood.txt" >&2; die "wrk failed"; }
record flood "during flood" login "$FLOOD_CONNECTIONS"
record list-flood "during flood" list "$LIST_CONNECTIONS"

kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK_DIR/server.log" >&2; die "the server died during the flood"; }
SERVER_LINES=$(wc -l <"$WORK_DIR/server.log")

COMMIT=$(commit_description)
NPROC=$(nproc)

echo
echo "todo-api login flood: password hashing is bounded"
echo "  date:       $STARTED"
echo "  machine:    nproc=$NPROC ($(uname -sr)); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "  NOTE:       both wrk processes (the load generators) run on this same machine and share its"
echo "              $NPROC cores with the server: figures are noisy and a lower bound, not a capacity."
echo "  build:      $COMMIT, ${BIN#"$REPO_ROOT"/}"
echo "  server:     SQLite, RUST_LOG=warn ${SERVER_DEFAULT_ENV[*]}${SERVER_ENV:+ $SERVER_ENV}; the hashing pool at"
echo "              its defaults unless set above (PASSWORD_HASH_CONCURRENCY, _QUEUE, _MAX_WAIT_SECONDS)"
echo "  data:       1 user, $SEED_TASKS tasks; list = GET /api/{id}/tasks (first page of 20)"
echo "  bcrypt:     one login on the idle server took ${SINGLE_LOGIN_MS} ms"
echo "  wrk:        -t1 each, ${DURATION}s; list: -c$LIST_CONNECTIONS --timeout $LIST_TIMEOUT;" \
    "flood: POST /api/auth/login (JSON, valid credentials) -c$FLOOD_CONNECTIONS --timeout $LOGIN_TIMEOUT"
echo "  columns:    req/s counts every completed response, ok/s only 2xx; latencies are wrk's, of all"
echo "              completed responses; requests still queued when wrk stops are not counted"
echo
print_table
echo
if ((SERVER_LINES > 0)); then
    echo "The server logged $SERVER_LINES warning/error line(s); the last 5:"
    tail -n 5 "$WORK_DIR/server.log" | sed 's/^/  /'
    echo
fi
ratio=$(awk -v a="${LIST_RPS[alone]}" -v f="${LIST_RPS["during flood"]}" \
    'BEGIN { printf "%.0f", (a > 0 ? 100 * f / a : 0) }')
p99_change=$(awk -v a="${LIST_P99[alone]}" -v f="${LIST_P99["during flood"]}" \
    'BEGIN { if (a > 0) printf "%+.0f%%", 100 * (f - a) / a; else printf "n/a" }')
# The machine's bcrypt ceiling: every core hashing, at what one login took on the idle server.
ceiling=$(awk -v n="$NPROC" -v ms="$SINGLE_LOGIN_MS" 'BEGIN { printf "%.1f", (ms > 0 ? n * 1000 / ms : 0) }')
of_ceiling=$(awk -v ok="${FLOOD_OK_RPS[alone]}" -v c="$ceiling" 'BEGIN { printf "%.0f", (c > 0 ? 100 * ok / c : 0) }')
echo "List load during the flood: ${LIST_RPS["during flood"]} req/s (${ratio}% of ${LIST_RPS[alone]} alone)," \
    "p50 ${LIST_P50["during flood"]} ms (alone ${LIST_P50[alone]}), p99 ${LIST_P99["during flood"]} ms" \
    "(alone ${LIST_P99[alone]}; $p99_change)."
echo "Login flood alone: ${FLOOD_OK_RPS[alone]} logins/s, ${of_ceiling}% of the bcrypt ceiling of about $ceiling/s"
echo "             ($NPROC cores / ${SINGLE_LOGIN_MS} ms per login on the idle server); beside the list load:"
echo "             ${FLOOD_OK_RPS["during flood"]} logins/s."
for measurement in alone "during flood"; do
    refused=${FLOOD_503[$measurement]}
    label="The flood alone"
    [[ "$measurement" == alone ]] || label="Beside the list load"
    if ((refused > 0)); then
        echo "$label: ${FLOOD_OK[$measurement]} logins succeeded; $refused were refused at once with 503:"
        echo "             their wait for the hashing pool would have passed PASSWORD_HASH_MAX_WAIT_SECONDS."
    else
        echo "$label: ${FLOOD_OK[$measurement]} logins succeeded, none got 503: all $FLOOD_CONNECTIONS"
        echo "             connections fit within the hashing pool's wait bound, so they waited their turn."
    fi
done
if [[ "${LIST_OK["during flood"]}" == 1 ]]; then
    echo "PASS: every list request during the flood was answered 2xx within $LIST_TIMEOUT: the logins hashed"
    echo "      on the low-priority pool, which yields the CPU to the task routes."
else
    echo "FAIL: during the flood some list requests failed, timed out (> $LIST_TIMEOUT) or none completed."
    exit 1
fi
