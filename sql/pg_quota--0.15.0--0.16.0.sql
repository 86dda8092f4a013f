-- pg_quota 0.15.0 -> 0.16.0: spending a grant becomes a HOT update. quota.grants'
-- spending-order index no longer names `remaining` in its predicate (an index that names a
-- changed column takes a new entry in every index of the table), and the table keeps a
-- fifth of each page free for the new versions of its rows. Nothing is rewritten: the
-- fillfactor applies to pages as they fill, the index is built again.
ALTER TABLE quota.grants SET (fillfactor = 80);
DROP INDEX quota.grants_spending_order;
CREATE INDEX grants_spending_order ON quota.grants (subject, metric, priority, expires_at, created_at, grant_id)
    WHERE revoked_at IS NULL;
