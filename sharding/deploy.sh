#!/usr/bin/env bash
# Deploys pg_quota sharded by subject with PL/Proxy (docs/scale.md): on every shard database
# pg_quota and sharding/shard.sql; on the router database PL/Proxy, sharding/router.sql, the
# proxies of every routed function (sharding/router_functions.sql, read from the first
# shard's catalog) and the cluster `pg_quota` naming the shards in order. Run it again after
# upgrading pg_quota on the shards: it replaces the router's functions and keeps its one
# table (quota_router.homes); it refuses another list of shards (subjects would move).
# Connection strings are libpq's ("host=/tmp/s0 port=5432 dbname=quota"); the SHARD strings
# are stored as given, and the router connects with them as the user calling it (PL/Proxy
# adds user=CURRENT_USER unless a string names a user). GRANT_TO=ROLE grants ROLE what an
# application needs to call the router (and, on the shards, pg_quota's functions).
#   [GRANT_TO=ROLE] sharding/deploy.sh ROUTER SHARD...
set -euo pipefail
cd "$(dirname "$0")/.."
router=$1
shift
[ $# -ge 1 ] || { echo "usage: [GRANT_TO=ROLE] $0 ROUTER SHARD..." >&2; exit 2; }
grant_to=${GRANT_TO:-}
[ -z "$grant_to" ] || [[ $grant_to =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "deploy: GRANT_TO must be a plain role name" >&2; exit 2; }
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "deploy: $*" >&2; exit 1; }

for shard in "$@"; do
  psql "$shard" -c 'CREATE EXTENSION IF NOT EXISTS pg_quota' -f sharding/shard.sql
  if [ -n "$grant_to" ]; then
    psql "$shard" -v role="$grant_to" <<'SQL'
GRANT USAGE ON SCHEMA quota, quota_shard TO :"role";
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA quota, quota_shard TO :"role";
SQL
  fi
done
versions=$(for shard in "$@"; do psql -At "$shard" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_quota'"; done | sort -u)
[ "$(wc -l <<<"$versions")" = 1 ] || fail "the shards run different versions of pg_quota: $(echo $versions)"

# The router's DDL, generated and checked before any of it is applied.
ddl=$(mktemp)
trap 'rm -f "$ddl"' EXIT
options="modular_mapping '1'" partitions=() number=0
for shard in "$@"; do
  options+=", p$number '${shard//\'/\'\'}'"
  partitions+=("p$number=$shard")
  number=$((number + 1))
done
existing=$(psql -At "$router" -c "SELECT string_agg(o.option_name || '=' || o.option_value, E'\n' ORDER BY o.option_name)
                                    FROM pg_foreign_server AS s, pg_options_to_table(s.srvoptions) AS o
                                   WHERE s.srvname = 'pg_quota' AND o.option_name ~ '^p[0-9]+$'" 2>/dev/null || true)
if [ -n "$existing" ] && [ "$existing" != "$(printf '%s\n' "${partitions[@]}" | sort)" ]; then
  fail "the router's cluster has other shards; changing them would move subjects whose rows stay behind"
fi
{
  echo "CREATE EXTENSION IF NOT EXISTS plproxy;"
  echo "CREATE SCHEMA IF NOT EXISTS quota_router;"
  # Everything but quota_router.homes is made again from this version's files.
  echo "DROP SCHEMA IF EXISTS quota CASCADE;"
  echo "DO \$\$ DECLARE routine regprocedure; BEGIN
          FOR routine IN SELECT p.oid::regprocedure FROM pg_proc AS p WHERE p.pronamespace = 'quota_router'::regnamespace LOOP
            EXECUTE format('DROP FUNCTION %s', routine);
          END LOOP;
        END \$\$;"
  echo "CREATE SCHEMA quota;"
  echo "REVOKE ALL ON SCHEMA quota, quota_router FROM PUBLIC;"
  psql -At -v print=types "$1" -f sharding/router_functions.sql
  cat sharding/router.sql
  psql -At -v print=proxies "$1" -f sharding/router_functions.sql
  if [ -z "$existing" ]; then
    echo "CREATE SERVER pg_quota FOREIGN DATA WRAPPER plproxy OPTIONS ($options);"
    echo "CREATE USER MAPPING FOR PUBLIC SERVER pg_quota;"
  fi
  echo "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota, quota_router FROM PUBLIC;"
  if [ -n "$grant_to" ]; then
    echo "GRANT USAGE ON SCHEMA quota, quota_router TO \"$grant_to\";"
    echo "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA quota, quota_router TO \"$grant_to\";"
    echo "GRANT USAGE ON FOREIGN SERVER pg_quota TO \"$grant_to\";"
  fi
} >"$ddl"
psql "$router" --single-transaction -f "$ddl"
