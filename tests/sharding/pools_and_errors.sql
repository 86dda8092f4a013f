-- Run on the router by tests/sharding/run.sh after check.sql: a pool's member lives on its
-- pool's shard; a subject with rows on another shard cannot join; reservations and grants,
-- known only by their id, are found on whichever shard holds them; errors keep their
-- SQLSTATE. Raises on the first broken rule.
CREATE FUNCTION pg_temp.subject(n integer) RETURNS uuid
LANGUAGE sql AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;

CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;

CREATE FUNCTION pg_temp.expect(holds boolean, rule text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF holds IS DISTINCT FROM true THEN
        RAISE EXCEPTION 'through the router: %', rule;
    END IF;
END
$$;

DO $$
DECLARE
    the_pool constant uuid := pg_temp.subject(900);
    the_member constant uuid := pg_temp.subject(901);
    stranger uuid;
    held quota.reservation;
    decided quota.decision;
    granted uuid;
    allocated quota.allocation;
BEGIN
    PERFORM quota.join_pool(the_pool, the_member);
    PERFORM pg_temp.expect(quota.routing_key(the_member) = the_pool, 'a member is routed by its pool');
    PERFORM pg_temp.expect(quota_router.shard_number(the_member) = quota_router.shard_number(the_pool),
                           'a member is on its pool''s shard');
    decided := quota.consume(the_member, 'calls');
    PERFORM pg_temp.expect(decided.allowed, 'a member''s consume is allowed');
    PERFORM pg_temp.expect(EXISTS (SELECT FROM quota.usage(the_member) AS u WHERE u.pool = the_pool),
                           'the member''s usage names its pool');

    PERFORM quota.join_pool(the_pool, pg_temp.subject(902));
    PERFORM pg_temp.expect(pg_temp.sqlstate_of(format('SELECT quota.join_pool(%L, %L)', pg_temp.subject(950), pg_temp.subject(902))) = '23505',
                           'a member of one pool joining another is 23505, as on one server');

    SELECT pg_temp.subject(n) INTO stranger FROM generate_series(1, 60) AS n
     WHERE quota_router.shard_number(pg_temp.subject(n)) <> quota_router.shard_number(the_pool) LIMIT 1;
    PERFORM pg_temp.expect(pg_temp.sqlstate_of(format('SELECT quota.join_pool(%L, %L)', the_pool, stranger)) = '55000',
                           'a subject with rows on another shard cannot join a pool (55000)');
    PERFORM pg_temp.expect(quota.routing_key(stranger) = stranger, 'a refused join leaves the subject where it was');

    held := quota.reserve(pg_temp.subject(101), 'keyed', 5);
    PERFORM pg_temp.expect(held.allowed, 'a reservation is made');
    decided := quota.settle(held.reservation_id, 3);
    PERFORM pg_temp.expect(decided.allowed AND decided.amount = 3, 'a reservation is settled by its id alone');
    PERFORM pg_temp.expect(pg_temp.sqlstate_of(format('SELECT quota.settle(%L)', gen_random_uuid())) = '42704',
                           'settling an unknown reservation is 42704');
    held := quota.reserve(pg_temp.subject(102), 'keyed', 5);
    PERFORM quota.release(held.reservation_id);
    PERFORM pg_temp.expect(pg_temp.sqlstate_of(format('SELECT quota.release(%L)', gen_random_uuid())) = '42704',
                           'releasing an unknown reservation is 42704');

    allocated := quota.allocate(the_pool, the_member, 'calls', 3);
    PERFORM pg_temp.expect(allocated.allowed, 'a pool gives a member an allocation');
    PERFORM pg_temp.expect(quota.revoke_allocation(allocated.allocation_id) = 3, 'an allocation is revoked by its id alone');
    PERFORM pg_temp.expect(pg_temp.sqlstate_of(format('SELECT quota.revoke_allocation(%L)', gen_random_uuid())) = '42704',
                           'revoking an unknown allocation is 42704');

    granted := quota.grant(pg_temp.subject(103), 'calls', 10);
    PERFORM quota.revoke_grant(granted);
    PERFORM pg_temp.expect(pg_temp.sqlstate_of(format('SELECT quota.revoke_grant(%L)', gen_random_uuid())) = '42704',
                           'revoking an unknown grant is 42704');

    PERFORM pg_temp.expect(pg_temp.sqlstate_of('SELECT quota.consume(NULL, ''calls'')') = '22004',
                           'a NULL subject is 22004, as on one server');
    PERFORM pg_temp.expect(pg_temp.sqlstate_of(format('SELECT quota.consume(%L, ''calls'', 0)', pg_temp.subject(1))) = '22023',
                           'a zero amount is 22023, as on one server');
    PERFORM pg_temp.expect(pg_temp.sqlstate_of(format('SELECT quota.require(%L, ''calls'', 1000)', pg_temp.subject(1))) = 'PT429',
                           'a denied require is PT429, as on one server');
    PERFORM pg_temp.expect(pg_temp.sqlstate_of('SELECT quota.create_plan(''sharded'')') = '42710',
                           'creating a plan that exists is 42710, as on one server');
    PERFORM pg_temp.expect(quota_router.configuration_agrees(), 'the shards'' plans still agree');
END
$$;
