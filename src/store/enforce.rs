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
