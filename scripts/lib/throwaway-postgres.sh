# Sourced by the benchmark scripts: a throwaway PostgreSQL under a temporary directory.
#
# find_pg_bin         sets PG_BIN (the newest /usr/lib/postgresql/*/bin, or pgbench's directory)
# as_pg CMD...        runs CMD as `postgres` when root (PostgreSQL refuses to run as root)
# free_port           prints a free loopback TCP port
# start_postgres DIR PORT [SERVER OPTIONS]
#                     initdb DIR/data (trust auth, user postgres) and start it on 127.0.0.1:PORT,
#                     logging to DIR/postgres.log; exports PGHOST, PGPORT, PGUSER, PGDATABASE and
#                     DATABASE_URL for psql, pgbench and statgate
# stop_postgres DIR   stops it (fast shutdown)

find_pg_bin() {
  if [ -z "${PG_BIN:-}" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    [ -x "$PG_BIN/pgbench" ] || PG_BIN=$(dirname "$(command -v pgbench)")
  fi
  [ -x "$PG_BIN/pgbench" ] || { echo "pgbench not found (set PG_BIN)" >&2; exit 1; }
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_postgres() {
  local dir=$1 port=$2
  shift 2
  chmod 755 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  as_pg "$PG_BIN/pg_ctl" start -D "$dir/data" -l "$dir/postgres.log" -w -o \
    "-p $port -k $dir -c listen_addresses=127.0.0.1 $*" >/dev/null
  export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

stop_postgres() {
  as_pg "$PG_BIN/pg_ctl" stop -D "$1/data" -m fast >/dev/null 2>&1 || true
}
