DO $$
DECLARE
    live bigint := (SELECT count(*) FROM public.projects WHERE user_id = s(9000));
    counted bigint := (SELECT used FROM quota.counters WHERE subject = s(9000) AND metric = 'projects');
BEGIN
    IF live <> 3 THEN RAISE EXCEPTION '% live projects after % attempts, expected exactly 3', live, current_setting('pgq.calls'); END IF;
    IF counted <> 3 THEN RAISE EXCEPTION 'counter % <> 3 live projects', counted; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'enforce: % concurrent attempts to create a project, exactly 3 exist', current_setting('pgq.calls');
END $$;
