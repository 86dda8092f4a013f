-- pg_quota 0.21.0 -> 0.22.0: the enforce trigger sees every UPDATE.
--
-- quota.enforce_on attached the trigger to UPDATE OF its columns, which PostgreSQL fires only
-- for updates that name them: a table's own BEFORE trigger that set the amount or the subject
-- (size_mb := length(content)) grew or moved a row uncharged. It now fires on every UPDATE
-- and returns at once when neither column changed. enforce_on also refuses a virtual
-- generated column (PostgreSQL 18), which has no value in a trigger's row.

-- Attaches quota.enforce() to a table, checking its arguments first: the subject column
-- exists and is a uuid, the metric exists, the amount is a number or an integer or numeric
-- column; neither column is a virtual generated column (PostgreSQL 18), which a trigger's
-- row has no value for. Runs as the caller, who must own the table (and have EXECUTE on quota.enforce).
CREATE OR REPLACE FUNCTION quota.enforce_on(target regclass, metric text, subject_column text DEFAULT 'user_id',
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

-- Every trigger of quota.enforce that fires only on UPDATE OF its columns, as enforce_on
-- attached them until now, becomes the same trigger (name, arguments, enabled state) on
-- every UPDATE; one on a partitioned table is replaced there, and its partitions' copies
-- follow. One with a WHEN condition, or on a table this role cannot alter, is left as it was,
-- with a WARNING saying how to replace it.
DO $$
DECLARE
    t record;
    nul constant bytea := pg_catalog.decode('00', 'hex');
    rest bytea;
    cut integer;
    args text[];
BEGIN
    FOR t IN SELECT tg.tgrelid::regclass AS target, tg.tgname, tg.tgenabled, tg.tgqual IS NOT NULL AS has_when,
                    tg.tgargs, tg.tgnargs
               FROM pg_catalog.pg_trigger AS tg
              WHERE tg.tgfoid = 'quota.enforce()'::regprocedure AND tg.tgparentid = 0
                AND pg_catalog.array_length(tg.tgattr::int2[], 1) > 0
              ORDER BY tg.oid
    LOOP
        -- The arguments, each ended by a zero byte.
        rest := t.tgargs;
        args := '{}';
        FOR i IN 1 .. t.tgnargs LOOP
            cut := pg_catalog.position(rest, nul);
            args := args || pg_catalog.convert_from(pg_catalog.substr(rest, 1, cut - 1), pg_catalog.getdatabaseencoding());
            rest := pg_catalog.substr(rest, cut + 1);
        END LOOP;
        IF t.has_when THEN
            RAISE WARNING 'trigger % on % has a WHEN condition and still fires only on updates of its columns', t.tgname, t.target
                USING HINT = 'Recreate it AFTER INSERT OR UPDATE OR DELETE, without UPDATE OF.';
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION quota.enforce(%s)',
                           t.tgname, t.target, (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(a), ', ' ORDER BY n)
                                                  FROM pg_catalog.unnest(args) WITH ORDINALITY AS x (a, n)));
            -- CREATE OR REPLACE enables the trigger: a disabled one stays disabled.
            IF t.tgenabled <> 'O' THEN
                EXECUTE format('ALTER TABLE %s %s TRIGGER %I', t.target,
                               CASE t.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE ALWAYS' END, t.tgname);
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'trigger % on % still fires only on updates of its columns: %', t.tgname, t.target, SQLERRM
                USING HINT = 'As the table''s owner, recreate it AFTER INSERT OR UPDATE OR DELETE, without UPDATE OF (quota.enforce_on() does, for the triggers it attached).';
        END;
    END LOOP;
END
$$;
