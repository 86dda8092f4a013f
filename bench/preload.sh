#!/usr/bin/env bash
# make bench-preload, on a server that preloads pg_quota: the memory-only rate limiter
# (quota.limit_in_memory) against the same rule kept in a table (quota.consume of a
# rate-only metric) and a bare SELECT 1 round trip, the physical ceiling; and a raised
# require denial with the denial journal on and off (pg_quota.journal_denials). Uniform
# subjects, the variants taking turns run by run. A benchmark: nothing fails on its figures.
#   bench/preload.sh SOCKET_DIR PORT
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=$1 PGPORT=$2 PGUSER=postgres PGOPTIONS='-c client_min_messages=warning'
clients=${BENCH_CLIENTS:-8} threads=2 seconds=${BENCH_SECONDS:-4} runs=${BENCH_RUNS:-5}
db=pgq_bench_preload out=target/bench-preload
rm -rf "$out" && mkdir -p "$out"
. bench/lib.sh
psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" -f bench/setup.sql >/dev/null
[ "$(command psql -X -qtA -d "$db" -c 'SELECT quota.preloaded()')" = t ] || { echo "bench: pg_quota is not preloaded" >&2; exit 1; }
checkpoint "$db"
subjects='\set n random(1, 10000)'
{ echo "$subjects"; echo "SELECT allowed FROM quota.limit_in_memory(s(:n), 'paced');"; } >"$out/memory.pgbench"
# 100 subjects: each session soon has every subject's rules in its cache (10,000 subjects take
# each new session tens of thousands of calls to see them all).
{ echo '\set n random(1, 100)'; echo "SELECT allowed FROM quota.limit_in_memory(s(:n), 'paced');"; } >"$out/memory_cached.pgbench"
{ echo "$subjects"; cat bench/scripts/pg_quota_rate_only.pgbench; } >"$out/table.pgbench"
{ echo "$subjects"; echo "SELECT 1;"; } >"$out/select_1.pgbench"
# Subjects 20001-30000 are at their limit (bench/setup.sql): every require is denied.
psql -d "$db" <<'SQL'
CREATE FUNCTION public.bench_deny(n int, journal boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('pg_quota.journal_denials', journal::text, true);
    PERFORM quota.require(s(n), 'calls');
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    RETURN;
END $$;
SQL
near='\set n random(20001, 30000)'
{ echo "$near"; echo "SELECT public.bench_deny(:n, true);"; } >"$out/journal_on.pgbench"
{ echo "$near"; echo "SELECT public.bench_deny(:n, false);"; } >"$out/journal_off.pgbench"
for sync in off on; do
  declare -A median_of=()
  while read -r variant median_tps _; do median_of[$variant]=$median_tps; done \
    < <(alternate "$db" "$sync" "$runs" "" memory="$out/memory.pgbench" memory_cached="$out/memory_cached.pgbench" \
                  table="$out/table.pgbench" select_1="$out/select_1.pgbench")
  echo "synchronous_commit=$sync, $clients clients, median of $runs runs of ${seconds}s:" \
       "memory ${median_of[memory]} tps (rules cached: ${median_of[memory_cached]}), table ${median_of[table]} tps," \
       "SELECT 1 ${median_of[select_1]} tps; memory/table $(ratio "${median_of[memory]}" "${median_of[table]}")," \
       "memory/SELECT 1 $(ratio "${median_of[memory]}" "${median_of[select_1]}")," \
       "cached/SELECT 1 $(ratio "${median_of[memory_cached]}" "${median_of[select_1]}")"
done
declare -A denial_tps=()
while read -r variant median_tps _; do denial_tps[$variant]=$median_tps; done \
  < <(alternate "$db" off "$runs" "" journal_on="$out/journal_on.pgbench" journal_off="$out/journal_off.pgbench")
echo "raised require denials, synchronous_commit=off: journal on ${denial_tps[journal_on]} tps, off ${denial_tps[journal_off]} tps;" \
     "on/off $(ratio "${denial_tps[journal_on]}" "${denial_tps[journal_off]}")"
psql -d "$db" -c "SELECT * FROM quota.memory_limiter_state()" -c "SELECT * FROM quota.denial_journal_state()"
