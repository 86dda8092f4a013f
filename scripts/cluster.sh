#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the demo and the SQL-level tests.
#   scripts/cluster.sh start DIR PORT   initdb (if needed) and start; socket in DIR
#   scripts/cluster.sh stop DIR         stop immediately
# Tests run with fsync=off. Benchmarks set BENCH=1: fsync on, so that commits cost what they
# cost, and no checkpoint requested by WAL volume or time while they run (see bench/lib.sh).
# SETTINGS adds server settings ("-c shared_preload_libraries=pg_quota ..."); a DIR whose
# data directory exists already (a replica made by pg_basebackup) is started as it is.
# initdb refuses to run as root, so as root the cluster belongs to the postgres user.
set -euo pipefail

BIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[ -x "$BIN/initdb" ] || BIN=/usr/lib/postgresql/15/bin
action=$1 dir=$2

as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$action" in
start)
  port=$3
  settings="-c fsync=off"
  [ "${BENCH:-0}" = 1 ] && settings="-c fsync=on -c max_wal_size=32GB -c checkpoint_timeout=1h"
  settings="$settings ${SETTINGS:-}"
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  # Test servers run with RUST_BACKTRACE set, as a debugging operator might: no client may
  # ever see a Rust backtrace (tests/regress/sql/12_edges.sql).
  backtrace=1; [ "${BENCH:-0}" = 1 ] && backtrace=0
  as_owner env RUST_BACKTRACE=$backtrace "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-k $dir -p $port -c listen_addresses='' -c max_connections=100 -c shared_buffers=256MB $settings" >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  ;;
stop)
  [ -f "$dir/data/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
  ;;
*) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
