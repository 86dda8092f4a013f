#!/usr/bin/env bash
# make test-sharding: pg_quota sharded by subject with PL/Proxy (docs/scale.md), on this
# machine: three shard servers and a router (scripts/sharded-cluster.sh), stopped at the end.
# Through the router, 32 sessions spend 60 subjects' daily calls and 32 sessions retry 400
# keyed requests about 8 times each; then every shard's ledger and counters are copied to
# the router and checked (tests/sharding/check.sql): each subject's rows on exactly the
# shard it is routed to, no subject allowed more or fewer than min(limit, calls), one ledger
# row per keyed request, every shard's audit clean, the merged top list right. Then pools,
# reservations and errors through the router.
#   tests/sharding/run.sh BASE_PORT
set -euo pipefail
cd "$(dirname "$0")/../.."
base_port=${1:-54331}
dir=/tmp/pgq-sharded shards=3 clients=32 calls=100
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
# PL/Proxy says NOTICE "dropping stale conn" after a remote error (the checks cause some).
# The servers' superuser sets up and checks; the calls come from quota_app, an ordinary
# role the deployment granted what an application needs (sharding/deploy.sh GRANT_TO).
export PGOPTIONS='-c client_min_messages=warning' PGUSER=postgres
fail() { echo "test-sharding: $*" >&2; exit 1; }

bash scripts/sharded-cluster.sh stop "$dir"
trap 'bash scripts/sharded-cluster.sh stop "$dir"' EXIT
router=$(bash scripts/sharded-cluster.sh start "$dir" "$base_port" "$shards")
shard() { echo "host=$dir/shard$1 port=$((base_port + $1)) dbname=pgq_shard"; }
app="$router user=quota_app"

psql "$router" -o /dev/null -c "SELECT quota.create_plan('sharded', '{\"calls\": {\"limit\": 50, \"per\": \"day\"}, \"keyed\": {\"limit\": 100000, \"per\": \"day\"}, \"ranked\": {\"limit\": 1000, \"per\": \"day\"}}', is_default => true)"
[ "$(psql -At "$router" -c 'SELECT quota_router.configuration_agrees()')" = t ] || fail "the shards' plans differ"
for i in $(seq 0 $((shards - 1))); do
  [ "$(psql -At "$(shard "$i")" -c "SELECT count(*) FROM quota.limits WHERE plan = 'sharded'")" = 3 ] || fail "shard $i lacks the plan"
done

for workload in spend retry; do
  echo "test-sharding: $workload through the router ($clients sessions x $calls calls)"
  command pgbench -n -c "$clients" -j 2 -t "$calls" -M prepared -f "tests/sharding/$workload.pgbench" "$app" \
    >"/tmp/pgq-sharding-$workload.log" 2>&1 || { cat "/tmp/pgq-sharding-$workload.log" >&2; exit 1; }
done

# 12 subjects with distinct usage of a metric of their own, for the merged top list.
psql "$app" -o /dev/null -c "SELECT quota.consume(('00000000-0000-4000-8000-' || lpad((200 + n)::text, 12, '0'))::uuid, 'ranked', n)
                               FROM generate_series(1, 12) AS n"
psql "$router" -c 'CREATE SCHEMA sharding_test' \
  -c 'CREATE TABLE sharding_test.events (shard int, subject uuid, metric text, kind text, amount bigint, idempotency_key text)' \
  -c 'CREATE TABLE sharding_test.counters (shard int, subject uuid, metric text, used bigint, allowance bigint)'
for i in $(seq 0 $((shards - 1))); do
  psql "$(shard "$i")" -c "\\copy (SELECT $i, subject, metric, kind, amount, idempotency_key FROM quota.events) TO STDOUT" \
    | psql "$router" -c '\copy sharding_test.events FROM STDIN'
  psql "$(shard "$i")" -c "\\copy (SELECT $i, subject, metric, used, allowance FROM quota.counters) TO STDOUT" \
    | psql "$router" -c '\copy sharding_test.counters FROM STDIN'
done
psql "$router" -c "SET pgq.spend_calls = $((clients * calls))" -f tests/sharding/check.sql
echo "test-sharding: every subject on one shard, no overspend, one row per keyed request, audits clean"

psql "$app" -f tests/sharding/pools_and_errors.sql
member=00000000-0000-4000-8000-000000000901 pool=00000000-0000-4000-8000-000000000900
home=$(psql -At "$router" -c "SELECT quota_router.shard_number('$pool')")
for i in $(seq 0 $((shards - 1))); do
  has=$(psql -At "$(shard "$i")" -c "SELECT quota_shard.has_rows('$member')")
  [ "$has" = "$([ "$i" = "$home" ] && echo t || echo f)" ] || fail "the pool's member: has_rows on shard $i is $has, its pool is on shard $home"
done
echo "test-sharding: pools (the member's rows on its pool's shard only), reservations, grants and errors through the router"

# Deploying again (after an upgrade of the shards) keeps where members live; another list of
# shards is refused.
shards_list=()
for i in $(seq 0 $((shards - 1))); do shards_list+=("$(shard "$i")"); done
GRANT_TO=quota_app bash sharding/deploy.sh "$router" "${shards_list[@]}"
[ "$(psql -At "$app" -c "SELECT quota.routing_key('$member')")" = "$pool" ] || fail "a redeploy lost where the pool's member lives"
if bash sharding/deploy.sh "$router" "${shards_list[@]:0:2}" 2>/dev/null; then
  fail "a deploy with another list of shards was not refused"
fi
[ "$(psql -At "$app" -c "SELECT allowed FROM quota.consume('$member', 'calls')")" = t ] || fail "the router does not work after a redeploy"
echo "test-sharding: a redeploy keeps members' homes; another list of shards is refused"
