-- After compaction under load (tests/concurrency/compaction.sh): every unit counted is
-- somewhere (ledger rows, rollups, or counted without rows), the audit is clean, and the
-- run did fold rows and close windows while the load ran.
DO $$
DECLARE
    expected constant bigint := current_setting('pgq.expected_units')::bigint;
    in_ledger bigint := (SELECT coalesce(sum(from_allowance + overage), 0) FROM quota.events WHERE kind IN ('consume', 'record'));
    in_rollups bigint := (SELECT coalesce(sum(counted + counted_without_ledger), 0) FROM quota.ledger_rollups);
    without_rows bigint := (SELECT coalesce(sum(counted_without_ledger), 0) FROM quota.counters);
    folded bigint := (SELECT coalesce(sum(events_folded), 0) FROM public.compaction_log);
    closed bigint := (SELECT coalesce(sum(windows_closed), 0) FROM public.compaction_log);
BEGIN
    IF in_ledger + in_rollups + without_rows <> expected THEN
        RAISE EXCEPTION 'units: % in the ledger + % in rollups + % counted without rows <> % counted',
            in_ledger, in_rollups, without_rows, expected;
    END IF;
    IF (SELECT coalesce(sum(used), 0) FROM quota.counters)
       + (SELECT coalesce(sum(counted + counted_without_ledger), 0) FROM quota.ledger_rollups WHERE window_closed) <> expected THEN
        RAISE EXCEPTION 'open counters plus closed windows do not add up to % units', expected;
    END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN
        RAISE EXCEPTION 'audit: %', (SELECT array_agg(a::text) FROM (SELECT * FROM quota.audit() LIMIT 5) AS a);
    END IF;
    IF folded = 0 OR closed = 0 THEN
        RAISE EXCEPTION 'compaction did nothing under load (% rows folded, % windows closed)', folded, closed;
    END IF;
    RAISE NOTICE 'compaction under load: % rows folded, % windows closed, % units all accounted for, audit clean',
        folded, closed, expected;
END $$;
