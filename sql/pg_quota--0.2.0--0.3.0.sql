-- pg_quota 0.2.0 -> 0.3.0: the ledger's value rules (and reservation keys') move from table
-- CHECK constraints to domains, which PostgreSQL prepares once per session instead of on
-- every INSERT (see sql/schema.sql). The rules are the same. The domains get their checks
-- only after the columns have changed type, so that the change does not rewrite the ledger
-- (binary-compatible, no checks yet); adding the checks then reads it once.

CREATE DOMAIN quota.idempotency_key AS text;
CREATE DOMAIN quota.event_kind AS text;
CREATE DOMAIN quota.event_amount AS bigint;

ALTER TABLE quota.reservations
    DROP CONSTRAINT reservations_idempotency_key_check,
    ALTER COLUMN idempotency_key TYPE quota.idempotency_key;

ALTER TABLE quota.events
    DROP CONSTRAINT events_kind_check,
    DROP CONSTRAINT events_amount_check,
    DROP CONSTRAINT events_from_allowance_check,
    DROP CONSTRAINT events_from_grants_check,
    DROP CONSTRAINT events_overage_check,
    DROP CONSTRAINT events_idempotency_key_check,
    ALTER COLUMN kind TYPE quota.event_kind,
    ALTER COLUMN amount TYPE quota.event_amount,
    ALTER COLUMN from_allowance TYPE quota.event_amount,
    ALTER COLUMN from_grants TYPE quota.event_amount,
    ALTER COLUMN overage TYPE quota.event_amount,
    ALTER COLUMN idempotency_key TYPE quota.idempotency_key;

ALTER DOMAIN quota.idempotency_key
    ADD CONSTRAINT idempotency_key_check CHECK (length(VALUE) BETWEEN 1 AND 255);
ALTER DOMAIN quota.event_kind
    ADD CONSTRAINT event_kind_check CHECK (VALUE IN ('consume', 'record', 'settle', 'reserve', 'release',
                                                     'give_back', 'denial', 'reset'));
ALTER DOMAIN quota.event_amount ADD CONSTRAINT event_amount_check CHECK (VALUE >= 0);
