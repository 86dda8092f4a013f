-- pg_quota 0.4.0 -> 0.5.0: quota.reservations loses settle_event_id, a column no version
-- ever wrote (it is NULL in every row). The settle event of a reservation is the ledger row
-- that carries its reservation_id (index events_reservation). Dropping a column rewrites
-- nothing: PostgreSQL only marks it dropped.

ALTER TABLE quota.reservations DROP COLUMN settle_event_id;
