-- Soft limits (0.10.0): a limit's "overage" lets consume pass the allowance (after the
-- grants) as overage, reason 'overage', up to a ceiling per window or without one; holds and
-- a pool's members never pass it; alerts above 100% fire on it. Subjects 210001...
SELECT try($$SELECT quota.create_plan('bad_soft', '{"calls": {"limit": 10, "per": "day", "overage": true}}')$$);
SELECT try($$SELECT quota.create_plan('bad_soft', '{"calls": {"limit": 10, "per": "day", "overage": {"max": -1}}}')$$);
SELECT try($$SELECT quota.create_plan('bad_soft', '{"calls": {"limit": 10, "per": "day", "overage": {"ceiling": 5}}}')$$);
SELECT try($$SELECT quota.create_plan('bad_soft', '{"calls": {"limit": null, "overage": {"max": 5}}}')$$);
SELECT quota.create_plan('soft', '{"tokens": {"limit": 100, "per": "day", "overage": {"max": 50}, "alerts": ["100%", "140%"]},
                                   "minutes": {"limit": 10, "per": "month", "overage": {"max": null}},
                                   "seats": {"limit": 3, "per": "lifetime"}}');
SELECT metric, allowance, soft, overage_max FROM quota.limits WHERE plan = 'soft' ORDER BY metric;
SELECT quota.assign_plan(s(n), 'soft') FROM generate_series(210001, 210006) AS n;

-- Past the allowance: allowed, reason overage, counted; up to the ceiling of 50, then denied.
SELECT allowed, reason, from_allowance, overage, used, remaining FROM quota.consume(s(210001), 'tokens', 90);
SELECT allowed, reason, from_allowance, overage, used, remaining FROM quota.consume(s(210001), 'tokens', 30);
SELECT allowed, reason, from_allowance, overage, used, remaining FROM quota.consume(s(210001), 'tokens', 30);
SELECT allowed, reason, from_allowance, overage, used, retry_after IS NOT NULL AS retry FROM quota.consume(s(210001), 'tokens', 31);
SELECT allowed, reason, overage, used FROM quota.consume(s(210001), 'tokens', 30);
-- check says what consume would do; the window is never marked for the fast path.
SELECT allowed, reason, overage FROM quota.check(s(210002), 'tokens', 120);
SELECT allowed, reason FROM quota.check(s(210002), 'tokens', 151);
SELECT count(*) AS marked FROM quota.counters WHERE subject = s(210001) AND fast;
-- Grants are spent before overage.
SELECT quota.grant(s(210002), 'tokens', 20) IS NOT NULL AS granted;
SELECT allowed, reason, from_allowance, from_grants, overage, used FROM quota.consume(s(210002), 'tokens', 130);
SELECT allowed, from_grants, overage, used FROM quota.consume(s(210002), 'tokens', 41);
-- Without a ceiling: any amount passes, all of it in the ledger as overage for billing.
SELECT allowed, reason, from_allowance, overage, used FROM quota.consume(s(210003), 'minutes', 1000);
SELECT kind, reason, amount, from_allowance, overage FROM quota.events WHERE subject = s(210003) ORDER BY event_id;
-- A hard limit beside it stays hard.
SELECT allowed, reason FROM quota.consume(s(210003), 'seats', 4);
-- require raises only past the ceiling.
SELECT reason, overage FROM quota.require(s(210004), 'tokens', 150);
SELECT try($$SELECT quota.require(s(210004), 'tokens', 1)$$) LIKE 'PT429%' AS denied_past_the_ceiling;
-- A hold never passes the allowance; what its settle counts past it is overage as always.
SELECT allowed, reason FROM quota.reserve(s(210005), 'tokens', 101);
SELECT reservation_id AS rid FROM quota.reserve(s(210005), 'tokens', 100) \gset
SELECT allowed, reason, from_allowance, overage, used FROM quota.settle(:'rid', 120);
-- consume_many: a bundle's soft metric passes its allowance as a single consume would.
SELECT metric, allowed, reason, overage FROM quota.consume_many(s(210006), '{"tokens": 120, "seats": 1}') ORDER BY metric;
SELECT metric, allowed, reason FROM quota.consume_many(s(210006), '{"tokens": 40, "seats": 1}') ORDER BY metric;
-- Alerts above 100% fire on it: 140% at the first consume that reaches it.
SELECT rule, used, remaining FROM quota.alerts WHERE subject = s(210001) ORDER BY alert_id;
-- usage() shows used past the allowance, nothing remaining.
SELECT metric, used, allowance, remaining, percent_used FROM quota.usage(s(210001)) WHERE metric = 'tokens';
-- A pool's member whose own plan is soft: the pool pays before the member passes its own.
SELECT quota.create_plan('soft_pool', '{"tokens": {"limit": 1000, "per": "day"}}');
SELECT quota.assign_plan(s(210010), 'soft_pool');
SELECT quota.assign_plan(s(210011), 'soft');
SELECT quota.join_pool(s(210010), s(210011));
SELECT allowed, reason, from_allowance, overage, used FROM quota.consume(s(210011), 'tokens', 100);
SELECT allowed, reason, from_allowance, overage, used FROM quota.consume(s(210011), 'tokens', 20);
SELECT metric, allowed, reason, overage FROM quota.consume_many(s(210011), '{"tokens": 10}');
SELECT (SELECT used FROM quota.counters WHERE subject = s(210011) AND metric = 'tokens') AS member_used,
       (SELECT used FROM quota.counters WHERE subject = s(210010) AND metric = 'tokens') AS pool_used;
-- A plan without the key is hard again after set_limits.
SELECT quota.set_limits('soft', '{"tokens": {"limit": 100, "per": "day"}}');
SELECT allowed, reason FROM quota.consume(s(210004), 'tokens', 1);
SELECT * FROM quota.audit();
