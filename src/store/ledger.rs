//! quota.events, the ledger: one row per decision, and the idempotency keys that find a
//! retried call's first decision.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::bundle::Keyed;
use quota_rules::decide::{Decision, Reason};
use quota_rules::locks::IDEMPOTENCY_KEY_LOCK_SEED;
use quota_rules::request::EventKind;
use quota_rules::window::Window;

use super::{Row, column, from_window_key, instant, not_null, query, query_row, window_end, window_key, Kept};
use crate::error::{QResult, QuotaError};
use crate::jsonb::Jsonb;

macro_rules! insert_event {
    ($pool_column:literal, $pool_value:literal) => {
        concat!(
            "INSERT INTO quota.events (subject, kind, metric, amount, from_allowance, from_grants, overage,
                                       window_start, window_end, used, reserved, allowance, remaining, reason,
                                       idempotency_key, metadata, reservation_id", $pool_column, ")
             VALUES ($subject, $kind, $metric, $amount, $from_allowance, $from_grants, $overage,
                     $window_start, $window_end, $used, $reserved, $allowance, $remaining, $reason,
                     $idempotency_key, $metadata, $reservation_id", $pool_value, ")
             ON CONFLICT DO NOTHING
             RETURNING event_id"
        )
    };
}

thread_local! {
    static LOCK_KEY: Kept = const { Kept::new(
        "SELECT pg_catalog.pg_advisory_xact_lock(
                    pg_catalog.hashtextextended($subject::text || '/' || $metric || '/' || $key, $seed))",
    ) };
    static FIND_REPLAY: Kept = const { Kept::new(
        concat!("SELECT ", decision_columns!(), " FROM quota.events
          WHERE subject = $subject AND idempotency_key = $key AND metric = $metric AND kind IN ('consume', 'record')"),
    ) };
    // Every metric's decision under the key: what a bundle's first call consumed.
    static FIND_KEYED: Kept = const { Kept::new(
        concat!("SELECT ", decision_columns!(), ", created_at FROM quota.events
          WHERE subject = $subject AND idempotency_key = $key AND kind IN ('consume', 'record')"),
    ) };
    static FIND_RESERVATION_EVENT: Kept = const { Kept::new(
        concat!("SELECT ", decision_columns!(), " FROM quota.events WHERE reservation_id = $reservation_id AND kind = $kind"),
    ) };
    static INSERT_EVENT: Kept = const { Kept::new(insert_event!("", "")) };
    // A pooled member's event names the pool that paid (a column since 0.9.0).
    static INSERT_POOLED_EVENT: Kept = const { Kept::new(insert_event!(", pool", ", $pool")) };
}

/// Serializes calls that use the same idempotency key for the same (subject, metric) until
/// the holder commits or rolls back.
pub fn lock_idempotency_key(client: &SpiClient, subject: Uuid, metric: &str, key: &str) -> QResult<()> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("key", key.into()), ("seed", IDEMPOTENCY_KEY_LOCK_SEED.into())];
    query_row(client, &LOCK_KEY, args, |_| Ok(())).map(drop)
}

/// The decision an earlier committed consume or record of (subject, metric) made under
/// this key. Keys are scoped to (subject, metric): one request id may pay for several
/// metrics.
pub fn find_replay(client: &SpiClient, subject: Uuid, metric: &str, key: &str) -> QResult<Option<Decision>> {
    let args = [("subject", subject.into()), ("key", key.into()), ("metric", metric.into())];
    query_row(client, &FIND_REPLAY, args, decision_from_row)
}

/// Every committed consume or record of the subject under this key, whatever the metric,
/// with the transaction time that wrote it (a bundle's rows share theirs).
pub fn find_keyed(client: &SpiClient, subject: Uuid, key: &str) -> QResult<Vec<Keyed>> {
    query(client, &FIND_KEYED, [("subject", subject.into()), ("key", key.into())], |row| {
        let written_at = instant(row, "created_at")?.ok_or_else(|| QuotaError::internal("a ledger row without created_at"))?;
        Ok(Keyed { decision: decision_from_row(row)?, written_at })
    })
}

/// The decision that a reservation's reserve or settle event recorded.
pub fn find_reservation_event(client: &SpiClient, reservation_id: Uuid, kind: EventKind) -> QResult<Option<Decision>> {
    let args = [("reservation_id", reservation_id.into()), ("kind", kind.as_str().into())];
    query_row(client, &FIND_RESERVATION_EVENT, args, decision_from_row)
}

/// Reads the columns of `decision_columns!()` back into the decision they recorded, as a
/// replay of it. A value pg_quota could not have written is an internal error.
pub(super) fn decision_from_row(row: &Row) -> QResult<Decision> {
    let kind = EventKind::parse(&not_null::<String>(row, "kind")?)?;
    let decision = Decision {
        allowed: kind != EventKind::Denial,
        metric: not_null(row, "metric")?,
        amount: not_null(row, "amount")?,
        from_allowance: not_null(row, "from_allowance")?,
        from_grants: not_null(row, "from_grants")?,
        overage: not_null(row, "overage")?,
        used: not_null(row, "used")?,
        reserved: not_null(row, "reserved")?,
        allowance: column(row, "allowance")?,
        remaining: column(row, "remaining")?,
        window_start: from_window_key(not_null(row, "window_start")?)?,
        resets_at: instant(row, "window_end")?,
        replayed: true,
        reason: Reason::parse(&not_null::<String>(row, "reason")?)?,
        event_id: column(row, "event_id")?,
        // Replays are of allowed decisions, which have none.
        retry_after: None,
    };
    decision.assert_consistent()?;
    Ok(decision)
}

/// The ledger row of one decision.
pub struct EventRow<'a> {
    pub subject: Uuid,
    pub kind: EventKind,
    pub decision: &'a Decision,
    pub window: Window,
    pub idempotency_key: Option<&'a str>,
    pub metadata: Option<Jsonb>,
    pub reservation_id: Option<Uuid>,
    /// The pool that paid for a member's call.
    pub pool: Option<Uuid>,
}

/// Writes the ledger row; None when another call's consume or record holds its idempotency
/// key (this one waited for that call to commit). ON CONFLICT names no index, so that the
/// statement works both on a schema whose keys are per (subject, metric) and on an older
/// one's, per subject, until ALTER EXTENSION UPDATE runs; the primary key cannot conflict
/// (event_id is an identity).
pub fn insert_event(client: &SpiClient, event: EventRow) -> QResult<Option<i64>> {
    let d = event.decision;
    let args = [
        ("subject", event.subject.into()),
        ("kind", event.kind.as_str().into()),
        ("metric", d.metric.as_str().into()),
        ("amount", d.amount.into()),
        ("from_allowance", d.from_allowance.into()),
        ("from_grants", d.from_grants.into()),
        ("overage", d.overage.into()),
        ("window_start", window_key(event.window.start)?.into()),
        ("window_end", window_end(event.window.end)?.into()),
        ("used", d.used.into()),
        ("reserved", d.reserved.into()),
        ("allowance", d.allowance.into()),
        ("remaining", d.remaining.into()),
        ("reason", d.reason.as_str().into()),
        ("idempotency_key", event.idempotency_key.into()),
        ("metadata", event.metadata.into()),
        ("reservation_id", event.reservation_id.into()),
    ];
    let Some(pool) = event.pool else {
        return query_row(client, &INSERT_EVENT, args, |row| not_null(row, "event_id"));
    };
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16] = args;
    let args = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, ("pool", pool.into())];
    query_row(client, &INSERT_POOLED_EVENT, args, |row| not_null(row, "event_id"))
}
