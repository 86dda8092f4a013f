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

/// The caller of an administration function, as its audit row names it.
pub struct Caller {
    pub db_role: String,
    pub claims: Claims,
}

impl Caller {
    pub fn jwt_subject(&self) -> Option<Uuid> {
        self.claims.subject.map(|subject| Uuid::from_bytes(*subject.as_bytes()))
    }
}

/// The caller, if they may call `function`, which needs `needed` of a signed-in user.
/// 42501 otherwise: a user's own claims (`user_metadata`) never count.
pub fn authorize(client: &SpiClient, needed: QuotaRole, function: &str) -> QResult<Caller> {
    let (db_role, trusted) = changes::caller(client)?;
    let claims = claims();
    if trusted || claims.quota_role.is_some_and(|role| role >= needed) {
        Ok(Caller { db_role, claims })
    } else {
        Err(QuotaError::not_allowed(function, &db_role, needed.as_str()))
    }
}
