#!/usr/bin/env bash
# make bench (its last part), or make bench-sharding: consume through the PL/Proxy router
# (docs/scale.md) with 1 and with 3 shards, against consume on one server without a router,
# in one run: the three variants take turns run by run, median tps of RUNS runs, with the
# spread. Every server runs on this machine's cores, so the figures measure what the router
# costs per call, not what more machines would add. Nothing here fails on a timing.
#   bench/sharding.sh BASE_PORT
set -euo pipefail
cd "$(dirname "$0")/.."
base_port=$1
clients=${BENCH_CLIENTS:-8} threads=2 seconds=${BENCH_SECONDS:-5} runs=${BENCH_RUNS:-5}
out=target/bench-sharding dir=/tmp/pgq-bench-sharded
. bench/lib.sh
export PGOPTIONS='-c client_min_messages=warning' PGUSER=postgres
rm -rf "$out" && mkdir -p "$out"

stop_all() { bash scripts/sharded-cluster.sh stop "$dir/one"; bash scripts/sharded-cluster.sh stop "$dir/three"; }
stop_all
trap stop_all EXIT
router_one=$(BENCH=1 bash scripts/sharded-cluster.sh start "$dir/one" "$base_port" 1)
router_three=$(BENCH=1 bash scripts/sharded-cluster.sh start "$dir/three" $((base_port + 2)) 3)
direct="host=$dir/one/shard0 port=$base_port dbname=pgq_shard"

cat >"$out/consume.pgbench" <<'PGBENCH'
\set n random(1, 10000)
SELECT allowed FROM quota.consume(('00000000-0000-4000-8000-' || lpad(:n::text, 12, '0'))::uuid, 'calls', 1);
PGBENCH
for router in "$router_one" "$router_three"; do
  psql "$router" -c "SELECT quota.create_plan('bench', '{\"calls\": {\"limit\": 1000000000, \"per\": \"day\"}}', is_default => true)" >/dev/null
  # Every subject's first call assigns its plan and marks its window: not what is measured.
  PGOPTIONS="$PGOPTIONS -c synchronous_commit=off" command pgbench -n -M prepared -c "$clients" -j "$threads" -t 2000 \
    -f "$out/consume.pgbench" "$router" >/dev/null
done
# One server without a router: the one-shard deployment's shard, called directly.
for connection in "$direct" "$router_one" "$router_three"; do psql "$connection" -c CHECKPOINT; done

echo "consume through the PL/Proxy router, synchronous_commit=off, $clients clients, $runs runs of ${seconds}s each:"
declare -A connection_of=([direct]=$direct [router_1_shard]=$router_one [router_3_shards]=$router_three) runs_of median_of
variants="direct router_1_shard router_3_shards"
for run in $(seq "$runs"); do
  for name in $variants; do
    runs_of[$name]+="$(run_pgbench "${connection_of[$name]}" "$out/consume.pgbench" off) "
  done
done
for name in $variants; do
  read -ra tps <<<"${runs_of[$name]}"
  median_of[$name]=$(median "${tps[@]}")
  printf '%-16s median %6.0f tps   every run: %s\n' "$name" "${median_of[$name]}" \
    "$(printf '%.0f\n' "${tps[@]}" | sort -n | tr '\n' ' ')" | tee -a "$out/results.txt"
done
echo "router with 1 shard / one server: $(ratio "${median_of[router_1_shard]}" "${median_of[direct]}")," \
     "router with 3 shards / one server: $(ratio "${median_of[router_3_shards]}" "${median_of[direct]}")" | tee -a "$out/results.txt"
