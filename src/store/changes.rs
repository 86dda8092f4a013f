//! The statements of who is calling and of quota.admin_changes, the audit trail of
//! administration: the caller's database role, and each changed object's state as jsonb.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use super::{not_null, query, query_row, the_row, Kept};
use crate::error::QResult;

thread_local! {
    // Whether the calling database role (callers::db_role) is trusted: a superuser, or a
    // role that inherits neither of Supabase's end-user roles.
    static CALLER_TRUSTED: Kept = const { Kept::new(
        "SELECT coalesce(r.rolsuper OR NOT EXISTS (
                    SELECT FROM pg_catalog.pg_roles AS e
                     WHERE e.rolname IN ('anon', 'authenticated') AND pg_catalog.pg_has_role(r.oid, e.oid, 'USAGE')),
                    false) AS trusted
           FROM (SELECT $db_role::text AS name) AS c
           LEFT JOIN pg_catalog.pg_roles AS r ON r.rolname = c.name",
    ) };
    static RECORD_CHANGE: Kept = const { Kept::new(
        "INSERT INTO quota.admin_changes (action, db_role, jwt_subject, jwt_role, quota_role, subject, metric, plan, before, after)
         VALUES ($action, $db_role, $jwt_subject, $jwt_role, $quota_role, $subject, $metric, $plan,
                 $before::jsonb, $after::jsonb)",
    ) };
    // A plan with its limits, keyed by metric.
    static PLAN_STATE: Kept = const { Kept::new(
        "SELECT ((pg_catalog.to_jsonb(p) - 'plan')
                 || pg_catalog.jsonb_build_object('limits', coalesce(
                        (SELECT pg_catalog.jsonb_object_agg(l.metric, pg_catalog.to_jsonb(l) - 'plan' - 'metric')
                           FROM quota.limits AS l WHERE l.plan = p.plan), '{}')))::text AS state
           FROM quota.plans AS p WHERE p.plan = $plan",
    ) };
    static ASSIGNMENT_STATE: Kept = const { Kept::new(
        "SELECT (pg_catalog.to_jsonb(a) - 'subject')::text AS state FROM quota.assignments AS a WHERE a.subject = $subject",
    ) };
    static OVERRIDE_STATE: Kept = const { Kept::new(
        "SELECT (pg_catalog.to_jsonb(o) - 'subject' - 'metric')::text AS state
           FROM quota.overrides AS o WHERE o.subject = $subject AND o.metric = $metric",
    ) };
    // A grant as the audit trail keeps it: `spent` (0.19.0) only restates `remaining`.
    static GRANT_STATE: Kept = const { Kept::new(
        "SELECT g.subject, g.metric::text AS metric, (pg_catalog.to_jsonb(g) - 'subject' - 'metric' - 'spent')::text AS state
           FROM quota.grants AS g WHERE g.grant_id = $grant_id",
    ) };
}

/// The role that called, and whether it is trusted without a quota_role claim.
pub fn role_trusted(client: &SpiClient, db_role: &str) -> QResult<bool> {
    the_row(query_row(client, &CALLER_TRUSTED, [("db_role", db_role.into())], |row| not_null(row, "trusted"))?)
}

/// One row of quota.admin_changes. States are JSON text (None: the object did not exist).
pub struct ChangeRow<'a> {
    pub action: &'static str,
    pub db_role: &'a str,
    pub jwt_subject: Option<Uuid>,
    pub jwt_role: Option<&'a str>,
    pub quota_role: Option<&'static str>,
    pub subject: Option<Uuid>,
    pub metric: Option<&'a str>,
    pub plan: Option<&'a str>,
    pub before: Option<String>,
    pub after: Option<String>,
}

pub fn record_change(client: &SpiClient, change: ChangeRow) -> QResult<()> {
    let args = [
        ("action", change.action.into()),
        ("db_role", change.db_role.into()),
        ("jwt_subject", change.jwt_subject.into()),
        ("jwt_role", change.jwt_role.into()),
        ("quota_role", change.quota_role.into()),
        ("subject", change.subject.into()),
        ("metric", change.metric.into()),
        ("plan", change.plan.into()),
        ("before", change.before.into()),
        ("after", change.after.into()),
    ];
    query(client, &RECORD_CHANGE, args, |_| Ok(())).map(drop)
}

pub fn plan_state(client: &SpiClient, plan: &str) -> QResult<Option<String>> {
    query_row(client, &PLAN_STATE, [("plan", plan.into())], |row| not_null(row, "state"))
}

pub fn assignment_state(client: &SpiClient, subject: Uuid) -> QResult<Option<String>> {
    query_row(client, &ASSIGNMENT_STATE, [("subject", subject.into())], |row| not_null(row, "state"))
}

pub fn override_state(client: &SpiClient, subject: Uuid, metric: &str) -> QResult<Option<String>> {
    query_row(client, &OVERRIDE_STATE, [("subject", subject.into()), ("metric", metric.into())], |row| not_null(row, "state"))
}

/// A grant's subject, metric and state.
pub fn grant_state(client: &SpiClient, grant_id: Uuid) -> QResult<Option<(Uuid, String, String)>> {
    query_row(client, &GRANT_STATE, [("grant_id", grant_id.into())], |row| {
        Ok((not_null(row, "subject")?, not_null(row, "metric")?, not_null(row, "state")?))
    })
}
