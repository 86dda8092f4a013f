-- pg_quota 0.17.0 -> 0.18.0: the value rules of the tables a wallet's call, a reserve and a
-- settle write become domains (PostgreSQL parses a table's CHECK expressions again on every
-- INSERT or UPDATE statement, a domain's once per session): quota.grants' metric and amount,
-- quota.event_grants' amount, quota.reservations' amount and status, and quota.rate_state's
-- cached rule (a rated consume writes its state on every call). The update trigger of
-- quota.grants that unmarks the fast path is split in two, each on the columns it reads, so
-- that a grant's spend (SET remaining) no longer parses the whole condition.
--
-- Nothing is rewritten (a column moved to a domain that has a constraint is rewritten):
-- each column moves to its domain while the domain has no constraint yet (a
-- binary-compatible change), the table's CHECK it replaces is dropped in the same
-- statement, and the domain's constraint is added after, NOT VALID, then validated, which
-- reads every row of the tables that use it (no row the library wrote can fail it: the
-- dropped CHECKs held the same rules; rate_state's allowed a value <= 0 on a row not
-- marked, which the library never writes). The partial indexes that name a moved column
-- (quota.grants' grants_rollover and grants_spending_order, quota.reservations'
-- reservations_held) are built again. ALTER TABLE holds an ACCESS EXCLUSIVE lock on the four
-- tables until the update commits: calls that use them wait meanwhile.
CREATE DOMAIN quota.positive_units AS bigint;
CREATE DOMAIN quota.metric_name AS text;
CREATE DOMAIN quota.hold_status AS text;

-- The trigger reads metric: it goes before the column moves, its two parts come after.
DROP TRIGGER forget_fast_path_on_update ON quota.grants;
ALTER TABLE quota.grants
    DROP CONSTRAINT grants_metric_check,
    DROP CONSTRAINT grants_amount_check,
    ALTER COLUMN metric TYPE quota.metric_name,
    ALTER COLUMN amount TYPE quota.positive_units;
ALTER TABLE quota.event_grants
    DROP CONSTRAINT event_grants_amount_check,
    ALTER COLUMN amount TYPE quota.positive_units;
ALTER TABLE quota.reservations
    DROP CONSTRAINT reservations_amount_check,
    DROP CONSTRAINT reservations_status_check,
    ALTER COLUMN amount TYPE quota.positive_units,
    ALTER COLUMN status TYPE quota.hold_status;
-- The rule cached beside a fast row: its table CHECK (positive when fast) becomes the domain
-- of each column (positive, or NULL on a row not marked, as the library writes them).
ALTER TABLE quota.rate_state
    DROP CONSTRAINT rate_state_check,
    ALTER COLUMN rule_limit TYPE quota.positive_units,
    ALTER COLUMN rule_per_us TYPE quota.positive_units,
    ALTER COLUMN rule_burst TYPE quota.positive_units;
-- The column default was the text 'held'; as a fresh install has it, the domain's.
ALTER TABLE quota.reservations ALTER COLUMN status SET DEFAULT 'held';

ALTER DOMAIN quota.positive_units ADD CONSTRAINT positive_units_check CHECK (VALUE > 0) NOT VALID;
ALTER DOMAIN quota.positive_units VALIDATE CONSTRAINT positive_units_check;
ALTER DOMAIN quota.metric_name ADD CONSTRAINT metric_name_check CHECK (VALUE ~ '^[a-z][a-z0-9_.:-]{0,62}$') NOT VALID;
ALTER DOMAIN quota.metric_name VALIDATE CONSTRAINT metric_name_check;
ALTER DOMAIN quota.hold_status ADD CONSTRAINT hold_status_check CHECK (VALUE IN ('held', 'settled', 'released', 'expired')) NOT VALID;
ALTER DOMAIN quota.hold_status VALIDATE CONSTRAINT hold_status_check;

CREATE TRIGGER forget_fast_path_on_refund AFTER UPDATE OF remaining ON quota.grants
    FOR EACH ROW WHEN (NEW.remaining > OLD.remaining)
    EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path_on_update AFTER UPDATE OF revoked_at, expires_at, subject, metric ON quota.grants
    FOR EACH ROW WHEN ((OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NULL)
                       OR (NEW.expires_at IS DISTINCT FROM OLD.expires_at
                           AND (NEW.expires_at IS NULL OR NEW.expires_at > OLD.expires_at))
                       OR NEW.subject <> OLD.subject OR NEW.metric <> OLD.metric)
    EXECUTE FUNCTION quota.forget_fast_path();
