//! Errors as clients see them: every failure leaves with a SQLSTATE a client can act on
//! (PostgREST maps 22xxx/42xxx to HTTP 400 and 23505 to 409), a clear message and, where it
//! helps, a hint. Nothing here panics.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::spi::SpiError;
use pgrx::{PgLogLevel, PgSqlErrorCode};

use quota_rules::batch::BatchError;
use quota_rules::bundle::BundleError;
use quota_rules::plan::PlanError;
use quota_rules::rate::RateError;
use quota_rules::request::{self, RequestError};
use quota_rules::window::WindowError;
use quota_rules::CorruptValue;

#[derive(Debug)]
pub struct QuotaError {
    code: PgSqlErrorCode,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

pub type QResult<T> = Result<T, QuotaError>;

/// The message, as a background worker logs it.
impl std::fmt::Display for QuotaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs the body of a SQL entry point; its error leaves as a PostgreSQL ERROR with its SQLSTATE.
pub fn sql_call<T>(body: impl FnOnce() -> QResult<T>) -> Result<T, ErrorReport> {
    body().map_err(ErrorReport::from)
}

/// Raises the error as a PostgreSQL ERROR, for the few places that cannot return it (an
/// argument's conversion, a function whose result type cannot be wrapped in a Result).
pub fn raise(error: QuotaError) -> ! {
    ErrorReport::from(error).report(PgLogLevel::ERROR);
    // Cannot fire: at ERROR, pgrx's report unwinds (a panic its guard turns into the ERROR)
    // and never returns; its signature just does not say so.
    unreachable!("report at level ERROR does not return")
}

impl QuotaError {
    fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        QuotaError { code, message: message.into(), detail: None, hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Prefixes the message with where it happened, e.g. "events[3]".
    pub fn in_context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// 55000: a feature of the shared-memory tier on a server that did not preload pg_quota.
    pub fn not_preloaded(feature: &str) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{feature} needs pg_quota's shared memory, and this server did not preload pg_quota"),
        )
        .with_hint("Add pg_quota to shared_preload_libraries in postgresql.conf and restart the server.")
    }

    /// 40001: a transaction reading one snapshot throughout counted into a window that a
    /// compaction closed after that snapshot was taken: a retry sees it closed.
    pub fn window_compacted_concurrently(metric: &str) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            format!("could not serialize access: quota.compact() closed a window of \"{metric}\" this transaction counts into"),
        )
        .with_hint("Retry the transaction.")
    }

    /// 22004: an argument that must be given was NULL.
    pub fn null_argument(name: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{name} must not be NULL"))
    }

    /// 22023: an argument is out of its domain.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    /// 42704: a metric no plan defines.
    pub fn unknown_metric(metric: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("unknown metric \"{metric}\""))
            .with_hint("A metric exists once a plan has a limit for it: see quota.create_plan().")
    }

    /// 42704: a plan that does not exist.
    pub fn unknown_plan(plan: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("unknown plan \"{plan}\""))
            .with_hint("Create it first with quota.create_plan().")
    }

    /// 42703: a trigger names a column its table lacks.
    pub fn missing_column(table_name: &str, column: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN, format!("quota.enforce: table {table_name} has no column {column}"))
            .with_hint("Attach the trigger with quota.enforce_on(table, metric, subject_column, amount).")
    }

    /// 23502: a row under quota.enforce that is charged has no subject.
    pub fn row_without_subject(table_name: &str, column: &str) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
            format!("quota.enforce: {table_name}.{column} is NULL, so the row has no subject to charge"),
        )
    }

    /// 42804: a trigger's column is not of the built-in type it must have.
    pub fn wrong_column_type(table_name: &str, column: &str, expected: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH, format!("quota.enforce: {table_name}.{column} is not {expected}"))
            .with_hint("Only columns of the built-in types are read: a domain or a type of your own is refused.")
    }

    /// 0A000: a trigger's column is a virtual generated column (PostgreSQL 18), which has no
    /// value in a trigger's row: it would charge nothing.
    pub fn virtual_column(table_name: &str, column: &str) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("quota.enforce: {table_name}.{column} is a virtual generated column, which a trigger cannot read"),
        )
        .with_hint("Declare it GENERATED ALWAYS AS (...) STORED, or charge a column it is computed from.")
    }

    /// 42704: a grant that does not exist.
    pub fn unknown_grant(grant_id: impl std::fmt::Display) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("unknown grant {grant_id}"))
    }

    /// 42704: a reservation that does not exist.
    pub fn unknown_reservation(reservation_id: impl std::fmt::Display) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("unknown reservation {reservation_id}"))
    }

    /// 42710: create_plan of a plan that exists.
    pub fn duplicate_plan(plan: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, format!("plan \"{plan}\" already exists"))
            .with_hint("Change its limits with quota.set_limits(), or pick another name.")
    }

    /// 42501: an end-user function called without a signed-in user.
    pub fn not_signed_in() -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, "no signed-in user")
            .with_hint("Call with a user's JWT: request.jwt.claims has no uuid in sub.")
    }

    /// 42501: a signed-in user without the pg_quota role a function needs.
    pub fn not_allowed(function: &str, db_role: &str, needed: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("quota.{function} needs the {needed} quota_role (called as {db_role})"))
            .with_hint("Set app_metadata.quota_role of the user with the service role; see the README's Supabase section.")
    }

    /// 23505: a concurrent call committed the same idempotency key first.
    pub fn key_in_use(key: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, format!("idempotency key \"{key}\" was used by another call at the same time"))
            .with_hint("Retry: the call that holds the key has committed.")
    }

    /// 0A000: a feature of this library that the database's pg_quota schema lacks yet.
    pub fn schema_too_old(feature: &str, version: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, format!("{feature} need the pg_quota {version} schema"))
            .with_hint("Run ALTER EXTENSION pg_quota UPDATE.")
    }

    /// 23505: joining a pool while a member of another (a subject draws from one pool).
    pub fn in_another_pool(member: impl std::fmt::Display, pool: impl std::fmt::Display) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, format!("subject {member} is already a member of pool {pool}"))
            .with_hint("A subject draws from one pool at a time: call quota.leave_pool() first.")
    }

    /// 0A000: a function whose check must see what committed before it, called in a
    /// transaction whose snapshot is fixed.
    pub fn needs_read_committed(function: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, format!("{function} runs at READ COMMITTED, not in a REPEATABLE READ or SERIALIZABLE transaction"))
            .with_hint("Call it in a READ COMMITTED transaction (PostgreSQL's default).")
    }

    /// 22023: a join that would make a pool a member of a pool.
    pub fn nested_pool(what: String) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("pools do not nest: {what}"))
            .with_hint("A pool's members are subjects that are no pools; give a team of teams one pool with every member in it.")
    }

    /// 42704: a subject that is not a member of the pool named.
    pub fn not_a_member(member: impl std::fmt::Display, pool: impl std::fmt::Display) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("subject {member} is not a member of pool {pool}"))
            .with_hint("Add it with quota.join_pool(pool, member).")
    }

    /// 22023: a pool metric its plan has no limit for.
    pub fn not_pooled(pool: impl std::fmt::Display, metric: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("the plan of pool {pool} has no limit for metric \"{metric}\""))
            .with_hint("Members draw from a pool the metrics of its plan: assign the pool a plan that has it.")
    }

    /// 42704: an allocation that does not exist.
    pub fn unknown_allocation(allocation_id: impl std::fmt::Display) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("unknown allocation {allocation_id}"))
    }

    /// 42501: a signed-in user who neither is the pool nor administers it.
    pub fn not_pool_admin(function: &str, pool: impl std::fmt::Display) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("quota.{function} needs an admin of pool {pool}"))
            .with_hint("The pool itself (once it has a member), a subject named with quota.set_pool_admin(), or a user with the admin quota_role may call it.")
    }

    /// 22023: an idempotency key reused with different arguments.
    pub fn key_reused(key: &str, what: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("idempotency key \"{key}\" was used for {what}"))
            .with_hint("Use a new key for a new call.")
    }

    /// XX000: a broken invariant of pg_quota itself, never a client mistake.
    pub fn internal(what: impl std::fmt::Display) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("pg_quota internal error: {what}"))
    }

    /// 22003: bigint arithmetic would overflow.
    pub fn overflow(what: &str) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, format!("{what} is out of range for type bigint"))
    }
}

impl From<QuotaError> for ErrorReport {
    fn from(error: QuotaError) -> Self {
        let mut report = ErrorReport::new(error.code, error.message, "pg_quota");
        if let Some(detail) = error.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = error.hint {
            report = report.set_hint(hint);
        }
        report
    }
}

impl From<PlanError> for QuotaError {
    fn from(error: PlanError) -> Self {
        let hint = error.hint();
        match &error {
            PlanError::Window { error: WindowError::OutOfRange(_), .. } => window_error(error.to_string()),
            _ => QuotaError::invalid(error.to_string()).with_hint(hint),
        }
    }
}

impl From<RateError> for QuotaError {
    fn from(error: RateError) -> Self {
        QuotaError::invalid(error.to_string()).with_hint(error.hint())
    }
}

impl From<WindowError> for QuotaError {
    fn from(error: WindowError) -> Self {
        match error {
            WindowError::OutOfRange(_) => window_error(error.to_string()),
            _ => QuotaError::invalid(error.to_string()),
        }
    }
}

impl From<BatchError> for QuotaError {
    fn from(error: BatchError) -> Self {
        QuotaError::invalid(error.to_string()).with_hint(
            r#"Pass a JSON array such as [{"subject": "<uuid>", "metric": "tokens", "amount": 120, "idempotency_key": "req-1", "occurred_at": "2026-11-22T10:00:00Z", "metadata": {}}]."#,
        )
    }
}

/// 23505 (HTTP 409) for a bundle retried with other amounts under its key, else 22023.
impl From<BundleError> for QuotaError {
    fn from(error: BundleError) -> Self {
        let code = match error.is_conflict() {
            true => PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            false => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        };
        QuotaError::new(code, error.to_string()).with_hint(error.hint())
    }
}

/// 23505 (HTTP 409) for a request that collides with one already made, else 22023.
impl From<RequestError> for QuotaError {
    fn from(error: RequestError) -> Self {
        let code = match error.is_conflict() {
            true => PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            false => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        };
        let hint = error.hint();
        let quota_error = QuotaError::new(code, error.to_string());
        match hint {
            Some(hint) => quota_error.with_hint(hint),
            None => quota_error,
        }
    }
}

impl From<CorruptValue> for QuotaError {
    fn from(error: CorruptValue) -> Self {
        QuotaError::internal(error)
    }
}

/// 22008: an instant the window engine cannot place (far outside any real calendar).
fn window_error(message: String) -> QuotaError {
    QuotaError::new(PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW, message)
}

/// SPI failures that are not PostgreSQL errors (those propagate on their own) mean a bug in
/// pg_quota, not a client mistake.
impl From<SpiError> for QuotaError {
    fn from(error: SpiError) -> Self {
        QuotaError::internal(error)
    }
}

/// Rejects NULL for an argument that must be given: a STRICT function would silently
/// return NULL instead, which the product contract forbids.
pub fn required<T>(value: Option<T>, name: &str) -> QResult<T> {
    value.ok_or_else(|| QuotaError::null_argument(name))
}

/// A positive amount that must be given (see quota_rules::request::positive_amount).
pub fn positive_amount(amount: Option<i64>) -> QResult<i64> {
    Ok(request::positive_amount(required(amount, "amount")?)?)
}
