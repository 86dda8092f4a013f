#!/usr/bin/env bash
# make bench-analytics: the usage analytics (sql/analytics.sql) on a ledger of 10 million
# rows, and what their indexes cost a consume. Fills a throwaway database (bench/setup.sql's
# subjects and plans, then EVENTS ledger rows written directly: 60 days, 100,000 subjects of
# three plans, 20 hot subjects with a fifth of the rows, 5% denials of which 40% by a rate
# rule, late records), ANALYZE, then times each query (median of 3, warm) and keeps its
# plans (auto_explain, ANALYZE and BUFFERS, of the statements inside the functions) in
# target/bench-analytics/plans.txt. Then consumes with and without the analytics' indexes,
# in turns (RUNS runs of SECONDS each per variant, allowed calls and denied calls). Nothing
# fails on a timing. PHASES (default "fill queries consume") runs some of it again on the
# database a full run left.
#   bench/analytics.sh SOCKET_DIR PORT
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=$1 PGPORT=$2 PGUSER=postgres PGOPTIONS='-c client_min_messages=warning'
events=${EVENTS:-10000000} runs=${RUNS:-5} seconds=${SECONDS_PER_RUN:-20} phases=${PHASES:-fill queries consume}
clients=${BENCH_CLIENTS:-8} threads=2
db=pgq_bench_analytics out=target/bench-analytics
mkdir -p "$out"
. bench/lib.sh
phase() { [[ " $phases " == *" $1 "* ]]; }

if phase fill; then
rm -f "$out"/*
psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" -f bench/setup.sql >/dev/null
start=$(date +%s)
psql -d "$db" -v events="$events" <<'SQL'
SELECT quota.create_plan(p, format('{"calls": {"limit": %s, "per": "day", "time_zone": "America/New_York"},
                                     "tokens": {"limit": %s, "per": "month"}}', l, l * 1000)::jsonb)
  FROM (VALUES ('free', 100), ('pro', 10000), ('team', 100000)) AS v (p, l);
-- Subjects 300001..400000 on three plans; 300001..300020 are the hot ones.
INSERT INTO quota.assignments (subject, plan, anchor)
SELECT s(n), CASE WHEN n % 10 < 7 THEN 'free' WHEN n % 10 < 9 THEN 'pro' ELSE 'team' END, now() - interval '90 days'
  FROM generate_series(300001, 400000) AS n;
-- The ledger in the order it is written: created_at grows with the row number over 60 days.
INSERT INTO quota.events (subject, created_at, kind, metric, amount, from_allowance, from_grants, overage,
                          window_start, window_end, used, reason)
SELECT s(who), at, kind, metric, amount,
       CASE WHEN kind = 'denial' THEN 0 ELSE amount - grants END, CASE WHEN kind = 'denial' THEN 0 ELSE grants END, 0,
       date_trunc('day', window_at, 'America/New_York'), date_trunc('day', window_at, 'America/New_York') + interval '1 day',
       0, reason
  FROM (SELECT i, now() - interval '60 days' + i * (interval '60 days' / :events) AS at,
               CASE WHEN random() < 0.2 THEN 300001 + (i % 20) ELSE 300001 + (random() * 99999)::int END AS who,
               CASE WHEN random() < 0.7 THEN 'calls' ELSE 'tokens' END AS metric,
               random() AS r, 1 + (random() * 9)::int AS amount
          FROM generate_series(1, :events) AS i) AS g,
       LATERAL (SELECT CASE WHEN g.r < 0.05 THEN 'denial' WHEN g.r < 0.07 THEN 'record' ELSE 'consume' END AS kind,
                       CASE WHEN g.r < 0.02 THEN 'rate_limited' WHEN g.r < 0.05 THEN 'quota_exceeded' ELSE 'ok' END AS reason,
                       CASE WHEN g.r > 0.98 THEN 1 ELSE 0 END AS grants,
                       -- A record synced a day late counts in the day it happened.
                       CASE WHEN g.r >= 0.05 AND g.r < 0.07 THEN g.at - interval '1 day' ELSE g.at END AS window_at) AS k;
VACUUM ANALYZE quota.events;
VACUUM ANALYZE quota.assignments;
SQL
echo "filled $events ledger rows in $(( $(date +%s) - start )) s"
psql -d "$db" -At -c "SELECT 'quota.events: ' || pg_size_pretty(pg_table_size('quota.events')) || ', events_created_at (BRIN): '
                             || pg_size_pretty(pg_relation_size('quota.events_created_at')) || ', events_denials: '
                             || pg_size_pretty(pg_relation_size('quota.events_denials')) || ', primary key: '
                             || pg_size_pretty(pg_relation_size('quota.events_pkey'))" | tee "$out/sizes.txt"
fi

# name|query: hot is a subject with 1/100 of the ledger, quiet one with about 80 rows.
queries=(
  "usage_history, hot subject, 30 days by day|SELECT * FROM quota.usage_history(s(300001), 'calls', 'day', now() - interval '30 days')"
  "usage_history, quiet subject, 7 days by hour|SELECT * FROM quota.usage_history(s(350001), 'calls', 'hour', now() - interval '7 days')"
  "usage_history, hot subject, 60 days by month|SELECT * FROM quota.usage_history(s(300001), 'tokens', 'month', now() - interval '60 days')"
  "top_consumers, 1 day|SELECT * FROM quota.top_consumers('calls', now() - interval '1 day')"
  "top_consumers, 30 days|SELECT * FROM quota.top_consumers('calls', now() - interval '30 days')"
  "denial_spikes, last day (baseline 7 days)|SELECT * FROM quota.denial_spikes()"
  "rate_limit_hits, 7 days|SELECT * FROM quota.rate_limit_hits(now() - interval '7 days')"
  "forecast, hot subject|SELECT * FROM quota.forecast(s(300001), 'calls')"
  "plan_distribution, active in 30 days|SELECT * FROM quota.plan_distribution()"
  "active_subjects, 60 days by day|SELECT * FROM quota.active_subjects('day', now() - interval '60 days')"
  "active_subjects, 7 days by day|SELECT * FROM quota.active_subjects('day', now() - interval '7 days')"
)
if phase queries; then
: >"$out/plans.txt"
printf 'query\tmedian_ms\n' >"$out/queries.tsv"
for entry in "${queries[@]}"; do
  name=${entry%%|*} query=${entry#*|}
  times=()
  for run in 1 2 3; do
    times+=("$(psql -d "$db" -c '\timing on' -c "SELECT count(*) FROM ($query) AS q" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')")
  done
  printf '%s\t%s\n' "$name" "$(median "${times[@]}")" | tee -a "$out/queries.tsv"
  { echo "== $name: $query"
    PGOPTIONS='-c client_min_messages=log' command psql -X -d "$db" -c "LOAD 'auto_explain'" \
      -c 'SET auto_explain.log_min_duration = 0' -c 'SET auto_explain.log_analyze = on' -c 'SET auto_explain.log_buffers = on' \
      -c 'SET auto_explain.log_nested_statements = on' -c 'SET auto_explain.log_level = log' \
      -c "SELECT count(*) FROM ($query) AS q" 2>&1 >/dev/null
  } >>"$out/plans.txt"
done
fi

phase consume || exit 0
# What the two indexes cost a consume: allowed calls (the fast path, one ledger row each: the
# BRIN index) and denied calls (a denial row each: the partial index too), with and without
# the indexes, in turns.
cat >"$out/allowed.pgbench" <<'EOF'
\set n random(1, 10000)
SELECT allowed FROM quota.consume(s(:n), 'calls', 1);
EOF
cat >"$out/denied.pgbench" <<'EOF'
\set n random(20001, 30000)
SELECT allowed FROM quota.consume(s(:n), 'calls', 1);
EOF
with_indexes() {
  psql -d "$db" -c "CREATE INDEX IF NOT EXISTS events_created_at ON quota.events USING brin (created_at) WITH (autosummarize = on)" \
                -c "CREATE INDEX IF NOT EXISTS events_denials ON quota.events (created_at) INCLUDE (subject, metric, reason) WHERE kind = 'denial'"
}
without_indexes() { psql -d "$db" -c "DROP INDEX IF EXISTS quota.events_created_at" -c "DROP INDEX IF EXISTS quota.events_denials"; }
# WAL written per call, one client, 2,000 calls: what an index adds to every insert, free of
# the machine's noise.
wal_per_call() {
  local before after
  before=$(psql -d "$db" -At -c "SELECT pg_current_wal_insert_lsn()")
  command pgbench -n -M prepared -c 1 -t 2000 -f "$1" "$db" >/dev/null 2>&1
  after=$(psql -d "$db" -At -c "SELECT pg_current_wal_insert_lsn()")
  psql -d "$db" -At -c "SELECT round(pg_wal_lsn_diff('$after', '$before') / 2000)"
}
printf 'workload\tvariant\trun\ttps\n' >"$out/consume.tsv"
printf 'workload\tvariant\trun\twal_bytes_per_call\n' >"$out/wal.tsv"
checkpoint "$db"
for run in $(seq "$runs"); do
  for variant in without with; do
    "${variant}_indexes"
    checkpoint "$db"
    for workload in allowed denied; do
      tps=$(run_pgbench "$db" "$out/$workload.pgbench" off)
      printf '%s\t%s\t%s\t%.0f\n' "$workload" "$variant" "$run" "$tps" | tee -a "$out/consume.tsv"
      printf '%s\t%s\t%s\t%s\n' "$workload" "$variant" "$run" "$(wal_per_call "$out/$workload.pgbench")" >>"$out/wal.tsv"
    done
  done
done
with_indexes
echo
echo "consume with the indexes / without (median of $runs runs of ${seconds}s, synchronous_commit=off):"
for workload in allowed denied; do
  read -ra with_tps <<<"$(awk -v w="$workload" '$1 == w && $2 == "with" {print $4}' "$out/consume.tsv" | tr '\n' ' ')"
  read -ra without_tps <<<"$(awk -v w="$workload" '$1 == w && $2 == "without" {print $4}' "$out/consume.tsv" | tr '\n' ' ')"
  echo "  $workload: $(ratio "$(median "${with_tps[@]}")" "$(median "${without_tps[@]}")")" \
       "(with: ${with_tps[*]}; without: ${without_tps[*]})"
done | tee "$out/consume-ratio.txt"
echo "WAL per call (bytes, median): $(for workload in allowed denied; do for variant in without with; do
  read -ra bytes <<<"$(awk -v w="$workload" -v v="$variant" '$1 == w && $2 == v {print $4}' "$out/wal.tsv" | tr '\n' ' ')"
  printf '%s %s %s; ' "$workload" "$variant" "$(median "${bytes[@]}")"; done; done)" | tee -a "$out/consume-ratio.txt"
