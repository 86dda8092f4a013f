-- Credit wallets on the fast path (0.12.0): a window marked as a wallet's (its subject had
-- usable grants) pays a consume from the first usable grant once the allowance is spent, in
-- one statement, exactly as the slow path would (ledger row, event_grants, remaining); the
-- slow path still splits what the first grant cannot cover, and decides denials; alert
-- rules keep the window off the fast path. Subjects 250001...
SELECT quota.create_plan('wallet25', '{"credits": {"limit": 0, "per": "lifetime"},
                                       "tokens": {"limit": 3, "per": "day"},
                                       "watched": {"limit": 0, "per": "lifetime", "alerts": ["depleted"]}}');
SELECT quota.assign_plan(s(n), 'wallet25') FROM generate_series(250001, 250003) AS n;
SELECT quota.grant(s(250001), 'credits', 5, priority => 0) IS NOT NULL AS granted;
SELECT quota.grant(s(250001), 'credits', 10, priority => 1) IS NOT NULL AS granted;
-- A grant spent first that has expired (set by hand: shortening an expiry unmarks nothing).
SELECT quota.grant(s(250001), 'credits', 100, priority => -1, expires_at => now() + interval '1 day') IS NOT NULL AS granted;
UPDATE quota.grants SET expires_at = now() - interval '1 second' WHERE subject = s(250001) AND priority = -1;
-- Which path decided: the slow path resolves the subject's plan (a scan of
-- quota.assignments), the fast path reads only the counter and the grants.
CREATE FUNCTION public.wallet_path(subject uuid, amount bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    scans_before bigint := public.assignment_scans();
    decided quota.decision := quota.consume(subject, 'credits', amount);
BEGIN
    RETURN format('%s: allowed=%s from_grants=%s remaining=%s',
                  CASE WHEN public.assignment_scans()
                            > scans_before THEN 'slow' ELSE 'fast' END,
                  decided.allowed, decided.from_grants, decided.remaining);
END $$;

-- The first consume decides on the slow path and marks the window as a wallet's.
SELECT allowed, from_grants, remaining, event_id IS NOT NULL AS has_row FROM quota.consume(s(250001), 'credits', 1);
SELECT fast, wallet FROM quota.counters WHERE subject = s(250001) AND metric = 'credits';
-- Then the first grant pays on the fast path: one ledger row, one event_grants row.
SELECT allowed, from_allowance, from_grants, used, remaining, reason FROM quota.consume(s(250001), 'credits', 1);
SELECT wallet_path(s(250001), 1);
SELECT allowed, from_grants, remaining FROM quota.consume(s(250001), 'credits', 1, 'req-25');
SELECT allowed, from_grants, remaining, replayed FROM quota.consume(s(250001), 'credits', 1, 'req-25');
-- 1 left in the first grant, 3 asked: the slow path splits it over both grants.
SELECT wallet_path(s(250001), 3);
SELECT e.amount, e.from_grants, g.priority, p.amount AS paid
  FROM quota.events AS e JOIN quota.event_grants AS p USING (subject, event_id) JOIN quota.grants AS g USING (grant_id)
 WHERE e.subject = s(250001) ORDER BY e.event_id, g.priority;
-- Revoking a grant leaves the window marked; what is left is 8, then a denial of more.
SELECT quota.revoke_grant(grant_id) FROM quota.grants WHERE subject = s(250001) AND priority = 1;
SELECT fast, wallet FROM quota.counters WHERE subject = s(250001) AND metric = 'credits';
SELECT allowed, from_grants, remaining, reason FROM quota.consume(s(250001), 'credits', 1);
SELECT g.priority, g.remaining, g.revoked_at IS NOT NULL AS revoked, g.expires_at < now() AS expired
  FROM quota.grants AS g WHERE subject = s(250001) ORDER BY priority, amount;
-- A new grant unmarks: the next consume decides on the slow path and marks again.
SELECT quota.grant(s(250001), 'credits', 6) IS NOT NULL AS granted;
SELECT wallet_path(s(250001), 4);
SELECT wallet_path(s(250001), 2);
SELECT allowed, from_grants, remaining, reason FROM quota.consume(s(250001), 'credits', 1);

-- An allowance with a grant on top: the allowance first, then the split, then the grant.
SELECT quota.grant(s(250002), 'tokens', 10) IS NOT NULL AS granted;
SELECT allowed, from_allowance, from_grants, used, remaining FROM quota.consume(s(250002), 'tokens', 2);
SELECT allowed, from_allowance, from_grants, used, remaining FROM quota.consume(s(250002), 'tokens', 2);
SELECT allowed, from_allowance, from_grants, used, remaining FROM quota.consume(s(250002), 'tokens', 4);
SELECT fast, wallet FROM quota.counters WHERE subject = s(250002) AND metric = 'tokens';

-- A metric an alert rule watches is never marked as a wallet's.
SELECT quota.grant(s(250003), 'watched', 5) IS NOT NULL AS granted;
SELECT count(quota.consume(s(250003), 'watched')) FROM generate_series(1, 3);
SELECT fast, wallet FROM quota.counters WHERE subject = s(250003) AND metric = 'watched';

SELECT count(*) AS disagreements FROM quota.audit() WHERE subject IN (SELECT s(n) FROM generate_series(250001, 250003) AS n);
DROP FUNCTION public.wallet_path(uuid, bigint);
-- An unlimited allowance never needs its grants: the window is marked as any other.
SELECT quota.create_plan('wallet25_open', '{"credits": {"limit": null}}');
SELECT quota.assign_plan(s(250004), 'wallet25_open');
SELECT quota.grant(s(250004), 'credits', 5) IS NOT NULL AS granted;
SELECT count(quota.consume(s(250004), 'credits')) FROM generate_series(1, 2);
SELECT fast, wallet, used FROM quota.counters WHERE subject = s(250004) AND metric = 'credits';

-- Holds of a window that ended keep their grants set aside: grants belong to no window, and
-- a reset (or a window's end) starts a window whose own holds are none. Before, the new
-- window spent the grants a hold of the old one had set aside, and its settle was overage.
SELECT quota.create_plan('wallet25_holds', '{"credits": {"limit": 0, "per": "lifetime"}}');
SELECT quota.assign_plan(s(n), 'wallet25_holds') FROM generate_series(250005, 250006) AS n;
SELECT quota.grant(s(n), 'credits', 100) IS NOT NULL AS granted FROM generate_series(250005, 250006) AS n;
SELECT reservation_id AS held25 FROM quota.reserve(s(250005), 'credits', 100) \gset
SELECT allowed, reason FROM quota.consume(s(250005), 'credits', 1);
SELECT quota.reset(s(250005), 'credits');
-- The new window: nothing of the grants is usable while the hold holds, on every path and
-- for every reader (the slow path twice: a wallet is not marked for the fast path meanwhile).
SELECT allowed, remaining FROM quota.check(s(250005), 'credits', 1);
SELECT allowed, remaining, from_grants FROM quota.consume(s(250005), 'credits', 100);
SELECT allowed, remaining FROM quota.consume(s(250005), 'credits', 1);
SELECT allowed FROM quota.reserve(s(250005), 'credits', 1);
SELECT grants_remaining, reserved FROM quota.usage(s(250005)) WHERE metric = 'credits';
SELECT count(*) AS marked FROM quota.counters WHERE subject = s(250005) AND metric = 'credits' AND fast;
SELECT from_allowance, from_grants, overage, reason FROM quota.settle(:'held25');
SELECT allowed, reason FROM quota.consume(s(250005), 'credits', 1);
-- Both ways: a hold of the new window keeps its grants from the old window's settle.
SELECT reservation_id AS old25 FROM quota.reserve(s(250006), 'credits', 60) \gset
SELECT quota.reset(s(250006), 'credits');
SELECT reservation_id AS new25 FROM quota.reserve(s(250006), 'credits', 40) \gset
SELECT allowed FROM quota.reserve(s(250006), 'credits', 1);
SELECT from_grants, overage FROM quota.settle(:'old25');
SELECT from_grants, overage FROM quota.settle(:'new25');
-- Once the hold ends, the grants are the new window's again (released here).
SELECT quota.grant(s(250006), 'credits', 10) IS NOT NULL AS granted;
SELECT reservation_id AS again25 FROM quota.reserve(s(250006), 'credits', 10) \gset
SELECT quota.reset(s(250006), 'credits');
SELECT allowed FROM quota.consume(s(250006), 'credits', 1);
SELECT quota.release(:'again25');
SELECT allowed, from_grants FROM quota.consume(s(250006), 'credits', 10);
SELECT count(*) AS audit_mismatches FROM quota.audit() WHERE subject IN (s(250005), s(250006));
