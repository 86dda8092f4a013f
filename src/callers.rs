//! Who is calling and what they may do. A signed-in Supabase user is `authenticated` (or
//! `anon`) with claims in `request.jwt.claims`; `app_metadata.quota_role` (see
//! quota_rules::claims) makes them a pg_quota admin or support. Any other role that holds
//! EXECUTE (service_role, a backend's role, a superuser) is trusted as before: EXECUTE is
//! its gate. The claims are trusted as PostgREST sets them, as auth.uid() trusts them.

use pgrx::pg_sys;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::claims::{read_claims, Claims, QuotaRole};

use crate::error::{QResult, QuotaError};
use crate::store::changes;

/// The claims of the current request (none outside PostgREST).
pub fn claims() -> Claims {
    // SAFETY: with missing_ok, GetConfigOption returns NULL or a valid C string that lives
    // until the setting changes; it is copied before anything else runs.
    let text = unsafe {
        let value = pg_sys::GetConfigOption(c"request.jwt.claims".as_ptr(), true, false);
        (!value.is_null()).then(|| std::ffi::CStr::from_ptr(value).to_string_lossy().into_owned())
    };
    read_claims(text.as_deref())
}

/// The database role that called: the role PostgREST switched to with SET ROLE (a
/// SECURITY DEFINER function changes the user, not the role setting), else the session's.
pub fn db_role() -> String {
    // SAFETY: GetConfigOptionByName of a built-in setting (missing_ok false) returns a
    // palloc'd copy of what SHOW role says ("none" without SET ROLE).
    let role = unsafe { std::ffi::CStr::from_ptr(pg_sys::GetConfigOptionByName(c"role".as_ptr(), std::ptr::null_mut(), false)) };
    let role = role.to_string_lossy();
    if role != "none" {
        return role.into_owned();
    }
    // SAFETY: the session's user exists while the session lasts; the name is copied at once.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetSessionUserId(), false)) }.to_string_lossy().into_owned()
}

/// The caller of an administration function, as its audit row names it.
pub struct Caller {
    pub db_role: String,
    pub claims: Claims,
}

impl Caller {
    /// The caller as it is, authorized by the function itself.
    pub fn current() -> Caller {
        Caller { db_role: db_role(), claims: claims() }
    }

    pub fn jwt_subject(&self) -> Option<Uuid> {
        self.claims.subject.map(|subject| Uuid::from_bytes(*subject.as_bytes()))
    }
}

/// The caller, if they may call `function`, which needs `needed` of a signed-in user.
/// 42501 otherwise: a user's own claims (`user_metadata`) never count.
pub fn authorize(client: &SpiClient, needed: QuotaRole, function: &str) -> QResult<Caller> {
    let db_role = db_role();
    let trusted = changes::role_trusted(client, &db_role)?;
    let claims = claims();
    if trusted || claims.quota_role.is_some_and(|role| role >= needed) {
        Ok(Caller { db_role, claims })
    } else {
        Err(QuotaError::not_allowed(function, &db_role, needed.as_str()))
    }
}

/// Who may act as an admin of `pool`: whoever `authorize` lets act as a pg_quota admin, and
/// the signed-in subjects that administer it as row level security sees them
/// (quota.administered_pools(): the pool itself, a teacher, once an admin has put a member in
/// it, and the subjects named with quota.set_pool_admin()). 42501 otherwise. Every user is a
/// subject: one that is no pool may not name admins of itself, who would then read its rows
/// beside their own.
pub fn authorize_for_pool(client: &SpiClient, pool: Uuid, function: &str) -> QResult<Caller> {
    let db_role = db_role();
    let claims = claims();
    if changes::role_trusted(client, &db_role)? || claims.quota_role.is_some_and(|role| role >= QuotaRole::Admin) {
        return Ok(Caller { db_role, claims });
    }
    if claims.subject.is_some() && crate::store::pools::caller_administers(client, pool)? {
        Ok(Caller { db_role, claims })
    } else {
        Err(QuotaError::not_pool_admin(function, pool))
    }
}
