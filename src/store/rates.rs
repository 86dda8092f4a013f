//! The statements of rate rules: the subject's overrides, and each rule's state (GCRA's
//! `tat`, quota.rate_state). State rows are locked in bytewise order of their `per`, under
//! the (subject, metric) of one call, and always before that metric's counter.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::window::Micros;

use super::{not_null, query, query_row, timestamp, Kept};
use crate::error::QResult;

thread_local! {
    static LOCK_STATES: Kept = const { Kept::new(
        "SELECT per, tat_us FROM quota.rate_state
          WHERE subject = $subject AND metric = $metric AND per = ANY ($pers)
          ORDER BY per COLLATE \"C\"
            FOR UPDATE",
    ) };
    // A rule's first call: its row, with a tat in the past (a full bucket), so that the row
    // can be locked. A concurrent first call waits here for the other's row, then finds it.
    static CREATE_STATES: Kept = const { Kept::new(
        "INSERT INTO quota.rate_state (subject, metric, per, tat_us)
         SELECT $subject, $metric, per, 0 FROM pg_catalog.unnest($pers) AS per ORDER BY per COLLATE \"C\"
         ON CONFLICT (subject, metric, per) DO NOTHING",
    ) };
    static READ_STATES: Kept = const { Kept::new(
        "SELECT per, tat_us FROM quota.rate_state WHERE subject = $subject AND metric = $metric AND per = ANY ($pers)",
    ) };
    static WRITE_STATES: Kept = const { Kept::new(
        "UPDATE quota.rate_state AS s SET tat_us = u.tat_us
           FROM ROWS FROM (pg_catalog.unnest($pers), pg_catalog.unnest($tats)) AS u (per, tat_us)
          WHERE s.subject = $subject AND s.metric = $metric AND s.per = u.per",
    ) };
    static SET_OVERRIDE: Kept = const { Kept::new(
        "INSERT INTO quota.rate_overrides (subject, metric, per, rate_limit, burst, expires_at)
         VALUES ($subject, $metric, $per, $rate_limit, $burst, $expires_at)
         ON CONFLICT (subject, metric, per) DO UPDATE
            SET rate_limit = excluded.rate_limit, burst = excluded.burst, expires_at = excluded.expires_at,
                updated_at = pg_catalog.now()",
    ) };
    static CLEAR_OVERRIDE: Kept = const { Kept::new(
        "DELETE FROM quota.rate_overrides WHERE subject = $subject AND metric = $metric AND per = $per
         RETURNING per",
    ) };
    static OVERRIDE_STATE: Kept = const { Kept::new(
        "SELECT (pg_catalog.to_jsonb(o) - 'subject' - 'metric')::text AS state
           FROM quota.rate_overrides AS o WHERE o.subject = $subject AND o.metric = $metric AND o.per = $per",
    ) };
}

/// Rule states by canonical `per`; a rule without a row has none (a full bucket).
pub type States = Vec<(String, Micros)>;

fn read(row: &super::Row) -> QResult<(String, Micros)> {
    Ok((not_null(row, "per")?, not_null(row, "tat_us")?))
}

/// Locks the state rows of `pers` (canonical texts), creating the missing ones.
pub fn lock_states(client: &SpiClient, subject: Uuid, metric: &str, pers: &[String]) -> QResult<States> {
    let args = || [("subject", subject.into()), ("metric", metric.into()), ("pers", pers.to_vec().into())];
    let states = query(client, &LOCK_STATES, args(), read)?;
    if states.len() == pers.len() {
        return Ok(states);
    }
    create_states(client, subject, metric, pers)?;
    query(client, &LOCK_STATES, args(), read)
}

/// Creates the missing state rows of `pers`, with full buckets.
pub fn create_states(client: &SpiClient, subject: Uuid, metric: &str, pers: &[String]) -> QResult<()> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("pers", pers.to_vec().into())];
    query(client, &CREATE_STATES, args, |_| Ok(())).map(drop)
}

/// The state rows of `pers`, read without locks (check, usage).
pub fn read_states(client: &SpiClient, subject: Uuid, metric: &str, pers: &[String]) -> QResult<States> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("pers", pers.to_vec().into())];
    query(client, &READ_STATES, args, read)
}

/// Writes the new state of locked rows.
pub fn write_states(client: &SpiClient, subject: Uuid, metric: &str, pers: &[String], tats: &[Micros]) -> QResult<()> {
    let args = [
        ("pers", pers.to_vec().into()),
        ("tats", tats.to_vec().into()),
        ("subject", subject.into()),
        ("metric", metric.into()),
    ];
    query(client, &WRITE_STATES, args, |_| Ok(())).map(drop)
}

/// A subject's rate override, as quota.set_rate_override() makes it.
pub struct NewOverride<'a> {
    pub subject: Uuid,
    pub metric: &'a str,
    pub per: &'a str,
    pub limit: i64,
    pub burst: i64,
    pub expires_at: Option<Micros>,
}

pub fn set_override(client: &SpiClient, rule: NewOverride) -> QResult<()> {
    let args = [
        ("subject", rule.subject.into()),
        ("metric", rule.metric.into()),
        ("per", rule.per.into()),
        ("rate_limit", rule.limit.into()),
        ("burst", rule.burst.into()),
        ("expires_at", rule.expires_at.map(timestamp).transpose()?.into()),
    ];
    query(client, &SET_OVERRIDE, args, |_| Ok(())).map(drop)
}

/// Removes an override; false when there was none.
pub fn clear_override(client: &SpiClient, subject: Uuid, metric: &str, per: &str) -> QResult<bool> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("per", per.into())];
    Ok(query_row(client, &CLEAR_OVERRIDE, args, |_| Ok(()))?.is_some())
}

/// An override as quota.admin_changes keeps it.
pub fn override_state(client: &SpiClient, subject: Uuid, metric: &str, per: &str) -> QResult<Option<String>> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("per", per.into())];
    query_row(client, &OVERRIDE_STATE, args, |row| not_null(row, "state"))
}
