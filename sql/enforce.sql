-- quota.enforce: quotas on app tables that clients cannot walk past.
--
-- The trigger runs with the extension owner's rights (the writer needs no privilege on
-- schema quota), on tables and types the table's owner defines. So it never converts the
-- row or evaluates anything of the table's: quota.row_uuid and quota.row_units
-- (src/enforce.rs) read exactly the subject and amount columns from the tuple, by attribute
-- number, when their types are the built-in ones.

-- Trigger function, attached by quota.enforce_on():
--   AFTER INSERT OR UPDATE OF <subject>[, <amount>] OR DELETE ... FOR EACH ROW
--   EXECUTE FUNCTION quota.enforce(metric, subject_column, amount)
-- amount is a whole number, or the name of an integer or numeric column (NULL counts 0, a
-- fraction is rounded up). AFTER, so that only rows really written count (not those an
-- INSERT ... ON CONFLICT DO NOTHING skipped); a denial (PT429) fails the statement.
--   INSERT: charges the row's amount.
--   UPDATE: a row that grows is charged the growth; one that shrinks gives it back
--   (lifetime metrics). A row that moves to another subject is charged there and gives
--   back to the old subject what it was charged (lifetime metrics; a windowed metric
--   charges the new subject only the growth).
--   DELETE: gives back the row's amount (lifetime metrics: "at most 3 projects" counts
--   live rows; "20 exports a month" stays spent).
-- What a table gives back is bounded by what it charged (quota.enforced_charges).
CREATE FUNCTION quota.enforce() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    metric text := TG_ARGV[0];
    subject_column text := coalesce(TG_ARGV[1], 'user_id');
    amount_spec text := coalesce(TG_ARGV[2], '1');
    old_subject uuid;
    new_subject uuid;
    old_amount bigint := 0;
    new_amount bigint := 0;
    moved_amount bigint;
BEGIN
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' OR TG_NARGS NOT BETWEEN 1 AND 3 THEN
        RAISE EXCEPTION 'quota.enforce(metric [, subject_column [, amount]]) must run AFTER INSERT OR UPDATE OR DELETE, FOR EACH ROW (trigger % on %)',
            TG_NAME, TG_TABLE_NAME
            USING ERRCODE = '22023', HINT = 'Attach it with quota.enforce_on(table, metric, subject_column, amount).';
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_amount := quota.row_units(NEW, amount_spec, TG_TABLE_NAME);
        new_subject := quota.row_uuid(NEW, subject_column, TG_TABLE_NAME);
        IF new_subject IS NULL AND new_amount > 0 THEN
            RAISE EXCEPTION 'quota.enforce: %.% is NULL, so the row has no subject to charge', TG_TABLE_NAME, subject_column
                USING ERRCODE = '23502';
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_amount := quota.row_units(OLD, amount_spec, TG_TABLE_NAME);
        old_subject := quota.row_uuid(OLD, subject_column, TG_TABLE_NAME);
    END IF;
    IF new_subject IS NOT DISTINCT FROM old_subject THEN
        IF new_amount > old_amount THEN
            PERFORM quota.enforce_charge(TG_RELID, new_subject, metric, new_amount - old_amount);
        ELSIF new_amount < old_amount THEN
            PERFORM quota.enforce_refund(TG_RELID, old_subject, metric, old_amount - new_amount);
        END IF;
        RETURN NULL;
    END IF;
    -- A move (or an insert or delete): the new subject is charged the whole row for a
    -- lifetime metric, only its growth for a windowed one. Both subjects are handled in uuid
    -- order, so that opposite moves between two subjects cannot deadlock.
    IF new_subject IS NOT NULL AND new_amount > 0 THEN
        moved_amount := CASE WHEN old_subject IS NULL OR quota.is_lifetime(new_subject, metric) THEN new_amount
                             ELSE greatest(new_amount - old_amount, 0) END;
    END IF;
    IF old_subject IS NULL OR (new_subject IS NOT NULL AND new_subject < old_subject) THEN
        PERFORM quota.enforce_charge(TG_RELID, new_subject, metric, moved_amount) WHERE moved_amount > 0;
        PERFORM quota.enforce_refund(TG_RELID, old_subject, metric, old_amount) WHERE old_subject IS NOT NULL;
    ELSE
        PERFORM quota.enforce_refund(TG_RELID, old_subject, metric, old_amount);
        PERFORM quota.enforce_charge(TG_RELID, new_subject, metric, moved_amount) WHERE moved_amount > 0;
    END IF;
    RETURN NULL;
END
$$;

-- Whether the subject's current window of the metric is a lifetime window.
CREATE FUNCTION quota.is_lifetime(subject uuid, metric text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.resets_at IS NULL FROM quota.check(is_lifetime.subject, is_lifetime.metric) AS d
$$;

-- For quota.enforce: charges a table's row to its subject. The table's account is locked
-- first, then the counter (by quota.consume), the order quota.enforce_refund uses too. A
-- denial raises as require's does, naming the table.
CREATE FUNCTION quota.enforce_charge(enforced_table regclass, subject uuid, metric text, amount bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    d quota.decision;
BEGIN
    INSERT INTO quota.enforced_charges AS c (subject, metric, enforced_table, units)
    VALUES (enforce_charge.subject, enforce_charge.metric, enforce_charge.enforced_table, enforce_charge.amount)
    ON CONFLICT (subject, metric, enforced_table) DO UPDATE SET units = c.units + excluded.units;
    d := quota.consume(enforce_charge.subject, enforce_charge.metric, enforce_charge.amount);
    IF NOT d.allowed THEN
        PERFORM quota.raise_denied(enforce_charge.subject, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance,
                                   d.remaining, d.window_start, d.resets_at, d.retry_after, 'enforce',
                                   enforce_charge.enforced_table::text);
    END IF;
END
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
-- column. Runs as the caller, who must own the table (and have EXECUTE on quota.enforce).
CREATE FUNCTION quota.enforce_on(target regclass, metric text, subject_column text DEFAULT 'user_id',
                                 amount text DEFAULT '1') RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subject_type regtype;
    amount_type regtype;
    columns text;
BEGIN
    IF target IS NULL OR metric IS NULL OR subject_column IS NULL OR amount IS NULL THEN
        RAISE EXCEPTION 'quota.enforce_on: arguments must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT quota.known_metric(metric) THEN
        RAISE EXCEPTION 'unknown metric "%"', metric
            USING ERRCODE = '42704', HINT = 'A metric exists once a plan has a limit for it: see quota.create_plan().';
    END IF;
    SELECT a.atttypid INTO subject_type FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = target AND a.attname = subject_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF subject_type IS NULL THEN
        RAISE EXCEPTION 'table % has no column %', target, subject_column USING ERRCODE = '42703';
    ELSIF subject_type <> 'uuid'::regtype THEN
        RAISE EXCEPTION 'column %.% is %, not uuid', target, subject_column, subject_type USING ERRCODE = '42804';
    END IF;
    columns := pg_catalog.quote_ident(subject_column);
    IF amount !~ '^[0-9]+$' THEN
        SELECT a.atttypid INTO amount_type FROM pg_catalog.pg_attribute AS a
         WHERE a.attrelid = target AND a.attname = amount AND a.attnum > 0 AND NOT a.attisdropped;
        IF amount_type IS NULL THEN
            RAISE EXCEPTION 'amount % is neither a number nor a column of table %', amount, target USING ERRCODE = '42703';
        ELSIF amount_type NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype) THEN
            RAISE EXCEPTION 'column %.% is %, not an integer or numeric type', target, amount, amount_type USING ERRCODE = '42804';
        END IF;
        columns := columns || ', ' || pg_catalog.quote_ident(amount);
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OF %s OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION quota.enforce(%L, %L, %L)',
                   'quota_enforce_' || metric, columns, target, metric, subject_column, amount);
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
