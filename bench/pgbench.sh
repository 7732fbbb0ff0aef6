#!/usr/bin/env bash
# The PostgreSQL listing against PostgreSQL alone: pgbench running the listing's reference
# SQL (a page of 20 and its count(*), the two statements a straightforward implementation
# sends) on the same database, the same user and the same 1 000 tasks, then the service's
# GET /api/{user_id}/tasks under wrk, for a page of 20 and a page of 50.
#
#   bench/pgbench.sh
#   DURATION=30 bench/pgbench.sh
#
# See bench/README.md ("The PostgreSQL listing against pgbench").
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/pgbench.sh

Environment (all optional):
  DURATION      seconds per measurement (default 15)
  ROUNDS        rounds of pgbench, then the service's two pages, in turn (default 3)
  CONNECTIONS   connections of wrk (default 100)
  PG_CLIENTS    clients of pgbench (default 10, the service's DATABASE_MAX_CONNECTIONS: both
                then keep as many statements in flight in PostgreSQL)
  THREADS       pgbench jobs and wrk threads (default 2)
  SEED_TASKS    tasks of the benchmark user (default 1000)
  PG_HOST, PG_PORT, PG_USER, PG_DB
                PostgreSQL server and the scratch database, dropped and re-created
                (default 127.0.0.1, 5432, postgres, todo_pgbench)
EOF
}
case "${1:-}" in
    "") ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

DURATION=${DURATION:-15}
DURATION=${DURATION%s}
CONNECTIONS=${CONNECTIONS:-100}
PG_CLIENTS=${PG_CLIENTS:-10}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
SEED_TASKS=${SEED_TASKS:-1000}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
PG_DB=${PG_DB:-todo_pgbench}
BENCH_SECRET="bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz"

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/service.sh
source "$BENCH_DIR/../scripts/lib/service.sh"
LUA_SCRIPT="$BENCH_DIR/request.lua"
BIN=""

install_cleanup

# wrk_rate PATH: requests/s of the service on PATH, or a failure on any error.
wrk_rate() {
    local out="$WORK_DIR/wrk.txt"
    BENCH_METHOD=GET BENCH_TOKEN=$TOKEN wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
        --latency -s "$LUA_SCRIPT" "$BASE_URL$1" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    read_bench_result "$out" || die "no result from wrk: $(cat "$out")"
    local errors
    errors=$(failed_requests)
    ((errors == 0)) || die "$errors failed requests on $1: $(cat "$out")"
    per_second "${BENCH[requests]}" "${BENCH[duration_us]}"
}

ensure_tools wrk jq curl psql:postgresql-client pgbench:postgresql-contrib
command -v pgbench >/dev/null || die "pgbench is needed (Debian: postgresql-contrib or postgresql-client)"
build_release
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-pgbench.XXXXXX")
SERVICE_NAME=service
SERVICE_HEALTH_TIMEOUT=60
create_scratch_database
DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB"
start_server "$DATABASE_URL" BETTER_AUTH_SECRET="$BENCH_SECRET" \
    AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0
signup bench_user bench_user@example.com bench-password-123
create_tasks "$SEED_TASKS" 'Task {}' 'Description of task {}'
expect_task_total "$SEED_TASKS"
psql_bench -c "VACUUM ANALYZE tasks"

# The reference: what the listing needs, as two plain statements, prepared (-M prepared:
# pgbench then binds :uid as a parameter).
cat >"$WORK_DIR/listing.sql" <<'SQL'
SELECT id, user_id, title, description, completed, created_at, updated_at
  FROM tasks WHERE user_id = :uid ORDER BY created_at DESC, id DESC LIMIT 20 OFFSET 0;
SELECT count(*) FROM tasks WHERE user_id = :uid;
SQL
# pgbench_rate: listings/s of PostgreSQL alone running the reference SQL.
pgbench_rate() {
    local out
    out=$(pgbench -n -M prepared -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
        -c "$PG_CLIENTS" -j "$THREADS" -T "$DURATION" -D uid="$USER_ID" \
        -f "$WORK_DIR/listing.sql" "$PG_DB" 2>&1) || die "pgbench failed: $out"
    awk '/^tps = / { printf "%.1f", $3; found = 1 } END { exit !found }' <<<"$out" ||
        die "no tps from pgbench: $out"
}

# Rounds of the three measurements in turn, so that the machine's drift (±15 % from one run
# to the next here) falls on all three alike; each share is of its own round.
ROWS=()
for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS: pgbench ($PG_CLIENTS clients), then the service (page of 20, of 50), ${DURATION}s each"
    reference=$(pgbench_rate)
    page20=$(wrk_rate "/api/$USER_ID/tasks")
    page50=$(wrk_rate "/api/$USER_ID/tasks?page_size=50")
    share=$(awk -v ours="$page20" -v ref="$reference" 'BEGIN { printf "%.0f %%", 100 * ours / ref }')
    ROWS+=("$round|$reference|$page20|$share|$page50")
done
stop_server

printf '\nPostgreSQL listing against pgbench: %s cores, %s, load %s, commit %s\n' "$(nproc)" \
    "$(date -u +%FT%TZ)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(commit_description)"
printf '1 user, %s tasks; pgbench -c %s, wrk -c %s (the service: %s database connections), %s s each; both on this machine\n\n' \
    "$SEED_TASKS" "$PG_CLIENTS" "$CONNECTIONS" 10 "$DURATION"
{
    echo "round|pgbench: reference SQL (page of 20 + count)|service: page of 20|share|service: page of 50"
    printf '%s\n' "${ROWS[@]}"
} | print_columns 1
