#!/usr/bin/env bash
# A throwaway sharded deployment on this machine (docs/scale.md): SHARDS PostgreSQL 15
# servers with pg_quota and one router server with PL/Proxy, deployed by sharding/deploy.sh.
# Server i (0-based) is DIR/shardI on port BASE_PORT+i, the router DIR/router on
# BASE_PORT+SHARDS; databases pgq_shard and pgq_router; on every server the login role
# quota_app, which the deployment grants what an application needs (GRANT_TO). Prints the
# router's connection string, without a user: the router reaches the shards as whoever
# calls it. BENCH=1 is passed on to scripts/cluster.sh (fsync on).
#   scripts/sharded-cluster.sh start DIR BASE_PORT SHARDS
#   scripts/sharded-cluster.sh stop DIR
set -euo pipefail
cd "$(dirname "$0")/.."
action=$1 dir=$2
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
export PGUSER=postgres

case "$action" in
start)
  base_port=$3 shards=$4
  mkdir -p "$dir"
  shard_connections=()
  for i in $(seq 0 $((shards - 1))); do
    bash scripts/cluster.sh start "$dir/shard$i" $((base_port + i))
    psql "host=$dir/shard$i port=$((base_port + i)) dbname=postgres" -c 'CREATE DATABASE pgq_shard' -c 'CREATE ROLE quota_app LOGIN'
    shard_connections+=("host=$dir/shard$i port=$((base_port + i)) dbname=pgq_shard")
  done
  router_port=$((base_port + shards))
  bash scripts/cluster.sh start "$dir/router" "$router_port"
  psql "host=$dir/router port=$router_port dbname=postgres" -c 'CREATE DATABASE pgq_router' -c 'CREATE ROLE quota_app LOGIN'
  router="host=$dir/router port=$router_port dbname=pgq_router"
  PGOPTIONS='-c client_min_messages=warning' GRANT_TO=quota_app bash sharding/deploy.sh "$router" "${shard_connections[@]}" >&2
  echo "$router"
  ;;
stop)
  for server in "$dir"/shard* "$dir"/router; do
    if [ -d "$server" ]; then bash scripts/cluster.sh stop "$server"; fi
  done
  rm -rf "$dir"
  ;;
*) echo "usage: $0 start DIR BASE_PORT SHARDS | stop DIR" >&2; exit 2 ;;
esac
