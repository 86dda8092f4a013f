-- Reservations: hold quota before slow work, settle with the real amount after.
-- Error texts name random reservation ids and times: mask them.
CREATE FUNCTION pg_temp.try_masked(statement text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(regexp_replace(try(statement),
           '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g'),
           'at [0-9T:.+-]+', 'at <time>', 'g')
$$;
SELECT quota.create_plan('llm', '{"tokens": {"limit": 1000, "per": "day"}}');
SELECT quota.assign_plan(s(80), 'llm');
SELECT quota.assign_plan(s(84), 'llm');

-- A hold counts against what others can consume.
SELECT reservation_id AS r1 FROM quota.reserve(s(80), 'tokens', 600) \gset
SELECT allowed, amount, used, reserved, remaining, expires_at - now() AS ttl
  FROM quota.reserve(s(80), 'tokens', 300);
SELECT reservation_id AS r0 FROM quota.reservations WHERE subject = s(80) AND amount = 300 \gset
SELECT allowed, used, reserved, remaining, reason FROM quota.consume(s(80), 'tokens', 101);
SELECT allowed, used, reserved, remaining FROM quota.check(s(80), 'tokens', 100);
SELECT metric, used, reserved, remaining FROM quota.usage(s(80));
-- A denied reservation holds nothing and is a denial in the ledger.
SELECT reservation_id IS NULL AS no_id, allowed, reserved, reason FROM quota.reserve(s(80), 'tokens', 101);
SELECT kind, amount, reason FROM quota.events WHERE subject = s(80) ORDER BY event_id DESC LIMIT 1;

-- Settle with less than held frees the rest; settling again with the same amount replays.
SELECT allowed, from_allowance, used, reserved, remaining, reason FROM quota.settle(:'r1', 450);
SELECT allowed, used, replayed FROM quota.settle(:'r1', 450);
SELECT pg_temp.try_masked(format('SELECT quota.settle(%L, 451)', :'r1'));
SELECT pg_temp.try_masked(format('SELECT quota.release(%L)', :'r1'));
SELECT status FROM quota.reservations WHERE reservation_id = :'r1';

-- Release frees the hold; releasing or settling it again is an error.
SELECT quota.release(:'r0');
SELECT metric, used, reserved, remaining FROM quota.usage(s(80));
SELECT reservation_id AS r2 FROM quota.reserve(s(80), 'tokens', 200) \gset
SELECT quota.release(:'r2');
SELECT pg_temp.try_masked(format('SELECT quota.release(%L)', :'r2'));
SELECT pg_temp.try_masked(format('SELECT quota.settle(%L)', :'r2'));

-- Settling more than held: charged from what remains, the rest as overage, flagged,
-- never refused (the work is done).
SELECT reservation_id AS r3 FROM quota.reserve(s(80), 'tokens', 240) \gset
SELECT allowed, used FROM quota.consume(s(80), 'tokens', 10);
SELECT allowed, from_allowance, overage, used, remaining, reason FROM quota.settle(:'r3', 700);
SELECT allowed, reason FROM quota.consume(s(80), 'tokens');

-- Expiry needs no job: a hold stops counting the moment it expires, for every reader.
SELECT quota.create_plan('ttl', '{"calls": {"limit": 5, "per": "day"}}');
SELECT quota.assign_plan(s(81), 'ttl');
SELECT reservation_id AS r4 FROM quota.reserve(s(81), 'calls', 5, ttl => '1 second') \gset
SELECT allowed, reserved FROM quota.consume(s(81), 'calls');
SELECT quota.assign_plan(s(83), 'ttl');
SELECT allowed FROM quota.reserve(s(83), 'calls', 1, ttl => '1 second');
SELECT pg_sleep(1.2);
SELECT allowed, used, reserved, remaining FROM quota.check(s(81), 'calls', 5);
SELECT metric, reserved, remaining FROM quota.usage(s(81));
SELECT allowed, used, reserved FROM quota.consume(s(81), 'calls', 5);
SELECT status FROM quota.reservations WHERE reservation_id = :'r4';
SELECT pg_temp.try_masked(format('SELECT quota.settle(%L)', :'r4'));
-- The optional maintenance function marks what readers already ignore (s(83)'s hold;
-- s(81)'s was marked by the consume above).
SELECT quota.expire_reservations();
SELECT subject = s(83) AS s83, status FROM quota.reservations WHERE subject IN (s(81), s(83)) ORDER BY 1;
SELECT allowed, reserved FROM quota.check(s(83), 'calls', 5);

-- Idempotent reserve: the same key returns the same hold.
SELECT reservation_id AS r6 FROM quota.reserve(s(84), 'tokens', 5, idempotency_key => 'job-1') \gset
SELECT reservation_id = :'r6' AS same_hold, replayed FROM quota.reserve(s(84), 'tokens', 5, idempotency_key => 'job-1');
SELECT try($$SELECT quota.reserve(s(84), 'tokens', 6, idempotency_key => 'job-1')$$);
-- While it holds, and once settled (the retried flow's settle replays too); not once released
-- or expired: the replay would say it holds what it no longer holds (23505, a new key).
SELECT used FROM quota.settle(:'r6');
SELECT reservation_id = :'r6' AS same_hold, allowed, replayed FROM quota.reserve(s(84), 'tokens', 5, idempotency_key => 'job-1');
SELECT reservation_id AS r7 FROM quota.reserve(s(84), 'tokens', 5, idempotency_key => 'job-2') \gset
SELECT quota.release(:'r7');
SELECT replace(try($$SELECT quota.reserve(s(84), 'tokens', 5, idempotency_key => 'job-2')$$), :'r7', '<r7>') AS released;
SELECT reservation_id AS r8 FROM quota.reserve(s(84), 'tokens', 5, ttl => '1 second', idempotency_key => 'job-3') \gset
SELECT pg_sleep(1.1);
SELECT split_part(replace(try($$SELECT quota.reserve(s(84), 'tokens', 5, idempotency_key => 'job-3')$$), :'r8', '<r8>'), ' at ', 1) AS expired;
SELECT allowed, reserved FROM quota.reserve(s(84), 'tokens', 5, idempotency_key => 'job-4');

-- Grants back reservations too: holds take the allowance first, then grants.
SELECT quota.grant(s(82), 'tokens', 100) IS NOT NULL AS granted;
SELECT quota.assign_plan(s(82), 'llm');
SELECT allowed, reserved, remaining FROM quota.reserve(s(82), 'tokens', 1050);
SELECT allowed, reason FROM quota.consume(s(82), 'tokens', 51);
SELECT allowed, from_grants FROM quota.consume(s(82), 'tokens', 50);

-- Bad input.
SELECT try($$SELECT quota.reserve(s(80), 'tokens', 0)$$);
SELECT try($$SELECT quota.reserve(s(80), 'tokens', NULL)$$);
SELECT try($$SELECT quota.reserve(s(80), 'nope', 1)$$);
SELECT try($$SELECT quota.reserve(s(80), 'tokens', 1, ttl => '1 month')$$);
SELECT try($$SELECT quota.reserve(s(80), 'tokens', 1, ttl => '0 seconds')$$);
SELECT try($$SELECT quota.reserve(s(80), 'tokens', 1, ttl => NULL)$$);
SELECT try($$SELECT quota.settle('00000000-0000-0000-0000-00000000beef')$$);
SELECT try($$SELECT quota.release('00000000-0000-0000-0000-00000000beef')$$);
SELECT try($$SELECT quota.settle(NULL)$$);
SELECT pg_temp.try_masked(format('SELECT quota.settle(%L, -1)', :'r6'));
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- An unlimited metric with an active hold reports the hold (found by the simulator: the
-- fast path used to report reserved = 0).
SELECT quota.create_plan('open', '{"calls": {"limit": null}}');
SELECT quota.assign_plan(s(89), 'open');
SELECT allowed, reserved FROM quota.reserve(s(89), 'calls', 8);
SELECT allowed, used, reserved, remaining FROM quota.consume(s(89), 'calls', 4);
SELECT allowed, used, reserved FROM quota.check(s(89), 'calls', 1);
SELECT count(*) AS audit_mismatches FROM quota.audit();
