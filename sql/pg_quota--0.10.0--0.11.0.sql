-- pg_quota 0.10.0 -> 0.11.0: rollover of unused allowance (quota.limits' rollover_max and
-- rollover_windows, quota.grants' rollover_of, quota.usage_row's rollover_remaining).
-- Adding columns without defaults rewrites no table.

ALTER TABLE quota.limits
    ADD COLUMN rollover_max     bigint CHECK (rollover_max > 0),
    ADD COLUMN rollover_windows integer CHECK (rollover_windows BETWEEN 1 AND 100),
    ADD CONSTRAINT limits_rollover_max_of_a_rollover CHECK (rollover_windows IS NOT NULL OR rollover_max IS NULL),
    ADD CONSTRAINT limits_rollover_of_a_limited_repeating_window
        CHECK (rollover_windows IS NULL OR (allowance IS NOT NULL AND period <> 'lifetime'));

ALTER TABLE quota.grants ADD COLUMN rollover_of timestamptz;
CREATE UNIQUE INDEX grants_rollover ON quota.grants (subject, metric, rollover_of) WHERE rollover_of IS NOT NULL;

ALTER TYPE quota.usage_row ADD ATTRIBUTE rollover_remaining bigint;
