#!/usr/bin/env bash
# Cost against the data's size: list, get and create on a small database, then on the same
# database after bulk-loading 10 million tasks across 100 000 other users, with the plans of
# the benchmark user's listings printed (`todo-api explain`).
#
#   bench/scale.sh [sqlite|postgres|all]        (default: all)
#   USERS=10000 bench/scale.sh sqlite           (a smaller load: 1 000 000 tasks)
#
# See bench/README.md ("Scale") for what is measured and how to read it.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/scale.sh [sqlite|postgres|all]

Environment (all optional):
  USERS           other users whose tasks are bulk-loaded (default 100000)
  TASKS_PER_USER  tasks per loaded user, and of the benchmark user (default 100)
  DURATION        wrk duration per route and size (default 10s)
  CONNECTIONS     wrk connections (default 100)
  THREADS         wrk threads (default 2)
  PG_HOST, PG_PORT, PG_USER, PG_DB
                  PostgreSQL server and the scratch database, dropped and re-created
                  (default 127.0.0.1, 5432, postgres, todo_scale)
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

USERS=${USERS:-100000}
TASKS_PER_USER=${TASKS_PER_USER:-100}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-100}
THREADS=${THREADS:-2}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
PG_DB=${PG_DB:-todo_scale}
LOADED=$((USERS * TASKS_PER_USER))

BENCH_SECRET="bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz"
BENCH_PASSWORD="bench-password-123"
# The listings whose plans are printed: the benchmark's own, then the other sorts and filters.
PLANS=("" "sort_by=due_at&sort_order=asc" "sort_by=priority" "tag=work&sort_by=due_at"
    "due_after=2027-02-01T00:00:00Z&due_before=2027-03-01T00:00:00Z&sort_by=due_at")

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/service.sh
source "$BENCH_DIR/../scripts/lib/service.sh"
LUA_SCRIPT="$BENCH_DIR/request.lua"
BIN=""

install_cleanup


# The same rows on both databases: user load-<n> owns TASKS_PER_USER tasks; a fifth have no
# due date, a tenth carry the tag `work`, priorities and completion spread evenly.
load_postgres() {
    psql_bench <<SQL
SET maintenance_work_mem = '512MB';
CREATE TEMP TABLE kept AS
    SELECT indexname, indexdef FROM pg_indexes
    WHERE tablename = 'tasks' AND indexname <> 'tasks_pkey';
DO \$\$ DECLARE r record; BEGIN
    FOR r IN SELECT indexname FROM kept LOOP EXECUTE 'DROP INDEX ' || r.indexname; END LOOP;
END \$\$;
-- The per-owner counts are computed once after the load, not by a trigger per row.
ALTER TABLE tasks DISABLE TRIGGER USER;
INSERT INTO tasks (id, user_id, title, title_key, completed, created_at, updated_at,
                   priority, tags, due_at)
SELECT gen_random_uuid(), 'load-' || (i % $USERS), 'task ' || i, 'task ' || i, i % 3 = 0,
       to_timestamp(1764000000) + i * interval '1 millisecond', to_timestamp(1764000000),
       i % 4, CASE WHEN i % 10 = 0 THEN '["work"]' ELSE '[]' END,
       CASE WHEN i % 5 = 0 THEN NULL
            ELSE to_timestamp(1800000000) + (i % 5000) * interval '1 hour' END
FROM generate_series(1, $LOADED) AS i;
ALTER TABLE tasks ENABLE TRIGGER USER;
INSERT INTO task_counts (user_id, tasks, completed)
    SELECT user_id, count(*), count(*) FILTER (WHERE completed) FROM tasks
    WHERE user_id LIKE 'load-%' GROUP BY user_id;
INSERT INTO task_tags (task_id, user_id, tag_key, tag)
    SELECT id, user_id, 'work', 'work' FROM tasks WHERE tags = '["work"]' AND user_id LIKE 'load-%';
DO \$\$ DECLARE r record; BEGIN
    FOR r IN SELECT indexdef FROM kept LOOP EXECUTE r.indexdef; END LOOP;
END \$\$;
SQL
    psql_bench -c "VACUUM ANALYZE tasks" -c "VACUUM ANALYZE task_tags"
}

load_sqlite() {
    local file=$1
    # Indexes are dropped for the load and built again after it (a sorted build each); so are
    # the triggers that keep the per-owner counts, which are computed once after the load.
    local drops creates
    drops=$(sqlite3 "$file" "SELECT 'DROP ' || upper(type) || ' ' || name || ';' FROM sqlite_master
        WHERE type IN ('index', 'trigger') AND tbl_name = 'tasks' AND sql IS NOT NULL")
    creates=$(sqlite3 "$file" "SELECT sql || ';' FROM sqlite_master
        WHERE type IN ('index', 'trigger') AND tbl_name = 'tasks' AND sql IS NOT NULL")
    sqlite3 "$file" <<SQL
PRAGMA synchronous = OFF;
PRAGMA cache_size = -524288;
$drops
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $LOADED)
INSERT INTO tasks (id, user_id, title, title_key, completed, created_at, updated_at,
                   priority, tags, due_at)
SELECT printf('00000000-0000-7000-8000-%012x', i), 'load-' || (i % $USERS),
       'task ' || i, 'task ' || i, i % 3 = 0, 1764000000000 + i, 1764000000000,
       i % 4, CASE WHEN i % 10 = 0 THEN '["work"]' ELSE '[]' END,
       CASE WHEN i % 5 = 0 THEN NULL ELSE 1800000000000 + (i % 5000) * 3600000 END
FROM n;
INSERT INTO task_counts (user_id, tasks, completed)
    SELECT user_id, count(*), sum(completed <> 0) FROM tasks
    WHERE user_id LIKE 'load-%' GROUP BY user_id;
INSERT INTO task_tags (task_id, user_id, tag_key, tag)
    SELECT id, user_id, 'work', 'work' FROM tasks WHERE tags = '["work"]' AND user_id LIKE 'load-%';
$creates
ANALYZE;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
}

# wrk_run NAME METHOD PATH [BODY]: one wrk run; prints a table row.
wrk_run() {
    local size=$1 name=$2 method=$3 path=$4 body=${5:-} out="$WORK_DIR/wrk-$2.txt"
    BENCH_METHOD=$method BENCH_BODY=$body BENCH_TOKEN=$TOKEN \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA_SCRIPT" \
        "$BASE_URL$path" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    read_bench_result "$out" || die "no result from wrk: $(cat "$out")"
    local errors
    errors=$(failed_requests)
    printf '%s|%s|%s|%s|%.1f|%.1f|%s\n' "$DB" "$size" "$name" \
        "$(per_second "${BENCH[requests]}" "${BENCH[duration_us]}")" \
        "$(awk -v us="${BENCH[p50_us]}" 'BEGIN { print us / 1000 }')" \
        "$(awk -v us="${BENCH[p99_us]}" 'BEGIN { print us / 1000 }')" \
        "$errors"
}

# measure SIZE: list and get as the benchmark user (TASKS_PER_USER tasks), create as a user
# of its own (its tasks grow during the run; the list user's must not).
measure() {
    local size=$1 task
    TOKEN=$LIST_TOKEN USER_ID=$LIST_USER
    task=$(jq -er '.items[(.items | length) / 2 | floor].id' <<<"$(expect 200 "$(api GET "/api/$USER_ID/tasks")")")
    wrk_run "$size" list GET "/api/$USER_ID/tasks" >>"$ROWS"
    wrk_run "$size" get GET "/api/$USER_ID/tasks/$task" >>"$ROWS"
    signup "bench_create_$size" "bench_create_$size@example.com" "$BENCH_PASSWORD"
    wrk_run "$size" create POST "/api/$USER_ID/tasks" '{"title":"Buy milk","description":"2 litres"}' >>"$ROWS"
}

print_plans() {
    local size=$1 query
    log "$DB, $size: plans of the benchmark user's listings (todo-api explain)"
    for query in "${PLANS[@]}"; do
        printf '\n-- %s, %s: GET /api/{user_id}/tasks?%s\n' "$DB" "$size" "$query"
        env -i PATH="$PATH" DATABASE_URL="$DATABASE_URL" RUST_LOG=warn "$BIN" explain "$LIST_USER" "$query"
    done
    echo
}

run_database() {
    DB=$1
    case "$DB" in
        sqlite) DATABASE_URL="sqlite://$WORK_DIR/todo.db" ;;
        postgres)
            create_scratch_database
            DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB"
            ;;
    esac
    start_server "$DATABASE_URL" BETTER_AUTH_SECRET="$BENCH_SECRET" \
        AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0
    signup bench_list bench_list@example.com "$BENCH_PASSWORD"
    LIST_USER=$USER_ID LIST_TOKEN=$TOKEN
    create_tasks "$TASKS_PER_USER" 'Task {}' 'Description of task {}'
    expect_task_total "$TASKS_PER_USER"
    measure small
    print_plans small
    stop_server

    log "$DB: bulk-loading $LOADED tasks of $USERS users"
    local started=$SECONDS
    case "$DB" in
        sqlite) load_sqlite "$WORK_DIR/todo.db" ;;
        postgres) load_postgres ;;
    esac
    LOAD_TIMES+=("$DB: $LOADED tasks loaded and indexed in $((SECONDS - started)) s")
    log "${LOAD_TIMES[-1]}"
    # The load leaves gigabytes of dirty pages in the kernel (and, on PostgreSQL, a checkpoint
    # due): written back during the measurement, they would slow every fsync of the creates
    # with the load's own I/O. Flush both first; the large run measures the service, not the
    # tail of the bulk load.
    started=$SECONDS
    [[ "$DB" == postgres ]] && psql_bench -c CHECKPOINT >/dev/null
    sync
    log "$DB: load written back in $((SECONDS - started)) s"
    start_server "$DATABASE_URL" BETTER_AUTH_SECRET="$BENCH_SECRET" \
        AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0
    TOKEN=$LIST_TOKEN USER_ID=$LIST_USER
    expect_task_total "$TASKS_PER_USER"
    measure large
    print_plans large
    stop_server
    if [[ "$DB" == postgres ]]; then
        log "postgres: $(psql_bench -tAc "SELECT pg_size_pretty(pg_database_size('$PG_DB'))")"
        drop_scratch_database
    else
        log "sqlite: $(du -sh "$WORK_DIR" | cut -f1)"
        rm -f -- "$WORK_DIR"/todo.db*
    fi
}

ensure_tools wrk jq curl sqlite3 psql:postgresql-client
build_release
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-scale.XXXXXX")
SERVICE_NAME=service
SERVICE_HEALTH_TIMEOUT=60
ROWS="$WORK_DIR/rows"
: >"$ROWS"
LOAD_TIMES=()
for database in "${DATABASES[@]}"; do
    run_database "$database"
done

printf '\nscale benchmark: %s cores, %s, load %s, commit %s\n' "$(nproc)" "$(date -u +%FT%TZ)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$(commit_description)"
printf 'small: the benchmark users alone; large: plus %s tasks of %s users. wrk -t%s -c%s -d%s\n' \
    "$LOADED" "$USERS" "$THREADS" "$CONNECTIONS" "$DURATION"
printf '%s\n' "${LOAD_TIMES[@]}"
{
    echo "database|size|route|req/s|p50 ms|p99 ms|errors"
    cat "$ROWS"
} | print_columns 1 2 3
echo
# large ÷ small per database and route: within ±20 % is "flat".
awk -F'|' '{ rate[$1 "|" $3 "|" $2] = $4; keys[$1 "|" $3] = 1 }
    END {
        for (k in keys) {
            s = rate[k "|small"]; l = rate[k "|large"]
            if (s > 0) printf "%s: large/small = %.2f\n", k, l / s
        }
    }' "$ROWS" | sort
