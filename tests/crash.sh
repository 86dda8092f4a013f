#!/usr/bin/env bash
# Crash test: kills PostgreSQL under a concurrent pg_quota load, and checks afterwards that
# every acknowledged request is in the ledger exactly once, nothing unacknowledged is
# half-applied, and no allowance was exceeded (tests/harness/src/bin/crash_load.rs).
#   tests/crash.sh DIR PORT     its own throwaway cluster in DIR (PostgreSQL from PATH)
# CRASHES (default 4) alternate between kill -9 of a backend running a pg_quota call (the
# postmaster then resets every session and recovers) and pg_ctl stop -m immediate followed
# by a restart. SEED replays a run's requests.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1 port=$2 crashes=${CRASHES:-4}
cargo build --release -q --manifest-path tests/harness/Cargo.toml
bash scripts/cluster.sh stop "$dir"; rm -rf "$dir"
bash scripts/cluster.sh start "$dir" "$port"
trap 'bash scripts/cluster.sh stop "$dir"' EXIT
export PGHOST=$dir PGPORT=$port PGUSER=postgres
bindir=$(pg_config --bindir)
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

log=$dir/crash_load.log
tests/harness/target/release/crash_load --seconds $((crashes * 3 + 4)) ${SEED:+--seed "$SEED"} >"$log" 2>&1 &
load=$!
until grep -q ready "$log" 2>/dev/null; do
  kill -0 $load 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.2
done
survived=0
for i in $(seq "$crashes"); do
  sleep 2
  if [ $((i % 2)) -eq 1 ]; then
    pid=$(psql -X -qtA -d postgres -c "SELECT pid FROM pg_stat_activity
            WHERE datname = 'pgq_crash' AND query LIKE '%quota.%' AND pid <> pg_backend_pid() LIMIT 1")
    if [ -z "$pid" ]; then continue; fi
    kill -9 "$pid"
    echo "crash $i: kill -9 of backend $pid"
  else
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    echo "crash $i: pg_ctl stop -m immediate"
    sleep 0.5
    bash scripts/cluster.sh start "$dir" "$port"
  fi
  survived=$((survived + 1))
done
status=0
wait $load || status=$?
cat "$log"
grep -q "terminated by signal 9\|was terminated by signal" "$dir/server.log" || { echo "crash: no backend was killed" >&2; status=1; }
[ $status -eq 0 ] && echo "crash: $survived crashes survived under load, nothing lost or half-applied"
exit $status
