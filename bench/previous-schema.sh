#!/usr/bin/env bash
# What a release's schema change buys or costs: the current library on a database still at
# the previous release's schema (kept in tests/upgrade) against one at the current schema,
# and the current schema without the triggers that unmark fast-path rows when a grant is
# updated (what they still cost a wallet's spend). Same server, same run, the databases
# alternating; median tps of several runs. pg_quota_grants_history is a wallet that spent
# 20 grants before the one that pays (bench/setup.sql); BENCH_VARIANTS picks other scripts of
# bench/scripts, BENCH_SUBJECTS other subjects (random(20001, 30000): at their limit, every
# call a denial).
#   bench/previous-schema.sh SOCKET_DIR PORT      (make bench-previous)
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=$1 PGPORT=$2 PGUSER=postgres PGOPTIONS='-c client_min_messages=warning'
runs=${BENCH_RUNS:-5} seconds=${BENCH_SECONDS:-5} clients=8 threads=2 subjects=${BENCH_SUBJECTS:-"random(1, 10000)"}
. bench/lib.sh
extdir="$(pg_config --sharedir)/extension"
previous=$(ls tests/upgrade/pg_quota--*.sql | sort -V | tail -n 1)
cp -n "$previous" "$extdir/" 2>/dev/null || sudo cp -n "$previous" "$extdir/"
previous=$(basename "$previous" .sql); previous=${previous#pg_quota--}

databases="previous current no_grant_triggers"
declare -A version=([previous]="VERSION '$previous'" [current]="" [no_grant_triggers]="")
for db in $databases; do
  psql -d postgres -c "DROP DATABASE IF EXISTS pgq_$db" -c "CREATE DATABASE pgq_$db"
  sed "s/^CREATE EXTENSION pg_quota;/CREATE EXTENSION pg_quota ${version[$db]};/" bench/setup.sql \
    | psql -d "pgq_$db" >/dev/null
done
psql -d pgq_no_grant_triggers -c 'DROP TRIGGER forget_fast_path_on_update ON quota.grants' \
  -c 'DROP TRIGGER forget_fast_path_on_refund ON quota.grants'
checkpoint postgres
echo "subjects $subjects, $clients clients, synchronous_commit=off, median of $runs runs of $seconds s (previous = $previous)"
for variant in ${BENCH_VARIANTS:-pg_quota pg_quota_grants pg_quota_grants_history pg_quota_reserve pg_quota_rate pg_quota_enforce enforce_by_hand}; do
  script=$(mktemp)
  { echo "\\set n $subjects"; cat "bench/scripts/$variant.pgbench"; } >"$script"
  declare -A tps=()
  for run in $(seq "$runs"); do
    for db in $databases; do
      tps[$db]+="$(run_pgbench "pgq_$db" "$script" off) "
    done
  done
  rm -f "$script"
  read -ra before <<<"${tps[previous]}"
  for db in $databases; do
    read -ra all <<<"${tps[$db]}"
    printf '%-16s %-18s %8.0f tps  %s x previous (%s round by round)\n' "$variant" "$db" "$(median "${all[@]}")" \
      "$(ratio "$(median "${all[@]}")" "$(median "${before[@]}")")" "$(paired_ratios "${tps[$db]}" "${tps[previous]}")"
  done
  unset tps
done
for db in $databases; do
  [ -z "$(command psql -X -qtA -d "pgq_$db" -c 'SELECT 1 FROM quota.audit() LIMIT 1')" ] \
    || { echo "bench: quota.audit() not empty in pgq_$db" >&2; exit 1; }
done
