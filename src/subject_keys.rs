//! Subjects that are not users (quota_rules::keys): quota.subject_for(key) gives an IP
//! address, an API key or an anonymous device a subject uuid of its own, the same on every
//! database, so it can be put on a plan and consume like a user.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::Uuid;

use quota_rules::keys::subject_for_key;

use crate::error::{required, sql_call, QuotaError};

/// The subject uuid of a text key (`'ip:203.0.113.7'`, `'api_key:sk_live_123'`): a version
/// 5 uuid in pg_quota's namespace. IMMUTABLE: usable in indexes and generated columns.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn subject_for(key: Option<&str>) -> Result<Uuid, ErrorReport> {
    sql_call(|| {
        let subject = subject_for_key(required(key, "key")?)
            .map_err(|error| QuotaError::invalid(error.to_string()).with_hint("Prefix the key with its kind, for example 'ip:203.0.113.7'."))?;
        Ok(Uuid::from_bytes(*subject.as_bytes()))
    })
}
