#!/usr/bin/env bash
# make bench-compaction (also part of make bench): a simulated year of ledger for 2,000
# subjects (10 calls a day each, daily windows, the counters that go with them), its size
# before and after quota.compact('32 days'), and consume (uniform, today's windows) while
# compaction runs beside it against consume alone, taking turns run by run. A benchmark:
# nothing fails on its figures, only on an audit that disagrees.
#   bench/compaction.sh SOCKET_DIR PORT
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=$1 PGPORT=$2 PGUSER=postgres PGOPTIONS='-c client_min_messages=warning'
clients=${BENCH_CLIENTS:-8} threads=2 seconds=${BENCH_SECONDS:-5} runs=${BENCH_RUNS:-5}
subjects=${BENCH_COMPACTION_SUBJECTS:-2000} per_day=10
db=pgq_bench_compaction out=target/bench-compaction
. bench/lib.sh
rm -rf "$out" && mkdir -p "$out"
psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"

start=$(date +%s)
psql -d "$db" -o /dev/null -v subjects="$subjects" -v per_day="$per_day" <<'SQL'
CREATE EXTENSION pg_quota;
CREATE FUNCTION s(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
SELECT quota.create_plan('daily', '{"calls": {"limit": 100, "per": "day"}}', is_default => true);
SELECT count(quota.assign_plan(s(n), 'daily')) FROM generate_series(1, :subjects) AS n;
-- A year of days before today, each subject's calls written in the order they happened.
INSERT INTO quota.events (subject, created_at, kind, metric, amount, from_allowance, window_start, window_end, used,
                          allowance, remaining, reason)
SELECT s(n), day + (k * interval '1 hour'), 'consume', 'calls', 1, 1, day, day + interval '1 day', k, 100, 100 - k, 'ok'
  FROM generate_series(date_trunc('day', now(), 'UTC') - interval '365 days',
                       date_trunc('day', now(), 'UTC') - interval '1 day', interval '1 day') AS day,
       generate_series(1, :per_day) AS k, generate_series(1, :subjects) AS n
 ORDER BY day, k, n;
INSERT INTO quota.counters (subject, metric, window_start, window_end, used, allowance)
SELECT s(n), 'calls', day, day + interval '1 day', :per_day, 100
  FROM generate_series(date_trunc('day', now(), 'UTC') - interval '365 days',
                       date_trunc('day', now(), 'UTC') - interval '1 day', interval '1 day') AS day,
       generate_series(1, :subjects) AS n;
VACUUM ANALYZE quota.events;
VACUUM ANALYZE quota.counters;
CREATE TABLE compaction_log (variant text, events_folded bigint, windows_closed bigint);
SQL
echo "a year of ledger: $((subjects * per_day * 365)) rows, $((subjects * 365)) windows, filled in $(( $(date +%s) - start )) s" | tee "$out/results.txt"
sizes() {
  psql -d "$db" -At -v label="$1" <<'SQL' | tee -a "$out/results.txt"
SELECT format('%s: ledger rows %s (older than 32 days %s), counters %s (of windows ended over 32 days ago %s), rollups %s; '
              'on disk: events %s, counters %s, rollups %s', :'label',
              (SELECT count(*) FROM quota.events),
              (SELECT count(*) FROM quota.events WHERE created_at < now() - interval '32 days'),
              (SELECT count(*) FROM quota.counters),
              (SELECT count(*) FROM quota.counters WHERE window_end < now() - interval '32 days'),
              (SELECT count(*) FROM quota.ledger_rollups),
              pg_size_pretty(pg_total_relation_size('quota.events')), pg_size_pretty(pg_total_relation_size('quota.counters')),
              pg_size_pretty(pg_total_relation_size('quota.ledger_rollups')))
SQL
}
sizes before
checkpoint "$db"

# Consume alone and consume beside compaction, taking turns; the compaction runs only while
# its turn's pgbench runs, in one session starting one batch a second (pgbench -R 1) of
# 1,000 rows (what a ledger of 1,000 consumes a second grows by) or 10,000; the rate it
# reached is printed.
cat >"$out/consume.pgbench" <<PGBENCH
\set n random(1, $subjects)
SELECT allowed FROM quota.consume(s(:n), 'calls', 1);
PGBENCH
variants="alone compacting_1000_rows_a_second compacting_10000_rows_a_second"
declare -A runs_of median_of
for run in $(seq "$runs"); do
  for name in $variants; do
    compactor=
    if [ "$name" != alone ]; then
      rows=${name#compacting_} rows=${rows%%_*}
      echo "INSERT INTO compaction_log SELECT '$name', * FROM quota.compact('32 days', $rows);" >"$out/compact-$rows.pgbench"
      PGOPTIONS="$PGOPTIONS -c synchronous_commit=off" command pgbench -n -c 1 -R 1 -T "$seconds" \
        -f "$out/compact-$rows.pgbench" "$db" >"$out/$name-$run.log" 2>&1 &
      compactor=$!
    fi
    runs_of[$name]+="$(run_pgbench "$db" "$out/consume.pgbench" off) "
    [ -z "$compactor" ] || wait "$compactor"
  done
done
for name in $variants; do
  read -ra tps <<<"${runs_of[$name]}"
  median_of[$name]=$(median "${tps[@]}")
  printf 'consume, %-31s median %6.0f tps   every run: %s\n' "$name" "${median_of[$name]}" \
    "$(printf '%.0f\n' "${tps[@]}" | sort -n | tr '\n' ' ')" | tee -a "$out/results.txt"
done
psql -d "$db" -At -c "SELECT format('%s: %s rows folded a second, %s windows closed a second, while consume ran',
                        variant, round(sum(events_folded) / ($runs * $seconds)), round(sum(windows_closed) / ($runs * $seconds)))
                        FROM compaction_log GROUP BY variant ORDER BY variant" | tee -a "$out/results.txt"
for name in compacting_1000_rows_a_second compacting_10000_rows_a_second; do
  echo "consume $name / alone: $(ratio "${median_of[$name]}" "${median_of[alone]}")" | tee -a "$out/results.txt"
done

# The rest of the year, then the sizes after it.
start=$(date +%s)
psql -d "$db" -c "DO \$\$ BEGIN
    LOOP
        EXIT WHEN (SELECT events_folded + windows_closed FROM quota.compact('32 days', 50000)) = 0;
        COMMIT;
    END LOOP;
END \$\$"
echo "the rest compacted in $(( $(date +%s) - start )) s" | tee -a "$out/results.txt"
# On disk, the space compaction frees is reused by new rows (a plain VACUUM); VACUUM FULL
# shows what the tables hold once rewritten.
psql -d "$db" -c "VACUUM FULL quota.events, quota.counters, quota.ledger_rollups"
sizes "after quota.compact('32 days') and VACUUM FULL (and the consume runs' rows of today)"
[ "$(psql -d "$db" -At -c 'SELECT count(*) FROM quota.audit()')" = 0 ] || { echo "bench-compaction: audit disagrees" >&2; exit 1; }
echo "audit: clean" | tee -a "$out/results.txt"
