-- Run on the router after spend.pgbench and retry.pgbench, with every shard's events and
-- counters copied into sharding_test.events and sharding_test.counters (shard numbered as
-- the cluster orders them). Raises on the first broken rule.
DO $$
DECLARE
    bad record;
BEGIN
    -- Every subject's rows on exactly one shard, the one the router routes it to.
    FOR bad IN
        SELECT subject, array_agg(DISTINCT shard) AS shards, quota_router.shard_number(subject) AS routed_to
          FROM (SELECT shard, subject FROM sharding_test.events UNION ALL SELECT shard, subject FROM sharding_test.counters) AS rows
         GROUP BY subject
        HAVING count(DISTINCT shard) <> 1 OR min(shard) <> quota_router.shard_number(subject)
    LOOP
        RAISE EXCEPTION 'subject % has rows on shards %, routed to %', bad.subject, bad.shards, bad.routed_to;
    END LOOP;

    -- No overspend, and no underspend: each subject allowed exactly min(50, its calls).
    FOR bad IN
        SELECT subject, count(*) AS calls, count(*) FILTER (WHERE kind = 'consume') AS allowed
          FROM sharding_test.events WHERE metric = 'calls'
         GROUP BY subject
        HAVING count(*) FILTER (WHERE kind = 'consume') <> least(50, count(*))
    LOOP
        RAISE EXCEPTION 'subject % allowed % of % calls (limit 50)', bad.subject, bad.allowed, bad.calls;
    END LOOP;
    IF (SELECT count(*) FROM sharding_test.events WHERE metric = 'calls') <> current_setting('pgq.spend_calls')::bigint THEN
        RAISE EXCEPTION 'the shards hold % calls, % were made',
            (SELECT count(*) FROM sharding_test.events WHERE metric = 'calls'), current_setting('pgq.spend_calls');
    END IF;
    IF EXISTS (SELECT FROM sharding_test.counters WHERE used > allowance) THEN
        RAISE EXCEPTION 'a counter is above its allowance';
    END IF;

    -- Keyed retries: one ledger row per request id, on one shard, and the counter counts
    -- each request once.
    FOR bad IN
        SELECT subject, idempotency_key, count(*) AS rows FROM sharding_test.events
         WHERE metric = 'keyed' GROUP BY subject, idempotency_key HAVING count(*) <> 1
    LOOP
        RAISE EXCEPTION 'request % of subject % has % ledger rows', bad.idempotency_key, bad.subject, bad.rows;
    END LOOP;
    FOR bad IN
        SELECT c.subject, c.used, e.requests FROM sharding_test.counters AS c
          JOIN (SELECT subject, count(*) AS requests FROM sharding_test.events WHERE metric = 'keyed' GROUP BY subject) AS e
            USING (subject)
         WHERE c.metric = 'keyed' AND c.used <> e.requests
    LOOP
        RAISE EXCEPTION 'subject % counted % for % distinct requests', bad.subject, bad.used, bad.requests;
    END LOOP;
    IF (SELECT count(DISTINCT subject) FROM sharding_test.events WHERE metric = 'keyed') <> 10 THEN
        RAISE EXCEPTION 'expected 10 subjects with keyed calls';
    END IF;

    -- Every shard's own audit, through the router.
    IF EXISTS (SELECT FROM quota.audit()) THEN
        RAISE EXCEPTION 'quota.audit() on the shards: %', (SELECT array_agg(a::text) FROM quota.audit() AS a);
    END IF;

    -- The merged top list is the top of all shards together: 12 subjects, each with its own
    -- usage of 'ranked' (subject 200 + n used n), spread over the shards; whole rows compared.
    FOR bad IN
        WITH used AS (
            SELECT subject, sum(amount)::bigint AS used FROM sharding_test.events
             WHERE metric = 'ranked' AND kind = 'consume' GROUP BY subject
        ), truth AS (
            SELECT row_number() OVER (ORDER BY used DESC, subject) AS rank, subject, 'sharded'::text AS plan, used,
                   round(100 * used / sum(used) OVER (), 2) AS share, 0::bigint AS denials
              FROM used ORDER BY used DESC, subject LIMIT 5
        ), merged AS (
            SELECT * FROM quota.top_consumers('ranked', now() - interval '1 hour', now() + interval '1 minute', 5)
        )
        SELECT 'missing' AS what, * FROM (SELECT * FROM truth EXCEPT SELECT * FROM merged) AS m
        UNION ALL
        SELECT 'unexpected', * FROM (SELECT * FROM merged EXCEPT SELECT * FROM truth) AS u
    LOOP
        RAISE EXCEPTION 'top_consumers through the router: % row %', bad.what, bad;
    END LOOP;
    IF (SELECT count(DISTINCT shard) FROM sharding_test.events WHERE metric = 'ranked') < 2 THEN
        RAISE EXCEPTION 'the ranked subjects are all on one shard: the merge is not tested';
    END IF;
END
$$;
