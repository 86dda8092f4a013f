#!/usr/bin/env bash
# A sign-up never waits on pg_quota's locks: with quota.assignments locked by another
# session (a migration, a long admin transaction), the auth server's insert into auth.users,
# under its own statement_timeout, completes while the lock is still held, with a WARNING;
# the user exists, and their first consume assigns the default plan lazily.
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
db=pgq_signup_lock
psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" >/dev/null <<'SQL'
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'supabase_auth_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;
CREATE EXTENSION pg_quota;
CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
CREATE TABLE auth.users (instance_id uuid, id uuid PRIMARY KEY, aud varchar(255), role varchar(255),
                         email varchar(255) UNIQUE, encrypted_password varchar(255), raw_app_meta_data jsonb,
                         raw_user_meta_data jsonb, created_at timestamptz, updated_at timestamptz);
ALTER TABLE auth.users OWNER TO supabase_auth_admin;
SELECT * FROM quota.setup_supabase();
SELECT quota.create_plan('free', '{"ai": {"limit": 3, "per": "day"}}', is_default => true);
SQL

# Another session holds quota.assignments until it is told to stop.
psql -d "$db" -c "BEGIN; LOCK TABLE quota.assignments IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120); COMMIT" \
  >/dev/null 2>&1 &
holder=$!
trap 'kill $holder 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ "$(command psql -X -qtA -d "$db" -c "SELECT count(*) FROM pg_locks WHERE relation = 'quota.assignments'::regclass
                                          AND mode = 'AccessExclusiveLock' AND granted")" = 1 ] && break
  sleep 0.1
done

# The sign-up, as the auth server makes it, with a statement_timeout that a wait for the
# lock would run into (57014, which no trigger can catch: the sign-up would fail).
warnings=$(psql -d "$db" 2>&1 >/dev/null <<'SQL'
SET ROLE supabase_auth_admin;
SET search_path = auth;
SET statement_timeout = '5s';
INSERT INTO users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data, raw_user_meta_data,
                   created_at, updated_at)
VALUES ('00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000cafe', 'authenticated',
        'authenticated', 'locked@example.com', 'x', '{"provider": "email", "providers": ["email"]}', '{}', now(), now());
SQL
) || { echo "signup_lock: the sign-up failed while quota.assignments was locked: $warnings" >&2; exit 1; }

# Still held: the sign-up did not wait for the lock to go.
[ "$(command psql -X -qtA -d "$db" -c "SELECT count(*) FROM pg_locks WHERE relation = 'quota.assignments'::regclass
                                        AND mode = 'AccessExclusiveLock' AND granted")" = 1 ] \
  || { echo "signup_lock: the lock was gone before the sign-up returned: it waited" >&2; exit 1; }
case "$warnings" in
  *"could not assign the default plan"*55P03*) ;;
  *) echo "signup_lock: expected a WARNING with SQLSTATE 55P03, got: $warnings" >&2; exit 1 ;;
esac
psql -d "$db" -c "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE relation = 'quota.assignments'::regclass
                   AND mode = 'AccessExclusiveLock' AND granted" >/dev/null
wait $holder 2>/dev/null || true
trap - EXIT

psql -d "$db" <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM auth.users WHERE id = '00000000-0000-0000-0000-00000000cafe') THEN
        RAISE EXCEPTION 'the user signed up while the lock was held does not exist';
    END IF;
    IF EXISTS (SELECT FROM quota.assignments WHERE subject = '00000000-0000-0000-0000-00000000cafe') THEN
        RAISE EXCEPTION 'a plan was assigned although the lock was held';
    END IF;
    IF NOT (quota.consume('00000000-0000-0000-0000-00000000cafe', 'ai')).allowed THEN
        RAISE EXCEPTION 'the first consume was denied';
    END IF;
    IF (SELECT plan FROM quota.assignments WHERE subject = '00000000-0000-0000-0000-00000000cafe') IS DISTINCT FROM 'free' THEN
        RAISE EXCEPTION 'the first consume did not assign the default plan';
    END IF;
END $$;
SQL
echo "signup_lock: a sign-up with quota.assignments locked completed at once with a WARNING; the first consume assigned the plan"
