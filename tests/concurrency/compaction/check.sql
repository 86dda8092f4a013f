-- After compaction under load (tests/concurrency/compaction.sh): every unit counted is
-- somewhere (ledger rows, rollups, or counted without rows), no window compaction closed was
-- counted again, every refused late record was one into a closed window, the audit is
-- clean, and the run did fold rows and close windows while the load ran.
DO $$
DECLARE
    refused constant bigint := (SELECT count(*) FROM public.refused_records);
    expected constant bigint := current_setting('pgq.units_asked')::bigint - refused;
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
    IF EXISTS (SELECT FROM quota.counters AS c JOIN quota.ledger_rollups AS r
                 ON r.counted_in = c.subject AND r.metric = c.metric AND r.window_start = c.window_start AND r.window_closed) THEN
        RAISE EXCEPTION 'a window compaction closed was counted again';
    END IF;
    IF EXISTS (SELECT FROM public.refused_records AS f
                WHERE NOT EXISTS (SELECT FROM quota.ledger_rollups AS r
                                   WHERE r.counted_in = f.subject AND r.metric = 'calls' AND r.window_closed
                                     AND r.window_start = date_trunc('day', f.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')) THEN
        RAISE EXCEPTION 'a late record into a window that was not closed was refused';
    END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN
        RAISE EXCEPTION 'audit: %', (SELECT array_agg(a::text) FROM (SELECT * FROM quota.audit() LIMIT 5) AS a);
    END IF;
    IF folded = 0 OR closed = 0 THEN
        RAISE EXCEPTION 'compaction did nothing under load (% rows folded, % windows closed)', folded, closed;
    END IF;
    RAISE NOTICE 'compaction under load: % rows folded, % windows closed, % units all accounted for, % late records into closed windows refused, audit clean',
        folded, closed, expected, refused;
END $$;
