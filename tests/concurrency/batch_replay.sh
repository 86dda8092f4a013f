#!/usr/bin/env bash
# Replaying a batch of 10,000 recorded events twice, in a different order, gives the same
# counters, and the ledger explains them (quota.audit() is empty).
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
db=$1
psql -d "$db" <<'SQL'
SELECT quota.create_plan('sync', '{"notes": {"limit": 500, "per": "day"}}');
CREATE TABLE batch AS
SELECT n, jsonb_build_object(
           'subject', s(7000 + n % 50), 'metric', 'notes', 'amount', 1 + n % 7,
           'idempotency_key', 'offline-' || n,
           'occurred_at', to_char((now() - (n % 72) * interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'metadata', jsonb_build_object('device', n % 3)) AS event
  FROM generate_series(1, 10000) AS n;
SELECT quota.assign_plan(s(7000 + k), 'sync') FROM generate_series(0, 49) AS k;
SELECT count(*) FILTER (WHERE NOT replayed) AS first_pass
  FROM quota.record_batch((SELECT jsonb_agg(event ORDER BY n) FROM batch));
CREATE TABLE after_first AS SELECT subject, metric, window_start, used FROM quota.counters WHERE metric = 'notes';
DO $$
DECLARE replayed_count bigint;
BEGIN
    SELECT count(*) FILTER (WHERE replayed) INTO replayed_count
      FROM quota.record_batch((SELECT jsonb_agg(event ORDER BY md5(n::text)) FROM batch));
    IF replayed_count <> 10000 THEN RAISE EXCEPTION 'only % of 10000 replayed', replayed_count; END IF;
    IF EXISTS (SELECT subject, metric, window_start, used FROM quota.counters WHERE metric = 'notes'
               EXCEPT SELECT * FROM after_first)
       OR EXISTS (SELECT * FROM after_first EXCEPT
                  SELECT subject, metric, window_start, used FROM quota.counters WHERE metric = 'notes') THEN
        RAISE EXCEPTION 'counters changed on replay';
    END IF;
    IF (SELECT sum(used) FROM after_first) <> (SELECT sum(1 + n % 7) FROM batch) THEN
        RAISE EXCEPTION 'counters % do not add up to the batch %', (SELECT sum(used) FROM after_first), (SELECT sum(1 + n % 7) FROM batch);
    END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'batch replay: 10000 events recorded into % windows, replayed in another order: counters unchanged',
        (SELECT count(*) FROM after_first);
END $$;
SQL
