-- pg_quota demo: plans like the ones SaaS and AI apps sell, consumption, a denial, an
-- idempotent retry, an override, a reset, and usage a person can read.
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
    "projects":    {"limit": 3,     "per": "lifetime"}}', is_default => true) \g /dev/null
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
\echo '== 6. Support gives Alice 25 requests a day (an override), then resets today''s window'
SELECT quota.set_override(:alice, 'ai_requests', 25) \g /dev/null
SELECT allowed, used, allowance, remaining FROM quota.consume(:alice, 'ai_requests', 5);
SELECT quota.reset(:alice, 'ai_requests') \g /dev/null
SELECT allowed, used, allowance, remaining FROM quota.check(:alice, 'ai_requests');

\echo
\echo '== 7. Bob is on Pro; he creates projects (a lifetime cap, not a window)'
SELECT quota.assign_plan(:bob, 'pro') \g /dev/null
SELECT allowed, used, allowance, resets_at FROM quota.consume(:bob, 'projects', 2);

\echo
\echo '== 8. What each of them sees in their usage page'
\echo 'Alice:'
SELECT metric, used, allowance, remaining, percent_used || '%' AS used_pct, resets_at FROM quota.usage(:alice);
\echo 'Bob:'
SELECT metric, used, allowance, remaining, percent_used || '%' AS used_pct, resets_at FROM quota.usage(:bob);

\echo
\echo '== 9. The ledger explains every counter (quota.audit() lists mismatches: none)'
SELECT count(*) AS mismatches FROM quota.audit();
