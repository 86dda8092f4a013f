#!/usr/bin/env bash
# record_batch against the same events recorded one by one: peak private memory of the
# backend (RssAnon, sampled every 20 ms from /proc while the call runs), time, and the
# advisory locks held when the call returns. Every event has an idempotency key. Each form
# runs RUNS times, alternating; prints every run and the medians.
#   bench/record_batch.sh SOCKET_DIR PORT [EVENTS] [RUNS]
set -euo pipefail
export PGHOST=$1 PGPORT=$2 PGUSER=postgres PGOPTIONS='-c client_min_messages=warning'
events=${3:-100000} runs=${4:-3}
db=pgq_bench_batch
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" 2>/dev/null
psql -d "$db" <<'SQL' >/dev/null
CREATE EXTENSION pg_quota;
SELECT quota.create_plan('ingest', '{"tokens": {"limit": null, "per": "month"}}', is_default => true);
SQL

# Runs one SQL text in a fresh backend; prints "peak_rss_kb seconds advisory_locks".
measure() {
  local sql=$1 pid out peak=0 rss start end
  out=$(mktemp)
  start=$(date +%s.%N)
  command psql -X -qtA -d "$db" -v ON_ERROR_STOP=1 >"$out" <<SQL &
SELECT pg_backend_pid();
\o /dev/null
BEGIN;
$sql
\o
SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;
SQL
  local client=$!
  until pid=$(head -n 1 "$out" 2>/dev/null) && [ -n "$pid" ]; do sleep 0.01; done
  while kill -0 "$client" 2>/dev/null; do
    rss=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 0.02
  done
  wait "$client"
  end=$(date +%s.%N)
  echo "$peak $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}') $(sed -n 2p "$out")"
  rm -f "$out"
}

# The batches are built beforehand, as a client sends them: the measured backend holds the
# batch it was given, not the work of building it.
batch_sql() { local r=$1; echo "SELECT count(*) FROM quota.record_batch((SELECT events FROM public.batches WHERE run = $r));"; }
single_sql() { local r=$1; echo "SELECT count(quota.record(('00000000-0000-0000-0000-' || lpad((n % 1000)::text, 12, '0'))::uuid, 'tokens', 1 + n % 7,
    idempotency_key => 'single-$r-' || n, metadata => jsonb_build_object('n', n)))
  FROM generate_series(1, $events) AS n;"; }

psql -d "$db" -c "CREATE TABLE public.batches AS
    SELECT r AS run, (SELECT jsonb_agg(jsonb_build_object(
        'subject', ('00000000-0000-0000-0000-' || lpad((n % 1000)::text, 12, '0')), 'metric', 'tokens', 'amount', 1 + n % 7,
        'idempotency_key', 'batch-' || r || '-' || n, 'metadata', jsonb_build_object('n', n)))
      FROM generate_series(1, $events) AS n) AS events
    FROM generate_series(1, $runs) AS r"
batch=() single=()
for r in $(seq "$runs"); do
  batch+=("$(measure "$(batch_sql "$r")" | sed 's/^/ /')")
  single+=("$(measure "$(single_sql "$r")" | sed 's/^/ /')")
  echo "run $r: record_batch peak_kb/seconds/advisory_locks:${batch[-1]}   one by one:${single[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { local i=$1; shift; for row in "$@"; do echo "$row" | awk -v i="$i" '{print $i}'; done; }
echo "record_batch of $events keyed events, median of $runs: peak RssAnon $(median $(col 1 "${batch[@]}")) kB," \
     "$(median $(col 2 "${batch[@]}")) s; one by one in one transaction: $(median $(col 1 "${single[@]}")) kB," \
     "$(median $(col 2 "${single[@]}")) s"
