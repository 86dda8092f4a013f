//! The SQL entry points of schema `quota`. Each one validates its arguments, runs its
//! statements through `store`, and turns the outcome into a SQL value or a SQL error.
//!
//! Every function is SECURITY DEFINER with a pinned search_path, and EXECUTE is revoked
//! from PUBLIC (sql/finalize.sql): granting EXECUTE is the one gate to these functions.
//! Arguments are `Option` so that PostgreSQL does not declare the functions STRICT: a NULL
//! argument must raise, not silently return NULL.

use std::cell::Cell;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, JsonB, PgTupleDesc, Uuid};

use crate::decide::{ceiling, effective_allowance, percent_used, remaining, Ceiling, Decision, Reason};
use crate::error::{positive_amount, required, sql_call, QResult, QuotaError};
use crate::plan::{parse_limits, validate_metric, validate_plan_name, LimitDef};
use crate::store::{self, timestamp, to_micros, transaction_now, EventRow, Governing};
use crate::window::{Micros, Window};

type DecisionTuple = pgrx::composite_type!('static, "quota.decision");
type UsageTuple = pgrx::composite_type!('static, "quota.usage_row");

// ---------------------------------------------------------------------------------------
// consume / check

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn consume(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: default!(Option<i64>, 1),
    idempotency_key: default!(Option<&str>, "NULL"),
    metadata: default!(Option<JsonB>, "NULL"),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let request = Request::new(subject, metric, amount)?;
        let key = idempotency_key.map(validate_idempotency_key).transpose()?;
        let decision = Spi::connect(|client| consume_in(client, &request, key, metadata))?;
        decision_tuple(&decision)
    })
}

/// What consume would decide now. Writes nothing, not even the default plan assignment.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn check(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: default!(Option<i64>, 1),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let request = Request::new(subject, metric, amount)?;
        let decision = Spi::connect(|client| check_in(client, &request))?;
        decision_tuple(&decision)
    })
}

/// A validated consume or check request, decided at the transaction's start instant.
struct Request<'a> {
    subject: Uuid,
    metric: &'a str,
    amount: i64,
    now: Micros,
}

impl<'a> Request<'a> {
    fn new(subject: Option<Uuid>, metric: Option<&'a str>, amount: Option<i64>) -> QResult<Self> {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        validate_metric(metric)?;
        let amount = positive_amount(amount)?;
        Ok(Request { subject, metric, amount, now: transaction_now()? })
    }

    fn decision(&self, allowed: bool, used: i64, allowance: Option<i64>, window: Window) -> Decision {
        Decision {
            allowed,
            metric: self.metric.to_string(),
            amount: self.amount,
            from_allowance: if allowed { self.amount } else { 0 },
            from_grants: 0,
            used,
            allowance,
            remaining: remaining(allowance, used),
            window_start: window.start,
            resets_at: window.end,
            replayed: false,
            reason: if allowed { Reason::Ok } else { Reason::QuotaExceeded },
            event_id: None,
        }
    }

    /// A subject without a plan, when there is no default plan either.
    fn no_plan(&self) -> Decision {
        let lifetime = Window { start: None, end: None };
        Decision { reason: Reason::NoPlan, ..self.decision(false, 0, Some(0), lifetime) }
    }
}

fn validate_idempotency_key(key: &str) -> QResult<&str> {
    if (1..=255).contains(&key.chars().count()) {
        Ok(key)
    } else {
        Err(QuotaError::invalid("idempotency_key must be 1 to 255 characters")
            .with_hint("Use a request id or a UUID; pass NULL for no idempotency."))
    }
}

fn consume_in(client: &SpiClient, request: &Request, key: Option<&str>, metadata: Option<JsonB>) -> QResult<Decision> {
    if let Some(key) = key {
        store::lock_idempotency_key(client, request.subject, key)?;
        if let Some(original) = store::find_replay(client, request.subject, key)? {
            return replay(original, request, key);
        }
    }
    let governing = governing_with_assignment(client, request)?;
    let (decision, window) = match governing.plan {
        None => (request.no_plan(), Window { start: None, end: None }),
        Some(_) => {
            let allowance = effective_allowance(governing.plan_limit, governing.override_limit);
            let window = governing.window_at(request.now)?;
            let max_used = match ceiling(allowance, request.amount) {
                Ceiling::Never => None,
                Ceiling::Unlimited => Some(None),
                Ceiling::AtMost(max_used) => Some(Some(max_used)),
            };
            let bumped = match max_used {
                Some(max_used) => store::bump(client, request.subject, request.metric, window, request.amount, max_used)?,
                None => None,
            };
            let decision = match bumped {
                Some(used) => request.decision(true, used, allowance, window),
                None => {
                    let used = store::read_used(client, request.subject, request.metric, window)?;
                    request.decision(false, used, allowance, window)
                }
            };
            (decision, window)
        }
    };
    let event_id = store::insert_event(
        client,
        EventRow {
            subject: request.subject,
            kind: if decision.allowed { "consume" } else { "denial" },
            decision: &decision,
            window,
            idempotency_key: key,
            metadata,
        },
    )?;
    Ok(Decision { event_id: Some(event_id), ..decision })
}

/// The original decision for a retried key, or 23505 (HTTP 409) when the key is reused
/// for a different request.
fn replay(original: Decision, request: &Request, key: &str) -> QResult<Decision> {
    if original.metric == request.metric && original.amount == request.amount {
        return Ok(original);
    }
    Err(QuotaError::new(
        PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
        format!(
            "idempotency key \"{key}\" was already used for {} of \"{}\", not {} of \"{}\"",
            original.amount, original.metric, request.amount, request.metric
        ),
    )
    .with_hint("Retry with the original metric and amount, or use a new key for a new request."))
}

/// Resolves what governs the request, giving an unassigned subject the default plan first.
fn governing_with_assignment(client: &SpiClient, request: &Request) -> QResult<Governing> {
    let governing = resolve_known(client, request)?;
    let Some(plan) = governing.plan.as_deref().filter(|_| !governing.assigned) else {
        return Ok(governing);
    };
    if store::assign_default(client, request.subject, plan, request.now)? {
        Ok(Governing { assigned: true, subscription_anchor: Some(request.now), ..governing })
    } else {
        // A concurrent first call assigned the plan: its anchor defines the windows.
        resolve_known(client, request)
    }
}

fn resolve_known(client: &SpiClient, request: &Request) -> QResult<Governing> {
    let governing = store::resolve(client, request.subject, request.metric, request.now)?;
    if governing.metric_known {
        Ok(governing)
    } else {
        Err(QuotaError::unknown_metric(request.metric))
    }
}

fn check_in(client: &SpiClient, request: &Request) -> QResult<Decision> {
    let governing = resolve_known(client, request)?;
    if governing.plan.is_none() {
        return Ok(request.no_plan());
    }
    let allowance = effective_allowance(governing.plan_limit, governing.override_limit);
    let window = governing.window_at(request.now)?;
    let used = store::read_used(client, request.subject, request.metric, window)?;
    if ceiling(allowance, request.amount).admits(used) {
        let used = used.checked_add(request.amount).ok_or_else(|| QuotaError::overflow("used + amount"))?;
        Ok(request.decision(true, used, allowance, window))
    } else {
        Ok(request.decision(false, used, allowance, window))
    }
}

// ---------------------------------------------------------------------------------------
// usage

struct UsageRow {
    metric: String,
    used: i64,
    allowance: Option<i64>,
    window: Window,
}

#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn usage(subject: Option<Uuid>) -> Result<SetOfIterator<'static, pgrx::composite_type!('static, "quota.usage_row")>, ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let now = transaction_now()?;
        let rows = Spi::connect(|client| usage_in(client, subject, now))?;
        let tuples = rows.iter().map(usage_tuple).collect::<QResult<Vec<_>>>()?;
        Ok(SetOfIterator::new(tuples))
    })
}

fn usage_in(client: &SpiClient, subject: Uuid, now: Micros) -> QResult<Vec<UsageRow>> {
    let metrics = plan_metrics(client, subject)?;
    metrics
        .into_iter()
        .map(|metric| {
            let governing = store::resolve(client, subject, &metric, now)?;
            let window = governing.window_at(now)?;
            let used = store::read_used(client, subject, &metric, window)?;
            let allowance = effective_allowance(governing.plan_limit, governing.override_limit);
            Ok(UsageRow { metric, used, allowance, window })
        })
        .collect()
}

/// The metrics of the subject's plan (the default plan when it has no assignment yet).
fn plan_metrics(client: &SpiClient, subject: Uuid) -> QResult<Vec<String>> {
    let rows = client.select(
        "SELECT l.metric FROM quota.limits AS l
          WHERE l.plan = coalesce((SELECT a.plan FROM quota.assignments AS a WHERE a.subject = $1),
                                  (SELECT d.plan FROM quota.plans AS d WHERE d.is_default))
          ORDER BY l.metric",
        None,
        &[subject.into()],
    )?;
    rows.map(|row| row.get::<String>(1)?.ok_or_else(|| QuotaError::internal("metric is NULL"))).collect()
}

// ---------------------------------------------------------------------------------------
// administration

/// Creates a plan with its limits. An existing plan is an error (42710); change limits
/// with quota.set_limits(). `is_default => true` makes this the one default plan.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn create_plan(
    plan: Option<&str>,
    limits: default!(Option<JsonB>, "'{}'"),
    is_default: default!(Option<bool>, false),
) -> Result<(), ErrorReport> {
    sql_call(|| {
        let plan = required(plan, "plan")?;
        validate_plan_name(plan)?;
        let limits = parse_limits(&required(limits, "limits")?.0)?;
        let is_default = required(is_default, "is_default")?;
        Spi::connect_mut(|client| {
            if is_default {
                client.update("UPDATE quota.plans SET is_default = false WHERE is_default", None, &[])?;
            }
            let created = client.update(
                "INSERT INTO quota.plans (plan, is_default) VALUES ($1, $2) ON CONFLICT (plan) DO NOTHING",
                None,
                &[plan.into(), is_default.into()],
            )?;
            if created.is_empty() {
                return Err(QuotaError::new(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, format!("plan \"{plan}\" already exists"))
                    .with_hint("Change its limits with quota.set_limits(), or pick another name."));
            }
            upsert_limits(client, plan, &limits)
        })
    })
}

/// Adds or replaces limits of an existing plan; metrics not named keep their limits.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_limits(plan: Option<&str>, limits: Option<JsonB>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let plan = required(plan, "plan")?;
        let limits = parse_limits(&required(limits, "limits")?.0)?;
        Spi::connect_mut(|client| {
            require_plan(client, plan)?;
            upsert_limits(client, plan, &limits)
        })
    })
}

fn upsert_limits(client: &mut pgrx::spi::SpiClient, plan: &str, limits: &[LimitDef]) -> QResult<()> {
    for limit in limits {
        client.update(
            "INSERT INTO quota.limits (plan, metric, allowance, period, anchor, time_zone)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (plan, metric) DO UPDATE
                SET allowance = excluded.allowance, period = excluded.period,
                    anchor = excluded.anchor, time_zone = excluded.time_zone",
            None,
            &[
                plan.into(),
                limit.metric.as_str().into(),
                limit.allowance.into(),
                limit.period.canonical().into(),
                limit.anchor.as_str().into(),
                limit.time_zone.name().into(),
            ],
        )?;
    }
    Ok(())
}

fn require_plan(client: &SpiClient, plan: &str) -> QResult<()> {
    let found = client.select("SELECT FROM quota.plans WHERE plan = $1", None, &[plan.into()])?;
    if found.is_empty() {
        Err(QuotaError::unknown_plan(plan))
    } else {
        Ok(())
    }
}

fn require_known_metric(client: &SpiClient, metric: &str) -> QResult<()> {
    validate_metric(metric)?;
    let found = client.select("SELECT FROM quota.limits WHERE metric = $1 LIMIT 1", None, &[metric.into()])?;
    if found.is_empty() {
        Err(QuotaError::unknown_metric(metric))
    } else {
        Ok(())
    }
}

/// Puts a subject on a plan. Subscription windows repeat from `anchor`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn assign_plan(
    subject: Option<Uuid>,
    plan: Option<&str>,
    anchor: default!(Option<TimestampWithTimeZone>, "pg_catalog.now()"),
) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let plan = required(plan, "plan")?;
        let anchor = timestamp(to_micros(required(anchor, "anchor")?, "anchor")?)?;
        Spi::connect_mut(|client| {
            require_plan(client, plan)?;
            client.update(
                "INSERT INTO quota.assignments (subject, plan, anchor) VALUES ($1, $2, $3)
                 ON CONFLICT (subject) DO UPDATE
                    SET plan = excluded.plan, anchor = excluded.anchor, assigned_at = pg_catalog.now()",
                None,
                &[subject.into(), plan.into(), anchor.into()],
            )?;
            Ok(())
        })
    })
}

/// A per-subject allowance that replaces the plan's; NULL = unlimited.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_override(subject: Option<Uuid>, metric: Option<&str>, allowance: Option<i64>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        if let Some(allowance) = allowance.filter(|a| *a < 0) {
            return Err(QuotaError::invalid(format!("allowance must not be negative, got {allowance}"))
                .with_hint("Pass 0 to block the metric, or NULL for unlimited."));
        }
        Spi::connect_mut(|client| {
            require_known_metric(client, metric)?;
            client.update(
                "INSERT INTO quota.overrides (subject, metric, allowance) VALUES ($1, $2, $3)
                 ON CONFLICT (subject, metric) DO UPDATE
                    SET allowance = excluded.allowance, updated_at = pg_catalog.now()",
                None,
                &[subject.into(), metric.into(), allowance.into()],
            )?;
            Ok(())
        })
    })
}

/// Removes a subject's override; the plan's limit applies again.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn clear_override(subject: Option<Uuid>, metric: Option<&str>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        Spi::connect_mut(|client| {
            require_known_metric(client, metric)?;
            client.update(
                "DELETE FROM quota.overrides WHERE subject = $1 AND metric = $2",
                None,
                &[subject.into(), metric.into()],
            )?;
            Ok(())
        })
    })
}

/// Starts the subject's current window over now, for one metric or (NULL) for every metric
/// of its plan and every metric it has used. The old window stays as history.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn reset(subject: Option<Uuid>, metric: default!(Option<&str>, "NULL")) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let now = transaction_now()?;
        Spi::connect_mut(|client| {
            let metrics = match metric {
                Some(metric) => {
                    require_known_metric(client, metric)?;
                    vec![metric.to_string()]
                }
                None => used_or_planned_metrics(client, subject)?,
            };
            for metric in &metrics {
                reset_metric(client, subject, metric, now)?;
            }
            Ok(())
        })
    })
}

fn used_or_planned_metrics(client: &SpiClient, subject: Uuid) -> QResult<Vec<String>> {
    let mut metrics = plan_metrics(client, subject)?;
    let used = client.select(
        "SELECT DISTINCT metric FROM quota.counters WHERE subject = $1",
        None,
        &[subject.into()],
    )?;
    for row in used {
        if let Some(metric) = row.get::<String>(1)? {
            metrics.push(metric);
        }
    }
    metrics.sort();
    metrics.dedup();
    Ok(metrics)
}

fn reset_metric(client: &mut SpiClient, subject: Uuid, metric: &str, now: Micros) -> QResult<()> {
    client.update(
        "INSERT INTO quota.resets (subject, metric, reset_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        None,
        &[subject.into(), metric.into(), timestamp(now)?.into()],
    )?;
    let governing = store::resolve(client, subject, metric, now)?;
    let allowance = effective_allowance(governing.plan_limit, governing.override_limit);
    let window = governing.window_at(now)?;
    let decision = Decision {
        allowed: true,
        metric: metric.to_string(),
        amount: 0,
        from_allowance: 0,
        from_grants: 0,
        used: store::read_used(client, subject, metric, window)?,
        allowance,
        remaining: remaining(allowance, 0),
        window_start: window.start,
        resets_at: window.end,
        replayed: false,
        reason: Reason::Reset,
        event_id: None,
    };
    store::insert_event(
        client,
        EventRow { subject, kind: "reset", decision: &decision, window, idempotency_key: None, metadata: None },
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// composite results

thread_local! {
    // OIDs of our composite types, looked up once per backend and forgotten whenever
    // pg_type changes (e.g. DROP EXTENSION and CREATE EXTENSION in the same session).
    static DECISION_OID: Cell<Oid> = const { Cell::new(Oid::INVALID) };
    static USAGE_ROW_OID: Cell<Oid> = const { Cell::new(Oid::INVALID) };
    static INVALIDATION_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_type_oids(_arg: pg_sys::Datum, _cache_id: std::ffi::c_int, _hash: u32) {
    DECISION_OID.with(|oid| oid.set(Oid::INVALID));
    USAGE_ROW_OID.with(|oid| oid.set(Oid::INVALID));
}

fn composite_desc(cache: &'static std::thread::LocalKey<Cell<Oid>>, name: &str) -> QResult<PgTupleDesc<'static>> {
    if !INVALIDATION_REGISTERED.with(Cell::get) {
        // SAFETY: registering a syscache callback is allowed at any time in a backend.
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::TYPEOID as std::ffi::c_int,
                Some(forget_type_oids),
                pg_sys::Datum::from(0),
            );
        }
        INVALIDATION_REGISTERED.with(|registered| registered.set(true));
    }
    let mut oid = cache.with(Cell::get);
    if oid == Oid::INVALID {
        oid = pgrx::regtypein(name);
        cache.with(|cached| cached.set(oid));
    }
    PgTupleDesc::for_composite_type_by_oid(oid).ok_or_else(|| QuotaError::internal(format!("type {name} is missing")))
}

fn composite(
    cache: &'static std::thread::LocalKey<Cell<Oid>>,
    name: &str,
    values: Vec<Option<pg_sys::Datum>>,
) -> QResult<PgHeapTuple<'static, AllocatedByRust>> {
    let desc = composite_desc(cache, name)?;
    // SAFETY: each datum below is built from the Rust type of its column in sql/schema.sql.
    unsafe { PgHeapTuple::from_datums(desc, values) }.map_err(QuotaError::internal)
}

fn optional_timestamp(micros: Option<Micros>) -> QResult<Option<TimestampWithTimeZone>> {
    micros.map(timestamp).transpose()
}

fn decision_tuple(d: &Decision) -> QResult<DecisionTuple> {
    composite(
        &DECISION_OID,
        "quota.decision",
        vec![
            d.allowed.into_datum(),
            d.metric.as_str().into_datum(),
            d.amount.into_datum(),
            d.from_allowance.into_datum(),
            d.from_grants.into_datum(),
            d.used.into_datum(),
            d.allowance.into_datum(),
            d.remaining.into_datum(),
            optional_timestamp(d.window_start)?.into_datum(),
            optional_timestamp(d.resets_at)?.into_datum(),
            d.replayed.into_datum(),
            d.reason.as_str().into_datum(),
            d.event_id.into_datum(),
        ],
    )
}

fn usage_tuple(row: &UsageRow) -> QResult<UsageTuple> {
    let percent = percent_used(row.allowance, row.used)
        .map(AnyNumeric::try_from)
        .transpose()
        .map_err(QuotaError::internal)?;
    composite(
        &USAGE_ROW_OID,
        "quota.usage_row",
        vec![
            row.metric.as_str().into_datum(),
            row.used.into_datum(),
            row.allowance.into_datum(),
            remaining(row.allowance, row.used).into_datum(),
            0i64.into_datum(), // grants_remaining: no grants exist yet
            optional_timestamp(row.window.start)?.into_datum(),
            optional_timestamp(row.window.end)?.into_datum(),
            percent.into_datum(),
        ],
    )
}
