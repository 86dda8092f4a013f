-- After bench/setup.sql, on a schema with usage alerts (0.10.0): kept apart so that
-- bench/previous-schema.sh can set up an older schema with bench/setup.sql alone.
-- Alert rules (alerted: the same quota as calls with four rules, never crossed on 'bench',
-- all fired already on 'tight'), and the cost of a crossing: the first call of a new subject
-- on a metric of 1 whose rule fires (crossing) or that has none (first_call).
SELECT quota.set_limits(plan, format('{"alerted": {"limit": %s, "per": "day", "alerts": ["80%%", "100%%", "depleted", "recovered"]},
                                       "crossing": {"limit": 1, "per": "day", "alerts": ["100%%"]},
                                       "first_call": {"limit": 1, "per": "day"}}', allowance)::jsonb)
  FROM (VALUES ('bench', 1000000000000), ('tight', 10)) AS p (plan, allowance);
SELECT count(quota.consume(s(n), 'alerted')) FROM generate_series(0, 10000) AS n;
SELECT count(quota.consume(s(n), 'alerted', 10)) FROM generate_series(20001, 30000) AS n;
