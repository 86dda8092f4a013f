#!/usr/bin/env bash
# Compaction under load: thirty days of history for 200 subjects, then 32 sessions consume
# today's window and record late into the past thirty days (windows compaction is closing:
# a record into a closed one is refused, and logged) while 2 sessions call quota.compact()
# over and over. Afterwards every unit counted is in the ledger, the rollups or the
# counters' units counted without rows, no closed window was counted again, only records
# into closed windows were refused, the audit is clean, and compaction did fold rows and
# close windows during the run (compaction/check.sql).
#   compaction.sh CLIENTS CALLS
set -euo pipefail
cd "$(dirname "$0")/compaction"
clients=$1 calls=$2 db=pgq_compaction
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" -o /dev/null <<'SQL'
CREATE EXTENSION pg_quota;
CREATE FUNCTION public.s(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid $$;
CREATE TABLE public.compaction_log (events_folded bigint, windows_closed bigint);
CREATE TABLE public.refused_records (subject uuid, occurred_at timestamptz);
-- A late record, or its refusal (22023: its window was closed) logged.
CREATE FUNCTION public.late_record(subject uuid, days_ago integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    occurred constant timestamptz := now() - days_ago * interval '1 day';
BEGIN
    PERFORM quota.record(subject, 'calls', 1, occurred_at => occurred);
EXCEPTION WHEN invalid_parameter_value THEN
    INSERT INTO public.refused_records VALUES (subject, occurred);
END $$;
SELECT quota.create_plan('history', '{"calls": {"limit": 1000000, "per": "day"},
                                      "pings": {"limit": 1000000, "per": "day", "ledger": "counters"}}', is_default => true);
-- 3 units a day for thirty days for each subject, written when they counted.
SELECT count(*) FROM generate_series(1, 200) AS n, generate_series(1, 30) AS d,
       LATERAL quota.record(public.s(n), 'calls', 3, occurred_at => now() - d * interval '1 day') AS r;
UPDATE quota.events SET created_at = least(created_at, window_end - interval '1 second');
SQL
history=$((200 * 30 * 3))

command pgbench -n -c 2 -j 1 -T 600 -M prepared -f compact.pgbench "$db" >/tmp/pgq-compaction-compact.log 2>&1 &
compactor=$!
if ! command pgbench -n -c "$clients" -j 2 -t "$calls" -M prepared -f load.pgbench "$db" >/tmp/pgq-compaction-load.log 2>&1; then
  kill "$compactor" 2>/dev/null || true
  cat /tmp/pgq-compaction-load.log >&2
  exit 1
fi
kill "$compactor" 2>/dev/null || true
wait "$compactor" 2>/dev/null || true
# A killed pgbench leaves its sessions' last batch running: the check reads the ledger and
# the rollups in separate statements, so it waits for that batch to commit first.
for _ in $(seq 300); do
  [ "$(psql -d "$db" -tA -c "SELECT count(*) FROM pg_stat_activity
                              WHERE datname = current_database() AND pid <> pg_backend_pid()")" = 0 ] && break
  sleep 0.1
done
grep -q "aborted" /tmp/pgq-compaction-compact.log && { cat /tmp/pgq-compaction-compact.log >&2; exit 1; }
psql -d "$db" -c "SET pgq.units_asked = $((history + clients * calls))" -f check.sql
