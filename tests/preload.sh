#!/usr/bin/env bash
# The shared-memory tier (issue 20) on servers that preload pg_quota: a primary started with
# shared_preload_libraries = pg_quota, a small limiter (512 states) and a tiny denial journal
# (16 records), and its streaming replica, both started here and stopped at the end. Checks
# that raise fail the run.
#   tests/preload.sh DIR PORT     (uses DIR-primary on PORT and DIR-replica on PORT + 1)
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1 port=$2
primary=$base-primary replica=$base-replica replica_port=$((port + 1))
BIN=$(pg_config --bindir)
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
stop_all() { bash scripts/cluster.sh stop "$replica"; bash scripts/cluster.sh stop "$primary"; }
trap stop_all EXIT
stop_all; rm -rf "$primary" "$replica"
export SETTINGS="-c shared_preload_libraries=pg_quota -c pg_quota.memory_rate_keys=512 -c pg_quota.journal_size=16"
bash scripts/cluster.sh start "$primary" "$port"
on() { local dir=$1 p=$2; shift 2; command psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$p" -U postgres -d postgres "$@"; }
value() { local dir=$1 p=$2; shift 2; command psql -X -qtA -v ON_ERROR_STOP=1 -h "$dir" -p "$p" -U postgres -d postgres -c "$@"; }
expect() {  # expect WHAT GOT WANTED
  [ "$2" = "$3" ] || { echo "preload: $1: got '$2', expected '$3'" >&2; exit 1; }
}

on "$primary" "$port" >/dev/null <<'SQL'
CREATE EXTENSION pg_quota;
CREATE FUNCTION public.s(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid $$;
SELECT quota.create_plan('visitors', '{"api_requests": {"rate": [{"limit": 10, "per": "1 second", "burst": 10}]},
                                       "slow": {"rate": [{"limit": 1, "per": "1 hour"}]}}', is_default => true);
SELECT quota.create_plan('capped', '{"projects": {"limit": 1, "per": "lifetime"}}');
SELECT quota.assign_plan(s(n), 'capped') FROM generate_series(10, 140) AS n;
CREATE TABLE public.projects (id serial PRIMARY KEY, owner uuid NOT NULL);
SELECT quota.enforce_on('public.projects', 'projects', 'owner');
-- A denial caught where it is raised: its transaction goes on, its ledger row does not.
CREATE FUNCTION public.deny(n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM quota.require(s(n), 'projects', 2);
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    RETURN;
END $$;
SQL

# The denial journal: a denial that raises and rolls back its transaction is in the ledger
# soon after, written by the worker; within a second is the issue's bound.
journal_row() {  # journal_row SUBJECT_N RAISED_BY: "latency_ms table role" once written
  local tries=0 found=""
  while [ $tries -lt 100 ]; do
    found=$(value "$primary" "$port" "SELECT round(extract(epoch FROM clock_timestamp() - created_at) * 1000),
                                             coalesce(metadata #>> '{journal,table}', '-'), metadata #>> '{journal,role}'
                                        FROM quota.events WHERE subject = s($1) AND kind = 'denial'
                                         AND metadata #>> '{journal,raised_by}' = '$2'")
    [ -n "$found" ] && { echo "$found" | tr '|' ' '; return; }
    sleep 0.05; tries=$((tries + 1))
  done
  echo "preload: the journal did not write the denial of s($1) by $2 within 5 s" >&2; exit 1
}
command psql -X -q -h "$primary" -p "$port" -U postgres -d postgres >/dev/null 2>&1 <<'SQL' || true
BEGIN;
SELECT quota.require(s(10), 'projects', 5);
ROLLBACK;
SQL
read -r latency table role <<<"$(journal_row 10 require)"
[ "$latency" -le 1000 ] || { echo "preload: a rolled-back denial took ${latency} ms to reach the ledger" >&2; exit 1; }
expect "the database role of a journaled denial" "$role" postgres
command psql -X -q -h "$primary" -p "$port" -U postgres -d postgres >/dev/null 2>&1 <<'SQL' || true
BEGIN;
INSERT INTO public.projects (owner) VALUES (s(11)), (s(11));
ROLLBACK;
SQL
read -r latency table role <<<"$(journal_row 11 enforce)"
expect "the table of an enforce denial" "$table" public.projects
expect "rows of the rolled-back inserts" "$(value "$primary" "$port" "SELECT count(*) FROM public.projects")" 0
echo "preload: rolled-back denials of require and of the enforce trigger reached the ledger (${latency} ms after the last)"

# Every raising function says so; pg_quota.journal_denials = off (a superuser's session)
# queues nothing; a denial raised in another database is counted there, not written.
command psql -X -q -h "$primary" -p "$port" -U postgres -d postgres >/dev/null 2>&1 <<'SQL' || true
BEGIN;
SELECT quota.require_reservation(s(15), 'projects', 5);
ROLLBACK;
BEGIN;
SELECT quota.require_many(s(16), '{"projects": 5}');
ROLLBACK;
SQL
journal_row 15 require_reservation >/dev/null
journal_row 16 require_many >/dev/null
entered() { value "$primary" "$port" "SELECT written + dropped + queued FROM quota.denial_journal_state()"; }
before=$(entered)
value "$primary" "$port" "SET pg_quota.journal_denials = off; SELECT public.deny(17)" >/dev/null
expect "records entered with pg_quota.journal_denials off" "$(entered)" "$before"
on "$primary" "$port" >/dev/null <<'SQL'
CREATE DATABASE pgq_other;
\c pgq_other
CREATE EXTENSION pg_quota;
SELECT quota.create_plan('capped', '{"projects": {"limit": 0, "per": "lifetime"}}', is_default => true);
DO $$ BEGIN
    PERFORM quota.require('00000000-0000-0000-0000-000000000018', 'projects');
EXCEPTION WHEN SQLSTATE 'PT429' THEN NULL;
END $$;
SQL
expect "records entered from another database" "$(entered)" "$before"
expect "denials counted from another database" "$(value "$primary" "$port" "SELECT other_database FROM quota.denial_journal_state()")" 1
echo "preload: require_reservation and require_many are journaled; journal_denials = off and other databases are not"

# 32 sessions raising denials into a journal of 16: every denial is written or counted as
# dropped, none is written twice, and the callers never waited for the journal.
read -r written_before dropped_before <<<"$(value "$primary" "$port" "SELECT written, dropped FROM quota.denial_journal_state()" | tr '|' ' ')"
echo "SELECT public.deny(100 + :client_id);" >"$primary/deny.pgbench"
command pgbench -n -h "$primary" -p "$port" -U postgres -c 32 -j 2 -t 100 -M prepared -f "$primary/deny.pgbench" postgres \
  >"$primary/deny.log" 2>&1 || { cat "$primary/deny.log" >&2; exit 1; }
for _ in $(seq 100); do
  [ "$(value "$primary" "$port" "SELECT queued FROM quota.denial_journal_state()")" = 0 ] && break
  sleep 0.05
done
value "$primary" "$port" "DO \$\$
DECLARE
    state record;
    written bigint;
    dropped bigint;
    rows bigint;
    distinct_records bigint;
BEGIN
    SELECT * INTO state FROM quota.denial_journal_state();
    written := state.written - $written_before;
    dropped := state.dropped - $dropped_before;
    SELECT count(*), count(DISTINCT metadata #>> '{journal,seq}') INTO rows, distinct_records
      FROM quota.events WHERE kind = 'denial' AND subject IN (SELECT s(n) FROM generate_series(100, 131) AS n);
    IF state.queued <> 0 OR written + dropped <> 3200 THEN
        RAISE EXCEPTION 'journal: 3200 denials raised, % written, % dropped, state %', written, dropped, state;
    END IF;
    IF rows <> written OR rows <> distinct_records THEN
        RAISE EXCEPTION 'journal: % written, % ledger rows for % records', written, rows, distinct_records;
    END IF;
    IF dropped = 0 OR written = 0 THEN
        RAISE EXCEPTION 'journal: a journal of 16 under 32 sessions wrote % and dropped %', written, dropped;
    END IF;
    RAISE NOTICE 'preload: 32 sessions raised 3200 denials into a journal of 16: % written once each, % dropped', written, dropped;
END \$\$"

# The worker, stopped by pg_terminate_backend, starts again by itself and goes on.
worker_pid() { value "$primary" "$port" "SELECT coalesce(worker_pid, 0) FROM quota.denial_journal_state()"; }
wait_for_worker() {  # wait_for_worker OLD_PID: a worker other than OLD_PID runs
  local pid
  for _ in $(seq 200); do
    pid=$(value "$primary" "$port" "SELECT coalesce(worker_pid, 0) FROM quota.denial_journal_state()" 2>/dev/null || echo 0)
    [ "$pid" != 0 ] && [ "$pid" != "$1" ] && { echo "$pid"; return; }
    sleep 0.05
  done
  echo "preload: no new journal worker after $1" >&2; exit 1
}
old=$(worker_pid)
[ "$old" != 0 ] || { echo "preload: no journal worker runs" >&2; exit 1; }
value "$primary" "$port" "SELECT pg_terminate_backend($old)" >/dev/null
new=$(wait_for_worker "$old")
value "$primary" "$port" "SELECT public.deny(12)" >/dev/null
journal_row 12 require >/dev/null
# kill -9 makes the postmaster reset every process and shared memory (what was queued is
# lost, as the README says); the worker comes back with the server.
kill -9 "$new"
for _ in $(seq 200); do value "$primary" "$port" "SELECT 1" >/dev/null 2>&1 && break; sleep 0.05; done
newest=$(wait_for_worker "$new")
value "$primary" "$port" "SELECT public.deny(13)" >/dev/null
journal_row 13 require >/dev/null
echo "preload: the journal's worker came back after pg_terminate_backend ($old -> $new) and kill -9 ($new -> $newest) and went on"

# A burst in one read-only statement: its calls share the statement's instant, so exactly
# the burst is admitted and the rest fits again when one unit has come back (100 ms).
on "$primary" "$port" <<'SQL'
DO $$
DECLARE
    r record;
    state record;
BEGIN
    SET TRANSACTION READ ONLY;
    SELECT count(*) FILTER (WHERE m.allowed) AS admitted, count(*) FILTER (WHERE NOT m.allowed) AS limited,
           min(m.retry_after - statement_timestamp()) FILTER (WHERE NOT m.allowed) AS retry_in,
           min(m.remaining) FILTER (WHERE m.allowed) AS last_remaining
      INTO r FROM generate_series(1, 15) AS g, LATERAL quota.limit_in_memory(s(1), 'api_requests', 1 + 0 * g) AS m;
    IF (r.admitted, r.limited, r.retry_in, r.last_remaining) IS DISTINCT FROM (10::bigint, 5::bigint, interval '100 ms', 0::bigint) THEN
        RAISE EXCEPTION 'read-only burst: %', r;
    END IF;
    SELECT * INTO state FROM quota.memory_limiter_state();
    IF NOT state.preloaded OR state.capacity_keys <> 512 OR state.keys_owing <> 1 OR state.admitted <> 10 OR state.limited <> 5 THEN
        RAISE EXCEPTION 'limiter state after the burst: %', state;
    END IF;
    IF EXISTS (SELECT FROM quota.rate_state WHERE subject = s(1)) OR EXISTS (SELECT FROM quota.events WHERE subject = s(1)) THEN
        RAISE EXCEPTION 'the memory limiter wrote a table';
    END IF;
    RAISE NOTICE 'preload: a read-only burst of 15 admitted 10, the rest fits again in 100 ms; nothing written';
END $$;
SQL

# Each backend keeps the rules in force; a committed change by another session (a plan's
# limits, a new assignment, an override and its expiry) reaches it at its next call.
other="command psql -X -q -v ON_ERROR_STOP=1 -h $primary -p $port -U postgres -d postgres"
on "$primary" "$port" <<SQL
SELECT quota.create_plan('tuned', '{"tuned": {"rate": [{"limit": 1, "per": "1 hour"}]}}');
CREATE TEMP TABLE seen (step text, allowed bigint);
INSERT INTO seen SELECT 'default plan, no rule', count(*) FILTER (WHERE m.allowed)
  FROM generate_series(1, 5) AS g, LATERAL quota.limit_in_memory(s(6), 'tuned', 1 + 0 * g) AS m;
\! $other -c "SELECT quota.assign_plan(s(6), 'tuned')"
INSERT INTO seen SELECT 'assigned tuned, burst 1', count(*) FILTER (WHERE m.allowed)
  FROM generate_series(1, 5) AS g, LATERAL quota.limit_in_memory(s(6), 'tuned', 1 + 0 * g) AS m;
\! $other -c "SELECT quota.set_limits('tuned', '{\"tuned\": {\"rate\": [{\"limit\": 1, \"per\": \"1 hour\", \"burst\": 3}]}}')"
INSERT INTO seen SELECT 'burst raised to 3', count(*) FILTER (WHERE m.allowed)
  FROM generate_series(1, 5) AS g, LATERAL quota.limit_in_memory(s(6), 'tuned', 1 + 0 * g) AS m;
\! $other -c "SELECT quota.set_rate_override(s(6), 'tuned', '1 hour', 1, 10, clock_timestamp() + interval '2 seconds')"
INSERT INTO seen SELECT 'override, burst 10', count(*) FILTER (WHERE m.allowed)
  FROM generate_series(1, 20) AS g, LATERAL quota.limit_in_memory(s(6), 'tuned', 1 + 0 * g) AS m;
SELECT pg_sleep(2.2);
INSERT INTO seen SELECT 'override expired', count(*) FILTER (WHERE m.allowed)
  FROM generate_series(1, 5) AS g, LATERAL quota.limit_in_memory(s(6), 'tuned', 1 + 0 * g) AS m;
DO \$\$
BEGIN
    -- The default plan has no rule for it; tuned: 1, 2 more with a burst of 3, 7 more with 10, none after.
    IF (SELECT string_agg(step || '=' || allowed, ', ' ORDER BY ctid) FROM seen)
       <> 'default plan, no rule=5, assigned tuned, burst 1=1, burst raised to 3=2, override, burst 10=7, override expired=0' THEN
        RAISE EXCEPTION 'rules in force after changes: %', (SELECT string_agg(step || '=' || allowed, ', ' ORDER BY ctid) FROM seen);
    END IF;
    RAISE NOTICE 'preload: a session sees plan changes, assignments, overrides and their expiry at its next call';
END \$\$;
SQL

# PostgREST's GET: limit_request in a read-only transaction takes the unit in memory and
# answers HTTP 429 (RAISE SQLSTATE 'PGRST') once the bucket is empty.
on "$primary" "$port" <<'SQL'
DO $$
DECLARE
    admitted int := 0;
    status text;
BEGIN
    SET TRANSACTION READ ONLY;
    PERFORM set_config('request.method', 'GET', true),
            set_config('request.headers', '{"x-forwarded-for": "203.0.113.9, 10.0.0.1"}', true);
    FOR i IN 1..12 LOOP
        BEGIN
            PERFORM quota.limit_request();
            admitted := admitted + 1;
        EXCEPTION WHEN SQLSTATE 'PGRST' THEN
            GET STACKED DIAGNOSTICS status = PG_EXCEPTION_DETAIL;
        END;
    END LOOP;
    -- The calls of this block share its statement's instant: exactly the burst.
    IF admitted <> 10 OR (status::json ->> 'status') <> '429' THEN
        RAISE EXCEPTION 'GETs through limit_request: % admitted, last error %', admitted, status;
    END IF;
    RAISE NOTICE 'preload: % of 12 GETs admitted in memory, then HTTP 429', admitted;
END $$;
SQL
for _ in $(seq 100); do
  [ "$(value "$primary" "$port" "SELECT count(*) > 0 FROM quota.events WHERE metadata #>> '{journal,raised_by}' = 'limit_request'")" = t ] && break
  sleep 0.05
done
expect "a GET's 429 in the journal" \
  "$(value "$primary" "$port" "SELECT count(*) > 0 FROM quota.events WHERE metadata #>> '{journal,raised_by}' = 'limit_request'")" t

# 32 sessions hammering one key for 3 seconds: no more than the burst plus 10 a second over
# the run, and no fewer than the rule lets through (less a second for connecting).
before=$(value "$primary" "$port" "SELECT admitted FROM quota.memory_limiter_state()")
t0=$(value "$primary" "$port" "SELECT extract(epoch FROM clock_timestamp())")
echo "SELECT allowed FROM quota.limit_in_memory(s(2), 'api_requests');" >"$primary/hammer.pgbench"
command pgbench -n -h "$primary" -p "$port" -U postgres -c 32 -j 2 -T 3 -M prepared -f "$primary/hammer.pgbench" postgres \
  >"$primary/hammer.log" 2>&1 || { cat "$primary/hammer.log" >&2; exit 1; }
t1=$(value "$primary" "$port" "SELECT extract(epoch FROM clock_timestamp())")
calls=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$primary/hammer.log")
value "$primary" "$port" "DO \$\$
DECLARE
    admitted bigint := (SELECT admitted FROM quota.memory_limiter_state()) - $before;
    span numeric := $t1 - $t0;
BEGIN
    IF admitted > 10 + 10 * span THEN
        RAISE EXCEPTION 'memory limiter overspent: % admitted in %s, at most %', admitted, span, 10 + 10 * span;
    END IF;
    IF admitted < 10 * (span - 1) THEN
        RAISE EXCEPTION 'memory limiter under-admitted: % in %s at 10 a second', admitted, span;
    END IF;
    RAISE NOTICE 'preload: 32 sessions, % calls on one key in %s: % admitted (at most %)', $calls, round(span, 2), admitted, round(10 + 10 * span, 1);
END \$\$"

# Eviction: 5,000 keys through 512 states. Memory stays what it was; the newest key keeps
# its debt; old keys were forgotten (a free burst each, counted).
on "$primary" "$port" <<'SQL'
DO $$
DECLARE
    bytes_before bigint := (SELECT shared_bytes FROM quota.memory_limiter_state());
    state record;
    newest_again boolean;
    old_readmitted bigint;
BEGIN
    IF (SELECT count(*) FILTER (WHERE m.allowed) FROM generate_series(1, 5000) AS g,
               LATERAL quota.limit_in_memory(quota.subject_for('key:' || g), 'slow') AS m) <> 5000 THEN
        RAISE EXCEPTION 'a new key was refused';
    END IF;
    SELECT * INTO state FROM quota.memory_limiter_state();
    IF state.keys_owing > 512 OR state.shared_bytes <> bytes_before OR state.lossy_evictions < 5000 - 512 THEN
        RAISE EXCEPTION 'eviction: %', state;
    END IF;
    SELECT m.allowed INTO newest_again FROM quota.limit_in_memory(quota.subject_for('key:5000'), 'slow') AS m;
    SELECT count(*) FILTER (WHERE m.allowed) INTO old_readmitted
      FROM generate_series(1, 100) AS g, LATERAL quota.limit_in_memory(quota.subject_for('key:' || g), 'slow') AS m;
    IF newest_again OR old_readmitted = 0 THEN
        RAISE EXCEPTION 'after eviction: newest admitted again %, old keys admitted again %', newest_again, old_readmitted;
    END IF;
    RAISE NOTICE 'preload: 5000 keys in 512 states (% bytes): % owing, % lossy evictions', state.shared_bytes, state.keys_owing, state.lossy_evictions;
END $$;
SQL

# A restart forgets every state: the key limited a moment ago gets a new burst.
slow_call="SELECT allowed FROM quota.limit_in_memory(s(3), 'slow')"
expect "first call" "$(value "$primary" "$port" "$slow_call")" t
expect "second call within the hour" "$(value "$primary" "$port" "$slow_call")" f
as_owner "$BIN/pg_ctl" -D "$primary/data" -l "$primary/server.log" -w -m fast restart >/dev/null
expect "calls counted after a restart" "$(value "$primary" "$port" "SELECT admitted + limited FROM quota.memory_limiter_state()")" 0
expect "the same call after a restart" "$(value "$primary" "$port" "$slow_call")" t
echo "preload: a restart empties the limiter (a free burst)"

# A rule a transaction resolved after changing it itself is not kept when it rolls back: the
# backend decides by the rule in force (one an hour: true,false), not the override it saw
# (a burst of 3 an hour: true,true). The call in the transaction asks for more than any
# burst: denied, it moves no state.
got=$(on "$primary" "$port" -tA <<'SQL' | grep -v '^$' | paste -sd ' ' 
BEGIN;
SELECT quota.set_rate_override(s(9), 'slow', '1 hour', 3, burst => 3);
SELECT allowed FROM quota.limit_in_memory(s(9), 'slow', 1000);
ROLLBACK;
SELECT string_agg(d.allowed::text, ',') FROM generate_series(1, 2) AS g, LATERAL quota.limit_in_memory(s(9), 'slow', 1 + 0 * g) AS d;
SQL
)
expect "the rule after a rolled-back override" "$got" "f true,false"
echo "preload: a rolled-back change of the rules is not kept by the backend that made it"

# A hot standby counts too: it writes nothing, so the limiter is all it needs.
mkdir -p "$replica" && { [ "$(id -u)" -ne 0 ] || chown postgres "$replica"; }
as_owner "$BIN/pg_basebackup" -h "$primary" -p "$port" -U postgres -D "$replica/data" -R -X stream -c fast
SETTINGS="$SETTINGS -c hot_standby=on" bash scripts/cluster.sh start "$replica" "$replica_port"
expect "the replica is a standby" "$(value "$replica" "$replica_port" "SELECT pg_is_in_recovery()")" t
value "$replica" "$replica_port" "DO \$\$
DECLARE
    admitted bigint := (SELECT count(*) FILTER (WHERE m.allowed)
                          FROM generate_series(1, 15) AS g, LATERAL quota.limit_in_memory(s(4), 'api_requests', 1 + 0 * g) AS m);
BEGIN
    IF admitted <> 10 THEN RAISE EXCEPTION 'standby burst: % admitted', admitted; END IF;
    PERFORM set_config('request.method', 'GET', true);
    PERFORM quota.limit_request();
    RAISE NOTICE 'preload: on a hot standby a burst of 15 admitted 10, and a GET through limit_request is counted';
END \$\$"
# The standby replays a change without its triggers: a backend there that resolved the rule
# (one an hour: true,false) decides by the new override (a burst of 1,000 an hour: true,true)
# once it is replayed and a second has passed, without reconnecting.
got=$(on "$replica" "$replica_port" -tA <<SQL | grep -v '^$' | paste -sd ' ' 
SELECT string_agg(d.allowed::text, ',') FROM generate_series(1, 2) AS g, LATERAL quota.limit_in_memory(s(8), 'slow', 1 + 0 * g) AS d;
\! psql -X -qtA -h "$primary" -p "$port" -U postgres -d postgres -c "SELECT quota.set_rate_override(s(8), 'slow', '1 hour', 100, burst => 1000)" >/dev/null
\! until [ "\$(psql -X -qtA -h "$replica" -p "$replica_port" -U postgres -d postgres -c "SELECT count(*) FROM quota.rate_overrides WHERE subject = s(8)")" = 1 ]; do sleep 0.1; done
SELECT pg_sleep(1.1);
SELECT string_agg(d.allowed::text, ',') FROM generate_series(1, 2) AS g, LATERAL quota.limit_in_memory(s(8), 'slow', 1 + 0 * g) AS d;
SQL
)
expect "the standby's rule before and after a change on the primary" "$got" "true,false true,true"
echo "preload: a hot standby's backend follows a rule changed on the primary"
# The simulator against its reference model on this server, where its memory-limiter
# operations run (on the suite's server they must fail with 55000).
cargo build --release -q --manifest-path tests/harness/Cargo.toml
PGHOST=$primary PGPORT=$port tests/harness/target/release/simulate ${SEED:+--seed "$SEED"} --ops "${SIM_OPS:-1000}" \
  --connections 4 --db pgq_simulate_preload
echo "preload: all 14 checks passed"
