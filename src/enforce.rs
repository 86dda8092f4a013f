//! The enforce trigger, `quota.enforce` (sql/enforce.sql declares it and attaches it with
//! `quota.enforce_on`; a C function since 0.20.0), and what it and `quota.on_signup` read from a row: the subject and
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

use pgrx::datum::numeric::Sign;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::PgTriggerOperation;
use pgrx::spi::SpiClient;
use pgrx::{AnyElement, AnyNumeric, Uuid, WhoAllocated};

use quota_rules::decide::Decision;

use crate::error::{raise, required, sql_call, QResult, QuotaError};
use crate::spending::consume_units;
use crate::store::enforce::{self as charges, DenialRaiser};
use crate::tuples::{decision_tuple, optional_timestamp};

/// The enforce trigger, `quota.enforce()` (sql/enforce.sql: a C function, SECURITY DEFINER
/// with a pinned search_path). Everything is decided under pgrx's guard (`settle_write`); a
/// denial is then raised here, outside it, by calling `quota.raise_denied` through fmgr, so
/// that its SQLSTATE (PT429, or PGRST through PostgREST) reaches the client: an error that
/// pgrx catches leaves it with one of the SQLSTATEs pgrx knows (a custom one becomes XX000).
/// Nothing on this frame needs dropping when that error longjmps past it, as in pgrx's own
/// ereport.
///
/// # Safety
/// PostgreSQL calls it with a valid `fcinfo` (`settle_write` refuses a call not made as a
/// trigger).
#[no_mangle]
pub unsafe extern "C-unwind" fn enforce_trigger(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let raise_denial = settle_write(fcinfo);
    if !raise_denial.is_null() {
        if let Some(raise_denied) = (*(*raise_denial).flinfo).fn_addr {
            raise_denied(raise_denial);
        }
        denial_not_raised();
    }
    // An AFTER trigger's result is ignored; a trigger returns a null pointer, never SQL NULL.
    pg_sys::Datum::from(0)
}

/// The V1 calling convention of `enforce_trigger`, which PostgreSQL looks up by name.
#[no_mangle]
pub extern "C" fn pg_finfo_enforce_trigger() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// Charges or gives back what the trigger's row changed. Returns the call of
/// `quota.raise_denied` that raises the denial of a charge (built, not made), or null.
#[pg_guard]
unsafe extern "C-unwind" fn settle_write(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::FunctionCallInfo {
    // SAFETY: PostgreSQL's fcinfo; from_fcinfo checks that it is a trigger's.
    let trigger = unsafe { PgTrigger::from_fcinfo(&*fcinfo) };
    let settled = (|| {
        let trigger = trigger.map_err(QuotaError::internal)?;
        let table_name = trigger.table_name().map_err(QuotaError::internal)?;
        let args = trigger.extra_args().map_err(QuotaError::internal)?;
        let row_after = matches!(trigger.level(), PgTriggerLevel::Row) && matches!(trigger.when(), Ok(PgTriggerWhen::After));
        if !row_after || !(1..=3).contains(&args.len()) {
            let name = trigger.name().map_err(QuotaError::internal)?;
            return Err(QuotaError::invalid(format!(
                "quota.enforce(metric [, subject_column [, amount]]) must run AFTER INSERT OR UPDATE OR DELETE, FOR EACH ROW (trigger {name} on {table_name})"
            ))
            .with_hint("Attach it with quota.enforce_on(table, metric, subject_column, amount)."));
        }
        let rule = Rule {
            table: trigger.relid().map_err(QuotaError::internal)?,
            table_name: &table_name,
            metric: &args[0],
            subject_column: args.get(1).map_or("user_id", String::as_str),
            amount: args.get(2).map_or("1", String::as_str),
        };
        let op = trigger.op().map_err(QuotaError::internal)?;
        // SAFETY (both): the trigger's data, as PostgreSQL passed it; its tuple is the row's.
        // The INSERT half of a move takes what its DELETE half left before anything else, so
        // that nothing is left for another row.
        let moved_from = match op {
            // Every insert under the trigger comes here: nothing is read of its row's header
            // unless a move is pending.
            PgTriggerOperation::Insert if moves::pending() => {
                unsafe { inserted_by(trigger.trigger_data()) }.and_then(|command| moves::take(&rule, command))
            }
            _ => None,
        };
        let moved_out = match op {
            PgTriggerOperation::Delete => unsafe { moved_out_by(trigger.trigger_data()) },
            _ => None,
        };
        let Some((new, old)) = rule.change(trigger.new().as_ref(), trigger.old().as_ref())? else {
            return Ok(std::ptr::null_mut());
        };
        let trigger_oid = trigger.trigger().tgoid;
        let denial = Spi::connect(|client| -> QResult<_> {
            if let Some(command) = moved_out {
                if moves::insert_half_fires(command, trigger_oid, || charges::insert_half_fires(client, rule.table, trigger_oid))? {
                    moves::remember(&rule, command, &old);
                }
            }
            match settle_row(client, &rule, &new, &old, moved_from.as_ref())? {
                Some(decision) => Ok(Some((decision, charges::denial_raiser(client, rule.table)?))),
                None => Ok(None),
            }
        })?;
        match (denial, new.subject) {
            (Some((decision, raiser)), Some(subject)) => raise_denied_call(&raiser, subject, &decision),
            (None, _) => Ok(std::ptr::null_mut()),
            (Some(_), None) => Err(QuotaError::internal("a row without a subject was denied")),
        }
    })();
    settled.unwrap_or_else(|error| raise(error))
}

/// quota.raise_denied returned instead of raising (or could not be called): the write is
/// refused all the same.
#[pg_guard]
extern "C-unwind" fn denial_not_raised() {
    raise(QuotaError::internal("quota.raise_denied returned"))
}

/// The call `quota.raise_denied(subject, metric, reason, requested, used, reserved,
/// allowance, remaining, window_start, resets_at, retry_after, 'enforce', source_table)`,
/// its arguments in the current memory context. Called through fmgr, as FunctionCallInvoke
/// does, without the EXECUTE check a SQL call makes: the trigger runs as the extension's
/// owner, who owns it.
fn raise_denied_call(raiser: &DenialRaiser, subject: Uuid, d: &Decision) -> QResult<pg_sys::FunctionCallInfo> {
    let instant = |micros| optional_timestamp(micros).map(IntoDatum::into_datum);
    let args = [
        subject.into_datum(),
        d.metric.as_str().into_datum(),
        d.reason.as_str().into_datum(),
        d.amount.into_datum(),
        d.used.into_datum(),
        d.reserved.into_datum(),
        d.allowance.into_datum(),
        d.remaining.into_datum(),
        instant(d.window_start)?,
        instant(d.resets_at)?,
        instant(d.retry_after)?,
        "enforce".into_datum(),
        raiser.source_table.as_str().into_datum(),
    ];
    // SAFETY: palloc0 gives zeroed memory of the size asked for, a FunctionCallInfo with room
    // for its arguments (SizeForFunctionCallInfo); fmgr_info fills the FmgrInfo of a function
    // that exists (denial_raiser looked it up by its signature).
    unsafe {
        let flinfo = pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()).cast::<pg_sys::FmgrInfo>();
        pg_sys::fmgr_info(raiser.function, flinfo);
        let size = std::mem::offset_of!(pg_sys::FunctionCallInfoBaseData, args) + args.len() * std::mem::size_of::<pg_sys::NullableDatum>();
        let call = pg_sys::palloc0(size).cast::<pg_sys::FunctionCallInfoBaseData>();
        (*call).flinfo = flinfo;
        (*call).fncollation = pg_sys::DEFAULT_COLLATION_OID;
        (*call).nargs = args.len() as i16;
        for (slot, value) in (*call).args.as_mut_slice(args.len()).iter_mut().zip(args) {
            *slot = pg_sys::NullableDatum { value: value.unwrap_or(pg_sys::Datum::from(0)), isnull: value.is_none() };
        }
        Ok(call)
    }
}

/// The trigger body of releases before 0.20.0, whose quota.enforce() (PL/pgSQL) calls it
/// with the row's new and old version: kept for their schemas until ALTER EXTENSION UPDATE.
/// Returns the denial (that trigger raises it), else NULL.
#[allow(clippy::too_many_arguments)] // the trigger's arguments, as it passes them
#[pg_extern(volatile, sql = false)]
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
        let rule = Rule {
            table: required(enforced_table, "enforced_table")?,
            table_name: required(table_name, "table_name")?,
            metric: required(metric, "metric")?,
            subject_column: required(subject_column, "subject_column")?,
            amount: required(amount, "amount")?,
        };
        let (new, old) = (new.map(composite).transpose()?, old.map(composite).transpose()?);
        let Some((new, old)) = rule.change(new.as_ref(), old.as_ref())? else { return Ok(None) };
        let denial = Spi::connect(|client| settle_row(client, &rule, &new, &old, None))?;
        denial.as_ref().map(decision_tuple).transpose()
    })();
    settled.unwrap_or_else(|error| raise(error))
}

/// A table under quota.enforce and how its rows are charged: the trigger's arguments.
struct Rule<'a> {
    table: Oid,
    table_name: &'a str,
    metric: &'a str,
    subject_column: &'a str,
    amount: &'a str,
}

impl Rule<'_> {
    /// What the trigger's row changed, as charges of its new and its old version (nothing for a
    /// version that is not there: the new one of a DELETE, the old one of an INSERT); None
    /// for an UPDATE that changed neither the subject nor the amount. The trigger fires on
    /// every UPDATE, so that it sees what the table's own BEFORE triggers change.
    fn change<A: WhoAllocated>(&self, new: Option<&PgHeapTuple<'_, A>>, old: Option<&PgHeapTuple<'_, A>>) -> QResult<Option<(Charged, Charged)>> {
        let (new, old) = (self.version(new)?, self.version(old)?);
        if new == old {
            return Ok(None);
        }
        let new = Charged { subject: new.subject, units: units(new.amount.as_ref(), self.table_name, self.amount)? };
        if new.subject.is_none() && new.units > 0 {
            return Err(QuotaError::row_without_subject(self.table_name, self.subject_column));
        }
        // An amount no row can be charged (negative, NaN, beyond bigint) was never charged: it
        // is in a row written before the trigger was attached, or while triggers were off. It
        // gives nothing back, and never stops its row from being fixed or deleted.
        let old = Charged { subject: old.subject, units: units(old.amount.as_ref(), self.table_name, self.amount).unwrap_or(0) };
        Ok(Some((new, old)))
    }

    fn version<A: WhoAllocated>(&self, row: Option<&PgHeapTuple<'_, A>>) -> QResult<Version> {
        let Some(row) = row else { return Ok(Version { subject: None, amount: None }) };
        Ok(Version { subject: uuid_of(row, self.subject_column, self.table_name)?, amount: amount_of(row, self.amount, self.table_name)? })
    }
}

/// A version of a row as the trigger reads it: its subject and its amount, NULL as None.
#[derive(PartialEq)]
struct Version {
    subject: Option<Uuid>,
    amount: Option<Amount>,
}

/// An amount as written: a whole number (the rule's fixed amount, or an integer column's
/// value) or a numeric column's value (compared by value: 1.0 is 1.00).
#[derive(PartialEq)]
enum Amount {
    Whole(i64),
    Numeric(AnyNumeric),
}

/// A row's subject and the units it is charged.
#[derive(Clone)]
struct Charged {
    subject: Option<Uuid>,
    units: i64,
}

/// Charges or gives back the difference between a row's old and new version; the denial of
/// a charge, if one is denied. `moved_from`: the row is inserted by an UPDATE that moved it
/// from another partition, whose DELETE half left it so (see `moves`): that half gave a
/// lifetime metric's units back, so the row is charged again as new; a windowed metric's
/// (which a delete never gives back) is charged only what the row grew, as an UPDATE in
/// place is, while the new partition's account takes over the whole row.
fn settle_row(client: &SpiClient, rule: &Rule, new: &Charged, old: &Charged, moved_from: Option<&Charged>) -> QResult<Option<Decision>> {
    let (table, metric) = (rule.table, rule.metric);
    if let (Some(from), Some(subject)) = (moved_from, new.subject) {
        if new.units > 0 && !charges::is_lifetime(client, subject, metric)? {
            let growth = difference(new.units, from.units.min(new.units))?;
            return charge(client, table, subject, metric, new.units, growth);
        }
    }
    if new.subject == old.subject {
        match (new.subject, new.units.cmp(&old.units)) {
            (Some(subject), Ordering::Greater) => {
                let growth = difference(new.units, old.units)?;
                return charge(client, table, subject, metric, growth, growth);
            }
            (Some(subject), Ordering::Less) => charges::refund(client, table, subject, metric, difference(old.units, new.units)?)?,
            _ => {}
        }
        return Ok(None);
    }
    // A move (or an insert or delete): the new subject is charged the whole row for a
    // lifetime metric, only its growth for a windowed one. Both subjects are handled in uuid
    // order, so that two single-row moves in opposite directions between two subjects cannot
    // deadlock (statements that move several rows each can, as any two that lock rows can).
    let moved = match (new.subject, old.subject) {
        (Some(_), _) if new.units == 0 => 0,
        (Some(_), None) => new.units,
        (Some(subject), Some(_)) if charges::is_lifetime(client, subject, metric)? => new.units,
        (Some(_), Some(_)) => difference(new.units, old.units)?.max(0),
        (None, _) => 0,
    };
    let charge_new = || match new.subject {
        Some(subject) if moved > 0 => charge(client, table, subject, metric, moved, moved),
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

/// `a - b` of two amounts (never negative, so it cannot overflow; checked all the same).
fn difference(a: i64, b: i64) -> QResult<i64> {
    a.checked_sub(b).ok_or_else(|| QuotaError::overflow("a row's change of amount"))
}

/// Charges a row to its subject: the table's account holds `held` more, then the counter
/// is consumed `consumed` (the same, but for a row moved between partitions), the order a
/// refund locks them in too. The denial, if consume denies.
fn charge(client: &SpiClient, table: Oid, subject: Uuid, metric: &str, held: i64, consumed: i64) -> QResult<Option<Decision>> {
    charges::charge(client, table, subject, metric, held)?;
    if consumed == 0 {
        return Ok(None);
    }
    let decision = consume_units(client, subject, metric, consumed)?;
    Ok((!decision.allowed).then_some(decision))
}

/// The command of this transaction that deleted the trigger's old row, when it deleted it
/// to move it to another partition (heap_delete marks the row's ctid so): PostgreSQL runs an
/// UPDATE that changes a row's partition as a DELETE and an INSERT, and fires their row
/// triggers, the DELETE's then the INSERT's.
///
/// # Safety
/// `data` is a row trigger's data as PostgreSQL passed it, fired for a DELETE.
unsafe fn moved_out_by(data: &pg_sys::TriggerData) -> Option<moves::Command> {
    let tuple = data.tg_trigtuple;
    if tuple.is_null() || (*tuple).t_data.is_null() {
        return None;
    }
    let header = (*tuple).t_data;
    let ctid = (*header).t_ctid;
    let moved = u32::from(ctid.ip_posid) == pg_sys::MovedPartitionsOffsetNumber && ctid.ip_blkid.bi_hi == u16::MAX && ctid.ip_blkid.bi_lo == u16::MAX;
    moved.then(|| moves::Command { transaction: pg_sys::GetTopTransactionIdIfAny(), command: pg_sys::HeapTupleHeaderGetCmax(header) })
}

/// The command of this transaction that inserted the trigger's new row.
///
/// # Safety
/// `data` is a row trigger's data as PostgreSQL passed it, fired for an INSERT.
unsafe fn inserted_by(data: &pg_sys::TriggerData) -> Option<moves::Command> {
    let tuple = data.tg_trigtuple;
    if tuple.is_null() || (*tuple).t_data.is_null() {
        return None;
    }
    let header = (*tuple).t_data;
    let inserter = (*header).t_choice.t_heap.t_xmin;
    pg_sys::TransactionIdIsCurrentTransactionId(inserter)
        .then(|| moves::Command { transaction: pg_sys::GetTopTransactionIdIfAny(), command: pg_sys::HeapTupleHeaderGetCmin(header) })
}

/// Rows that an UPDATE is moving between partitions, from the DELETE half's trigger to the
/// INSERT half's: the next row the same command inserted under a trigger with the same
/// arguments, which PostgreSQL fires right after. Remembered only when that INSERT half is
/// sure to fire and take it (store::enforce::insert_half_fires): else an insert of another
/// row by the same command (a MERGE, a data-modifying WITH) could be taken for it and
/// charged too little. A transaction's leftovers never match a later one's.
mod moves {
    use std::cell::RefCell;

    use pgrx::pg_sys::{CommandId, Oid, TransactionId};

    use super::{Charged, Rule};
    use crate::error::QResult;

    /// A command of a transaction: the one that deleted or inserted a row.
    #[derive(Clone, Copy, PartialEq)]
    pub struct Command {
        pub transaction: TransactionId,
        pub command: CommandId,
    }

    struct Moving {
        rule: (String, String, String),
        by: Command,
        from: Charged,
    }

    thread_local! {
        // At most one row per trigger's arguments and command: the halves of a move fire one
        // after the other (a move made by a trigger of the move's table runs in a command of
        // its own).
        static MOVING: RefCell<Vec<Moving>> = const { RefCell::new(Vec::new()) };
        // Whether the INSERT halves of the command's moves fire the trigger: asked once per
        // command and trigger, not once per row (the question reads the whole partition tree).
        static INSERT_HALVES: RefCell<Option<(Command, Oid, bool)>> = const { RefCell::new(None) };
    }

    /// `ask` once per command and trigger.
    pub fn insert_half_fires(command: Command, trigger: Oid, ask: impl FnOnce() -> QResult<bool>) -> QResult<bool> {
        if let Some((asked_in, asked_of, fires)) = INSERT_HALVES.with_borrow(|asked| *asked) {
            if asked_in == command && asked_of == trigger {
                return Ok(fires);
            }
        }
        let fires = ask()?;
        INSERT_HALVES.set(Some((command, trigger, fires)));
        Ok(fires)
    }

    fn key(rule: &Rule) -> (String, String, String) {
        (rule.metric.to_string(), rule.subject_column.to_string(), rule.amount.to_string())
    }

    /// The DELETE half: the row as it was charged before the move.
    pub fn remember(rule: &Rule, by: Command, from: &Charged) {
        let rule = key(rule);
        MOVING.with_borrow_mut(|moving| {
            moving.retain(|m| m.by.transaction == by.transaction && !(m.rule == rule && m.by == by));
            moving.push(Moving { rule, by, from: from.clone() });
        });
    }

    /// Whether a DELETE half waits for its INSERT half.
    pub fn pending() -> bool {
        MOVING.with_borrow(|moving| !moving.is_empty())
    }

    /// The INSERT half: the row as it was charged before the move, if `by` moved it.
    pub fn take(rule: &Rule, by: Command) -> Option<Charged> {
        let rule = key(rule);
        MOVING.with_borrow_mut(|moving| {
            // What an earlier transaction left (a move no INSERT half took) goes.
            moving.retain(|m| m.by.transaction == by.transaction);
            let at = moving.iter().position(|m| m.rule == rule && m.by == by)?;
            Some(moving.swap_remove(at).from)
        })
    }
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
/// In no schema since 0.20.0 (nothing called it since 0.14.0); kept for the 0.5.0 -> 0.6.0
/// upgrade script, which creates it and reads enforced tables' amounts with it.
#[pg_extern(stable, parallel_safe, sql = false)]
fn row_units(row: Option<AnyElement>, amount: Option<&str>, table_name: Option<&str>) -> Result<i64, ErrorReport> {
    sql_call(|| {
        let row = composite(required(row, "row")?)?;
        let (amount, table_name) = (required(amount, "amount")?, required(table_name, "table_name")?);
        units(amount_of(&row, amount, table_name)?.as_ref(), table_name, amount)
    })
}

/// The units an amount is charged: NULL counts 0, a fraction is rounded up (0.4 MB is
/// charged as 1); a negative, NaN or out-of-range amount is refused.
fn units(amount: Option<&Amount>, table_name: &str, column: &str) -> QResult<i64> {
    let refused = |what: String| QuotaError::invalid(format!("quota.enforce: {table_name}.{column} {what}"));
    match amount {
        None => Ok(0),
        Some(Amount::Whole(units)) if *units < 0 => Err(refused(format!("is negative ({units})"))),
        Some(Amount::Whole(units)) => Ok(*units),
        Some(Amount::Numeric(value)) => match value.sign() {
            Sign::NaN => Err(refused("is NaN, not an amount".into())),
            Sign::Negative => Err(refused(format!("is negative ({value})"))),
            Sign::Zero | Sign::Positive => {
                i64::try_from(value.ceil()).map_err(|_| refused(format!("({value}) is out of range for a bigint amount")))
            }
        },
    }
}

fn uuid_of<A: WhoAllocated>(row: &PgHeapTuple<'_, A>, column: &str, table_name: &str) -> QResult<Option<Uuid>> {
    let (attnum, type_oid) = attribute(row, column, table_name)?;
    if type_oid != pg_sys::UUIDOID {
        return Err(QuotaError::wrong_column_type(table_name, column, "uuid"));
    }
    row.get_by_index::<Uuid>(attnum).map_err(QuotaError::internal)
}

/// The amount of a version of a row as written: the rule's fixed amount, or its column's
/// value (None for NULL).
fn amount_of<A: WhoAllocated>(row: &PgHeapTuple<'_, A>, amount: &str, table_name: &str) -> QResult<Option<Amount>> {
    if !amount.is_empty() && amount.bytes().all(|b| b.is_ascii_digit()) {
        return amount
            .parse::<i64>()
            .map(|units| Some(Amount::Whole(units)))
            .map_err(|_| QuotaError::invalid(format!("quota.enforce: amount {amount} is out of range for type bigint")));
    }
    let (attnum, type_oid) = attribute(row, amount, table_name)?;
    let whole = match type_oid {
        pg_sys::INT2OID => row.get_by_index::<i16>(attnum).map(|v| v.map(i64::from)),
        pg_sys::INT4OID => row.get_by_index::<i32>(attnum).map(|v| v.map(i64::from)),
        pg_sys::INT8OID => row.get_by_index::<i64>(attnum),
        pg_sys::NUMERICOID => {
            let value = row.get_by_index::<AnyNumeric>(attnum).map_err(QuotaError::internal)?;
            return Ok(value.map(Amount::Numeric));
        }
        _ => return Err(QuotaError::wrong_column_type(table_name, amount, "an integer or numeric type")),
    };
    Ok(whole.map_err(QuotaError::internal)?.map(Amount::Whole))
}

fn composite(row: AnyElement) -> QResult<PgHeapTuple<'static, AllocatedByRust>> {
    // SAFETY: type_is_rowtype says the datum is a composite, whose datum is a HeapTupleHeader.
    if !unsafe { pg_sys::type_is_rowtype(row.oid()) } {
        return Err(QuotaError::invalid("quota.enforce: row must be a table row (NEW or OLD)"));
    }
    Ok(unsafe { PgHeapTuple::from_composite_datum(row.datum()) })
}

/// The attribute number and exact type of a live column.
fn attribute<A: WhoAllocated>(row: &PgHeapTuple<'_, A>, column: &str, table_name: &str) -> QResult<(NonZeroUsize, Oid)> {
    let (attnum, att) = row
        .attributes()
        .find(|(_, att)| !att.attisdropped && att.name() == column)
        .ok_or_else(|| QuotaError::missing_column(table_name, column))?;
    // PostgreSQL 18 computes a virtual generated column only where a query reads it: a
    // trigger's row has no value for it, and the row would be charged nothing.
    if att.attgenerated as u8 == b'v' {
        return Err(QuotaError::virtual_column(table_name, column));
    }
    Ok((attnum, att.atttypid))
}
