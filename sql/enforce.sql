-- quota.enforce: quotas on app tables that clients cannot walk past.
--
-- The trigger runs with the extension owner's rights (the writer needs no privilege on
-- schema quota), on tables and types the table's owner defines. So it never converts the
-- row or evaluates anything of the table's: it (src/enforce.rs) reads exactly the subject
-- and amount columns from the tuple, by attribute number, when their types are the built-in
-- ones (as quota.row_uuid does for quota.on_signup).

-- Trigger function, attached by quota.enforce_on():
--   AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW
--   EXECUTE FUNCTION quota.enforce(metric, subject_column, amount)
-- amount is a whole number, or the name of an integer or numeric column (NULL counts 0, a
-- fraction is rounded up). AFTER, so that only rows really written count (not those an
-- INSERT ... ON CONFLICT DO NOTHING skipped); a denial (PT429, raised by quota.raise_denied)
-- fails the statement. On every UPDATE, not only those naming its columns (UPDATE OF), so
-- that what the table's own BEFORE triggers change is charged too; an update that changed
-- neither column returns at once. The denied subject is the new row's. Written in Rust
-- (enforce_trigger, src/enforce.rs) since 0.20.0: a PL/pgSQL trigger that passed NEW and OLD
-- to Rust cost an insert about a tenth of its throughput.
CREATE FUNCTION quota.enforce() RETURNS trigger
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enforce_trigger';

-- Whether the subject's current window of the metric is a lifetime window.
CREATE FUNCTION quota.is_lifetime(subject uuid, metric text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.resets_at IS NULL FROM quota.check(is_lifetime.subject, is_lifetime.metric) AS d
$$;

-- For quota.enforce: gives back what a row was charged, at most what its table still holds
-- for the subject, to the subject's current window when that is a lifetime window.
CREATE FUNCTION quota.enforce_refund(enforced_table regclass, subject uuid, metric text, amount bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    refund bigint;
BEGIN
    SELECT least(c.units, amount) INTO refund FROM quota.enforced_charges AS c
     WHERE c.subject = enforce_refund.subject AND c.metric = enforce_refund.metric
       AND c.enforced_table = enforce_refund.enforced_table
       FOR UPDATE;
    IF coalesce(refund, 0) = 0 THEN
        RETURN;
    END IF;
    UPDATE quota.enforced_charges AS c SET units = c.units - refund
     WHERE c.subject = enforce_refund.subject AND c.metric = enforce_refund.metric
       AND c.enforced_table = enforce_refund.enforced_table;
    IF quota.is_lifetime(subject, metric) THEN
        PERFORM quota.give_back(subject, metric, refund);
    END IF;
END
$$;

-- Whether a plan has a limit for the metric: enforce_on asks it, as its caller, who may not
-- read quota.limits (or, through row level security, every plan's limits).
CREATE FUNCTION quota.known_metric(metric text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM quota.limits AS l WHERE l.metric = known_metric.metric)
$$;

-- Attaches quota.enforce() to a table, checking its arguments first: the subject column
-- exists and is a uuid, the metric exists, the amount is a number or an integer or numeric
-- column; neither column is a virtual generated column (PostgreSQL 18), which a trigger's
-- row has no value for. Runs as the caller, who must own the table (and have EXECUTE on quota.enforce).
CREATE FUNCTION quota.enforce_on(target regclass, metric text, subject_column text DEFAULT 'user_id',
                                 amount text DEFAULT '1') RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subject_type regtype;
    amount_type regtype;
    is_virtual boolean;
BEGIN
    IF target IS NULL OR metric IS NULL OR subject_column IS NULL OR amount IS NULL THEN
        RAISE EXCEPTION 'quota.enforce_on: arguments must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT quota.known_metric(metric) THEN
        RAISE EXCEPTION 'unknown metric "%"', metric
            USING ERRCODE = '42704', HINT = 'A metric exists once a plan has a limit for it: see quota.create_plan().';
    END IF;
    SELECT a.atttypid, a.attgenerated = 'v' INTO subject_type, is_virtual FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = target AND a.attname = subject_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF subject_type IS NULL THEN
        RAISE EXCEPTION 'table % has no column %', target, subject_column USING ERRCODE = '42703';
    ELSIF subject_type <> 'uuid'::regtype THEN
        RAISE EXCEPTION 'column %.% is %, not uuid', target, subject_column, subject_type USING ERRCODE = '42804';
    ELSIF is_virtual THEN
        RAISE EXCEPTION 'column %.% is a virtual generated column, which a trigger cannot read', target, subject_column
            USING ERRCODE = '0A000', HINT = 'Declare it GENERATED ALWAYS AS (...) STORED, or charge a column it is computed from.';
    END IF;
    IF amount !~ '^[0-9]+$' THEN
        SELECT a.atttypid, a.attgenerated = 'v' INTO amount_type, is_virtual FROM pg_catalog.pg_attribute AS a
         WHERE a.attrelid = target AND a.attname = amount AND a.attnum > 0 AND NOT a.attisdropped;
        IF amount_type IS NULL THEN
            RAISE EXCEPTION 'amount % is neither a number nor a column of table %', amount, target USING ERRCODE = '42703';
        ELSIF amount_type NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype) THEN
            RAISE EXCEPTION 'column %.% is %, not an integer or numeric type', target, amount, amount_type USING ERRCODE = '42804';
        ELSIF is_virtual THEN
            RAISE EXCEPTION 'column %.% is a virtual generated column, which a trigger cannot read', target, amount
                USING ERRCODE = '0A000', HINT = 'Declare it GENERATED ALWAYS AS (...) STORED, or charge a column it is computed from.';
        END IF;
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION quota.enforce(%L, %L, %L)',
                   'quota_enforce_' || metric, target, metric, subject_column, amount);
END
$$;

-- Removes what quota.enforce_on() attached. The table's charges stay counted.
CREATE FUNCTION quota.enforce_off(target regclass, metric text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'quota_enforce_' || metric, target);
END
$$;
