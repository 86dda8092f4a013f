#!/usr/bin/env bash
# pg_dump of a database using pg_quota, restored into a new database: plans, assignments,
# overrides, resets, counters, grants, reservations, rate overrides and state, pools (members,
# caps, admins, draws, allocations) and the ledger survive, and
# consumption continues correctly (limits, idempotency keys, new event ids, audit).
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
src=pgq_dump_source dst=pgq_dump_restored
psql -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" -c "CREATE DATABASE $src" -c "CREATE DATABASE $dst"
psql -d "$src" >/dev/null <<'SQL'
CREATE EXTENSION pg_quota;
SELECT quota.create_plan('free', '{"calls": {"limit": 10, "per": "day"}, "credits": {"limit": 0, "per": "lifetime"}}', is_default => true);
SELECT quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 4, idempotency_key => 'before-dump');
SELECT quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 20);
SELECT quota.set_override('00000000-0000-0000-0000-000000000002', 'calls', 5);
SELECT quota.reset('00000000-0000-0000-0000-000000000002', 'calls');
SELECT quota.grant('00000000-0000-0000-0000-000000000001', 'credits', 100);
SELECT quota.consume('00000000-0000-0000-0000-000000000001', 'credits', 30);
SELECT quota.reserve('00000000-0000-0000-0000-000000000001', 'calls', 3, ttl => '1 day');
SELECT quota.record('00000000-0000-0000-0000-000000000003', 'calls', 2, occurred_at => now() - interval '1 day');
SELECT quota.create_plan('paced', '{"api": {"rate": [{"limit": 1, "per": "1 hour", "burst": 2}]}}');
SELECT quota.assign_plan('00000000-0000-0000-0000-000000000004', 'paced');
SELECT quota.set_rate_override('00000000-0000-0000-0000-000000000004', 'api', '1 day', 3);
SELECT quota.consume('00000000-0000-0000-0000-000000000004', 'api', 2);
SELECT quota.create_plan('team', '{"seats": {"limit": 10, "per": "lifetime"}}');
SELECT quota.assign_plan('00000000-0000-0000-0000-0000000000aa', 'team');
SELECT quota.join_pool('00000000-0000-0000-0000-0000000000aa', '00000000-0000-0000-0000-000000000005');
SELECT quota.set_pool_cap('00000000-0000-0000-0000-0000000000aa', 'seats', 4);
SELECT quota.set_pool_admin('00000000-0000-0000-0000-0000000000aa', '00000000-0000-0000-0000-000000000006');
SELECT quota.consume('00000000-0000-0000-0000-000000000005', 'seats', 3);
SELECT quota.allocate('00000000-0000-0000-0000-0000000000aa', '00000000-0000-0000-0000-000000000005', 'seats', 2, 'seat-gift');
SQL
fingerprint() {
  command psql -X -qtA -d "$1" -c "
    SELECT string_agg(t || '=' || n, ' ' ORDER BY t) FROM (
      SELECT 'plans' AS t, count(*) AS n FROM quota.plans UNION ALL
      SELECT 'limits', count(*) FROM quota.limits UNION ALL
      SELECT 'assignments', count(*) FROM quota.assignments UNION ALL
      SELECT 'overrides', count(*) FROM quota.overrides UNION ALL
      SELECT 'resets', count(*) FROM quota.resets UNION ALL
      SELECT 'counters', sum(used + held) FROM quota.counters UNION ALL
      SELECT 'grants', sum(remaining) FROM quota.grants UNION ALL
      SELECT 'event_grants', count(*) FROM quota.event_grants UNION ALL
      SELECT 'reservations', count(*) FILTER (WHERE status = 'held') FROM quota.reservations UNION ALL
      SELECT 'events', count(*) FROM quota.events UNION ALL
      SELECT 'admin_changes', count(*) FROM quota.admin_changes UNION ALL
      SELECT 'rate_overrides', count(*) FROM quota.rate_overrides UNION ALL
      SELECT 'rate_state', count(*) FROM quota.rate_state WHERE tat_us > 0 UNION ALL
      SELECT 'pool_members', count(*) FROM quota.pool_members UNION ALL
      SELECT 'pool_caps', count(*) FROM quota.pool_caps UNION ALL
      SELECT 'pool_admins', count(*) FROM quota.pool_admins UNION ALL
      SELECT 'pool_draws', sum(drawn) FROM quota.pool_draws UNION ALL
      SELECT 'allocations', count(*) FROM quota.allocations) AS f"
}
before=$(fingerprint "$src")
pg_dump -Fc -d "$src" | pg_restore -d "$dst"
after=$(fingerprint "$dst")
if [ "$before" != "$after" ]; then
  echo "dump/restore changed the data: before [$before] after [$after]" >&2
  exit 1
fi
psql -d "$dst" <<'SQL'
DO $$
DECLARE
    d quota.decision;
    max_before bigint := (SELECT max(event_id) FROM quota.events);
BEGIN
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 4, idempotency_key => 'before-dump');
    IF NOT d.replayed THEN RAISE EXCEPTION 'the idempotency key was lost in the dump'; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 3);
    IF NOT d.allowed OR d.used <> 7 OR d.reserved <> 3 THEN RAISE EXCEPTION 'consumption did not continue: %', d; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 1);
    IF d.allowed THEN RAISE EXCEPTION 'the hold was lost: %', d; END IF;
    IF d.event_id <= max_before THEN RAISE EXCEPTION 'event ids restarted: % <= %', d.event_id, max_before; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'credits', 70);
    IF NOT d.allowed OR d.from_grants <> 70 THEN RAISE EXCEPTION 'grant balance was lost: %', d; END IF;
    PERFORM quota.set_override('00000000-0000-0000-0000-000000000002', 'calls', 6);
    IF (SELECT max(change_id) FROM quota.admin_changes) <> (SELECT max(change_id) FROM quota.admin_changes WHERE after->>'allowance' = '6')
       OR (SELECT count(*) FROM quota.admin_changes) < 2 THEN
        RAISE EXCEPTION 'the audit trail of administration was lost or restarted its ids';
    END IF;
    -- The rule's state came along: its burst of 2 is spent.
    d := quota.consume('00000000-0000-0000-0000-000000000004', 'api', 1);
    IF d.allowed OR d.reason <> 'rate_limited' THEN RAISE EXCEPTION 'the rate state was lost: %', d; END IF;
    -- The pool came along: the member's cap (4, 3 drawn) and its allocation of 2 (spent first).
    d := quota.consume('00000000-0000-0000-0000-000000000005', 'seats', 2);
    IF NOT d.allowed OR d.from_grants <> 2 THEN RAISE EXCEPTION 'the allocation was lost: %', d; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000005', 'seats', 2);
    IF d.reason <> 'cap_reached' THEN RAISE EXCEPTION 'the cap or the draws were lost: %', d; END IF;
    IF (SELECT (quota.allocate('00000000-0000-0000-0000-0000000000aa', '00000000-0000-0000-0000-000000000005', 'seats', 2, 'seat-gift')).replayed) IS NOT TRUE THEN
        RAISE EXCEPTION 'the allocation key was lost';
    END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches after restore'; END IF;
END $$;
SQL
echo "dump/restore: [$after] restored, consumption continues"
