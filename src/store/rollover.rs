//! Carries of unused allowance (quota_rules::rollover) as grants: which are due and not yet
//! grants, materialising them once, and taking them back when the plan changes.
//! A carry is a grant with `rollover_of` = the start of the window it came out of; the
//! unique index grants_rollover makes materialising it idempotent, so that however many
//! sessions touch a new window first, its carries become grants exactly once.

use pgrx::spi::SpiClient;
use pgrx::prelude::TimestampWithTimeZone;
use pgrx::Uuid;

use quota_rules::governing::Governing;
use quota_rules::rollover::{carries_alive, grid_around, Carry};
use quota_rules::window::{Micros, Window};

use super::{from_window_key, not_null, query, the_row, query_row, timestamp, window_key, Kept};
use crate::error::{QResult, QuotaError};

thread_local! {
    // What each window of the grid counted: a reset splits a window into counter rows, and
    // the last one (the usage since the reset) is what its allowance was spent on.
    static USED_IN: Kept = const { Kept::new(
        "SELECT DISTINCT ON (w.start) w.start AS window_start, c.used::int8 AS used
           FROM ROWS FROM (pg_catalog.unnest($starts::timestamptz[]), pg_catalog.unnest($ends::timestamptz[])) AS w(start, finish)
           JOIN quota.counters AS c
             ON c.subject = $subject AND c.metric = $metric AND c.window_start >= w.start AND c.window_start < w.finish
          ORDER BY w.start, c.window_start DESC",
    ) };
    // Revoked carries count too: a plan change took them back for good.
    static MATERIALISED: Kept = const { Kept::new(
        "SELECT g.rollover_of FROM quota.grants AS g
          WHERE g.subject = $subject AND g.metric = $metric AND g.rollover_of = ANY ($froms::timestamptz[])",
    ) };
    // Spent before any grant (the lowest priority), as the window's allowance continued.
    static MATERIALISE: Kept = const { Kept::new(
        "INSERT INTO quota.grants (subject, metric, amount, remaining, priority, expires_at, reason, rollover_of)
         SELECT $subject, $metric, c.amount, c.amount, -2147483648, c.expires_at, 'rollover', c.rollover_of
           FROM ROWS FROM (pg_catalog.unnest($amounts::int8[]), pg_catalog.unnest($expires::timestamptz[]), pg_catalog.unnest($froms::timestamptz[]))
                AS c(amount, expires_at, rollover_of)
         ON CONFLICT (subject, metric, rollover_of) WHERE rollover_of IS NOT NULL DO NOTHING",
    ) };
    static REVOKE: Kept = const { Kept::new(
        "UPDATE quota.grants SET revoked_at = pg_catalog.now()
          WHERE subject = $subject AND rollover_of IS NOT NULL AND revoked_at IS NULL AND remaining > 0",
    ) };
    static LEFT: Kept = const { Kept::new(
        "SELECT coalesce(sum(g.remaining), 0)::int8 AS remaining FROM quota.grants AS g
          WHERE g.subject = $subject AND g.metric = $metric AND g.rollover_of IS NOT NULL AND g.remaining > 0
            AND g.revoked_at IS NULL AND g.expires_at > $now",
    ) };
}

/// The carries alive at `now` that are not grants yet, by the governing plan's policy: none
/// without one, without a limited allowance, or before the subject was assigned a plan.
pub fn pending(client: &SpiClient, subject: Uuid, metric: &str, governing: &Governing, now: Micros) -> QResult<Vec<Carry>> {
    let (Some(rollover), Some(allowance), Some(assigned_at), Some(anchor)) =
        (governing.rollover, governing.allowance(), governing.assigned_at, governing.subscription_anchor)
    else {
        return Ok(Vec::new());
    };
    let grid = grid_around(&governing.window_spec, anchor, now, rollover)?;
    let before = &grid[..rollover.expires_after as usize];
    let starts = before.iter().map(|w| window_key(w.start)).collect::<QResult<Vec<_>>>()?;
    let ends = before.iter().map(|w| w.end.map(timestamp).transpose()).collect::<QResult<Vec<_>>>()?;
    let args = [("subject", subject.into()), ("metric", metric.into()), ("starts", starts.into()), ("ends", ends.into())];
    let used: Vec<(Option<Micros>, i64)> = query(client, &USED_IN, args, |row| Ok((from_window_key(not_null(row, "window_start")?)?, not_null(row, "used")?)))?;
    let used_in = |window: &Window| used.iter().find(|(start, _)| *start == window.start).map_or(0, |(_, used)| *used);
    let alive = carries_alive(rollover, allowance, assigned_at, &grid, now, used_in);
    if alive.is_empty() {
        return Ok(alive);
    }
    let froms = from_starts(&alive)?;
    let args = [("subject", subject.into()), ("metric", metric.into()), ("froms", froms.into())];
    let materialised: Vec<TimestampWithTimeZone> = query(client, &MATERIALISED, args, |row| not_null(row, "rollover_of"))?;
    let materialised = materialised.into_iter().map(|at| from_window_key(at)).collect::<QResult<Vec<_>>>()?;
    Ok(alive.into_iter().filter(|carry| !materialised.contains(&carry.from.start)).collect())
}

fn from_starts(carries: &[Carry]) -> QResult<Vec<TimestampWithTimeZone>> {
    carries.iter().map(|carry| window_key(carry.from.start)).collect()
}

/// Makes the governing's pending carries grants, for a call that writes (the next one reads
/// them as grants, locked in spending order). A carry another session materialised first is
/// left as it is.
pub fn materialise(client: &SpiClient, subject: Uuid, metric: &str, governing: &mut Governing) -> QResult<()> {
    if governing.carries.is_empty() {
        return Ok(());
    }
    let carries = std::mem::take(&mut governing.carries);
    let amounts: Vec<i64> = carries.iter().map(|carry| carry.amount).collect();
    let expires = carries.iter().map(|carry| timestamp(carry.expires_at)).collect::<QResult<Vec<_>>>()?;
    let args = [
        ("subject", subject.into()),
        ("metric", metric.into()),
        ("amounts", amounts.into()),
        ("expires", expires.into()),
        ("froms", from_starts(&carries)?.into()),
    ];
    query(client, &MATERIALISE, args, |_| Ok(())).map(drop)
}

/// Takes back what is left of the subject's carries: they were the old plan's allowance.
pub fn revoke(client: &SpiClient, subject: Uuid) -> QResult<()> {
    query(client, &REVOKE, [("subject", subject.into())], |_| Ok(())).map(drop)
}

/// What is left of the (subject, metric)'s carries at `now`, pending ones included.
pub fn left(client: &SpiClient, subject: Uuid, metric: &str, governing: &Governing, now: Micros) -> QResult<i64> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("now", timestamp(now)?.into())];
    let granted: i64 = the_row(query_row(client, &LEFT, args, |row| not_null(row, "remaining"))?)?;
    governing
        .carries
        .iter()
        .try_fold(granted, |sum, carry| sum.checked_add(carry.amount))
        .ok_or_else(|| QuotaError::overflow("rollover"))
}
