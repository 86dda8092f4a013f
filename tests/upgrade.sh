#!/usr/bin/env bash
# ALTER EXTENSION pg_quota UPDATE from every earlier release kept in tests/upgrade
# (pg_quota--<version>.sql: that release's install script, as cargo pgrx generated it).
# For each: install the old version, fill it with plans, usage, grants, holds, keys and the
# ledger through its own functions, update, then check that every row is kept, that the
# schema is exactly a fresh install's, and that consumption continues on the old data.
# Needs write access to the server's extension directory (root, or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
extdir="$(pg_config --sharedir)/extension"
current=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tables="plans limits assignments overrides resets counters grants event_grants reservations events"

# The rows of every table, without the columns a later version added or dropped.
rows() {
  local db=$1 t
  for t in $tables; do
    echo "== $t"
    command psql -X -qtA -d "$db" -c "SELECT to_jsonb(x) - 'allowance' - 'fast' - 'rated' - 'settle_event_id' - 'rate' - 'pool' - 'member' - 'alerts' - 'alerted' - 'alert_at' - 'soft' - 'overage_max' - 'rollover_max' - 'rollover_windows' - 'rollover_of' - 'ledger' - 'ledger_rows' - 'counted_without_ledger' - 'wallet' - 'holds_expire_at' - 'spent' FROM quota.$t AS x ORDER BY 1"
  done
}

# The file behind each table every release has: a rewrite gives a table a new one.
#   storage DATABASE [TABLE_ALLOWED_A_REWRITE]
storage() {
  command psql -X -qtA -d "$1" -c "SELECT string_agg(relname || '=' || pg_catalog.pg_relation_filenode(oid), ' ' ORDER BY relname)
                                     FROM pg_catalog.pg_class WHERE relnamespace = 'quota'::regnamespace AND relkind = 'r'
                                      AND relname = ANY (string_to_array('$tables', ' ')) AND relname IS DISTINCT FROM '${2:-}'"
}
# The one rewrite a release's upgrade makes, stated in the README: 0.19.0 adds the stored
# generated column quota.grants.spent (a grant per top-up or carry, far fewer rows than the
# ledger, which no upgrade rewrites).
#   rewrite_allowed OLD_VERSION
rewrite_allowed() {
  if [ "$(printf '%s\n' "$1" 0.19.0 | sort -V | head -n 1)" != 0.19.0 ]; then echo grants; fi
}

psql -d postgres -c "DROP DATABASE IF EXISTS pgq_upgrade_fresh" -c "CREATE DATABASE pgq_upgrade_fresh"
psql -d pgq_upgrade_fresh -c "CREATE EXTENSION pg_quota"
command psql -X -qtA -d pgq_upgrade_fresh -f tests/upgrade/catalog.sql >target/upgrade-fresh.catalog

upgraded=0
for script in tests/upgrade/pg_quota--*.sql; do
  old=$(basename "$script" .sql); old=${old#pg_quota--}
  if [ ! -f "$extdir/pg_quota--$old.sql" ]; then
    cp "$script" "$extdir/" 2>/dev/null || sudo cp "$script" "$extdir/"
  fi
  db=pgq_upgrade_from_${old//./_}
  psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  psql -d "$db" >/dev/null <<SQL
CREATE EXTENSION pg_quota VERSION '$old';
SELECT quota.create_plan('free', '{"calls": {"limit": 10, "per": "day"}, "credits": {"limit": 0, "per": "lifetime"}}', is_default => true);
SELECT quota.create_plan('pro', '{"calls": {"limit": 100, "per": "month", "anchor": "subscription"}}');
SELECT quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 4, idempotency_key => 'before-upgrade');
SELECT quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 20);
SELECT quota.set_override('00000000-0000-0000-0000-000000000002', 'calls', 5);
SELECT quota.consume('00000000-0000-0000-0000-000000000002', 'calls', 5);
SELECT quota.reset('00000000-0000-0000-0000-000000000002', 'calls');
SELECT quota.grant('00000000-0000-0000-0000-000000000001', 'credits', 100);
SELECT quota.consume('00000000-0000-0000-0000-000000000001', 'credits', 30);
SELECT quota.reserve('00000000-0000-0000-0000-000000000001', 'calls', 3, ttl => '1 day', idempotency_key => 'held-over');
SELECT quota.record('00000000-0000-0000-0000-000000000003', 'calls', 2, occurred_at => now() - interval '1 day');
SELECT quota.assign_plan('00000000-0000-0000-0000-000000000004', 'pro', now() - interval '40 days');
SELECT quota.consume('00000000-0000-0000-0000-000000000004', 'calls', 7);
SELECT quota.create_plan('team', '{"projects": {"limit": 3, "per": "lifetime"}}');
SELECT quota.assign_plan('00000000-0000-0000-0000-000000000005', 'team');
CREATE TABLE public.projects (id serial PRIMARY KEY, user_id uuid NOT NULL);
SELECT quota.enforce_on('public.projects', 'projects');
INSERT INTO public.projects (user_id) SELECT '00000000-0000-0000-0000-000000000005' FROM generate_series(1, 2);
SQL
  # From 0.7.0 on: a window marked for the fast path with a rate rule cached beside it, which
  # 0.8.0 must still decide with its rule (a burst of 2: the third call is rate_limited).
  if [ "$(printf '%s\n' "$old" 0.7.0 | sort -V | head -n 1)" = 0.7.0 ]; then
    psql -d "$db" >/dev/null <<'SQL'
SELECT quota.create_plan('rated', '{"hits": {"limit": 100, "per": "day", "rate": [{"limit": 1, "per": "1 hour", "burst": 2}]}}');
SELECT quota.assign_plan('00000000-0000-0000-0000-000000000006', 'rated');
SELECT quota.consume('00000000-0000-0000-0000-000000000006', 'hits') FROM generate_series(1, 2);
SQL
  fi
  # From 0.6.0 on (one enforce trigger per table): a disabled one, which the update to 0.22.0
  # replaces (every UPDATE) and must leave disabled.
  if [ "$(printf '%s\n' "$old" 0.6.0 | sort -V | head -n 1)" = 0.6.0 ]; then
    psql -d "$db" >/dev/null <<'SQL'
CREATE TABLE public.drafts (id serial PRIMARY KEY, user_id uuid NOT NULL);
SELECT quota.enforce_on('public.drafts', 'projects');
ALTER TABLE public.drafts DISABLE TRIGGER quota_enforce_projects;
SQL
  fi
  rows "$db" >target/upgrade-before.rows
  files_before=$(storage "$db" "$(rewrite_allowed "$old")")
  psql -d "$db" -c "ALTER EXTENSION pg_quota UPDATE"
  # An upgrade must not rewrite tables: on a large ledger that is a long exclusive lock.
  [ "$(storage "$db" "$(rewrite_allowed "$old")")" = "$files_before" ] \
    || { echo "upgrade from $old rewrote tables: $files_before -> $(storage "$db" "$(rewrite_allowed "$old")")" >&2; exit 1; }
  version=$(command psql -X -qtA -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_quota'")
  [ "$version" = "$current" ] || { echo "upgrade from $old ended at version $version, not $current" >&2; exit 1; }
  rows "$db" >target/upgrade-after.rows
  if ! diff -u target/upgrade-before.rows target/upgrade-after.rows >&2; then
    echo "upgrade from $old changed the data" >&2; exit 1
  fi
  command psql -X -qtA -d "$db" -f tests/upgrade/catalog.sql >target/upgrade-upgraded.catalog
  if ! diff -u target/upgrade-fresh.catalog target/upgrade-upgraded.catalog >&2; then
    echo "the schema after upgrading from $old differs from a fresh install of $current" >&2; exit 1
  fi
  psql -d "$db" <<'SQL'
DO $$
DECLARE
    d quota.decision;
    r quota.reservation;
BEGIN
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 4, idempotency_key => 'before-upgrade');
    IF NOT d.replayed THEN RAISE EXCEPTION 'an idempotency key was lost: %', d; END IF;
    r := quota.reserve('00000000-0000-0000-0000-000000000001', 'calls', 3, ttl => '1 day', idempotency_key => 'held-over');
    IF NOT r.replayed THEN RAISE EXCEPTION 'a reservation key was lost: %', r; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 3);
    IF NOT d.allowed OR d.used <> 7 OR d.reserved <> 3 THEN RAISE EXCEPTION 'consumption did not continue: %', d; END IF;
    d := quota.settle(r.reservation_id, 2);
    IF NOT d.allowed OR d.used <> 9 THEN RAISE EXCEPTION 'the hold did not settle: %', d; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 1);
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'calls', 1);
    IF d.allowed OR d.used <> 10 THEN RAISE EXCEPTION 'the limit was lost: %', d; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000002', 'calls', 5);
    d := quota.consume('00000000-0000-0000-0000-000000000002', 'calls', 1);
    IF d.allowed OR d.allowance <> 5 THEN RAISE EXCEPTION 'the override or the reset was lost: %', d; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'credits', 70);
    IF NOT d.allowed OR d.from_grants <> 70 THEN RAISE EXCEPTION 'a grant balance was lost: %', d; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000004', 'calls', 1);
    IF d.used <> 8 OR d.window_start <> (SELECT anchor FROM quota.assignments
                                          WHERE subject = '00000000-0000-0000-0000-000000000004') + interval '1 month'
    THEN RAISE EXCEPTION 'the subscription window moved: %', d; END IF;
    -- 0.7.0: a plan change without an anchor keeps the cycle; keys are scoped to a metric.
    PERFORM quota.assign_plan('00000000-0000-0000-0000-000000000004', 'pro');
    d := quota.consume('00000000-0000-0000-0000-000000000004', 'calls', 1);
    IF d.used <> 9 THEN RAISE EXCEPTION 'a plan change after the upgrade restarted the cycle: %', d; END IF;
    IF NOT EXISTS (SELECT FROM quota.admin_changes WHERE action = 'assign_plan'
                      AND subject = '00000000-0000-0000-0000-000000000004' AND after->>'plan' = 'pro') THEN
        RAISE EXCEPTION 'a plan change after the upgrade was not recorded in quota.admin_changes';
    END IF;
    -- A table under the old version's enforce triggers: one trigger of the new kind, its live
    -- rows charged to its account, so that a delete still gives back and the limit holds.
    IF (SELECT array_agg(tgname::text) FROM pg_trigger WHERE tgrelid = 'public.projects'::regclass)
       IS DISTINCT FROM ARRAY['quota_enforce_projects'] THEN
        RAISE EXCEPTION 'enforce triggers were not converted: %', (SELECT array_agg(pg_get_triggerdef(oid)) FROM pg_trigger
                                                                    WHERE tgrelid = 'public.projects'::regclass);
    END IF;
    INSERT INTO public.projects (user_id) VALUES ('00000000-0000-0000-0000-000000000005');
    BEGIN
        INSERT INTO public.projects (user_id) VALUES ('00000000-0000-0000-0000-000000000005');
        RAISE EXCEPTION 'a fourth project was let in after the upgrade';
    EXCEPTION WHEN SQLSTATE 'PT429' THEN NULL;
    END;
    DELETE FROM public.projects WHERE id = 1;
    IF (SELECT used FROM quota.usage('00000000-0000-0000-0000-000000000005') WHERE metric = 'projects') <> 2 THEN
        RAISE EXCEPTION 'a delete after the upgrade did not give back: %', (SELECT array_agg(u) FROM quota.usage('00000000-0000-0000-0000-000000000005') AS u);
    END IF;
    -- 0.22.0: enforce triggers fire on every UPDATE, so a row that the table's own BEFORE
    -- trigger hands to another subject is charged there; a disabled one stays disabled.
    IF EXISTS (SELECT FROM pg_trigger WHERE tgfoid = 'quota.enforce()'::regprocedure AND array_length(tgattr::int2[], 1) > 0) THEN
        RAISE EXCEPTION 'an enforce trigger still fires only on updates of its columns: %',
            (SELECT array_agg(pg_get_triggerdef(oid)) FROM pg_trigger WHERE tgfoid = 'quota.enforce()'::regprocedure);
    END IF;
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass('public.drafts') AND tgenabled <> 'D') THEN
        RAISE EXCEPTION 'the upgrade enabled a disabled enforce trigger';
    END IF;
    PERFORM quota.assign_plan('00000000-0000-0000-0000-000000000008', 'team');
    CREATE FUNCTION public.projects_to_8() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN NEW.user_id := '00000000-0000-0000-0000-000000000008'; RETURN NEW; END $f$;
    CREATE TRIGGER projects_to_8 BEFORE UPDATE ON public.projects FOR EACH ROW EXECUTE FUNCTION public.projects_to_8();
    UPDATE public.projects SET id = id WHERE id = 2;
    IF (SELECT used FROM quota.usage('00000000-0000-0000-0000-000000000008') WHERE metric = 'projects') <> 1
       OR (SELECT used FROM quota.usage('00000000-0000-0000-0000-000000000005') WHERE metric = 'projects') <> 1 THEN
        RAISE EXCEPTION 'a row moved by a BEFORE trigger after the upgrade was not charged: %',
            (SELECT array_agg(u) FROM quota.usage('00000000-0000-0000-0000-000000000008') AS u);
    END IF;
    PERFORM quota.grant('00000000-0000-0000-0000-000000000001', 'credits', 5);
    d := quota.consume('00000000-0000-0000-0000-000000000001', 'credits', 1, idempotency_key => 'before-upgrade');
    IF d.replayed OR NOT d.allowed THEN RAISE EXCEPTION 'a key of another metric was not a new request: %', d; END IF;
    IF (SELECT count(*) FROM quota.consume_many('00000000-0000-0000-0000-000000000001', '{"calls": 1, "credits": 1}')
         WHERE reason = 'bundle_denied') <> 1 THEN
        RAISE EXCEPTION 'consume_many is not all or nothing after the upgrade';
    END IF;
    IF EXISTS (SELECT FROM quota.plans WHERE plan = 'rated') THEN
        d := quota.consume('00000000-0000-0000-0000-000000000006', 'hits');
        IF d.reason <> 'rate_limited' THEN RAISE EXCEPTION 'a rule cached beside a marked window was lost: %', d; END IF;
    END IF;
    -- Rate rules on the upgraded plan: a burst of 2, then rate_limited with a retry instant.
    PERFORM quota.set_limits('pro', '{"calls": {"limit": 100, "per": "month", "anchor": "subscription", "rate": [{"limit": 1, "per": "1 hour", "burst": 2}]}}');
    d := quota.consume('00000000-0000-0000-0000-000000000004', 'calls', 2);
    IF NOT d.allowed THEN RAISE EXCEPTION 'a burst was denied after the upgrade: %', d; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000004', 'calls', 1);
    IF d.allowed OR d.reason <> 'rate_limited' OR d.retry_after IS NULL THEN
        RAISE EXCEPTION 'a rate rule did not apply after the upgrade: %', d;
    END IF;
    -- Pools on the upgraded data: subject 2 (a plan of its own, 5 calls, used up) joins
    -- subject 1's pool with a cap of 3; its own window and the held-over reservation keep
    -- their meaning, and the pool pays what its own plan cannot, within the cap.
    PERFORM quota.set_limits('pro', '{"calls": {"limit": 100, "per": "month", "anchor": "subscription"}}');
    PERFORM quota.assign_plan('00000000-0000-0000-0000-000000000007', 'pro');
    PERFORM quota.join_pool('00000000-0000-0000-0000-000000000007', '00000000-0000-0000-0000-000000000002');
    PERFORM quota.set_pool_cap('00000000-0000-0000-0000-000000000007', 'calls', 3);
    d := quota.consume('00000000-0000-0000-0000-000000000002', 'calls', 3);
    IF NOT d.allowed OR d.used <> 3 THEN RAISE EXCEPTION 'the pool did not pay after the upgrade: %', d; END IF;
    d := quota.consume('00000000-0000-0000-0000-000000000002', 'calls', 1);
    IF d.reason <> 'cap_reached' THEN RAISE EXCEPTION 'the cap did not hold after the upgrade: %', d; END IF;
    -- Alerts on a window counted before the upgrade: subject 4 (9 of 100 on pro) crosses 10%.
    PERFORM quota.set_alerts('00000000-0000-0000-0000-000000000004', 'calls', ARRAY['10%']);
    d := quota.consume('00000000-0000-0000-0000-000000000004', 'calls', 1);
    IF (SELECT count(*) FROM quota.alerts WHERE subject = '00000000-0000-0000-0000-000000000004' AND rule = '10%' AND used = d.used) <> 1 THEN
        RAISE EXCEPTION 'no alert on a window counted before the upgrade: %', d;
    END IF;
    -- A soft limit on a plan created before the upgrade: past the allowance as overage.
    PERFORM quota.set_limits('pro', '{"calls": {"limit": 100, "per": "month", "anchor": "subscription", "overage": {"max": 5}}}');
    d := quota.consume('00000000-0000-0000-0000-000000000004', 'calls', 93);
    IF NOT d.allowed OR d.reason <> 'overage' OR d.overage <> 5 THEN RAISE EXCEPTION 'a soft limit after the upgrade: %', d; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches after the upgrade'; END IF;
END $$;
SQL
  upgraded=$((upgraded + 1))
  echo "upgrade: $old -> $current keeps every row, matches a fresh install, consumption continues"
done
[ "$upgraded" -gt 0 ] || { echo "upgrade: no earlier release in tests/upgrade" >&2; exit 1; }
