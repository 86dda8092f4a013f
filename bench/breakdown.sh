#!/usr/bin/env bash
# What costs the difference between quota.consume and the floor, piece by piece
# (docs/benchmarks.md): the fast-path statement run directly as SQL, in its 0.4.0 and its
# 0.3.0 shape and with 0.7.0's search for rate rules; its counter update feeding the floor's
# narrow ledger; ledger inserts with and without the ledger's rules; WAL written per
# transaction; and the fast path with a year of old windows per subject. Uniform subjects,
# synchronous_commit=off, same server, same run, the scripts of each group taking turns,
# median of several runs. Nothing fails on a timing.
#   bench/breakdown.sh SOCKET_DIR PORT       (make bench-breakdown)
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=$1 PGPORT=$2 PGUSER=postgres PGOPTIONS='-c client_min_messages=warning'
runs=${BENCH_RUNS:-5} seconds=${BENCH_SECONDS:-4} clients=8 threads=2
db=pgq_breakdown out=target/breakdown
. bench/lib.sh
rm -rf "$out" && mkdir -p "$out"
psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" -f bench/setup.sql >/dev/null
# Ledgers to compare quota.events with: the floor's shape, and quota.events' columns with its
# rules (domains) and without them, with only the primary key. A copy of the counters for
# the fast path's UPDATE to feed the floor's ledger (quota.counters must keep equal to
# quota.events).
psql -d "$db" <<'SQL'
CREATE TABLE breakdown_counters (LIKE quota.counters INCLUDING ALL) WITH (fillfactor = 80);
INSERT INTO breakdown_counters SELECT * FROM quota.counters;
CREATE TABLE breakdown_floor_events (LIKE floor_events INCLUDING ALL);
CREATE TABLE breakdown_domains_pk (LIKE quota.events INCLUDING DEFAULTS INCLUDING IDENTITY, PRIMARY KEY (subject, event_id));
CREATE TABLE breakdown_plain_types (LIKE breakdown_domains_pk INCLUDING ALL);
ALTER TABLE breakdown_plain_types
    ALTER kind TYPE text, ALTER amount TYPE bigint, ALTER from_allowance TYPE bigint,
    ALTER from_grants TYPE bigint, ALTER overage TYPE bigint, ALTER idempotency_key TYPE text;
SQL
checkpoint "$db"
script() {  # NAME FILE: the file with the uniform subject prepended, as NAME=PATH
  { echo '\set n random(1, 10000)'; cat "$2"; } >"$out/$1.pgbench"
  echo "$1=$out/$1.pgbench"
}
group() {  # TITLE NAME=FILE...: runs the scripts in turns and prints their medians and ratios
  local title=$1 first="" name tps
  shift
  echo "$title"
  alternate "$db" off "$runs" "" "$@" >"$out/group.tps"
  while read -r name tps _; do
    first=${first:-$tps}
    printf '  %-28s %8.0f tps  %s x the first\n' "$name" "$tps" "$(ratio "$tps" "$first")"
  done <"$out/group.tps"
}
statements=(
  "$(script floor bench/scripts/floor.pgbench)"
  "$(script consume bench/scripts/pg_quota.pgbench)"
  "$(script fast_statement bench/breakdown/fast_statement.pgbench)"
  "$(script fast_statement_rated bench/breakdown/fast_statement_rated.pgbench)"
  "$(script fast_statement_0_3 bench/breakdown/fast_statement_0_3.pgbench)"
  "$(script fast_update_floor_ledger bench/breakdown/fast_update_floor_ledger.pgbench)"
)

echo "uniform, $clients clients, synchronous_commit=off, median of $runs runs of $seconds s"
group "statements:" "${statements[@]}"
group "ledger inserts:" \
  "$(script floor_ledger_insert bench/breakdown/floor_ledger_insert.pgbench)" \
  "$(script ledger_insert_plain_types bench/breakdown/ledger_insert_plain_types.pgbench)" \
  "$(script ledger_insert_domains_pk bench/breakdown/ledger_insert_domains_pk.pgbench)" \
  "$(script ledger_insert_events bench/breakdown/ledger_insert_events.pgbench)"

# WAL per transaction, once the first touch of each page after the checkpoint (its full-page
# image) is out of the way: a warm-up run, then a measured one.
echo "WAL per transaction:"
for name in floor plpgsql consume; do
  [ -f "$out/$name.pgbench" ] || script "$name" "bench/scripts/${name/consume/pg_quota}.pgbench" >/dev/null
  run_pgbench "$db" "$out/$name.pgbench" off >/dev/null
  start=$(command psql -X -qtA -d "$db" -c 'SELECT pg_catalog.pg_current_wal_lsn()')
  done_count=$(PGOPTIONS="$PGOPTIONS -c synchronous_commit=off" command pgbench -n -M prepared -c "$clients" \
                 -j "$threads" -T "$seconds" -f "$out/$name.pgbench" "$db" 2>&1 \
               | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  bytes=$(command psql -X -qtA -d "$db" -c "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '$start')")
  printf '  %-28s %8.0f bytes\n' "$name" "$(awk -v b="$bytes" -v n="$done_count" 'BEGIN {print b / n}')"
done

# A year of history: 365 past daily windows for every uniform subject (3.65M counter rows).
for counters in quota.counters breakdown_counters; do
  psql -d "$db" -c "INSERT INTO $counters (subject, metric, window_start, window_end, used)
                    SELECT s(n), 'calls', w, w + interval '1 day', 0
                      FROM generate_series(1, 10000) AS n,
                           generate_series(date_trunc('day', now()) - interval '365 days',
                                           date_trunc('day', now()) - interval '1 day', interval '1 day') AS w" \
       -c "VACUUM ANALYZE $counters"
done
group "statements, with 365 old windows per subject:" "${statements[@]}"

[ -z "$(command psql -X -qtA -d "$db" -c 'SELECT 1 FROM quota.audit() LIMIT 1')" ] \
  || { echo "bench: quota.audit() not empty" >&2; exit 1; }
