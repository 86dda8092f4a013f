//! What the enforce trigger (src/enforce.rs) runs: the account of what each table charged a
//! subject (quota.enforced_charges, which bounds what a delete may give back), the refund
//! and the lifetime test of sql/enforce.sql.

use pgrx::pg_sys::Oid;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use super::{column, not_null, query, query_row, the_row, Kept};
use crate::error::{QResult, QuotaError};

thread_local! {
    // Locks the table's account before consume locks the counter: the order
    // quota.enforce_refund locks them in too.
    static CHARGE: Kept = const { Kept::new(
        "INSERT INTO quota.enforced_charges AS c (subject, metric, enforced_table, units)
         VALUES ($subject, $metric, $enforced_table::regclass, $amount)
         ON CONFLICT (subject, metric, enforced_table) DO UPDATE SET units = c.units + excluded.units",
    ) };
    static REFUND: Kept = const { Kept::new(
        "SELECT quota.enforce_refund($enforced_table::regclass, $subject, $metric, $amount)",
    ) };
    // The function that raises a denial, looked up at each denial (a kept plan would keep an
    // OID that DROP and CREATE EXTENSION in the same session replace), and the table's name
    // as the denial names it.
    static DENIAL_RAISER: Kept = const { Kept::new(
        "SELECT pg_catalog.to_regprocedure($raiser)::pg_catalog.oid AS function,
                $enforced_table::pg_catalog.regclass::pg_catalog.text AS source_table",
    ) };
    // Every leaf of the table's partition tree is a table (a foreign one's row has no
    // transaction of its own to pair by) with the trigger (its arguments) enabled in the
    // session's replication role and without a WHEN condition, and no BEFORE ROW INSERT
    // trigger that is not disabled (it could skip the row).
    static INSERT_HALF_FIRES: Kept = const { Kept::new(
        "WITH enabled AS (
             SELECT CASE pg_catalog.current_setting('session_replication_role') WHEN 'replica' THEN '{A,R}'::\"char\"[]
                         ELSE '{O,A}'::\"char\"[] END AS states)
         SELECT NOT EXISTS (
             SELECT FROM pg_catalog.pg_partition_tree(pg_catalog.pg_partition_root($enforced_table::pg_catalog.regclass)) AS p
               JOIN pg_catalog.pg_class AS leaf ON leaf.oid = p.relid
              WHERE p.isleaf
                AND (leaf.relkind <> 'r'
                     OR NOT EXISTS (SELECT FROM pg_catalog.pg_trigger AS t, pg_catalog.pg_trigger AS mine, enabled
                                     WHERE mine.oid = $trigger AND t.tgrelid = p.relid AND t.tgfoid = mine.tgfoid
                                       AND t.tgargs = mine.tgargs AND t.tgqual IS NULL AND t.tgenabled = ANY (enabled.states))
                     OR EXISTS (SELECT FROM pg_catalog.pg_trigger AS t
                                 WHERE t.tgrelid = p.relid AND t.tgenabled <> 'D' AND (t.tgtype & 7) = 7))) AS fires",
    ) };
    static IS_LIFETIME: Kept = const { Kept::new(
        "SELECT quota.is_lifetime($subject, $metric) AS lifetime",
    ) };
}

/// Adds `amount` to what the table charged the subject.
pub fn charge(client: &SpiClient, enforced_table: Oid, subject: Uuid, metric: &str, amount: i64) -> QResult<()> {
    let args = [
        ("subject", subject.into()),
        ("metric", metric.into()),
        ("enforced_table", enforced_table.into()),
        ("amount", amount.into()),
    ];
    query(client, &CHARGE, args, |_| Ok(())).map(drop)
}

/// Gives back what a row was charged, at most what its table still holds for the subject
/// (quota.enforce_refund).
pub fn refund(client: &SpiClient, enforced_table: Oid, subject: Uuid, metric: &str, amount: i64) -> QResult<()> {
    let args = [
        ("enforced_table", enforced_table.into()),
        ("subject", subject.into()),
        ("metric", metric.into()),
        ("amount", amount.into()),
    ];
    query(client, &REFUND, args, |_| Ok(())).map(drop)
}

/// Whether the INSERT half of a row that an UPDATE moves out of `enforced_table` (a
/// partition) fires `trigger`'s twin on whichever partition the row goes to, and reaches it.
pub fn insert_half_fires(client: &SpiClient, enforced_table: Oid, trigger: Oid) -> QResult<bool> {
    let args = [("enforced_table", enforced_table.into()), ("trigger", trigger.into())];
    the_row(query_row(client, &INSERT_HALF_FIRES, args, |row| not_null(row, "fires"))?)
}

/// Whether the subject's current window of the metric is a lifetime window.
pub fn is_lifetime(client: &SpiClient, subject: Uuid, metric: &str) -> QResult<bool> {
    let args = [("subject", subject.into()), ("metric", metric.into())];
    the_row(query_row(client, &IS_LIFETIME, args, |row| not_null(row, "lifetime"))?)
}

/// What raises the denial of a row of a table: quota.raise_denied, and the table's name.
pub struct DenialRaiser {
    pub function: Oid,
    pub source_table: String,
}

/// quota.raise_denied, and the name the denial gives `enforced_table`.
pub fn denial_raiser(client: &SpiClient, enforced_table: Oid) -> QResult<DenialRaiser> {
    // Types qualified: nothing is looked up in a schema a user can create objects in.
    let raiser = "quota.raise_denied(pg_catalog.uuid, pg_catalog.text, pg_catalog.text, pg_catalog.int8, pg_catalog.int8, \
                  pg_catalog.int8, pg_catalog.int8, pg_catalog.int8, pg_catalog.timestamptz, pg_catalog.timestamptz, \
                  pg_catalog.timestamptz, pg_catalog.text, pg_catalog.text)";
    let args = [("raiser", raiser.into()), ("enforced_table", enforced_table.into())];
    the_row(query_row(client, &DENIAL_RAISER, args, |row| {
        let function = column(row, "function")?
            .ok_or_else(|| QuotaError::internal("quota.raise_denied is missing: quota.enforce cannot raise its denial"))?;
        Ok(DenialRaiser { function, source_table: not_null(row, "source_table")? })
    })?)
}
