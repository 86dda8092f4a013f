-- pg_quota demo: plans like the ones SaaS and AI apps sell, consumption, a denial, an
-- idempotent retry, many metrics in one decision, an override, a reset, a bonus grant, a
-- credit wallet, offline usage synced after the fact, a reservation around an AI call, a
-- mid-cycle upgrade, usage a person can read, rate limits, the shared-memory tier, and a
-- teacher's class quota shared by students, a month of usage drawn as a chart, and rollover.
\set QUIET on
\set SHOW_CONTEXT never
\pset footer off
\pset null '∞'
CREATE EXTENSION pg_quota;

\echo
\echo '== 1. Plans: Free (10 AI requests a day, 10,000 tokens a month), Pro, Enterprise (unlimited)'
SELECT quota.create_plan('free', '{
    "ai_requests": {"limit": 10,    "per": "day"},
    "tokens":      {"limit": 10000, "per": "month", "anchor": "subscription"},
    "projects":    {"limit": 3,     "per": "lifetime"},
    "credits":     {"limit": 0,     "per": "lifetime"}}', is_default => true) \g /dev/null
SELECT quota.create_plan('pro', '{
    "ai_requests": {"limit": 1000,    "per": "day"},
    "tokens":      {"limit": 1000000, "per": "month", "anchor": "subscription"},
    "projects":    {"limit": 50,      "per": "lifetime"}}') \g /dev/null
SELECT quota.create_plan('enterprise', '{
    "ai_requests": {"limit": null, "per": "day"},
    "tokens":      {"limit": null, "per": "month"},
    "projects":    {"limit": null}}') \g /dev/null
SELECT plan, metric, allowance, period, anchor, time_zone FROM quota.limits ORDER BY plan, metric;

\set alice '''a11ce000-0000-4000-8000-000000000001'''
\set bob   '''b0b00000-0000-4000-8000-000000000002'''

\echo
\echo '== 2. Alice signs up: no registration needed, her first consume puts her on the default plan'
SELECT allowed, used, allowance, remaining, reason, resets_at
  FROM quota.consume(:alice, 'ai_requests');
SELECT subject, plan FROM quota.assignments;

\echo
\echo '== 3. She uses 8 more requests, then asks for 5 at once: all or nothing, so it is denied'
SELECT allowed, used, remaining FROM quota.consume(:alice, 'ai_requests', 8);
SELECT allowed, used, remaining, reason FROM quota.consume(:alice, 'ai_requests', 5);
\echo '   ... the denial is a value, not an error, and it stays in the ledger:'
SELECT event_id, kind, amount, used, reason FROM quota.events WHERE subject = :alice ORDER BY event_id;

\echo
\echo '== 4. quota.require() raises instead (PostgREST answers HTTP 429):'
\set ON_ERROR_STOP off
SELECT quota.require(:alice, 'ai_requests', 5);
\set ON_ERROR_STOP on

\echo
\echo '== 5. A flaky network retries a token charge with the same idempotency key: charged once'
SELECT allowed, used, replayed FROM quota.consume(:alice, 'tokens', 1200, idempotency_key => 'chat-42',
                                                  metadata => '{"model": "gpt-4o-mini"}');
SELECT allowed, used, replayed FROM quota.consume(:alice, 'tokens', 1200, idempotency_key => 'chat-42');

\echo
\echo '== 5b. One API call costs 1 request and 1,200 tokens: both or neither, one key for the bundle'
SELECT metric, allowed, reason, used, remaining
  FROM quota.consume_many(:alice, '{"ai_requests": 1, "tokens": 1200}', idempotency_key => 'chat-43');
\echo '   ... the next call would pass the daily request limit: nothing of it is consumed, not even its tokens'
SELECT metric, allowed, reason, used, remaining
  FROM quota.consume_many(:alice, '{"ai_requests": 1, "tokens": 800}', idempotency_key => 'chat-44');
\echo '   ... check reports the window as it is now, and whether one more request would fit:'
SELECT allowed, used, remaining FROM quota.check(:alice, 'ai_requests');

\echo
\echo '== 6. Support gives Alice 25 requests a day (an override), then resets today''s window'
SELECT quota.set_override(:alice, 'ai_requests', 25) \g /dev/null
SELECT allowed, used, allowance, remaining FROM quota.consume(:alice, 'ai_requests', 5);
SELECT quota.reset(:alice, 'ai_requests') \g /dev/null
SELECT allowed, used, allowance, remaining FROM quota.check(:alice, 'ai_requests');

\echo
\echo '== 7. A referral bonus: 5 extra requests, spent only after today''s allowance'
SELECT quota.grant(:alice, 'ai_requests', 5, expires_at => now() + interval '30 days', reason => 'referral') \g /dev/null
SELECT allowed, from_allowance, from_grants, used, remaining FROM quota.consume(:alice, 'ai_requests', 27);
SELECT amount, remaining AS grant_left, reason, expires_at::date FROM quota.grants WHERE subject = :alice;

\echo
\echo '== 8. A prepaid credit wallet: buy 500 credits, each video costs 20, a failed video is refunded'
SELECT quota.grant(:alice, 'credits', 500, reason => 'purchase: 500-credit pack') \g /dev/null
SELECT allowed, from_grants, remaining AS credits_left FROM quota.consume(:alice, 'credits', 20, metadata => '{"video": "v1"}');
SELECT quota.grant(:alice, 'credits', 20, reason => 'refund: video v1 failed') \g /dev/null
SELECT allowed, from_grants, remaining AS credits_left FROM quota.consume(:alice, 'credits', 20, metadata => '{"video": "v2"}');
\echo '   ... a 500-credit export is refused with what the wallet holds:'
\set ON_ERROR_STOP off
SELECT quota.require(:alice, 'credits', 500);
\set ON_ERROR_STOP on

\echo
\echo '== 9. A phone syncs usage it had offline: yesterday''s tokens land in the window that contains yesterday'
\echo '   (tokens count per subscription month from her sign-up today, so that is the previous month)'
SELECT reason, used, window_start::date FROM quota.record_batch(jsonb_build_array(
    jsonb_build_object('subject', :alice, 'metric', 'tokens', 'amount', 300, 'idempotency_key', 'phone-1',
                       'occurred_at', to_char(now() - interval '1 day', 'YYYY-MM-DD"T"HH24:MI:SSOF')),
    jsonb_build_object('subject', :alice, 'metric', 'tokens', 'amount', 200, 'idempotency_key', 'phone-2')));
\echo '   ... the retry of the same sync changes nothing:'
SELECT replayed FROM quota.record_batch(jsonb_build_array(
    jsonb_build_object('subject', :alice, 'metric', 'tokens', 'amount', 200, 'idempotency_key', 'phone-2')));

\echo
\echo '== 10. An AI call: reserve an estimate, call the model, settle with what it really used'
SELECT reservation_id AS hold FROM quota.reserve(:alice, 'tokens', 2000, ttl => '2 minutes') \gset
SELECT metric, used, reserved, remaining FROM quota.usage(:alice) WHERE metric = 'tokens';
\echo '   ... the model answered with 1,234 tokens:'
SELECT allowed, from_allowance, used, reserved, remaining FROM quota.settle(:'hold', 1234);
\echo '   ... a browser-facing RPC reserves with require_reservation(): too big a hold is HTTP 429'
\set ON_ERROR_STOP off
SELECT quota.require_reservation(:alice, 'tokens', 9000);
\set ON_ERROR_STOP on

\echo
\echo '== 11. Bob is on Pro; he creates projects (a lifetime cap, not a window)'
SELECT quota.assign_plan(:bob, 'pro') \g /dev/null
SELECT allowed, used, allowance, resets_at FROM quota.consume(:bob, 'projects', 2);

\echo
\echo '== 12. Alice upgrades to Pro mid-month: her subscription month and its tokens carry over'
SELECT quota.assign_plan(:alice, 'pro') \g /dev/null
SELECT metric, used, allowance, window_start::date, resets_at::date FROM quota.usage(:alice) WHERE metric = 'tokens';
\echo '   (an explicit anchor restarts the cycle: quota.assign_plan(:alice, ''pro'', anchor => now()))'

\echo
\echo '== 13. What each of them sees in their usage page'
\echo 'Alice:'
SELECT metric, used, reserved, allowance, grants_remaining AS bonus, remaining, coalesce(percent_used || '%', '-') AS used_pct, resets_at FROM quota.usage(:alice);
\echo 'Bob:'
SELECT metric, used, allowance, remaining, coalesce(percent_used || '%', '-') AS used_pct, resets_at FROM quota.usage(:bob);

\echo
\echo '== 14. A rate limit beside the quota: 100 API calls a day, at most 5 a second (a burst of 5)'
SELECT quota.set_limits('pro', '{"api_calls": {"limit": 100, "per": "day", "rate": [{"limit": 5, "per": "1 second"}]}}');
\echo '   ... 8 calls in one instant: 5 pass, 3 are rate_limited and may retry 0.2 s later; the quota counts 5'
SELECT d.reason, count(*), max(d.used) AS used, coalesce(min(d.retry_after - statement_timestamp())::text, '') AS retry_in
  FROM generate_series(1, 8) AS g, LATERAL quota.consume(:bob, 'api_calls', 1 + 0 * g) AS d GROUP BY d.reason ORDER BY d.reason;
\echo '   ... what his usage page shows of the rule, and the day''s rate limit hits'
SELECT metric, used, rates -> 0 ->> 'remaining' AS rate_remaining, rates -> 0 ->> 'per' AS per FROM quota.usage(:bob) WHERE metric = 'api_calls';
SELECT metric, count(*) AS rate_limit_hits FROM quota.events WHERE reason = 'rate_limited' GROUP BY metric;

\echo
\echo '== 15. This server preloads pg_quota (make demo starts it so): GETs are rate-limited in memory'
SELECT quota.preloaded();
\echo '   ... 8 GETs in a read-only transaction, as PostgREST runs them: 5 pass, nothing is written'
BEGIN READ ONLY;
SELECT m.allowed, count(*) FROM generate_series(1, 8) AS g, LATERAL quota.limit_in_memory(:bob, 'api_calls', 1 + 0 * g) AS m
 GROUP BY m.allowed ORDER BY m.allowed DESC;
COMMIT;
\echo '   ... Bob asks for 49 more projects past his cap of 50: require raises, his transaction rolls'
\echo '       back, and the denial journal writes the denial to the ledger all the same'
\set ON_ERROR_STOP 0
BEGIN;
SELECT quota.require(:bob, 'projects', 49);
ROLLBACK;
\set ON_ERROR_STOP 1
DO $$ BEGIN  -- the journal's worker writes it in its own transaction, a moment later
    FOR i IN 1..100 LOOP
        EXIT WHEN EXISTS (SELECT FROM quota.events WHERE kind = 'denial' AND metadata ? 'journal');
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT metric, amount, used, allowance, reason, metadata #>> '{journal,raised_by}' AS raised_by
  FROM quota.events WHERE subject = :bob AND kind = 'denial' AND metadata ? 'journal';

\echo
\echo '== 16. A teacher shares a class quota: 300 AI requests a month, a part given to each student'
\set teacher '''7eac4e00-0000-4000-8000-000000000010'''
\set sam '''5a000000-0000-4000-8000-000000000011'''
\set kim '''41000000-0000-4000-8000-000000000012'''
\set lee '''1ee00000-0000-4000-8000-000000000013'''
CREATE TEMP TABLE students (student text, id uuid);
INSERT INTO students VALUES ('Sam', :sam), ('Kim', :kim), ('Lee', :lee);
SELECT quota.create_plan('classroom', '{"ai_requests": {"limit": 300, "per": "month"}}') \g /dev/null
SELECT quota.assign_plan(:teacher, 'classroom') \g /dev/null
SELECT count(quota.join_pool(:teacher, id)) AS students_in_the_class FROM students;
\echo '   ... students may spend only what they are given (a cap of 0 in the class); Sam gets 30,'
\echo '       Kim 15, taken from the class at once (a retry with the same key gives nothing twice)'
SELECT quota.set_pool_cap(:teacher, 'ai_requests', 0) \g /dev/null
SELECT st.student, a.amount, a.pool_remaining AS class_left, a.replayed
  FROM (VALUES ('Sam', :sam::uuid, 30, 'week-1-sam'), ('Kim', :kim, 15, 'week-1-kim'), ('Sam', :sam, 30, 'week-1-sam'))
       AS st(student, id, amount, key), LATERAL quota.allocate(:teacher, st.id, 'ai_requests', st.amount, st.key) AS a;
\echo '   ... each student spends their own free 10 a day first, then what they were given'
SELECT st.student, st.asked, d.allowed, d.from_allowance AS own_free, d.from_grants AS given, d.reason
  FROM (VALUES (1, 'Sam', :sam::uuid, 10), (2, 'Sam', :sam, 25), (3, 'Kim', :kim, 10), (4, 'Kim', :kim, 20), (5, 'Kim', :kim, 15))
       AS st(n, student, id, asked), LATERAL quota.consume(st.id, 'ai_requests', st.asked) AS d ORDER BY st.n;
\echo '   ... (20 was more than Kim had: all or nothing, so her 15 paid the next call whole)'
\echo '   ... Kim is out of what she was given: denied while the class still has units'
SELECT d.allowed, d.reason, d.used AS drawn_from_class, d.allowance AS cap, u.remaining AS class_left
  FROM quota.consume(:kim, 'ai_requests', 1) AS d, quota.usage(:teacher) AS u;
\echo '   ... the teacher lets every student draw up to 20 from the class itself: Lee, given nothing,'
\echo '       uses his free 10, then 5 from the class'
SELECT quota.set_pool_cap(:teacher, 'ai_requests', 20) \g /dev/null
SELECT d.allowed, d.from_allowance, d.used, d.allowance, d.remaining
  FROM generate_series(1, 2) AS g, LATERAL quota.consume(:lee, 'ai_requests', CASE g WHEN 1 THEN 10 ELSE 5 END) AS d ORDER BY g;
\echo '   ... what the teacher sees for each student (through row level security, a teacher signed in'
\echo '       with their own JWT sees the same, and a student only their own row)'
SELECT st.student, u.drawn AS drawn_from_class, u.cap, u.allocated_left
  FROM quota.pool_usage(:teacher) AS u JOIN students AS st ON st.id = u.member ORDER BY st.student;
\echo '   ... Sam moves to another class: what is left of his 30 goes back to this one'
SELECT used AS class_used_before FROM quota.usage(:teacher);
SELECT quota.leave_pool(:teacher, :sam) \g /dev/null
SELECT used AS class_used_after, allowance, remaining FROM quota.usage(:teacher);

\echo
\echo '== 17. Usage alerts: written with the usage that crossed them, once per window'
\echo '   ... a plan that tells the user at 80%, when it runs out, and when it is usable again'
SELECT quota.create_plan('notified', '{"exports": {"limit": 5, "per": "day", "alerts": ["80%", "depleted", "recovered"]}}') \g /dev/null
SELECT gen_random_uuid() AS reader \gset
SELECT quota.assign_plan(:'reader', 'notified') \g /dev/null
\echo '   ... a crossing that rolls back leaves no alert'
BEGIN;
SELECT used FROM quota.consume(:'reader', 'exports', 4);
ROLLBACK;
SELECT count(*) AS alerts_after_rollback FROM quota.alerts WHERE subject = :'reader';
\echo '   ... committed: 4 of 5 fires 80%; the last one fires depleted; a grant answers it with recovered'
SELECT g AS call, d.used, d.remaining FROM generate_series(1, 2) AS g, LATERAL quota.consume(:'reader', 'exports', CASE g WHEN 1 THEN 4 ELSE 1 END) AS d ORDER BY g;
SELECT quota.grant(:'reader', 'exports', 3, reason => 'sorry') IS NOT NULL AS granted;
SELECT rule, used, remaining, cause FROM quota.alerts WHERE subject = :'reader' ORDER BY alert_id;
\echo '   ... a consumer claims them (the webhook dispatcher does this, signed, at least once)'
SELECT c.attempt, c.payload->>'rule' AS rule, c.payload->>'metric' AS metric, c.payload->>'remaining' AS remaining
  FROM quota.claim_alerts('demo') AS c JOIN quota.alerts AS a USING (alert_id) WHERE a.subject = :'reader' ORDER BY c.alert_id;
SELECT quota.ack_alerts(array_agg(alert_id)) AS acknowledged FROM quota.alerts WHERE subject = :'reader';

\echo
\echo '== 18. The ledger explains every counter, grant and hold (quota.audit() lists mismatches: none)'
SELECT count(*) AS mismatches FROM quota.audit();

\echo
\echo '== 19. A month of AI tokens for the chart make demo draws: Carol''s team plan allows 50,000'
\echo '       tokens a day, softly (past it is overage, billed rather than denied)'
\set carol '''ca201000-0000-4000-8000-000000000003'''
SELECT quota.create_plan('team', '{"tokens": {"limit": 50000, "per": "day", "overage": {"max": null}}}') \g /dev/null
SELECT quota.assign_plan(:carol, 'team') \g /dev/null
\echo '   ... 30 days in one statement, each day''s tokens recorded into that day''s window: weekdays'
\echo '       busier than weekends, the team growing, two batch jobs; every weekday of the last week is over'
SELECT d.reason, count(*) AS days, sum(d.amount) AS tokens, sum(d.overage) AS overage
  FROM generate_series(29, 0, -1) AS ago, LATERAL (SELECT now() - ago * interval '1 day' AS at) AS day,
       LATERAL quota.record(:carol, 'tokens',
           CASE WHEN extract(isodow FROM day.at) > 5 THEN 8000 ELSE 36000 END + 500 * (29 - ago)
           + (ago * 7919) % 6000 + CASE WHEN ago IN (20, 6) THEN 18000 ELSE 0 END,
           occurred_at => day.at) AS d
 GROUP BY d.reason ORDER BY d.reason;
\echo '   (make demo draws these days against the limit: target/demo/usage.svg)'

\echo
\echo '== 20. Rollover: what Dana leaves of her 100 daily requests carries into the next two days,'
\echo '       at most 50 a day (the demo backdates her sign-up: she has been on the plan for a week)'
\set dana '''da4a0000-0000-4000-8000-000000000004'''
SELECT quota.create_plan('saver', '{"requests": {"limit": 100, "per": "day", "rollover": {"max": 50, "expires_after": 2}}}') \g /dev/null
SELECT quota.assign_plan(:dana, 'saver') \g /dev/null
UPDATE quota.assignments SET assigned_at = now() - interval '7 days' WHERE subject = :dana;
\echo '   ... her phone syncs the last two days: 70 requests the day before yesterday, 95 yesterday'
SELECT used FROM quota.record(:dana, 'requests', 70, occurred_at => now() - interval '2 days') \g /dev/null
SELECT used FROM quota.record(:dana, 'requests', 95, occurred_at => now() - interval '1 day') \g /dev/null
\echo '   ... today she has 100 plus 30 and 5 carried over, spent after the allowance, oldest carry first:'
SELECT allowance, rollover_remaining, remaining FROM quota.usage(:dana);
SELECT allowed, from_allowance, from_grants, remaining FROM quota.consume(:dana, 'requests', 120);
SELECT reason, amount, remaining, expires_at::date AS expires FROM quota.grants WHERE subject = :dana ORDER BY expires_at;
