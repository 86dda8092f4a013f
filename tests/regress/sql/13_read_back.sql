-- A ledger row pg_quota could not have written is an internal error (XX000) when a retry
-- reads it back to replay it, never a decision made up from it (0.6.0 read an unknown
-- reason as 'ok').
SELECT quota.create_plan('read_back', '{"calls": {"limit": 10, "per": "day"}}');
SELECT quota.assign_plan(s(140), 'read_back');
SELECT allowed, used, reason FROM quota.consume(s(140), 'calls', 2, 'read-back-1');
SELECT allowed, used, reason, replayed FROM quota.consume(s(140), 'calls', 2, 'read-back-1');

UPDATE quota.events SET reason = 'bogus' WHERE subject = s(140) AND idempotency_key = 'read-back-1';
SELECT try($$SELECT quota.consume(s(140), 'calls', 2, 'read-back-1')$$);

-- Parts that do not add up to the amount.
UPDATE quota.events SET reason = 'ok', from_grants = 1 WHERE subject = s(140) AND idempotency_key = 'read-back-1';
SELECT split_part(try($$SELECT quota.consume(s(140), 'calls', 2, 'read-back-1')$$), ':', 1) AS sqlstate,
       try($$SELECT quota.consume(s(140), 'calls', 2, 'read-back-1')$$) LIKE '%corrupt decision read back%' AS says_so;

-- Put right, the row replays again.
UPDATE quota.events SET from_grants = 0 WHERE subject = s(140) AND idempotency_key = 'read-back-1';
SELECT allowed, used, reason, replayed FROM quota.consume(s(140), 'calls', 2, 'read-back-1');
