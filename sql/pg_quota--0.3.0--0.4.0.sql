-- pg_quota 0.3.0 -> 0.4.0: the counters' value rules (used and held are never negative) move
-- from table CHECK constraints, which PostgreSQL prepares again on every UPDATE of a counter,
-- to a domain, as the ledger's amounts did in 0.3.0; the two share it, renamed quota.units
-- (from quota.event_amount). The rules are the same. The domain gets its check only after
-- the columns have changed type, so that the change rewrites no table (binary-compatible,
-- no checks yet); adding the check then reads counters and the ledger once.
-- (0.4.0's faster fast path is in the library: it needs nothing more of the schema.)

CREATE DOMAIN quota.units AS bigint;

ALTER TABLE quota.counters
    DROP CONSTRAINT counters_used_check,
    DROP CONSTRAINT counters_held_check,
    ALTER COLUMN used TYPE quota.units,
    ALTER COLUMN held TYPE quota.units;

ALTER TABLE quota.events
    ALTER COLUMN amount TYPE quota.units,
    ALTER COLUMN from_allowance TYPE quota.units,
    ALTER COLUMN from_grants TYPE quota.units,
    ALTER COLUMN overage TYPE quota.units;

DROP DOMAIN quota.event_amount;

ALTER DOMAIN quota.units ADD CONSTRAINT units_check CHECK (VALUE >= 0);
