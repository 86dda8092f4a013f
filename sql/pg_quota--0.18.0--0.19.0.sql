-- pg_quota 0.18.0 -> 0.19.0: spent grants leave the index of usable grants.
--
-- quota.grants' grants_spending_order kept every grant not revoked, spent ones too (a spend
-- changes only `remaining`, left out of the index so that spends stay HOT): a wallet's every
-- call read all the grants it ever had (0.81-0.91x the throughput with 20 spent grants). The new
-- generated column `spent` (remaining = 0) changes only on the spend that takes a grant's
-- last unit, and the index leaves out spent grants; the library reads it from 0.19.0 on
-- (before the update it reads the grants as 0.18.0 did).
--
-- Adding a stored generated column rewrites quota.grants and its indexes, under an ACCESS
-- EXCLUSIVE lock held until the update commits: calls that read or spend grants wait
-- meanwhile (a table of a million grants rewrites in seconds).
-- The index goes first: the rewrite would build it again, only to be dropped.
DROP INDEX quota.grants_spending_order;
ALTER TABLE quota.grants
    ADD COLUMN spent boolean NOT NULL GENERATED ALWAYS AS (remaining = 0) STORED;
CREATE INDEX grants_spending_order ON quota.grants (subject, metric, priority, expires_at, created_at, grant_id)
    WHERE revoked_at IS NULL AND NOT spent;
