//! The enforce trigger, `quota.enforce` (sql/enforce.sql declares it and attaches it with
//! `quota.enforce_on`), and what it and `quota.on_signup` read from a row: the subject and
//! the amount, taken from the trigger's tuple by attribute number, with their built-in types
//! checked.
//!
//! Both triggers run with the extension owner's rights. Converting the row (`to_jsonb(NEW)`,
//! a cast, a type's output function) would run whatever the table's owner attached to the
//! types of its columns with those rights. These functions read only the one attribute asked
//! for, and only when its type is exactly a built-in one (`uuid`; `smallint`, `integer`,
//! `bigint`, `numeric`), so nothing a user defines is ever evaluated.

use std::cmp::Ordering;
use std::num::NonZeroUsize;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyElement, AnyNumeric, Uuid};

use quota_rules::decide::Decision;

use crate::error::{raise, required, sql_call, QResult, QuotaError};
use crate::spending::consume_units;
use crate::store::enforce as charges;
use crate::tuples::decision_tuple;

/// What the enforce trigger (quota.enforce(), sql/enforce.sql) does with a row of
/// `enforced_table`, given its new version (NULL for a DELETE) and its old one (NULL for an
/// INSERT): charges or gives back the difference, and returns the denial when a charge is
/// denied (the trigger raises it: a custom SQLSTATE cannot be raised from Rust), else NULL.
/// The charged subject of a denial is always the new row's.
#[allow(clippy::too_many_arguments)] // the trigger's arguments, as it passes them
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn enforce_row(
    enforced_table: Option<Oid>,
    table_name: Option<&str>,
    metric: Option<&str>,
    subject_column: Option<&str>,
    amount: Option<&str>,
    new: Option<AnyElement>,
    old: Option<AnyElement>,
) -> Option<pgrx::composite_type!('static, "quota.decision")> {
    let settled = (|| {
        let (table, table_name, metric) = (required(enforced_table, "enforced_table")?, required(table_name, "table_name")?, required(metric, "metric")?);
        let (subject_column, amount) = (required(subject_column, "subject_column")?, required(amount, "amount")?);
        let read = |row: AnyElement| -> QResult<Charged> {
            let row = composite(row)?;
            let units = units_of(&row, amount, table_name)?;
            Ok(Charged { subject: uuid_of(&row, subject_column, table_name)?, units })
        };
        let new = new.map(read).transpose()?.unwrap_or(Charged { subject: None, units: 0 });
        if new.subject.is_none() && new.units > 0 {
            return Err(QuotaError::row_without_subject(table_name, subject_column));
        }
        let old = old.map(read).transpose()?.unwrap_or(Charged { subject: None, units: 0 });
        let denial = Spi::connect(|client| settle_row(client, table, metric, &new, &old))?;
        denial.as_ref().map(decision_tuple).transpose()
    })();
    settled.unwrap_or_else(|error| raise(error))
}

/// A row's subject and amount as the trigger reads them.
struct Charged {
    subject: Option<Uuid>,
    units: i64,
}

/// Charges or gives back the difference between a row's old and new version; the denial of
/// a charge, if one is denied.
fn settle_row(client: &SpiClient, table: Oid, metric: &str, new: &Charged, old: &Charged) -> QResult<Option<Decision>> {
    if new.subject == old.subject {
        match (new.subject, new.units.cmp(&old.units)) {
            (Some(subject), Ordering::Greater) => return charge(client, table, subject, metric, new.units - old.units),
            (Some(subject), Ordering::Less) => charges::refund(client, table, subject, metric, old.units - new.units)?,
            _ => {}
        }
        return Ok(None);
    }
    // A move (or an insert or delete): the new subject is charged the whole row for a
    // lifetime metric, only its growth for a windowed one. Both subjects are handled in uuid
    // order, so that opposite moves between two subjects cannot deadlock.
    let moved = match (new.subject, old.subject) {
        (Some(_), _) if new.units == 0 => 0,
        (Some(_), None) => new.units,
        (Some(subject), Some(_)) if charges::is_lifetime(client, subject, metric)? => new.units,
        (Some(_), Some(_)) => (new.units - old.units).max(0),
        (None, _) => 0,
    };
    let charge_new = || match new.subject {
        Some(subject) if moved > 0 => charge(client, table, subject, metric, moved),
        _ => Ok(None),
    };
    let refund_old = || match old.subject {
        Some(subject) if old.units > 0 => charges::refund(client, table, subject, metric, old.units),
        _ => Ok(()),
    };
    let new_first = match (new.subject, old.subject) {
        (_, None) => true,
        (Some(new_subject), Some(old_subject)) => new_subject.as_bytes() < old_subject.as_bytes(),
        (None, Some(_)) => false,
    };
    if new_first {
        let denial = charge_new()?;
        if denial.is_none() {
            refund_old()?;
        }
        Ok(denial)
    } else {
        refund_old()?;
        charge_new()
    }
}

/// Charges a row to its subject: the table's account first, then the counter (consume), the
/// order a refund locks them in too. The denial, if consume denies.
fn charge(client: &SpiClient, table: Oid, subject: Uuid, metric: &str, amount: i64) -> QResult<Option<Decision>> {
    charges::charge(client, table, subject, metric, amount)?;
    let decision = consume_units(client, subject, metric, amount)?;
    Ok((!decision.allowed).then_some(decision))
}

/// The uuid in `column` of `row` (NULL when the value is NULL).
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn row_uuid(row: Option<AnyElement>, column: Option<&str>, table_name: Option<&str>) -> Result<Option<Uuid>, ErrorReport> {
    sql_call(|| {
        let row = composite(required(row, "row")?)?;
        uuid_of(&row, required(column, "column")?, required(table_name, "table_name")?)
    })
}

/// The amount a row is charged: `amount` is a whole number, or the name of an integer or
/// numeric column. A NULL value counts 0; a fraction is rounded up (0.4 MB is charged as 1).
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn row_units(row: Option<AnyElement>, amount: Option<&str>, table_name: Option<&str>) -> Result<i64, ErrorReport> {
    sql_call(|| {
        let row = composite(required(row, "row")?)?;
        units_of(&row, required(amount, "amount")?, required(table_name, "table_name")?)
    })
}

fn uuid_of(row: &PgHeapTuple<'_, AllocatedByRust>, column: &str, table_name: &str) -> QResult<Option<Uuid>> {
    let (attnum, type_oid) = attribute(row, column, table_name)?;
    if type_oid != pg_sys::UUIDOID {
        return Err(QuotaError::wrong_column_type(table_name, column, "uuid"));
    }
    row.get_by_index::<Uuid>(attnum).map_err(QuotaError::internal)
}

fn units_of(row: &PgHeapTuple<'_, AllocatedByRust>, amount: &str, table_name: &str) -> QResult<i64> {
    if !amount.is_empty() && amount.bytes().all(|b| b.is_ascii_digit()) {
        return amount
            .parse::<i64>()
            .map_err(|_| QuotaError::invalid(format!("quota.enforce: amount {amount} is out of range for type bigint")));
    }
    let (attnum, type_oid) = attribute(row, amount, table_name)?;
    let units = match type_oid {
        pg_sys::INT2OID => row.get_by_index::<i16>(attnum).map(|v| v.map(i64::from)),
        pg_sys::INT4OID => row.get_by_index::<i32>(attnum).map(|v| v.map(i64::from)),
        pg_sys::INT8OID => row.get_by_index::<i64>(attnum),
        pg_sys::NUMERICOID => {
            let value = row.get_by_index::<AnyNumeric>(attnum).map_err(QuotaError::internal)?;
            return value.map_or(Ok(0), |value| numeric_units(&value, table_name, amount));
        }
        _ => return Err(QuotaError::wrong_column_type(table_name, amount, "an integer or numeric type")),
    }
    .map_err(QuotaError::internal)?
    .unwrap_or(0);
    non_negative(units, table_name, amount)
}

fn numeric_units(value: &AnyNumeric, table_name: &str, column: &str) -> QResult<i64> {
    if value.is_nan() {
        return Err(QuotaError::invalid(format!("quota.enforce: {table_name}.{column} is NaN, not an amount")));
    }
    let units = i64::try_from(value.ceil()).map_err(|_| {
        QuotaError::invalid(format!("quota.enforce: {table_name}.{column} ({value}) is out of range for a bigint amount"))
    })?;
    non_negative(units, table_name, column)
}

fn non_negative(units: i64, table_name: &str, column: &str) -> QResult<i64> {
    if units < 0 {
        return Err(QuotaError::invalid(format!("quota.enforce: {table_name}.{column} is negative ({units})")));
    }
    Ok(units)
}

fn composite(row: AnyElement) -> QResult<PgHeapTuple<'static, AllocatedByRust>> {
    // SAFETY: type_is_rowtype says the datum is a composite, whose datum is a HeapTupleHeader.
    if !unsafe { pg_sys::type_is_rowtype(row.oid()) } {
        return Err(QuotaError::invalid("quota.enforce: row must be a table row (NEW or OLD)"));
    }
    Ok(unsafe { PgHeapTuple::from_composite_datum(row.datum()) })
}

/// The attribute number and exact type of a live column.
fn attribute(row: &PgHeapTuple<'_, AllocatedByRust>, column: &str, table_name: &str) -> QResult<(NonZeroUsize, Oid)> {
    row.attributes()
        .find(|(_, att)| !att.attisdropped && att.name() == column)
        .map(|(attnum, att)| (attnum, att.atttypid))
        .ok_or_else(|| QuotaError::missing_column(table_name, column))
}
