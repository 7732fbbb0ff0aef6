#!/usr/bin/env bash
# Property-based API tests of the running service against its own OpenAPI document, with
# schemathesis (pinned below).
#
#   scripts/schemathesis.sh                       (from any directory)
#   MAX_EXAMPLES=200 SEED=7 scripts/schemathesis.sh
#
# What it does:
#   1. creates a venv ($SCHEMATHESIS_VENV) and installs schemathesis==$SCHEMATHESIS_VERSION
#      into it, unless that exact version is already there;
#   2. `cargo build --locked` (debug), binary under ${CARGO_TARGET_DIR:-target}/debug/ —
#      or, with TODO_API_BIN set, that binary as it is (scripts/test.sh passes the one
#      `cargo test` built, so the service is built once);
#   3. starts the service on a fresh SQLite file in a temp dir, on a free port, with a fixed
#      BETTER_AUTH_SECRET, BCRYPT_COST=4 and the auth rate limits off;
#   4. signs up one user and runs `schemathesis run` against /openapi.json with that user's
#      bearer token on every request and its id as every `{user_id}` path parameter (so the
#      task routes get past the 403 check), checking:
#        not_a_server_error, status_code_conformance, content_type_conformance,
#        response_schema_conformance;
#   5. stops the service (by PID) and removes the temp dir, also on failure or Ctrl-C.
# Exit status: 0 when schemathesis finds nothing, non-zero otherwise.
#
# Environment (all optional):
#   SCHEMATHESIS_VENV   venv location (default ~/.cache/todo-api/schemathesis-venv)
#   TODO_API_BIN        a todo-api binary to test instead of building one
#   MAX_EXAMPLES        test cases per operation and phase (default 50)
#   SEED                hypothesis seed (default 20240601): same seed, same inputs
#   PHASES              schemathesis phases (default examples,coverage,fuzzing,stateful)
#   WORKERS             schemathesis workers (default 1: reproducible; with 2, schemathesis
#                       4.32.5 on Python 3.11 crashed once in its coverage phase with
#                       "SystemError: AST constructor recursion depth mismatch", a tool fault)
#   CHECKS              schemathesis checks (default: the four above; `all` for every one)
#   KEEP_REPORT=DIR     also write schemathesis' JUnit and NDJSON reports to DIR
#   SERVER_LOG=FILE     copy the service's log (RUST_LOG=warn) to FILE at the end
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV=${SCHEMATHESIS_VENV:-$HOME/.cache/todo-api/schemathesis-venv}
MAX_EXAMPLES=${MAX_EXAMPLES:-50}
SEED=${SEED:-20240601}
PHASES=${PHASES:-examples,coverage,fuzzing,stateful}
WORKERS=${WORKERS:-1}
KEEP_REPORT=${KEEP_REPORT:-}
SERVER_LOG=${SERVER_LOG:-}
TODO_API_BIN=${TODO_API_BIN:-}
CHECKS=${CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance}

# Fixed test data: a throw-away service, so nothing here is a secret.
SECRET="schemathesis-only-secret-0123456789abcdefghijklmnop"
USERNAME="schemathesis_user"
EMAIL="schemathesis_user@example.com"
PASSWORD="schemathesis-password-1"

# Relative paths in the environment are the caller's: pin them before moving to the repository.
abspath() { if [[ -n "$1" && "$1" != /* ]]; then printf '%s/%s' "$PWD" "$1"; else printf '%s' "$1"; fi; }
KEEP_REPORT=$(abspath "$KEEP_REPORT")
SERVER_LOG=$(abspath "$SERVER_LOG")
SCHEMATHESIS_VENV=$(abspath "$SCHEMATHESIS_VENV")
TODO_API_BIN=$(abspath "$TODO_API_BIN")
# cargo reads a relative CARGO_TARGET_DIR against its working directory.
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    CARGO_TARGET_DIR=$(abspath "$CARGO_TARGET_DIR")
    export CARGO_TARGET_DIR
fi

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$SCRIPT_DIR/lib/service.sh"
SERVICE_NAME=service
SERVICE_HEALTH_TIMEOUT=30

# Cleanup (lib/service.sh): stops the service by its PID, then copies its log to SERVER_LOG
# if asked, and removes the temp dir.
# shellcheck disable=SC2317  # run from the trap
on_cleanup() {
    if [[ -n "$SERVER_LOG" && -n "$WORK_DIR" && -f "$WORK_DIR/server.log" ]]; then
        cp -- "$WORK_DIR/server.log" "$SERVER_LOG" || true
    fi
}
install_cleanup

command -v curl >/dev/null || die "curl is needed"
command -v cargo >/dev/null || die "cargo is not on PATH"
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || die "$PYTHON is needed (to create the schemathesis venv)"

# ---------------------------------------------------------------------------------------
# 1. schemathesis, pinned, in its own venv
# ---------------------------------------------------------------------------------------
ST="$SCHEMATHESIS_VENV/bin/schemathesis"
installed=$("$ST" --version 2>/dev/null || true)
if [[ "$installed" != "schemathesis, version $SCHEMATHESIS_VERSION" ]]; then
    if [[ ! -x "$SCHEMATHESIS_VENV/bin/python" ]]; then
        log "creating venv $SCHEMATHESIS_VENV"
        mkdir -p -- "$(dirname -- "$SCHEMATHESIS_VENV")"
        "$PYTHON" -m venv "$SCHEMATHESIS_VENV"
    fi
    log "installing schemathesis==$SCHEMATHESIS_VERSION"
    "$SCHEMATHESIS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"
    installed=$("$ST" --version)
    [[ "$installed" == "schemathesis, version $SCHEMATHESIS_VERSION" ]] ||
        die "expected schemathesis $SCHEMATHESIS_VERSION, got: $installed"
fi
log "$installed ($SCHEMATHESIS_VENV)"

# ---------------------------------------------------------------------------------------
# 2. the service, debug build
# ---------------------------------------------------------------------------------------
cd -- "$REPO_ROOT"
if [[ -n "$TODO_API_BIN" ]]; then
    BIN=$TODO_API_BIN
    log "using $BIN (TODO_API_BIN)"
else
    log "cargo build --locked"
    cargo build --locked
    BIN="${CARGO_TARGET_DIR:-target}/debug/todo-api"
    [[ "$BIN" == /* ]] || BIN="$REPO_ROOT/$BIN"
fi
[[ -x "$BIN" ]] || die "$BIN was not built"

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/todo-schemathesis.XXXXXX")

start_server "sqlite://$WORK_DIR/todo.db" BETTER_AUTH_SECRET="$SECRET" \
    BCRYPT_COST=4 AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_ACCOUNT=0

# ---------------------------------------------------------------------------------------
# 3. one user: its token and id
# ---------------------------------------------------------------------------------------
signup_body=$(printf '{"username":"%s","email":"%s","password":"%s","confirm_password":"%s"}' \
    "$USERNAME" "$EMAIL" "$PASSWORD" "$PASSWORD")
TOKEN=""   # api() sends TOKEN when set: none for the sign-up
response=$(api POST /api/auth/signup "$signup_body")
body=$(expect 201 "$response")
read -r USER_ID TOKEN < <("$PYTHON" -c '
import json, sys
r = json.load(sys.stdin)
print(r["user"]["id"], r["access_token"])' <<<"$body")
[[ -n "$USER_ID" && -n "$TOKEN" ]] || die "no user id or token in the sign-up response: $body"
log "signed up $USERNAME ($USER_ID)"

# Every {user_id} path parameter is the signed-up user's id; everything else is generated.
# (`path.user_id` is the config-file form of `--set-path user_id=…`, which 4.x no longer has.)
cat >"$WORK_DIR/schemathesis.toml" <<EOF
[parameters]
"path.user_id" = "$USER_ID"
EOF

# ---------------------------------------------------------------------------------------
# 4. schemathesis
# ---------------------------------------------------------------------------------------
report_args=()
if [[ -n "$KEEP_REPORT" ]]; then
    mkdir -p -- "$KEEP_REPORT"
    # shellcheck disable=SC2054  # junit,ndjson is one argument
    report_args=(--report junit,ndjson --report-dir "$KEEP_REPORT")
fi

st_args=(
    run "$BASE_URL/openapi.json"
    --url "$BASE_URL"
    -H "Authorization: Bearer $TOKEN"
    --checks "$CHECKS"
    --phases "$PHASES"
    --max-examples "$MAX_EXAMPLES"
    --seed "$SEED"
    --workers "$WORKERS"
    --generation-database none
    # Signing out and deleting the account revoke the very token the run uses, after which
    # every later case would only see 401s; tests/accounts.rs covers both routes.
    --exclude-operation-id logout
    --exclude-operation-id delete_me
    --request-timeout 30
    --no-color
    ${report_args[@]+"${report_args[@]}"}
)
log "schemathesis ${st_args[*]/Bearer */Bearer <token>}"
started=$SECONDS
set +e
# In the temp dir: nothing (.hypothesis/, reports) lands in the repository.
(cd -- "$WORK_DIR" && "$ST" --config-file "$WORK_DIR/schemathesis.toml" "${st_args[@]}") |
    tee "$WORK_DIR/schemathesis.out"
st_status=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - started))

server_alive=yes
kill -0 "$SERVER_PID" 2>/dev/null || server_alive="NO: it exited during the run"
# The service logs every request with a 5xx status (ERROR, or WARN for 503).
server_errors=$(grep -c 'status=5[0-9][0-9]' "$WORK_DIR/server.log" || true)

echo
echo "schemathesis summary"
echo "  schemathesis:  $SCHEMATHESIS_VERSION; checks $CHECKS"
echo "  generation:    phases $PHASES; --max-examples $MAX_EXAMPLES --seed $SEED --workers $WORKERS"
echo "  service:       ${BIN#"$REPO_ROOT"/} on SQLite, user $USER_ID; still running: $server_alive"
echo "  service log:   $server_errors request(s) answered 5xx (RUST_LOG=warn)"
# From schemathesis' own summary: failures, errors, warnings and the test-case count.
awk '
    /= SUMMARY =/ { on = 1; next }
    !on { next }
    /^(Failures|Errors|Warnings|Test cases):/ { keep = 1; print "  " $0; next }
    /^[^ ]/ { keep = 0 }
    keep && NF { print "  " $0 }
    /^=+ .* in [0-9.]+s =+$/ { line = $0; gsub(/^=+ | =+$/, "", line); print "  result:        " line }
' "$WORK_DIR/schemathesis.out"
echo "  time:          ${elapsed}s; exit status $st_status"
if ((server_errors > 0)); then
    echo "  last 5xx lines of the service log:"
    grep 'status=5[0-9][0-9]' "$WORK_DIR/server.log" | tail -n 5 | sed 's/^/    /'
fi
[[ "$server_alive" == yes ]] || exit 1
exit "$st_status"
