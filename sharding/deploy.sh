#!/usr/bin/env bash
# Deploys pg_quota sharded by subject with PL/Proxy (docs/scale.md): on every shard database
# pg_quota and sharding/shard.sql; on the router database PL/Proxy, sharding/router.sql, the
# proxies of every routed function (sharding/router_functions.sql, read from the first
# shard's catalog) and the cluster `pg_quota` naming the shards in order. Connection
# strings are libpq's ("host=/tmp/s0 port=5432 dbname=quota"); the router reaches the
# shards with the SHARD strings as given, as the user calling it.
#   sharding/deploy.sh ROUTER SHARD...
set -euo pipefail
cd "$(dirname "$0")/.."
router=$1
shift
[ $# -ge 1 ] || { echo "usage: $0 ROUTER SHARD..." >&2; exit 2; }
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }

for shard in "$@"; do
  psql "$shard" -c 'CREATE EXTENSION IF NOT EXISTS pg_quota' -f sharding/shard.sql
done

options="modular_mapping '1'"
number=0
for shard in "$@"; do
  options+=", p$number '${shard//\'/\'\'}'"
  number=$((number + 1))
done
{
  echo "CREATE EXTENSION IF NOT EXISTS plproxy;"
  echo "CREATE SCHEMA quota; CREATE SCHEMA quota_router; REVOKE ALL ON SCHEMA quota, quota_router FROM PUBLIC;"
  psql -At -v print=types "$1" -f sharding/router_functions.sql
  cat sharding/router.sql
  psql -At -v print=proxies "$1" -f sharding/router_functions.sql
  echo "CREATE SERVER pg_quota FOREIGN DATA WRAPPER plproxy OPTIONS ($options);"
  echo "CREATE USER MAPPING FOR PUBLIC SERVER pg_quota;"
  echo "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota, quota_router FROM PUBLIC;"
} | psql "$router" --single-transaction -f -
