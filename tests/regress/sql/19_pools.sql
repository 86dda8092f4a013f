-- Pools (0.9.0): a class (the pool, 190100) with its plan, students (190101..) who draw from
-- it within caps, allocations from the teacher, what each sees, and how every path decides a
-- member: consume, record, check, require, give_back, reserve/settle/release, consume_many,
-- record_batch, the enforce trigger. Ends with audit(): counters, draws and grants agree with
-- the ledger.
SELECT count(*) AS steps FROM quota.setup_supabase();
CREATE FUNCTION pg_temp.request(role text, claims jsonb, statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE result text; state text; message text;
BEGIN
    PERFORM set_config('request.jwt.claims', claims::text, true);
    EXECUTE format('SET LOCAL ROLE %I', role);
    EXECUTE statement INTO result;
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', '', true);
    RETURN CASE WHEN result IS NULL THEN 'null' WHEN result = '' THEN 'ok' ELSE result END;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
    RETURN state || ': ' || message;
END $$;
CREATE FUNCTION pg_temp.user_claims(n int, app_metadata jsonb DEFAULT '{}', user_metadata jsonb DEFAULT '{}') RETURNS jsonb
    LANGUAGE sql AS $$ SELECT jsonb_build_object('sub', s(n), 'role', 'authenticated', 'app_metadata', app_metadata,
                                                 'user_metadata', user_metadata) $$;
-- A decision in one line.
CREATE FUNCTION pg_temp.said(d quota.decision) RETURNS text LANGUAGE sql AS $$
    SELECT format('%s %s used=%s allowance=%s remaining=%s allowance+grants+overage=%s+%s+%s',
                  CASE WHEN d.allowed THEN 'allowed' ELSE 'denied' END, d.reason, d.used, coalesce(d.allowance::text, 'none'),
                  coalesce(d.remaining::text, 'none'), d.from_allowance, d.from_grants, d.overage) $$;
-- What a member drew from the pool in the pool's current window, and the pool's usage, as
-- quota.usage() reports them.
CREATE FUNCTION pg_temp.drawn(member int) RETURNS text LANGUAGE sql AS $$
    SELECT format('drawn=%s pool_used=%s', (SELECT pool_drawn FROM quota.usage(s($1)) WHERE metric = 'ai'),
                  (SELECT used FROM quota.usage(s(190100)) WHERE metric = 'ai')) $$;

SELECT quota.create_plan('class', '{"ai": {"limit": 40, "per": "month"}, "videos": {"limit": 4, "per": "month"}}');
SELECT quota.create_plan('student', '{"ai": {"limit": 2, "per": "day"}}');
SELECT quota.create_plan('team', '{"projects": {"limit": 5, "per": "lifetime"}}');
SELECT quota.assign_plan(s(190100), 'class');
SELECT quota.join_pool(s(190100), s(n)) FROM generate_series(190101, 190104) AS n;
-- 190101 has a plan of its own (2 a day); the others none.
SELECT quota.assign_plan(s(190101), 'student');
SELECT quota.set_pool_cap(s(190100), 'ai', 5);
SELECT quota.set_pool_cap(s(190100), 'ai', 12, member => s(190102));

-- Its own plan pays first, then the pool, within the cap (5): a call the cap cannot cover
-- is denied while the pool still has units, and has no retry_after when over the cap itself.
SELECT n, pg_temp.said(quota.consume(s(190101), 'ai', a)) FROM (VALUES (1, 2), (2, 3), (3, 2), (4, 3)) AS v(n, a) ORDER BY n;
SELECT pg_temp.drawn(190101);
SELECT pg_temp.said(quota.check(s(190101), 'ai', 1)) AS check_one, pg_temp.said(quota.check(s(190101), 'ai', 2)) AS check_two;
SELECT retry_after IS NULL AS over_the_cap_never_fits FROM quota.consume(s(190101), 'ai', 6);
-- Its own cap (12) replaces the pool's default; metrics the pool's plan lacks are not pooled.
SELECT pg_temp.said(quota.consume(s(190102), 'ai', 12));
SELECT pg_temp.said(quota.consume(s(190102), 'ai', 1));
SELECT reason AS not_in_the_class_plan FROM quota.consume(s(190102), 'projects');
-- The pool runs out before the caps: 40 in all.
SELECT pg_temp.said(quota.consume(s(190103), 'ai', 5));
SELECT quota.clear_pool_cap(s(190100), 'ai', s(190102));
SELECT quota.set_pool_cap(s(190100), 'ai', NULL, member => s(190104));
SELECT pg_temp.said(quota.consume(s(190104), 'ai', 16));
SELECT pg_temp.said(quota.consume(s(190104), 'ai', 2)) AS pool_is_empty;
SELECT pg_temp.drawn(190104);

-- record counts what the cap or the pool cannot cover as overage, in the pool's window.
SELECT pg_temp.said(quota.record(s(190103), 'ai', 2, idempotency_key => 'late-1'));
SELECT pg_temp.said(quota.record(s(190103), 'ai', 2, idempotency_key => 'late-1')) AS replayed;
SELECT pg_temp.drawn(190103);
SELECT count(*) AS batch FROM quota.record_batch(jsonb_build_array(
    jsonb_build_object('subject', s(190104), 'metric', 'ai', 'amount', 1, 'idempotency_key', 'b1'),
    jsonb_build_object('subject', s(190103), 'metric', 'ai', 'amount', 1, 'idempotency_key', 'b2')));

-- give_back of a member that used nothing of its own returns units to the pool and its draws.
SELECT pg_temp.said(quota.give_back(s(190104), 'ai', 3));
SELECT pg_temp.drawn(190104);

-- require raises what a pooled consume denies.
SELECT try($$SELECT quota.require(s(190104), 'ai', 5)$$) AS require_denied;

-- Allocations: the teacher gives 190103 a part of the pool (taken at once), spent before
-- anything the pool pays; idempotent with a key; denied when the pool lacks it.
SELECT amount AS given_back FROM quota.give_back(s(190104), 'ai', 10);
SELECT pg_temp.drawn(190104);
SELECT allowed, amount, pool_remaining, replayed, reason FROM quota.allocate(s(190100), s(190103), 'ai', 6, 'alloc-1');
SELECT allowed, amount, pool_remaining, replayed, reason FROM quota.allocate(s(190100), s(190103), 'ai', 6, 'alloc-1');
SELECT try($$SELECT quota.allocate(s(190100), s(190103), 'ai', 7, 'alloc-1')$$) AS key_reused;
SELECT allowed, amount, pool_remaining, reason FROM quota.allocate(s(190100), s(190103), 'ai', 1000);
SELECT pg_temp.said(quota.consume(s(190103), 'ai', 4)) AS from_the_allocation;
SELECT pg_temp.drawn(190103);
-- A student out of allocation (and at its cap) is denied while the pool still has units.
SELECT pg_temp.said(quota.consume(s(190103), 'ai', 3)) AS out_of_allocation;
SELECT quota.revoke_allocation(allocation_id) AS returned FROM quota.allocations WHERE idempotency_key = 'alloc-1';
SELECT quota.revoke_allocation(allocation_id) AS again FROM quota.allocations WHERE idempotency_key = 'alloc-1';
SELECT pg_temp.drawn(190103);

-- Reservations: a pooled hold counts against the cap until settled; settling more than
-- held draws the rest within the cap, and beyond it is overage; release frees a hold.
SELECT quota.reset(s(190100), 'ai');
SELECT quota.set_pool_cap(s(190100), 'ai', 6);
SELECT quota.clear_pool_cap(s(190100), 'ai', s(190104));
SELECT reservation_id AS held_id, allowed, reserved, remaining FROM quota.reserve(s(190104), 'ai', 4, idempotency_key => 'r-1') \gset
SELECT :'allowed' AS allowed, :reserved AS reserved, :remaining AS remaining;
SELECT reservation_id = :'held_id' AS same_hold, replayed FROM quota.reserve(s(190104), 'ai', 4, idempotency_key => 'r-1');
SELECT allowed, reason FROM quota.reserve(s(190104), 'ai', 3);
SELECT pg_temp.said(quota.consume(s(190104), 'ai', 3)) AS cap_counts_the_hold;
SELECT pg_temp.said(quota.settle(:'held_id', 7));
SELECT pg_temp.drawn(190104);
SELECT allowed, reason FROM quota.reserve(s(190104), 'ai', 1) AS at_the_cap;
SELECT reservation_id AS second_id FROM quota.reserve(s(190103), 'ai', 1) \gset
SELECT quota.release(:'second_id');
SELECT pg_temp.drawn(190103);
SELECT subject = s(190100) AS held_on_the_pool, right(member::text, 6) AS by_member, status
  FROM quota.reservations WHERE reservation_id IN (:'held_id', :'second_id') ORDER BY created_at;

-- consume_many: all or nothing across a member's own metrics and its pool's.
SELECT quota.assign_plan(s(190101), 'team');
SELECT metric, allowed, reason FROM quota.consume_many(s(190101), '{"ai": 7, "projects": 1}');
SELECT metric, allowed, reason FROM quota.consume_many(s(190101), '{"ai": 2, "projects": 1}', 'bundle-1');
SELECT metric, allowed, replayed FROM quota.consume_many(s(190101), '{"ai": 2, "projects": 1}', 'bundle-1');
SELECT pg_temp.drawn(190101);

-- The enforce trigger: a member's projects count in its pool (a team: 5 projects, 2 each).
SELECT quota.create_plan('studio', '{"projects": {"limit": 5, "per": "lifetime"}}');
SELECT quota.assign_plan(s(190200), 'studio');
SELECT quota.join_pool(s(190200), s(n)) FROM generate_series(190201, 190203) AS n;
SELECT quota.set_pool_cap(s(190200), 'projects', 2);
CREATE TABLE pool_projects (id serial PRIMARY KEY, owner uuid NOT NULL);
SELECT quota.enforce_on('pool_projects', 'projects', 'owner');
INSERT INTO pool_projects (owner) VALUES (s(190201)), (s(190201));
SELECT try($$INSERT INTO pool_projects (owner) VALUES (s(190201))$$) AS third_project;
SELECT try($$SELECT quota.require(s(190201), 'projects')$$) AS require_says_cap;
INSERT INTO pool_projects (owner) VALUES (s(190202)), (s(190202));
DELETE FROM pool_projects WHERE id = (SELECT min(id) FROM pool_projects WHERE owner = s(190201));
INSERT INTO pool_projects (owner) VALUES (s(190201));
SELECT try($$INSERT INTO pool_projects (owner) VALUES (s(190203)), (s(190203))$$) AS pool_full;
SELECT used FROM quota.counters WHERE subject = s(190200) AND metric = 'projects';
SELECT quota.enforce_off('pool_projects', 'projects');

-- Joining and leaving mid-window: a leaver keeps what it drew in the pool's window (and its
-- allocations are revoked), a joiner starts from 0, one who comes back continues.
SELECT pg_temp.said(quota.consume(s(190102), 'ai', 3));
SELECT allocation_id AS leaving_allocation FROM quota.allocate(s(190100), s(190102), 'ai', 2) \gset
SELECT pg_temp.drawn(190102) AS before_leaving;
SELECT quota.leave_pool(s(190100), s(190102));
SELECT revoked_at IS NOT NULL AS revoked, returned FROM quota.allocations WHERE allocation_id = :'leaving_allocation';
SELECT drawn AS the_leaver_keeps_its_draws, pg_temp.drawn(190102) AS no_longer_shown
  FROM quota.pool_draws WHERE member = s(190102) ORDER BY window_start DESC LIMIT 1;
SELECT count(*) AS leaver_rows_for_the_admin FROM quota.pool_usage(s(190100)) WHERE member = s(190102);
SELECT reason AS no_longer_pooled FROM quota.consume(s(190102), 'ai');
SELECT quota.join_pool(s(190100), s(190105));
SELECT pool_drawn, pool_cap, pool_remaining FROM quota.usage(s(190105)) WHERE metric = 'ai';
SELECT quota.join_pool(s(190100), s(190102));
SELECT pg_temp.drawn(190102) AS back_again;
-- A pool's plan change is a subject's: the new limit applies to the same window.
SELECT used, allowance, remaining FROM quota.usage(s(190100)) WHERE metric = 'ai';
SELECT quota.create_plan('big_class', '{"ai": {"limit": 400, "per": "month"}}');
SELECT quota.assign_plan(s(190100), 'big_class');
SELECT used, allowance, remaining FROM quota.usage(s(190100)) WHERE metric = 'ai';
SELECT pg_temp.said(quota.consume(s(190105), 'ai', 6)) AS within_the_cap_of_a_bigger_pool;

-- The fast path never decides a member: a subject marked before it joins is unmarked.
SELECT quota.create_plan('solo', '{"ai": {"limit": 100, "per": "month"}}');
SELECT quota.assign_plan(s(190106), 'solo');
SELECT count(*) FROM (SELECT quota.consume(s(190106), 'ai') FROM generate_series(1, 3)) AS c;
SELECT fast AS marked_before FROM quota.counters WHERE subject = s(190106) AND metric = 'ai';
SELECT quota.join_pool(s(190100), s(190106));
SELECT fast AS marked_after FROM quota.counters WHERE subject = s(190106) AND metric = 'ai';
SELECT count(*) FROM (SELECT quota.consume(s(190106), 'ai') FROM generate_series(1, 3)) AS c;
SELECT count(*) AS marked_members FROM quota.counters AS c JOIN quota.pool_members AS m ON m.member = c.subject WHERE c.fast;

-- The pooled fast path: a member with nothing of its own for the metric is decided in one
-- statement on its draws row and its pool's window, both marked by its first consume; the
-- same decisions as the locked path, the cap cached; a cap change, an allocation (its own
-- means again), leaving: each unmarks it.
SELECT quota.create_plan('quick_class', '{"ai": {"limit": 50, "per": "month"}}');
SELECT quota.assign_plan(s(190500), 'quick_class');
SELECT quota.assign_plan(s(190501), 'team');
SELECT quota.join_pool(s(190500), s(190501));
SELECT quota.set_pool_cap(s(190500), 'ai', 5);
CREATE FUNCTION pg_temp.marks() RETURNS text LANGUAGE sql AS $$
    SELECT format('draws marked=%s cap=%s, pool marked=%s',
                  (SELECT bool_or(fast) FROM quota.pool_draws WHERE member = s(190501)),
                  (SELECT cap FROM quota.pool_draws WHERE member = s(190501) AND fast),
                  (SELECT bool_or(fast) FROM quota.counters WHERE subject = s(190500))) $$;
SELECT pg_temp.said(quota.consume(s(190501), 'ai', 2)) AS first_marks, pg_temp.marks();
SELECT pg_temp.said(quota.consume(s(190501), 'ai', 2)) AS decided_on_the_marks, pg_temp.marks();
SELECT pg_temp.said(quota.consume(s(190501), 'ai', 2)) AS over_the_cached_cap;
SELECT quota.set_pool_cap(s(190500), 'ai', 8);
SELECT pg_temp.marks() AS after_a_cap_change;
SELECT pg_temp.said(quota.consume(s(190501), 'ai', 2)) AS marks_again, pg_temp.marks();
SELECT allowed FROM quota.allocate(s(190500), s(190501), 'ai', 1);
SELECT pg_temp.marks() AS after_an_allocation;
SELECT pg_temp.said(quota.consume(s(190501), 'ai', 1)) AS its_own_means_first;
SELECT pg_temp.said(quota.consume(s(190501), 'ai', 1)) AS the_pool_again, pg_temp.marks();
SELECT quota.leave_pool(s(190500), s(190501));
SELECT pg_temp.marks() AS after_leaving;
SELECT count(*) AS pooled_events, count(DISTINCT (used, remaining)) AS distinct_answers
  FROM quota.events WHERE subject = s(190501) AND pool IS NOT NULL AND kind = 'consume';

-- Mistakes get their SQLSTATE.
SELECT try($$SELECT quota.join_pool(s(190100), s(190100))$$);
SELECT try($$SELECT quota.join_pool(s(190200), s(190101))$$);
SELECT try($$SELECT quota.join_pool(NULL, s(190101))$$);
-- Pools do not nest: a member cannot be a pool, a pool with members cannot join one (nor
-- can two joins make a cycle).
SELECT try($$SELECT quota.join_pool(s(190101), s(190990))$$);
SELECT try($$SELECT quota.join_pool(s(190200), s(190100))$$);
SELECT count(*) AS nested FROM quota.pool_members WHERE member IN (s(190990), s(190100));
-- Its check reads what committed before it: not at REPEATABLE READ, whose snapshot is older.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT try($$SELECT quota.join_pool(s(190100), s(190991))$$);
ROLLBACK;
SELECT try($$SELECT quota.leave_pool(s(190200), s(190101))$$);
SELECT try($$SELECT quota.set_pool_cap(s(190100), 'ai', -1)$$);
SELECT try($$SELECT quota.set_pool_cap(s(190100), 'nope', 1)$$);
SELECT try($$SELECT quota.set_pool_cap(s(190100), 'ai', 1, member => s(190201))$$);
SELECT try($$SELECT quota.allocate(s(190100), s(190201), 'ai', 1)$$);
-- Only to a member of the pool: 190101 is in 190100's pool (which pools "ai"), not 190200's.
SELECT try($$SELECT quota.allocate(s(190200), s(190101), 'ai', 1)$$);
SELECT count(*) AS counters_of_190200_ai FROM quota.counters WHERE subject = s(190200) AND metric = 'ai';
SELECT try($$SELECT quota.allocate(s(190100), s(190101), 'projects', 1)$$);
SELECT try($$SELECT quota.allocate(s(190100), s(190101), 'ai', 0)$$);
SELECT try($$SELECT quota.revoke_allocation('00000000-0000-0000-0000-000000000000')$$);
SELECT try($$SELECT quota.routing_key(NULL)$$);

-- Who sees what, through row level security and the functions' own checks. The teacher is
-- the pool; 190300 is named its admin; 190101 a student; 190301 a stranger; 190302 wrote
-- quota_role into their own user_metadata.
SELECT quota.set_pool_admin(s(190100), s(190300));
CREATE TEMP TABLE pool_callers (caller text PRIMARY KEY, claims jsonb);
INSERT INTO pool_callers VALUES
    ('1 teacher', pg_temp.user_claims(190100)),
    ('2 named admin', pg_temp.user_claims(190300)),
    ('3 student', pg_temp.user_claims(190101)),
    ('4 stranger', pg_temp.user_claims(190301)),
    ('5 forged', pg_temp.user_claims(190302, '{}', '{"quota_role": "admin"}'));
GRANT SELECT ON pool_callers TO PUBLIC;
SELECT c.caller,
       pg_temp.request('authenticated', c.claims, $$SELECT count(*) FROM quota.pool_usage(s(190100))$$) AS pool_usage_rows,
       pg_temp.request('authenticated', c.claims, $$SELECT count(DISTINCT subject) FROM quota.events WHERE subject BETWEEN s(190101) AND s(190106)$$) AS members_ledgers,
       pg_temp.request('authenticated', c.claims, $$SELECT count(*) FROM quota.events WHERE subject = s(190100)$$) AS pool_ledger,
       pg_temp.request('authenticated', c.claims, $$SELECT count(*) FROM quota.counters WHERE subject = s(190100)$$) AS pool_counters,
       pg_temp.request('authenticated', c.claims, $$SELECT string_agg(metric || ':' || coalesce(pool_remaining::text, '-'), ',') FROM quota.my_usage()$$) AS my_usage,
       pg_temp.request('authenticated', c.claims, $$SELECT d.reason || ' ' || coalesce(d.remaining::text, '-') FROM quota.my_check('ai', 3) AS d$$) AS my_check
  FROM pool_callers AS c ORDER BY c.caller;
SELECT c.caller,
       pg_temp.request('authenticated', c.claims, $$SELECT (quota.allocate(s(190100), s(190105), 'ai', 1)).allowed$$) AS allocate,
       pg_temp.request('authenticated', c.claims, $$SELECT quota.set_pool_cap(s(190100), 'ai', 7)$$) AS set_cap,
       pg_temp.request('authenticated', c.claims, $$SELECT quota.join_pool(s(190100), s(190107))$$) AS join_pool
  FROM pool_callers AS c ORDER BY c.caller;
-- A member reads its own holds on the pool, not the other members' (their ids and keys); the
-- teacher reads them all. A user whose subject is no pool (no member) cannot name admins of
-- itself, who would then read its rows beside their own.
SELECT m.n AS reader, pg_temp.request('authenticated', pg_temp.user_claims(m.n),
           $$SELECT coalesce(string_agg(DISTINCT right(member::text, 6), ','), 'none') FROM quota.reservations WHERE subject = s(190100)$$) AS holds_on_the_pool
  FROM (VALUES (190100), (190103), (190104), (190102)) AS m (n) ORDER BY 1;
SELECT pg_temp.request('authenticated', pg_temp.user_claims(190301), $$SELECT quota.set_pool_admin(s(190301), s(190101))$$) AS names_an_admin_of_itself;
SELECT count(*) AS admins_of_190301 FROM quota.pool_admins WHERE pool = s(190301);
-- A member may leave by itself; the administration trail names who did what.
SELECT pg_temp.request('authenticated', pg_temp.user_claims(190105), $$SELECT quota.leave_pool(s(190100), s(190105))$$) AS leaves_itself;
SELECT action, count(*) FROM quota.admin_changes
 WHERE action IN ('join_pool', 'leave_pool', 'set_pool_cap', 'clear_pool_cap', 'set_pool_admin', 'allocate', 'revoke_allocation')
 GROUP BY action ORDER BY action;
SELECT quota.routing_key(s(190101)) = s(190100) AS member_goes_with_its_pool, quota.routing_key(s(190301)) = s(190301) AS others_alone;

-- A denial by the pool's window while the member's cap binds: the decision's remaining is
-- what the cap leaves (3 of the pool's 5 in grants), and the raised words say what that
-- decision counted (0.21.0: from its remaining), where a read of the member's own grants
-- (none) would say 0 available.
SELECT quota.create_plan('capped_pool', '{"tokens": {"limit": 10, "per": "lifetime"}}');
SELECT quota.assign_plan(s(190900), 'capped_pool');
SELECT quota.join_pool(s(190900), s(190901));
SELECT quota.set_pool_cap(s(190900), 'tokens', 13);
SELECT pg_temp.said(quota.consume(s(190901), 'tokens', 10));
SELECT quota.grant(s(190900), 'tokens', 5) IS NOT NULL AS granted;
SELECT pg_temp.said(quota.consume(s(190901), 'tokens', 6)) AS cap_binds;
SELECT try($$SELECT quota.require(s(190901), 'tokens', 6)$$) AS require_says_what_the_decision_counted;
SELECT message AS read_without_remaining FROM quota.explain_denial(s(190901), 'tokens', 6, 10, 0, 10, NULL);

SELECT * FROM quota.audit();
