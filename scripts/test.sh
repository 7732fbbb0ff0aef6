#!/usr/bin/env bash
# The whole test suite, on a fresh machine: makes sure what the tests talk to is there
# (PostgreSQL up on 127.0.0.1:5432, the pinned Better Auth server, Chromium with
# playwright-core, PgBouncer, OpenSSL, python3-venv), then runs `cargo test` (every HTTP test
# on SQLite and PostgreSQL) and schemathesis against the binary those tests built. Installing
# needs root or sudo. Nothing is skipped: a missing service fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

log() { printf '\n==> %s\n' "$*"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

ensure_postgres() {
  command -v pg_isready >/dev/null || apt_install postgresql-client
  postgres_up && return
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    # The tests connect over TCP as postgres without a password, as on our machines.
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' \
      "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do postgres_up && return; sleep 1; done
  echo "PostgreSQL did not come up at 127.0.0.1:5432" >&2
  exit 1
}

log "PostgreSQL at $TEST_DATABASE_URL"
ensure_postgres
psql "$TEST_DATABASE_URL" -Atqc 'select version()'
# Databases left behind by interrupted test runs.
psql "$TEST_DATABASE_URL" -Atqc "select datname from pg_database where datname like 'todo\_test\_%'" |
  while read -r db; do psql "$TEST_DATABASE_URL" -qc "drop database if exists \"$db\" with (force)"; done

log "Node.js and the Better Auth test server (pinned in tests/better-auth/package-lock.json)"
{ command -v node && command -v npm; } >/dev/null || apt_install nodejs npm
node --version
npm ci --prefix tests/better-auth --no-audit --no-fund --loglevel=error

log "Chromium and playwright-core (pinned in tests/browser/package-lock.json), for the browser feed test"
{ command -v chromium || [ -x /usr/bin/chromium ]; } >/dev/null || apt_install chromium
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

log "PgBouncer and OpenSSL, for the pooler and TLS fault tests"
{ command -v pgbouncer || [ -x /usr/sbin/pgbouncer ]; } >/dev/null || apt_install pgbouncer
command -v openssl >/dev/null || apt_install openssl

log "Python with venv support, for schemathesis"
command -v python3 >/dev/null || apt_install python3
# Debian and Ubuntu ship ensurepip (which `python3 -m venv` needs) in python3-venv.
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
python3 --version

log "cargo test"
cargo test --locked --no-fail-fast

log "schemathesis against the running service's OpenAPI document"
# The debug binary the tests just ran (CARGO_BIN_EXE_todo-api): built once, not again.
target_dir=${CARGO_TARGET_DIR:-target}
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
TODO_API_BIN="$target_dir/debug/todo-api" scripts/schemathesis.sh
