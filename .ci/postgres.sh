#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite, on 127.0.0.1 only.
#
#   eval "$(.ci/postgres.sh)"          # start; exports RCINGEST_TEST_POSTGRES_URL (+ _DIR)
#   .ci/postgres.sh stop [DIR]         # stop it and delete its files (DIR defaults to
#                                      # $RCINGEST_TEST_POSTGRES_DIR, as exported by the start)
#
# Installs the server from the distribution's packages when no binaries are
# found (set RCINGEST_PG_NO_INSTALL=1 to forbid that). The cluster lives in a
# temporary folder owned by the `postgres` user, because initdb refuses root.
# Everything but the export lines goes to stderr.
set -euo pipefail

find_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; fi
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${1:-}" = "stop" ]; then
  dir=${2:-${RCINGEST_TEST_POSTGRES_DIR:-}}
  [ -n "$dir" ] || { echo "usage: postgres.sh stop DIR (or set RCINGEST_TEST_POSTGRES_DIR)" >&2; exit 2; }
  case "$dir" in /tmp/rcingest-pg.*) ;; *) echo "postgres.sh: refusing to remove $dir" >&2; exit 2;; esac
  bin=$(find_bin)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  fi
  rm -rf -- "$dir"
  exit 0
fi

bin=$(find_bin)
if [ -z "$bin" ]; then
  if [ "${RCINGEST_PG_NO_INSTALL:-}" = 1 ]; then
    echo "postgres.sh: no PostgreSQL binaries and RCINGEST_PG_NO_INSTALL=1" >&2
    exit 3
  fi
  echo "postgres.sh: installing PostgreSQL from the distribution's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends postgresql >&2
  bin=$(find_bin)
fi
[ -n "$bin" ] || { echo "postgres.sh: PostgreSQL binaries not found after install" >&2; exit 3; }

dir=$(mktemp -d /tmp/rcingest-pg.XXXXXX)
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$password" > "$dir/pwfile"
if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; fi
chmod 700 "$dir"

as_pg "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
  --auth-local=trust --auth-host=scram-sha-256 --no-sync -E UTF8 >&2
rm -f "$dir/pwfile"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
# fsync off: a throwaway test cluster needs no durability, and it is much faster.
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=100" start >&2
as_pg "$bin/createdb" -h "$dir" -p "$port" -U postgres rcingest_test >&2

echo "export RCINGEST_TEST_POSTGRES_URL=postgresql://postgres:$password@127.0.0.1:$port/rcingest_test"
echo "export RCINGEST_TEST_POSTGRES_DIR=$dir"
