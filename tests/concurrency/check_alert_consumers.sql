-- 32 consumers claiming from one outbox: every alert was claimed once (no consumer received
-- one that another held within its visibility) and acknowledged; none is left.
DO $$
DECLARE
    alerts bigint := (SELECT count(*) FROM quota.alerts WHERE subject BETWEEN s(20001) AND s(23000));
    claimed_twice bigint := (SELECT count(*) FROM quota.alerts WHERE subject BETWEEN s(20001) AND s(23000) AND attempts <> 1);
    undelivered bigint := (SELECT count(*) FROM quota.alerts WHERE subject BETWEEN s(20001) AND s(23000) AND delivered_at IS NULL);
    consumers bigint := (SELECT count(DISTINCT claimed_by) FROM quota.alerts WHERE subject BETWEEN s(20001) AND s(23000));
BEGIN
    IF alerts <> 3000 THEN RAISE EXCEPTION '% alerts, 3000 expected', alerts; END IF;
    IF claimed_twice > 0 THEN RAISE EXCEPTION '% alerts claimed more than once', claimed_twice; END IF;
    IF undelivered > 0 THEN RAISE EXCEPTION '% alerts left undelivered', undelivered; END IF;
    IF consumers < 16 THEN RAISE EXCEPTION 'only % consumers took part: too few to prove anything', consumers; END IF;
    RAISE NOTICE 'alert consumers: % calls, % alerts claimed once each by % consumers and acknowledged',
        current_setting('pgq.calls'), alerts, consumers;
END $$;
