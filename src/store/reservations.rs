//! quota.reservations: holds on a window's capacity until they are settled, released or
//! expire.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::request::ReservationStatus;
use quota_rules::window::{Micros, Window};

use super::schema::{self, Part};
use super::{column, from_window_key, instant, not_null, query, the_row, query_row, timestamp, to_micros, window_end, window_key, Kept};
use crate::error::QResult;

thread_local! {
    static INSERT_RESERVATION: Kept = const { Kept::new(
        "INSERT INTO quota.reservations (subject, metric, amount, window_start, window_end, expires_at, idempotency_key, member)
         VALUES ($subject, $metric, $amount, $window_start, $window_end, $expires_at, $idempotency_key, $member)
         RETURNING reservation_id",
    ) };
    // A key is the reserving subject's: the member of a pooled hold (0.9.0).
    static FIND_RESERVATION: Kept = const { Kept::new(
        "SELECT reservation_id, subject, metric, amount::int8 AS amount, window_start, window_end, expires_at, status::text AS status, member
           FROM quota.reservations
          WHERE reservation_id = $reservation_id
             OR (coalesce(member, subject) = $subject AND idempotency_key = $idempotency_key AND metric = $metric)
            FOR UPDATE",
    ) };
    // The same on a schema before 0.9.0, which has no pooled holds.
    static FIND_RESERVATION_WITHOUT_POOLS: Kept = const { Kept::new(
        "SELECT reservation_id, subject, metric, amount::int8 AS amount, window_start, window_end, expires_at, status::text AS status, NULL::uuid AS member
           FROM quota.reservations
          WHERE reservation_id = $reservation_id
             OR (subject = $subject AND idempotency_key = $idempotency_key AND metric = $metric)
            FOR UPDATE",
    ) };
    static INSERT_RESERVATION_WITHOUT_POOLS: Kept = const { Kept::new(
        "INSERT INTO quota.reservations (subject, metric, amount, window_start, window_end, expires_at, idempotency_key)
         VALUES ($subject, $metric, $amount, $window_start, $window_end, $expires_at, $idempotency_key)
         RETURNING reservation_id",
    ) };
    // Saturated: a sum past bigint sets aside every grant all the same.
    static HELD_IN_OTHER_WINDOWS: Kept = const { Kept::new(
        "SELECT LEAST(coalesce(sum(amount), 0), 9223372036854775807)::int8 AS held FROM quota.reservations
          WHERE subject = $subject AND metric = $metric AND status = 'held' AND expires_at > $now
            AND window_start <> $window_start",
    ) };
    static SET_RESERVATION_STATUS: Kept = const { Kept::new(
        "UPDATE quota.reservations SET status = $status WHERE subject = $subject AND reservation_id = $reservation_id",
    ) };
}

/// A reservation, locked.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: Uuid,
    pub subject: Uuid,
    pub metric: String,
    pub amount: i64,
    pub window: Window,
    pub expires_at: Micros,
    pub status: ReservationStatus,
    /// The member that reserved, when the hold is on its pool (`subject`).
    pub member: Option<Uuid>,
}

/// A new hold, counted in no counter yet.
pub struct NewHold<'a> {
    pub subject: Uuid,
    pub metric: &'a str,
    pub amount: i64,
    pub window: Window,
    pub expires_at: Micros,
    pub idempotency_key: Option<&'a str>,
    /// The member that reserves on its pool (`subject`).
    pub member: Option<Uuid>,
}

pub fn insert_reservation(client: &SpiClient, hold: NewHold) -> QResult<Uuid> {
    let args = [
        ("subject", hold.subject.into()),
        ("metric", hold.metric.into()),
        ("amount", hold.amount.into()),
        ("window_start", window_key(hold.window.start)?.into()),
        ("window_end", window_end(hold.window.end)?.into()),
        ("expires_at", timestamp(hold.expires_at)?.into()),
        ("idempotency_key", hold.idempotency_key.into()),
    ];
    if !schema::has(client, Part::Pools)? {
        return the_row(query_row(client, &INSERT_RESERVATION_WITHOUT_POOLS, args, |row| not_null(row, "reservation_id"))?);
    }
    let [a0, a1, a2, a3, a4, a5, a6] = args;
    let args = [a0, a1, a2, a3, a4, a5, a6, ("member", hold.member.into())];
    the_row(query_row(client, &INSERT_RESERVATION, args, |row| not_null(row, "reservation_id"))?)
}

/// How a reservation is found: by its id, or by the idempotency key of the (subject, metric)
/// that reserved it.
pub enum FindBy<'a> {
    Id(Uuid),
    Key { subject: Uuid, metric: &'a str, key: &'a str },
}

/// Finds and locks a reservation.
pub fn find_reservation(client: &SpiClient, by: FindBy) -> QResult<Option<Reservation>> {
    let (id, subject, metric, key) = match by {
        FindBy::Id(id) => (Some(id), None, None, None),
        FindBy::Key { subject, metric, key } => (None, Some(subject), Some(metric), Some(key)),
    };
    let args = [("reservation_id", id.into()), ("subject", subject.into()), ("idempotency_key", key.into()), ("metric", metric.into())];
    let statement = if schema::has(client, Part::Pools)? { &FIND_RESERVATION } else { &FIND_RESERVATION_WITHOUT_POOLS };
    query_row(client, statement, args, |row| {
        Ok(Reservation {
            id: not_null(row, "reservation_id")?,
            subject: not_null(row, "subject")?,
            metric: not_null(row, "metric")?,
            amount: not_null(row, "amount")?,
            window: Window { start: from_window_key(not_null(row, "window_start")?)?, end: instant(row, "window_end")? },
            expires_at: to_micros(not_null(row, "expires_at")?, "expires_at")?,
            status: ReservationStatus::parse(&not_null::<String>(row, "status")?)?,
            member: column(row, "member")?,
        })
    })
}

pub fn set_reservation_status(client: &SpiClient, reservation: &Reservation, status: ReservationStatus) -> QResult<()> {
    let args = [("subject", reservation.subject.into()), ("reservation_id", reservation.id.into()), ("status", status.as_str().into())];
    query(client, &SET_RESERVATION_STATUS, args, |_| Ok(())).map(drop)
}

/// What the active holds of (subject, metric) in windows other than `window` keep: a window
/// that ended, or was reset, while its holds were held. Grants belong to no window, so
/// they must stay set aside for such holds until they are settled, released or expire: a
/// settle pays from its own window's allowance first, then grants, but which of the two
/// will pay is not known before, so every unit of them counts as the grants' (never more
/// spent than there is, at worst a unit refused that the old window's allowance would have
/// paid, until the hold ends). Read after the grants are locked (a reserve that sets grants
/// aside locks them too), so that it sees every hold committed before.
pub fn held_in_other_windows(client: &SpiClient, subject: Uuid, metric: &str, window: Window, now: Micros) -> QResult<i64> {
    let args = [
        ("subject", subject.into()),
        ("metric", metric.into()),
        ("now", timestamp(now)?.into()),
        ("window_start", window_key(window.start)?.into()),
    ];
    the_row(query_row(client, &HELD_IN_OTHER_WINDOWS, args, |row| not_null(row, "held"))?)
}
