DO $$
DECLARE
    live bigint := (SELECT count(*) FROM public.projects WHERE user_id = s(9000));
    counted bigint := (SELECT used FROM quota.counters WHERE subject = s(9000) AND metric = 'projects');
    created bigint := (SELECT count(*) FROM quota.events WHERE subject = s(9000) AND kind = 'consume');
    deleted bigint := (SELECT count(*) FROM quota.events WHERE subject = s(9000) AND kind = 'give_back' AND amount > 0);
BEGIN
    IF live > 3 THEN RAISE EXCEPTION '% live projects, the limit is 3', live; END IF;
    IF counted <> live THEN RAISE EXCEPTION 'counter % <> % live projects', counted, live; END IF;
    IF created - deleted <> live THEN RAISE EXCEPTION 'created % - deleted % <> live %', created, deleted, live; END IF;
    IF created < 10 THEN RAISE EXCEPTION 'only % projects were ever created', created; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'enforce churn: % projects created and % deleted by concurrent sessions; the counter equals the % live rows',
        created, deleted, live;
END $$;
