#!/usr/bin/env bash
# What quota.on_signup() adds to an insert into auth.users: pgbench inserts with and without
# the trigger, alternating, several runs each; prints the median tps of both and the ratio.
#   bench/signup.sh SOCKET_DIR PORT [SECONDS_PER_RUN] [RUNS]
set -euo pipefail
export PGHOST=$1 PGPORT=$2 PGUSER=postgres PGOPTIONS='-c client_min_messages=warning'
seconds=${3:-10} runs=${4:-3}
db=pgq_bench_signup
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" 2>/dev/null
psql -d "$db" <<'SQL' >/dev/null
CREATE EXTENSION pg_quota;
CREATE SCHEMA auth;
CREATE TABLE auth.users (id uuid PRIMARY KEY, email text, raw_user_meta_data jsonb,
                         created_at timestamptz DEFAULT now());
SELECT quota.create_plan('free', '{"ai_requests": {"limit": 10, "per": "day"}}', is_default => true);
SQL
script=$(mktemp)
echo "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES (gen_random_uuid(), 'u@example.com', '{\"name\": \"x\"}');" >"$script"
tps() {
  command pgbench -n -M prepared -c 4 -j 2 -T "$seconds" -f "$script" "$db" 2>/dev/null \
    | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
without=() with=()
for _ in $(seq "$runs"); do
  psql -d "$db" -c "DROP TRIGGER IF EXISTS quota_on_signup ON auth.users"
  without+=("$(tps)")
  psql -d "$db" -c "CREATE TRIGGER quota_on_signup AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION quota.on_signup()"
  with+=("$(tps)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_without=$(median "${without[@]}") m_with=$(median "${with[@]}")
assigned=$(command psql -X -qtA -d "$db" -c "SELECT count(*) FROM quota.assignments")
echo "signup insert, 4 clients, ${runs} x ${seconds}s: without trigger ${m_without} tps, with quota.on_signup ${m_with} tps," \
     "ratio $(awk -v a="$m_with" -v b="$m_without" 'BEGIN {printf "%.2f", a / b}') (plans assigned: ${assigned})"
rm -f "$script"
