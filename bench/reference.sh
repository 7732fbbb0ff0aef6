#!/usr/bin/env bash
# The PostgreSQL listing against the reference design's stack on the same machine, the same
# database and the same 1 000 tasks: the service's GET /api/{user_id}/tasks beside
# bench/reference/app.py (FastAPI + SQLModel + asyncpg under uvicorn, the same route written
# to be as fast as that stack allows), under the same wrk load, in alternating rounds, for a
# page of 20 and a page of 50. Prints each pair and the ratio.
#
#   bench/reference.sh
#   WORKERS=2 DURATION=30 bench/reference.sh
#
# See bench/README.md ("Against the reference design").
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/reference.sh

Environment (all optional):
  DURATION      seconds per measurement (default 15)
  ROUNDS        rounds of the service then the reference, per page size, in turn (default 3)
  PAGE_SIZES    page sizes, space-separated (default "20 50")
  WORKERS       uvicorn worker processes of the reference (default 1, as the public
                implementations document; 2 gives it one per core here)
  CONNECTIONS   connections of wrk (default 100)
  THREADS       wrk threads (default 2)
  SEED_TASKS    tasks of the benchmark user (default 1000)
  PAUSE         seconds of quiet after each measurement (default 3: the reference is
                still answering requests of closed connections when wrk stops)
  VENV_DIR      the reference's virtualenv, made with pip from bench/reference/requirements.txt
                when missing or out of date (default ~/.cache/todo-api/reference-venv)
  PG_HOST, PG_PORT, PG_USER, PG_DB
                PostgreSQL server and the scratch database, dropped and re-created
                (default 127.0.0.1, 5432, postgres, todo_reference)
EOF
}
case "${1:-}" in
    "") ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

DURATION=${DURATION:-15}
DURATION=${DURATION%s}
ROUNDS=${ROUNDS:-3}
read -ra PAGE_SIZES <<<"${PAGE_SIZES:-20 50}"
WORKERS=${WORKERS:-1}
CONNECTIONS=${CONNECTIONS:-100}
THREADS=${THREADS:-2}
SEED_TASKS=${SEED_TASKS:-1000}
PAUSE=${PAUSE:-3}
VENV_DIR=${VENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/todo-api/reference-venv}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
PG_DB=${PG_DB:-todo_reference}
BENCH_SECRET="bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz"

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/service.sh
source "$BENCH_DIR/../scripts/lib/service.sh"
LUA_SCRIPT="$BENCH_DIR/request.lua"
REFERENCE_DIR="$BENCH_DIR/reference"
BIN=""

install_cleanup

# ensure_venv: VENV_DIR holds bench/reference/requirements.txt as pinned there; made or
# remade with pip (PyPI) when missing or made from other requirements.
ensure_venv() {
    local wanted
    wanted=$(sha256sum "$REFERENCE_DIR/requirements.txt" | cut -d' ' -f1)
    if [[ -x "$VENV_DIR/bin/uvicorn" && "$(cat "$VENV_DIR/.requirements.sha256" 2>/dev/null)" == "$wanted" ]]; then
        return
    fi
    python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
    log "installing the reference's packages into $VENV_DIR (pip, once)"
    rm -rf -- "$VENV_DIR"
    python3 -m venv "$VENV_DIR"
    "$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check -r "$REFERENCE_DIR/requirements.txt"
    echo "$wanted" >"$VENV_DIR/.requirements.sha256"
}

# start_reference: uvicorn with WORKERS processes on a free port, on the same database;
# sets REFERENCE_URL once a listing answers 200.
start_reference() {
    local port i
    port=$(pick_port)
    (
        cd -- "$WORK_DIR" || exit
        exec env -i PATH="$PATH" HOME="${HOME:-/root}" \
            DATABASE_URL="postgresql+asyncpg://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB" \
            BETTER_AUTH_SECRET="$BENCH_SECRET" \
            "$VENV_DIR/bin/uvicorn" app:app --app-dir "$REFERENCE_DIR" --host 127.0.0.1 \
            --port "$port" --workers "$WORKERS" --no-access-log --log-level warning
    ) >"$WORK_DIR/reference.log" 2>&1 &
    BACKGROUND_PIDS+=($!)
    REFERENCE_URL="http://127.0.0.1:$port"
    for ((i = 0; i < 300; i++)); do
        if curl -fsS -o /dev/null --max-time 5 -H "Authorization: Bearer $TOKEN" \
            "$REFERENCE_URL/api/$USER_ID/tasks" 2>/dev/null; then
            log "reference up at $REFERENCE_URL ($WORKERS uvicorn worker(s))"
            return
        fi
        sleep 0.1
    done
    cat -- "$WORK_DIR/reference.log" >&2
    die "the reference did not answer within 30 s"
}

# same_page SIZE: both answer the first page of SIZE with the same tasks, in the same order,
# and the same total: the two do the same work.
same_page() {
    local query="?page_size=$1" ours theirs
    ours=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$BASE_URL/api/$USER_ID/tasks$query" |
        jq -c '[.total, [.items[].id]]')
    theirs=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$REFERENCE_URL/api/$USER_ID/tasks$query" |
        jq -c '[.total, [.items[].id]]')
    [[ "$ours" == "$theirs" ]] || die "page of $1: the service and the reference disagree"
}

# measure URL: wrk at URL; prints "req/s p99_ms failed". A response slower than 30 s (the
# service's own request timeout) counts as failed.
measure() {
    local out="$WORK_DIR/wrk.txt"
    BENCH_METHOD=GET BENCH_TOKEN=$TOKEN wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
        --timeout 30s --latency -s "$LUA_SCRIPT" "$1" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    read_bench_result "$out" || die "no result from wrk: $(cat "$out")"
    printf '%s %s %s\n' "$(per_second "${BENCH[requests]}" "${BENCH[duration_us]}")" \
        "$(awk -v us="${BENCH[p99_us]}" 'BEGIN { printf "%.1f", us / 1000 }')" "$(failed_requests)"
    sleep "$PAUSE"
}

ensure_tools wrk jq curl python3 psql:postgresql-client
build_release
ensure_venv
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-reference.XXXXXX")
SERVICE_NAME=service
create_scratch_database
start_server "postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB" BETTER_AUTH_SECRET="$BENCH_SECRET" \
    AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0
signup bench_user bench_user@example.com bench-password-123
create_tasks "$SEED_TASKS" 'Task {}' 'Description of task {}'
expect_task_total "$SEED_TASKS"
psql_bench -c "VACUUM ANALYZE"
start_reference
for size in "${PAGE_SIZES[@]}"; do
    same_page "$size"
done

ROWS=()
for ((round = 1; round <= ROUNDS; round++)); do
    for size in "${PAGE_SIZES[@]}"; do
        log "round $round of $ROUNDS, page of $size: the service, then the reference, ${DURATION}s each"
        read -r ours ours_p99 ours_failed < <(measure "$BASE_URL/api/$USER_ID/tasks?page_size=$size")
        read -r ref ref_p99 ref_failed < <(measure "$REFERENCE_URL/api/$USER_ID/tasks?page_size=$size")
        ((ours_failed == 0)) || die "$ours_failed failed requests to the service"
        ratio=$(awk -v a="$ours" -v b="$ref" 'BEGIN { printf "%.1f×", (b > 0 ? a / b : 0) }')
        ROWS+=("$round|$size|$ours|$ours_p99|$ref|$ref_p99|$ref_failed|$ratio")
    done
done

printf '\nThe PostgreSQL listing against the reference design: %s cores, %s, load %s, commit %s\n' \
    "$(nproc)" "$(date -u +%FT%TZ)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(commit_description)"
printf '1 user, %s tasks; wrk -t%s -c%s, %s s each; reference: %s uvicorn worker(s); all on this machine\n\n' \
    "$SEED_TASKS" "$THREADS" "$CONNECTIONS" "$DURATION" "$WORKERS"
{
    echo "round|page|service req/s|p99 ms|reference req/s|p99 ms|reference failed|ratio"
    printf '%s\n' "${ROWS[@]}"
} | print_columns 1 2
