#!/usr/bin/env bash
# make bench: pg_quota side by side with the hand-written floor and the PL/pgSQL users write,
# in one run, on one server. pgbench -M prepared, same -c/-j for every variant, several
# runs per cell with the variants taking turns, median tps and latency percentiles from
# pgbench's per-transaction logs. Correctness is checked after every cell. Nothing here
# fails on a timing.
#   bench/run.sh SOCKET_DIR PORT [full|smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=$1 PGPORT=$2 PGUSER=postgres PGOPTIONS='-c client_min_messages=warning'
mode=${3:-full}
clients=${BENCH_CLIENTS:-8} threads=2
case "$mode" in
  full)  seconds=${BENCH_SECONDS:-4} runs=${BENCH_RUNS:-5} workloads="uniform hot near" syncs=${BENCH_SYNCS:-"off on"} ;;
  smoke) seconds=1 runs=1 workloads="uniform near" syncs="off" ;;
  *) echo "usage: $0 SOCKET_DIR PORT [full|smoke]" >&2; exit 2 ;;
esac
variants=${BENCH_VARIANTS:-"floor floor_counters floor_function floor_counters_function plpgsql pg_quota pg_quota_counted pg_quota_key pg_quota_grants pg_quota_grants_history pg_quota_reserve pg_quota_reserve_consume pg_quota_enforce enforce_by_hand pg_quota_require require_by_hand pg_quota_rate pg_quota_rate_only gcra pg_quota_pool pg_quota_alerts pg_quota_crossing pg_quota_first_call"}
db=pgq_bench out=target/bench
rm -rf "$out" && mkdir -p "$out/logs"
. bench/lib.sh
psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" -f bench/setup.sql >/dev/null
psql -d "$db" -f bench/setup_alerts.sql >/dev/null
checkpoint "$db"

declare -A subject=([uniform]='random(1, 10000)' [hot]='0' [near]='random(20001, 30000)')
percentiles() {  # p50 p95 p99 of the latency column (us) of pgbench logs, in ms
  cat "$@" | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END {
    printf "%.2f %.2f %.2f", v[int(NR*0.50)]/1000, v[int(NR*0.95)]/1000, v[int(NR*0.99)]/1000}'
}

table=$out/results.tsv
printf 'sync\tworkload\tvariant\ttps\ttps_runs\tp50_ms\tp95_ms\tp99_ms\n' >"$table"
declare -A tps_of runs_of
for sync in $syncs; do
  for workload in $workloads; do
    cell=$sync-$workload scripts=()
    mkdir -p "$out/logs/$cell"
    for variant in $variants; do
      { echo "\\set n ${subject[$workload]}"; cat "bench/scripts/$variant.pgbench"; } >"$out/$variant-$workload.pgbench"
      scripts+=("$variant=$out/$variant-$workload.pgbench")
    done
    alternate "$db" "$sync" "$runs" "$out/logs/$cell" "${scripts[@]}" >"$out/$cell.tps"
    psql -d "$db" -f bench/check.sql
    while read -r variant tps round_tps; do
      tps_of[$cell-$variant]=$tps runs_of[$cell-$variant]=$round_tps
      read -r p50 p95 p99 <<<"$(percentiles "$out/logs/$cell/$variant"-*)"
      printf '%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\n' "$sync" "$workload" "$variant" "$tps" "$(printf '%.0f ' $round_tps | sed 's/ $//')" "$p50" "$p95" "$p99" \
        | tee -a "$table"
    done <"$out/$cell.tps"
  done
done

echo
echo "ratios (median tps, then the lowest and highest ratio of the runs round by round; n/a: a variant not run):"
# r NUMERATOR DENOMINATOR: the ratio of two variants' median tps in the current cell, and
# its spread over the rounds.
r() {
  local a=${tps_of[$sync-$workload-$1]:-} b=${tps_of[$sync-$workload-$2]:-}
  if [ -n "$a" ] && [ -n "$b" ]; then
    echo "$(ratio "$a" "$b") ($(paired_ratios "${runs_of[$sync-$workload-$1]}" "${runs_of[$sync-$workload-$2]}"))"
  else
    echo n/a
  fi
}
for sync in $syncs; do
  for workload in $workloads; do
    echo "  synchronous_commit=$sync $workload: pg_quota/floor $(r pg_quota floor)," \
         "the floor in a function/the floor $(r floor_function floor)," \
         "pg_quota/the floor in a function $(r pg_quota floor_function)," \
         "the bare update in a function/the bare update $(r floor_counters_function floor_counters)," \
         "ledger mode counters/the bare update in a function $(r pg_quota_counted floor_counters_function)," \
         "pg_quota/plpgsql $(r pg_quota plpgsql)," \
         "ledger mode counters/bare conditional update $(r pg_quota_counted floor_counters)," \
         "ledger mode counters/plpgsql $(r pg_quota_counted plpgsql)," \
         "with keys/without $(r pg_quota_key pg_quota)," \
         "paid by a grant/by the allowance $(r pg_quota_grants pg_quota)," \
         "a wallet that spent 20 grants/a new one $(r pg_quota_grants_history pg_quota_grants)," \
         "reserve+settle/consume $(r pg_quota_reserve pg_quota)," \
         "reserve+consume+settle/consume $(r pg_quota_reserve_consume pg_quota)," \
         "insert under quota.enforce/insert + consume by hand $(r pg_quota_enforce enforce_by_hand)," \
         "require/consume and a RAISE by hand $(r pg_quota_require require_by_hand)," \
         "with a rate rule/without $(r pg_quota_rate pg_quota)," \
         "rate-only metric/hand-written GCRA $(r pg_quota_rate_only gcra)," \
         "a pool's member/a plain subject $(r pg_quota_pool pg_quota)," \
         "with alert rules (none crossed)/without $(r pg_quota_alerts pg_quota)," \
         "a new subject's first call that fires an alert/that fires none $(r pg_quota_crossing pg_quota_first_call)"
  done
  if [[ " $workloads " == *" hot "* ]] && [ -n "${tps_of[$sync-hot-pg_quota]:-}" ]; then
    echo "  synchronous_commit=$sync pg_quota hot/uniform: $(ratio "${tps_of[$sync-hot-pg_quota]}" "${tps_of[$sync-uniform-pg_quota]}")"
  fi
done

# check-then-act: how much the racy two-step version overspends a limit of 1,000.
calls=$((clients * 500))
[ "$mode" = smoke ] && calls=$((clients * 50))
command pgbench -n -M prepared -c "$clients" -j "$threads" -t $((calls / clients)) -f bench/scripts/check_then_act.pgbench "$db" >/dev/null 2>&1
used=$(command psql -X -qtA -d "$db" -c "SELECT used FROM cta_counters WHERE subject = s(0)")
echo
echo "check-then-act, $clients sessions, $calls calls on one subject with a limit of 1000: used $used (overspent by $((used - 1000)))"

[ "$mode" = full ] && [ "${BENCH_SCALING:-1}" = 1 ] || exit 0

# Scaling: consume throughput with 10 million events in the ledger, against the run above.
psql -d "$db" -c "INSERT INTO quota.events (subject, kind, metric, amount, window_start, used, reason)
                  SELECT s(900000 + n % 100000), 'denial', 'calls', 1, '-infinity', 0, 'quota_exceeded'
                    FROM generate_series(1, 10000000) AS n" -c "VACUUM ANALYZE quota.events"
{ echo "\\set n ${subject[uniform]}"; cat bench/scripts/pg_quota.pgbench; } >"$out/scaling.pgbench"
at_10m=$(alternate "$db" off "$runs" "" "pg_quota=$out/scaling.pgbench" | cut -d' ' -f2)
echo "ledger at 10M events: pg_quota uniform $(printf '%.0f' "$at_10m") tps," \
     "$(ratio "$at_10m" "${tps_of[off-uniform-pg_quota]}") of the same run before the 10M insert"

# A year of history: 365 past daily windows for every uniform subject (3.65M counter rows).
# The fast path finds the current window alone; it must not slow down as windows pile up.
psql -d "$db" -c "INSERT INTO quota.counters (subject, metric, window_start, window_end, used)
                  SELECT s(n), 'calls', w, w + interval '1 day', 0
                    FROM generate_series(1, 10000) AS n,
                         generate_series(date_trunc('day', now()) - interval '365 days',
                                         date_trunc('day', now()) - interval '1 day', interval '1 day') AS w" \
     -c "VACUUM ANALYZE quota.counters"
with_history=$(alternate "$db" off "$runs" "" "pg_quota=$out/scaling.pgbench" | cut -d' ' -f2)
echo "a year of daily windows per subject: pg_quota uniform $(printf '%.0f' "$with_history") tps," \
     "$(ratio "$with_history" "$at_10m") of the run before them"

# Memory: the backend's private memory (RssAnon; VmRSS also counts the shared buffers it
# touched) after 1,000 consumes, then after 1,000,000 more, in one session that commits
# every 100 calls as an application would.
psql -d "$db" -qtA <<'SQL'
SET synchronous_commit = off;
CREATE TEMP TABLE rss (after bigint, private_kb bigint, rss_kb bigint);
CREATE PROCEDURE pg_temp.consume_many(calls int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..calls LOOP
        PERFORM quota.consume(s(1 + i % 10000), 'calls');
        IF i % 100 = 0 THEN COMMIT; END IF;
    END LOOP;
END $$;
CREATE FUNCTION pg_temp.memory(after bigint) RETURNS void LANGUAGE sql AS $$
    INSERT INTO rss SELECT after,
        substring(pg_read_file('/proc/self/status') FROM 'RssAnon:\s+(\d+) kB')::bigint,
        substring(pg_read_file('/proc/self/status') FROM 'VmRSS:\s+(\d+) kB')::bigint
$$;
CALL pg_temp.consume_many(1000);
SELECT pg_temp.memory(1000);
CALL pg_temp.consume_many(1000000);
SELECT pg_temp.memory(1001000);
SELECT 'backend memory after ' || string_agg(after || ' consumes: private ' || private_kb || ' kB (RSS ' || rss_kb || ' kB)', ', ' ORDER BY after) FROM rss;
SQL
