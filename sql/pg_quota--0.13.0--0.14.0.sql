-- pg_quota 0.13.0 -> 0.14.0: the enforce trigger decides a row in one call. quota.enforce()
-- is replaced in place (every trigger quota.enforce_on() attached keeps working): it calls
-- the new quota.enforce_row() (src/enforce.rs), which reads the row, charges or gives back
-- and returns the denial it raises; quota.enforce_charge(), which it called per charge, is
-- gone (the charge is made in Rust). Nothing is rewritten.
CREATE FUNCTION quota."enforce_row"(
	"enforced_table" oid,
	"table_name" TEXT,
	"metric" TEXT,
	"subject_column" TEXT,
	"amount" TEXT,
	"new" anyelement,
	"old" anyelement
) RETURNS quota.decision
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'enforce_row_wrapper';
REVOKE EXECUTE ON FUNCTION quota.enforce_row(oid, text, text, text, text, anyelement, anyelement) FROM PUBLIC;

CREATE OR REPLACE FUNCTION quota.enforce() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d quota.decision;
BEGIN
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' OR TG_NARGS NOT BETWEEN 1 AND 3 THEN
        RAISE EXCEPTION 'quota.enforce(metric [, subject_column [, amount]]) must run AFTER INSERT OR UPDATE OR DELETE, FOR EACH ROW (trigger % on %)',
            TG_NAME, TG_TABLE_NAME
            USING ERRCODE = '22023', HINT = 'Attach it with quota.enforce_on(table, metric, subject_column, amount).';
    END IF;
    d := quota.enforce_row(TG_RELID, TG_TABLE_NAME, TG_ARGV[0], coalesce(TG_ARGV[1], 'user_id'), coalesce(TG_ARGV[2], '1'),
                           NEW, OLD);
    IF NOT d.allowed THEN
        PERFORM quota.raise_denied(quota.row_uuid(NEW, coalesce(TG_ARGV[1], 'user_id'), TG_TABLE_NAME), d.metric, d.reason,
                                   d.amount, d.used, d.reserved, d.allowance, d.remaining, d.window_start, d.resets_at,
                                   d.retry_after, 'enforce', TG_RELID::regclass::text);
    END IF;
    RETURN NULL;
END
$$;

DROP FUNCTION quota.enforce_charge(regclass, uuid, text, bigint);
