-- Ledger modes (0.12.0): a limit's "ledger": "counters" keeps no ledger row for an allowed
-- consume without an idempotency key that the fast path decides; the window's counter keeps
-- what it counted so, audit() checks counters against the ledger plus that, and
-- audit(true) lists it. Denials, keyed calls, the slow path's calls and records are kept.
-- Subjects 240001...
SELECT try($$SELECT quota.create_plan('bad_ledger', '{"calls": {"limit": 10, "per": "day", "ledger": "none"}}')$$);
SELECT try($$SELECT quota.create_plan('bad_ledger', '{"calls": {"limit": 10, "per": "day", "ledger": false}}')$$);
SELECT try($$SELECT * FROM quota.audit(NULL)$$);
SELECT quota.create_plan('counted', '{"api": {"limit": 5, "per": "day", "ledger": "counters"},
                                      "rated_api": {"limit": 5, "per": "day", "ledger": "counters",
                                                    "rate": [{"limit": 100, "per": "1 second"}]},
                                      "kept": {"limit": 5, "per": "day", "ledger": "full"},
                                      "plain": {"limit": 5, "per": "day"}}');
SELECT metric, ledger FROM quota.limits WHERE plan = 'counted' ORDER BY metric;
SELECT quota.assign_plan(s(n), 'counted') FROM generate_series(240001, 240003) AS n;

-- The first call of the window decides on the slow path (a row) and marks the window; then
-- unkeyed allowed calls write none, a keyed one does (and replays), the denial does.
SELECT allowed, used, remaining, event_id IS NOT NULL AS has_row FROM quota.consume(s(240001), 'api');
SELECT allowed, used, remaining, event_id IS NOT NULL AS has_row FROM quota.consume(s(240001), 'api');
SELECT allowed, used, remaining, event_id IS NOT NULL AS has_row FROM quota.consume(s(240001), 'api', 1, 'req-1');
SELECT allowed, used, replayed, event_id IS NOT NULL AS has_row FROM quota.consume(s(240001), 'api', 1, 'req-1');
SELECT allowed, used, remaining, reason, event_id IS NOT NULL AS has_row FROM quota.consume(s(240001), 'api', 2);
SELECT allowed, used, reason, event_id IS NOT NULL AS has_row FROM quota.consume(s(240001), 'api');
SELECT kind, amount, used, reason, idempotency_key FROM quota.events WHERE subject = s(240001) ORDER BY event_id;
SELECT used, fast, ledger_rows, counted_without_ledger FROM quota.counters WHERE subject = s(240001) AND metric = 'api';
SELECT * FROM quota.audit() WHERE subject = s(240001);
SELECT metric, item LIKE 'without ledger rows %' AS unverified, stored, from_ledger
  FROM quota.audit(true) WHERE subject = s(240001);
-- A counter that drifts from its ledger plus what it counted without rows is reported.
BEGIN;
UPDATE quota.counters SET used = used - 1 WHERE subject = s(240001) AND metric = 'api';
SELECT metric, stored, from_ledger FROM quota.audit() WHERE subject = s(240001);
ROLLBACK;
-- A give-back is kept and lowers the counter; the counter still agrees.
SELECT allowed, used FROM quota.give_back(s(240001), 'api', 2);
SELECT count(*) AS disagreements FROM quota.audit() WHERE subject = s(240001);

-- "full" and no "ledger" keep a row for every call.
SELECT count(quota.consume(s(240002), 'kept')) + count(quota.consume(s(240002), 'plain')) FROM generate_series(1, 3);
SELECT metric, count(*) FROM quota.events WHERE subject = s(240002) GROUP BY metric ORDER BY metric;
-- A window with rate rules keeps its rows (its statement decides the rules with the row).
SELECT count(quota.consume(s(240002), 'rated_api')) FROM generate_series(1, 3);
SELECT count(*) AS rated_rows FROM quota.events WHERE subject = s(240002) AND metric = 'rated_api';

-- Changing the mode unmarks the window: the next call decides on the slow path, and the
-- window keeps rows from then on.
SELECT count(quota.consume(s(240003), 'api')) FROM generate_series(1, 2);
SELECT quota.set_limits('counted', '{"api": {"limit": 5, "per": "day"}}');
SELECT count(quota.consume(s(240003), 'api')) FROM generate_series(1, 2);
SELECT count(*) AS rows_kept, (SELECT counted_without_ledger FROM quota.counters WHERE subject = s(240003) AND metric = 'api')
  FROM quota.events WHERE subject = s(240003) AND metric = 'api';
SELECT count(*) AS disagreements FROM quota.audit() WHERE subject IN (SELECT s(n) FROM generate_series(240001, 240003) AS n);

-- A backend that last saw the metric with rate rules (another plan's) tries the rated
-- statement first: it does not take a window that keeps no row, which its own statement
-- then takes without one.
SELECT quota.create_plan('counted_rated', '{"api": {"limit": 5, "per": "day", "rate": [{"limit": 100, "per": "1 second"}]}}');
SELECT quota.set_limits('counted', '{"api": {"limit": 5, "per": "day", "ledger": "counters"}}');
SELECT quota.assign_plan(s(240004), 'counted_rated');
SELECT quota.assign_plan(s(240005), 'counted');
SELECT count(quota.consume(s(240004), 'api')) FROM generate_series(1, 2);
SELECT allowed, event_id IS NOT NULL AS has_row FROM quota.consume(s(240005), 'api');
SELECT count(quota.consume(s(240004), 'api'));
SELECT allowed, event_id IS NOT NULL AS has_row FROM quota.consume(s(240005), 'api');
SELECT count(*) AS rows_kept FROM quota.events WHERE subject = s(240005);

-- Denials of a counted metric: after the first (written by the read of the marked window),
-- the next ones are written by the denial statement tried first after a denial; the counted
-- statement counts again without a row once a give-back makes room. Only the denials and the
-- give-back are rows.
SELECT quota.assign_plan(s(240006), 'counted');
SELECT allowed, used, event_id IS NOT NULL AS has_row FROM quota.consume(s(240006), 'api', 5);
SELECT allowed, used, reason, remaining, event_id IS NOT NULL AS has_row FROM quota.consume(s(240006), 'api');
SELECT allowed, used, reason, remaining, event_id IS NOT NULL AS has_row
  FROM quota.consume(s(240006), 'api', 1, metadata => '{"why": "full"}');
SELECT allowed, used FROM quota.give_back(s(240006), 'api', 2);
SELECT allowed, used, reason, event_id IS NOT NULL AS has_row FROM quota.consume(s(240006), 'api');
SELECT allowed, used, reason, event_id IS NOT NULL AS has_row FROM quota.consume(s(240006), 'api');
SELECT allowed, used, reason, event_id IS NOT NULL AS has_row FROM quota.consume(s(240006), 'api');
SELECT kind, amount, used, remaining, reason, metadata FROM quota.events WHERE subject = s(240006) ORDER BY event_id;
SELECT used, counted_without_ledger FROM quota.counters WHERE subject = s(240006) AND metric = 'api';
SELECT count(*) AS audit_mismatches FROM quota.audit() WHERE subject = s(240006);
