#!/usr/bin/env bash
# Concurrency against a real server: many sessions through pgbench, then invariant checks
# that raise (and fail the run) on any overspend or ledger mismatch.
set -euo pipefail
cd "$(dirname "$0")"
CLIENTS=${CLIENTS:-32}
CALLS=${CALLS:-150}
db=pgq_concurrency
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }

psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" -f setup.sql >/dev/null

for workload in *.pgbench; do
  name=${workload%.pgbench}
  # A workload may name its protocol in a line "-- pgbench protocol: simple".
  protocol=$(sed -n 's/^-- pgbench protocol: //p' "$workload")
  echo "concurrency: $name ($CLIENTS sessions x $CALLS calls)"
  command pgbench -n -c "$CLIENTS" -j 2 -t "$CALLS" -M "${protocol:-prepared}" -f "$workload" "$db" >"/tmp/pgq-$name.log" 2>&1 \
    || { cat "/tmp/pgq-$name.log" >&2; exit 1; }
  psql -d "$db" -c "SET pgq.calls = $((CLIENTS * CALLS))" -f "check_$name.sql"
done

echo "compaction: quota.compact() from 2 sessions beside $CLIENTS sessions x $CALLS calls"
bash compaction.sh "$CLIENTS" "$CALLS"

echo "batch: 10,000 recorded events, replayed in another order"
bash batch_replay.sh "$db"
