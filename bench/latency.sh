#!/usr/bin/env bash
# Latency as users feel it: each task route driven at fixed offered rates by an open-loop
# load generator (oha, with its coordinated-omission correction), on SQLite and/or
# PostgreSQL. Prints p50/p99/p99.9 per route, database and rate, writes them to a CSV and
# draws them (latency against offered rate) as a PNG.
#
#   bench/latency.sh [sqlite|postgres|all]        (default: all)
#   RATES="500 1000 2000" DURATION=20s bench/latency.sh sqlite
#   bench/latency.sh --plot bench/results/latency-2026-12-01.csv   (redraw only)
#
# See bench/README.md ("Latency at fixed rates") for what is measured and how to read it.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/latency.sh [sqlite|postgres|all]
       bench/latency.sh --plot CSV      redraw the PNG from a CSV this script wrote

Environment (all optional):
  RATES           offered rates in requests/s, space-separated (default "500 2000 5000")
  DURATION        measured time per route and rate, oha's -z (default 10s)
  CONNECTIONS     oha connections, the most requests in flight (default 100)
  ROUTES          routes, in this order (default "list get create")
  WARMUP          unmeasured run per route at the first rate before the measured ones
                  (default 2s; 0 for none)
  PAUSE           seconds of quiet between two measured points (default 2)
  REQUEST_TIMEOUT oha's per-request timeout (default 30s, the server's own timeout)
  SEED_TASKS      tasks created for the benchmark user before the runs (default 1000)
  OUT             the CSV (default bench/results/latency-<UTC date>.csv)
  PLOT            the PNG (default docs/latency.png; PLOT= for none)
  OHA             an oha binary to use instead of the pinned one (must have -q,
                  --latency-correction and --output-format json)
  OHA_VERSION     the oha version installed from crates.io when missing (default 1.16.0)
  TOOLS_DIR       where it is installed, cargo install --root (default
                  $HOME/.cache/todo-api/tools)
  PG_HOST, PG_PORT, PG_USER, PG_DB
                  PostgreSQL server and the scratch database that is dropped and
                  re-created (default 127.0.0.1, 5432, postgres, todo_bench)
  SERVER_ENV      extra server settings, space-separated NAME=value pairs, e.g.
                  SERVER_ENV="DATABASE_MAX_CONNECTIONS=20"
  VERBOSE=1       also print oha's JSON summary line for every point
EOF
}

PLOT_ONLY=""
TARGET=${1:-all}
case "$TARGET" in
    sqlite) DATABASES=(sqlite) ;;
    postgres | postgresql) DATABASES=(postgres) ;;
    all) DATABASES=(sqlite postgres) ;;
    --plot)
        PLOT_ONLY=${2:-}
        [[ -f "$PLOT_ONLY" ]] || { usage >&2; exit 2; }
        DATABASES=()
        ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

RATES=${RATES:-500 2000 5000}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-100}
ROUTES=${ROUTES:-list get create}
WARMUP=${WARMUP:-2s}
PAUSE=${PAUSE:-2}
REQUEST_TIMEOUT=${REQUEST_TIMEOUT:-30s}
SEED_TASKS=${SEED_TASKS:-1000}
OHA_VERSION=${OHA_VERSION:-1.16.0}
TOOLS_DIR=${TOOLS_DIR:-${HOME:-/root}/.cache/todo-api/tools}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
PG_DB=${PG_DB:-todo_bench}
VERBOSE=${VERBOSE:-0}
SERVER_ENV=${SERVER_ENV:-}

BENCH_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib/service.sh
source "$BENCH_DIR/../scripts/lib/service.sh"

OUT=${OUT:-$REPO_ROOT/bench/results/latency-$(date -u +%Y-%m-%d).csv}
PLOT=${PLOT-$REPO_ROOT/docs/latency.png}

# Fixed, documented test data (the same as bench/run.sh).
BENCH_SECRET="bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz"
BENCH_USERNAME="bench_user"
BENCH_EMAIL="bench_user@example.com"
BENCH_PASSWORD="bench-password-123"
CREATE_BODY='{"title": "Benchmark task", "description": "Created by oha"}'
# As bench/run.sh: one address and one account, so the login rate limits are off (no route
# measured here logs in, but the settings stay comparable). SERVER_ENV overrides.
SERVER_DEFAULT_ENV=(AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0)
CSV_HEADER="date,commit,database,route,offered_rps,duration_s,connections,sent,responses,achieved_rps,ok_2xx,non_2xx,client_errors,unsent,p50_ms,p99_ms,p99_9_ms,max_ms"

# seconds DURATION: oha's -z value (N, Ns, Nm) in seconds.
seconds() {
    case "$1" in
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
[[ "$(seconds "$DURATION")" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be whole seconds or minutes (10s, 1m): $DURATION"
[[ "$(seconds "$WARMUP")" =~ ^[0-9]+$ ]] || die "WARMUP must be whole seconds (2s, 0): $WARMUP"
for rate in $RATES; do
    [[ "$rate" =~ ^[1-9][0-9]*$ ]] || die "RATES must be positive whole numbers: $rate"
done
for route in $ROUTES; do
    [[ "$route" =~ ^(list|get|create)$ ]] || die "unknown route '$route' (list, get, create)"
done

# ---------------------------------------------------------------------------------------
# Cleanup: stop the server and oha (by PID), drop the scratch database, remove temp dirs.
# ---------------------------------------------------------------------------------------
PG_CREATED=0
OHA_BUILD_DIR=""

drop_pg_db() {
    psql_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)"
}

on_cleanup() {
    if [[ "$PG_CREATED" == 1 ]]; then
        drop_pg_db || printf 'warning: could not drop database %s\n' "$PG_DB" >&2
        PG_CREATED=0
    fi
    if [[ -n "$OHA_BUILD_DIR" ]]; then
        rm -rf -- "$OHA_BUILD_DIR"
    fi
}
install_cleanup

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------
# ensure_oha: sets OHA to an oha binary: $OHA if given; else the pinned version in
# TOOLS_DIR, installed from crates.io when missing (once; later runs reuse it). Built with
# native-tls (the system's OpenSSL) instead of the default rustls, whose aws-lc backend is
# a long C build: the benchmark speaks plain HTTP to 127.0.0.1 anyway, but oha needs one
# TLS backend to compile.
ensure_oha() {
    if [[ -n "${OHA:-}" ]]; then
        [[ -x "$OHA" ]] || OHA=$(command -v "$OHA") || die "OHA=$OHA is not an executable"
    else
        OHA="$TOOLS_DIR/bin/oha"
        if ! [[ -x "$OHA" && "$("$OHA" --version 2>/dev/null)" == "oha $OHA_VERSION" ]]; then
            log "installing oha $OHA_VERSION from crates.io into $TOOLS_DIR (a few minutes, once)"
            ensure_tools pkg-config
            [[ -f /usr/include/openssl/ssl.h ]] || apt_install libssl-dev
            OHA_BUILD_DIR=$(mktemp -d "${TMPDIR:-/tmp}/oha-build.XXXXXX")
            cargo install oha --locked --version "$OHA_VERSION" --no-default-features \
                --features native-tls --root "$TOOLS_DIR" --target-dir "$OHA_BUILD_DIR"
            rm -rf -- "$OHA_BUILD_DIR"
            OHA_BUILD_DIR=""
        fi
    fi
    "$OHA" --help | grep -q -- '--latency-correction' ||
        die "$OHA has no --latency-correction; use oha $OHA_VERSION (unset OHA)"
    OHA_DESCRIPTION=$("$OHA" --version)
}

# ---------------------------------------------------------------------------------------
# Data set-up
# ---------------------------------------------------------------------------------------
seed() {
    signup "$BENCH_USERNAME" "$BENCH_EMAIL" "$BENCH_PASSWORD"
    log "signed up $BENCH_USERNAME ($USER_ID)"
    log "creating $SEED_TASKS tasks (curl, 8 in parallel)"
    create_tasks "$SEED_TASKS" "Seed task {}" "Benchmark seed task number {}"
    # One task from the middle of the list, for the get route; also checks the count.
    expect_task_total "$SEED_TASKS" "?page_size=1&page=$(((SEED_TASKS + 1) / 2))"
    TASK_ID=$(jq -er '.items[0].id' <<<"$TASKS_BODY")
}

# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------
ROWS=()        # CSV lines, without the header
ANY_ERRORS=0
ANY_BEHIND=0

# run_oha ROUTE RATE DURATION JSON: drives ROUTE at RATE requests/s for DURATION, the
# summary as JSON in the file JSON. Open loop: oha schedules request i at start + i/RATE
# whatever the responses do; with --latency-correction each latency runs from that
# scheduled time (so time spent waiting for a free connection counts), not from the send.
# -w: requests still in flight at the deadline are awaited and counted, not aborted.
run_oha() {
    local route=$1 rate=$2 duration=$3 json=$4
    local args=(--no-tui --output-format json -o "$json" -z "$duration" -q "$rate"
        --latency-correction -w -c "$CONNECTIONS" -t "$REQUEST_TIMEOUT"
        -H "Authorization: Bearer $TOKEN")
    case "$route" in
        list) args+=("$BASE_URL/api/$USER_ID/tasks") ;;
        get) args+=("$BASE_URL/api/$USER_ID/tasks/$TASK_ID") ;;
        create) args+=(-m POST -T application/json -d "$CREATE_BODY" "$BASE_URL/api/$USER_ID/tasks") ;;
    esac
    NO_COLOR=1 "$OHA" "${args[@]}" >"$WORK_DIR/oha.out" 2>&1 &
    BACKGROUND_PIDS=($!)
    if ! wait "${BACKGROUND_PIDS[0]}"; then
        BACKGROUND_PIDS=()
        cat "$WORK_DIR/oha.out" >&2
        die "oha failed ($route at $rate/s)"
    fi
    BACKGROUND_PIDS=()
    kill -0 "$SERVER_PID" 2>/dev/null || {
        cat "$WORK_DIR/server.log" >&2
        die "the server died during the $route run at $rate/s"
    }
}

# measure DB ROUTE RATE: one point, appended to ROWS.
measure() {
    local db=$1 route=$2 rate=$3 json="$WORK_DIR/oha-$1-$2-$3.json" secs fields
    secs=$(seconds "$DURATION")
    log "$db $route: $rate req/s for $DURATION, $CONNECTIONS connections"
    run_oha "$route" "$rate" "$DURATION" "$json"
    [[ "$VERBOSE" == 1 ]] && jq -c '{summary, latencyPercentiles, statusCodeDistribution, errorDistribution}' "$json" >&2
    # sent = responses + client errors; unsent = what the schedule offered before the
    # deadline but oha never sent (it was still waiting for a free connection).
    fields=$(jq -r --argjson rate "$rate" --argjson secs "$secs" '
        def ms: if . == null or (type == "number" and isnan) then "" else . * 1e6 | round / 1e3 end;
        ([.statusCodeDistribution[]] | add // 0) as $responses
        | ([.statusCodeDistribution | to_entries[] | select(.key | startswith("2")) | .value] | add // 0) as $ok
        | ([.errorDistribution[]] | add // 0) as $errors
        | ($responses + $errors) as $sent
        | [$sent, $responses,
           (if .summary.total > 0 then $responses / .summary.total * 10 | round / 10 else 0 end),
           $ok, $responses - $ok, $errors,
           ([($rate * $secs | floor) - $sent, 0] | max),
           (.latencyPercentiles.p50 | ms), (.latencyPercentiles.p99 | ms),
           (.latencyPercentiles["p99.9"] | ms), (.summary.slowest | ms)]
        | map(tostring) | join(",")' "$json")
    ROWS+=("$STARTED_DATE,$COMMIT,$db,$route,$rate,$secs,$CONNECTIONS,$fields")
}

bench_database() {
    local db=$1 database_url route rate first=1
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
            PG_VERSION=$(psql_admin -At -c 'SHOW server_version' | cut -d' ' -f1)
            ;;
    esac
    server_env_items "$SERVER_ENV"
    start_server "$database_url" BETTER_AUTH_SECRET="$BENCH_SECRET" BCRYPT_COST=12 \
        "${SERVER_DEFAULT_ENV[@]}" ${SERVER_ENV_ITEMS[@]+"${SERVER_ENV_ITEMS[@]}"}
    seed
    for route in $ROUTES; do
        if [[ "$(seconds "$WARMUP")" != 0 ]]; then
            log "$db $route: warm-up, ${RATES%% *} req/s for $WARMUP (not measured)"
            run_oha "$route" "${RATES%% *}" "$WARMUP" "$WORK_DIR/warmup.json"
        fi
        for rate in $RATES; do
            ((first)) || sleep "$PAUSE"
            first=0
            measure "$db" "$route" "$rate"
        done
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

# print_table CSV: the figures of CSV as a table; marks rows with errors or a shortfall.
print_table() {
    {
        echo "database|route|offered/s|achieved/s|p50 ms|p99 ms|p99.9 ms|max ms|responses|non-2xx|errors|unsent|"
        awk -F, 'NR > 1 {
            flag = ""
            if ($12 + $13 > 0) flag = "! errors"
            if ($14 > 0.01 * $5 * $6 || $10 < 0.95 * $5) flag = flag (flag ? ", " : "! ") "behind"
            print $3 "|" $4 "|" $5 "|" $10 "|" $15 "|" $16 "|" $17 "|" $18 "|" $9 "|" $12 "|" $13 "|" $14 "|" flag
        }' "$1"
    } | print_columns 1 2
}

# ---------------------------------------------------------------------------------------
# The plot
# ---------------------------------------------------------------------------------------
# plot CSV PNG: one panel per database (rows) and route (columns); p50, p99 and p99.9
# (log y) against the offered rate; a point where the achieved rate fell short of the
# offered one is labelled with the achieved rate.
plot() {
    local csv=$1 png=$2 dir dbs routes db route label n_db n_route title="" script yrange
    dir=$(mktemp -d "${TMPDIR:-/tmp}/todo-latency-plot.XXXXXX")
    mapfile -t dbs < <(awk -F, 'NR > 1 && !seen[$3]++ { print $3 }' "$csv")
    mapfile -t routes < <(awk -F, 'NR > 1 && !seen[$4]++ { print $4 }' "$csv")
    n_db=${#dbs[@]}
    n_route=${#routes[@]}
    ((n_db && n_route)) || { rm -rf -- "$dir"; die "no rows in $csv"; }
    if (($(awk -F, 'NR > 1 { print $5 }' "$csv" | sort -u | wc -l) < 2)); then
        rm -rf -- "$dir"
        log "one rate only: no curve to draw, no plot"
        return 0
    fi
    title=$(awk -F, 'NR == 2 { printf "todo-api, %s s per point, %s connections (oha, open loop, latency from the scheduled send); %s, commit %s", $6, $7, $1, $2 }' "$csv")
    # One y range for every panel, whole decades, so that the panels compare at a glance.
    yrange=$(awk -F, 'NR > 1 { for (i = 15; i <= 17; i++) if ($i != "") {
            if (min == "" || $i < min) min = $i; if (max == "" || $i > max) max = $i } }
        END { lo = 10 ^ int(log(min > 0 ? min : 0.01) / log(10) - (min < 1 ? 1 : 0)); hi = 10 ^ int(log(max) / log(10) + 1)
              printf "%g:%g", lo, hi }' "$csv")
    script="$dir/plot.gp"
    {
        echo "set terminal pngcairo size $((430 * n_route)),$((350 * n_db + 40)) font 'sans,10'"
        echo "set output '$png'"
        echo "set datafile separator ','"
        echo "set logscale y"
        echo "set yrange [$yrange]"
        echo "set format y '%g'"
        echo "set ylabel 'latency, ms'"
        echo "set xlabel 'offered rate, requests/s'"
        echo "set grid ytics mytics xtics lc rgb '#dddddd'"
        echo "set key below horizontal samplen 2"
        echo "set xrange [0:*]"
        echo "set offsets graph 0.06, graph 0.1, 0, 0"
        echo "set multiplot layout $n_db,$n_route title \"$title\" font 'sans,10'"
        for db in "${dbs[@]}"; do
            for route in "${routes[@]}"; do
                awk -F, -v db="$db" -v route="$route" \
                    'NR > 1 && $3 == db && $4 == route { print $5 "," $15 "," $16 "," $17 "," $10 "," ($14 > 0.01 * $5 * $6 || $10 < 0.95 * $5 ? 1 : 0) }' \
                    "$csv" | sort -t, -k1,1n >"$dir/$db-$route.dat"
                case "$db" in
                    sqlite) label=SQLite ;;
                    postgres) label=PostgreSQL ;;
                    *) label=$db ;;
                esac
                echo "set title '$label: $route' font 'sans,11'"
                echo "set xtics ($(cut -d, -f1 "$dir/$db-$route.dat" | paste -sd, -))"
                echo "plot '$dir/$db-$route.dat' using 1:2 with linespoints lw 2 pt 7 lc rgb '#1b9e77' title 'p50', \\"
                echo "     '' using 1:3 with linespoints lw 2 pt 5 lc rgb '#d95f02' title 'p99', \\"
                echo "     '' using 1:4 with linespoints lw 2 pt 9 lc rgb '#7570b3' title 'p99.9', \\"
                echo "     '' using 1:(\$6 > 0 ? \$4 : 1/0):(sprintf('%.0f/s served', \$5)) with labels right offset -0.8,0.8 font 'sans,8' tc rgb '#b2182b' notitle"
            done
        done
        echo "unset multiplot"
    } >"$script"
    mkdir -p -- "$(dirname -- "$png")"
    gnuplot "$script" || { rm -rf -- "$dir"; die "gnuplot failed"; }
    rm -rf -- "$dir"
    log "wrote $png"
}

if [[ -n "$PLOT_ONLY" ]]; then
    ensure_tools gnuplot:gnuplot-nox
    [[ -n "$PLOT" ]] || die "PLOT is empty"
    plot "$PLOT_ONLY" "$PLOT"
    exit 0
fi

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
TOOLS=(jq curl)
[[ -n "$PLOT" ]] && TOOLS+=(gnuplot:gnuplot-nox)
if [[ " ${DATABASES[*]} " == *" postgres "* ]]; then
    TOOLS+=(psql:postgresql-client)
fi
ensure_tools "${TOOLS[@]}"
ensure_oha

build_release

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-latency.XXXXXX")
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
STARTED_DATE=$(date -u '+%Y-%m-%d')
COMMIT=$(commit_description)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
PG_VERSION=""
log "load generator $OHA_DESCRIPTION runs on this machine ($(nproc) cores), beside the server and the database"
for db in "${DATABASES[@]}"; do
    bench_database "$db"
done

mkdir -p -- "$(dirname -- "$OUT")"
{
    echo "$CSV_HEADER"
    printf '%s\n' "${ROWS[@]}"
} >"$OUT"
if awk -F, 'NR > 1 && $12 + $13 > 0 { found = 1 } END { exit !found }' "$OUT"; then ANY_ERRORS=1; fi
if awk -F, 'NR > 1 && ($14 > 0.01 * $5 * $6 || $10 < 0.95 * $5) { found = 1 } END { exit !found }' "$OUT"; then ANY_BEHIND=1; fi

echo
echo "todo-api latency at fixed offered rates"
echo "  date:       $STARTED"
echo "  machine:    $(nproc) cores ($(uname -sr)); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "  NOTE:       oha (the load generator) runs on this same machine, sharing its $(nproc) cores"
echo "              with the server${PG_VERSION:+ and PostgreSQL $PG_VERSION}."
echo "  build:      $COMMIT, ${BIN#"$REPO_ROOT"/}"
echo "  server:     RUST_LOG=warn BCRYPT_COST=12 ${SERVER_DEFAULT_ENV[*]}${SERVER_ENV:+ $SERVER_ENV}; other settings at their defaults"
echo "  generator:  $OHA_DESCRIPTION -q RATE --latency-correction -z $DURATION -c $CONNECTIONS -w (open loop;"
echo "              each latency runs from the request's scheduled send time)"
echo "  data:       1 user with $SEED_TASKS seeded tasks; list = first page of 20; create runs last"
echo "  columns:    achieved/s = responses per second; unsent = scheduled before the deadline but never"
echo "              sent (no free connection): those, the slowest, are not in the percentiles"
echo
print_table "$OUT"
echo
echo "CSV: ${OUT#"$REPO_ROOT"/}"
if ((ANY_ERRORS)); then
    echo "WARNING: rows marked 'errors' had non-2xx responses or client errors (timeouts, resets)."
fi
if ((ANY_BEHIND)); then
    echo "Rows marked 'behind' were offered more than the machine served (achieved under 95 % of"
    echo "offered, or over 1 % of the requests left unsent): their latency is queueing time,"
    echo "growing for the whole run."
fi
if ((!ANY_ERRORS && !ANY_BEHIND)); then
    echo "Every point was served at its offered rate; every response was 2xx."
fi

if [[ -n "$PLOT" ]]; then
    plot "$OUT" "$PLOT"
fi
