//! What `quota.enforce` and `quota.on_signup` read from a row: the subject and the amount,
//! taken from the trigger's tuple by attribute number, with their built-in types checked.
//!
//! Both triggers run with the extension owner's rights. Converting the row (`to_jsonb(NEW)`,
//! a cast, a type's output function) would run whatever the table's owner attached to the
//! types of its columns with those rights. These functions read only the one attribute asked
//! for, and only when its type is exactly a built-in one (`uuid`; `smallint`, `integer`,
//! `bigint`, `numeric`), so nothing a user defines is ever evaluated.

use std::num::NonZeroUsize;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{AnyElement, AnyNumeric, Uuid};

use crate::error::{required, sql_call, QResult, QuotaError};

/// The uuid in `column` of `row` (NULL when the value is NULL).
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn row_uuid(row: Option<AnyElement>, column: Option<&str>, table_name: Option<&str>) -> Result<Option<Uuid>, ErrorReport> {
    sql_call(|| {
        let row = composite(required(row, "row")?)?;
        let (column, table_name) = (required(column, "column")?, required(table_name, "table_name")?);
        let (attnum, type_oid) = attribute(&row, column, table_name)?;
        if type_oid != pg_sys::UUIDOID {
            return Err(QuotaError::wrong_column_type(table_name, column, "uuid"));
        }
        row.get_by_index::<Uuid>(attnum).map_err(QuotaError::internal)
    })
}

/// The amount a row is charged: `amount` is a whole number, or the name of an integer or
/// numeric column. A NULL value counts 0; a fraction is rounded up (0.4 MB is charged as 1).
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn row_units(row: Option<AnyElement>, amount: Option<&str>, table_name: Option<&str>) -> Result<i64, ErrorReport> {
    sql_call(|| {
        let row = composite(required(row, "row")?)?;
        let (amount, table_name) = (required(amount, "amount")?, required(table_name, "table_name")?);
        if !amount.is_empty() && amount.bytes().all(|b| b.is_ascii_digit()) {
            return amount
                .parse::<i64>()
                .map_err(|_| QuotaError::invalid(format!("quota.enforce: amount {amount} is out of range for type bigint")));
        }
        let (attnum, type_oid) = attribute(&row, amount, table_name)?;
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
    })
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
