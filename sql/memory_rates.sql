-- The shared-memory limiter keeps each backend's rules in force per (subject, metric)
-- (src/shared/memory_rates.rs). What decides them is a subject's assignment, the default
-- plan, the plans' limits and the subject's rate overrides: a committed change to any of
-- them moves a generation counter in shared memory, and every backend resolves again.
-- Statement triggers: one call per statement, however many rows it changes. Without the
-- preload, quota.configuration_changed() does nothing.
CREATE FUNCTION quota.note_configuration_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM quota.configuration_changed();
    RETURN NULL;
END
$$;

CREATE TRIGGER note_configuration_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON quota.plans
    FOR EACH STATEMENT EXECUTE FUNCTION quota.note_configuration_change();
CREATE TRIGGER note_configuration_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON quota.limits
    FOR EACH STATEMENT EXECUTE FUNCTION quota.note_configuration_change();
CREATE TRIGGER note_configuration_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON quota.assignments
    FOR EACH STATEMENT EXECUTE FUNCTION quota.note_configuration_change();
CREATE TRIGGER note_configuration_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON quota.rate_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION quota.note_configuration_change();
