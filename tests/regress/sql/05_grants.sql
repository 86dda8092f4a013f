-- Bonus grants: spent after the window's allowance, by priority, then soonest expiry, then
-- oldest; all or nothing across allowance and several grants; expiry; revoke; wallets.
SELECT quota.create_plan('bonus', '{"ai": {"limit": 3, "per": "day"},
                                    "credits": {"limit": 0, "per": "lifetime"}}');
SELECT quota.assign_plan(s(50), 'bonus');

-- Three grants: priority decides first, then expiry (never-expiring last), then age.
SELECT quota.grant(s(50), 'ai', 4, priority => 1, reason => 'referral') AS late \gset
SELECT quota.grant(s(50), 'ai', 5, expires_at => now() + interval '2 days') AS soon \gset
SELECT quota.grant(s(50), 'ai', 6, reason => 'goodwill') AS never \gset
SELECT allowed, from_allowance, from_grants, used, remaining FROM quota.check(s(50), 'ai', 18);
-- 18 = 3 allowance + 5 + 6 + 4: spans the allowance and all three grants, in order.
SELECT allowed, from_allowance, from_grants, used, remaining FROM quota.consume(s(50), 'ai', 10);
SELECT CASE grant_id WHEN :'late' THEN 'late' WHEN :'soon' THEN 'soon' ELSE 'never' END AS grant_name,
       amount, remaining
  FROM quota.grants WHERE subject = s(50) ORDER BY priority, expires_at NULLS LAST;
SELECT CASE p.grant_id WHEN :'late' THEN 'late' WHEN :'soon' THEN 'soon' ELSE 'never' END AS paid_by, p.amount
  FROM quota.event_grants p JOIN quota.events e USING (subject, event_id)
 WHERE e.subject = s(50) ORDER BY e.event_id, p.amount DESC;
-- All or nothing: 9 more cannot be covered by the 8 left, and nothing is taken.
SELECT allowed, from_allowance, from_grants, used, remaining, reason FROM quota.consume(s(50), 'ai', 9);
SELECT sum(remaining) AS grants_left FROM quota.grants WHERE subject = s(50);
SELECT allowed, from_grants, remaining FROM quota.consume(s(50), 'ai', 8);

-- Expiry at the boundary: a grant is usable strictly before expires_at.
SELECT quota.grant(s(51), 'ai', 10, expires_at => now() + interval '1 hour') AS g \gset
SELECT quota.assign_plan(s(51), 'bonus');
SELECT (quota.consume(s(51), 'ai', 3)).allowed AS allowance_spent;
BEGIN;
UPDATE quota.grants SET expires_at = now() + interval '1 microsecond' WHERE grant_id = :'g';
SELECT allowed, from_grants, remaining FROM quota.check(s(51), 'ai', 10);
UPDATE quota.grants SET expires_at = now() WHERE grant_id = :'g';
SELECT allowed, from_grants, remaining, reason FROM quota.consume(s(51), 'ai', 1);
COMMIT;
SELECT metric, grants_remaining, remaining FROM quota.usage(s(51)) WHERE metric = 'ai';

-- Revoke after partial spend: what was spent stays spent, the rest is never used.
SELECT quota.grant(s(52), 'ai', 10) AS r \gset
SELECT quota.assign_plan(s(52), 'bonus');
SELECT from_allowance, from_grants FROM quota.consume(s(52), 'ai', 7);
SELECT quota.revoke_grant(:'r');
SELECT quota.revoke_grant(:'r');
SELECT amount, remaining, revoked_at IS NOT NULL AS revoked FROM quota.grants WHERE grant_id = :'r';
SELECT allowed, reason FROM quota.consume(s(52), 'ai', 1);

-- A credit wallet: a lifetime metric with allowance 0 whose units come only from grants.
-- Top up = grant, spend = consume, refund = grant back.
SELECT quota.assign_plan(s(53), 'bonus');
SELECT quota.grant(s(53), 'credits', 500, reason => 'purchase: 500 credit pack') IS NOT NULL AS topped_up;
SELECT allowed, from_allowance, from_grants, remaining FROM quota.consume(s(53), 'credits', 20, metadata => '{"video": 1}');
SELECT allowed, remaining FROM quota.consume(s(53), 'credits', 480);
SELECT allowed, remaining, reason FROM quota.consume(s(53), 'credits', 20);
SELECT quota.grant(s(53), 'credits', 20, reason => 'refund: video 1 failed') IS NOT NULL AS refunded;
SELECT allowed, remaining FROM quota.consume(s(53), 'credits', 20);
SELECT metric, used, allowance, remaining, grants_remaining FROM quota.usage(s(53)) WHERE metric = 'credits';

-- Bad input.
SELECT try($$SELECT quota.grant(s(50), 'ai', 0)$$);
SELECT try($$SELECT quota.grant(s(50), 'ai', -5)$$);
SELECT try($$SELECT quota.grant(s(50), 'nope', 5)$$);
SELECT try($$SELECT quota.grant(NULL, 'ai', 5)$$);
SELECT try($$SELECT quota.grant(s(50), 'ai', 5, expires_at => now() - interval '1 second')$$);
SELECT try($$SELECT quota.grant(s(50), 'ai', 5, expires_at => 'infinity')$$);
SELECT try($$SELECT quota.grant(s(50), 'ai', 5, priority => NULL)$$);
SELECT try($$SELECT quota.revoke_grant('00000000-0000-0000-0000-00000000dead')$$);
SELECT try($$SELECT quota.revoke_grant(NULL)$$);
SELECT count(*) AS audit_mismatches FROM quota.audit();
