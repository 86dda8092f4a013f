//! The audit trail of administration: every administrative change writes one row of
//! quota.admin_changes in its own transaction, with who called (database role, JWT subject,
//! role and quota_role), what it concerned, and the state before and after as jsonb.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::callers::Caller;
use crate::error::QResult;
use crate::store::changes::{record_change, ChangeRow};
use crate::store::schema::{self, Part};

/// What an administrative call changed.
#[derive(Default)]
pub struct Change<'a> {
    pub action: &'static str,
    pub subject: Option<Uuid>,
    pub metric: Option<&'a str>,
    pub plan: Option<&'a str>,
}

/// Runs `apply`, reading the changed object's `state` before and after it, and records the
/// change with its caller.
pub fn audited<T>(
    client: &SpiClient,
    caller: &Caller,
    change: Change,
    state: impl Fn(&SpiClient) -> QResult<Option<String>>,
    apply: impl FnOnce(&SpiClient) -> QResult<T>,
) -> QResult<T> {
    let before = state(client)?;
    let applied = apply(client)?;
    let after = state(client)?;
    record(client, caller, change, before, after)?;
    Ok(applied)
}

/// Records a change whose states the caller read itself (nothing on a schema older than
/// 0.7.0's, which has no quota.admin_changes until ALTER EXTENSION UPDATE).
pub fn record(client: &SpiClient, caller: &Caller, change: Change, before: Option<String>, after: Option<String>) -> QResult<()> {
    if !schema::has(client, Part::AdminChanges)? {
        return Ok(());
    }
    let row = ChangeRow {
        action: change.action,
        db_role: &caller.db_role,
        jwt_subject: caller.jwt_subject(),
        jwt_role: caller.claims.role.as_deref(),
        quota_role: caller.claims.quota_role.map(|role| role.as_str()),
        subject: change.subject,
        metric: change.metric,
        plan: change.plan,
        before,
        after,
    };
    record_change(client, row)
}
