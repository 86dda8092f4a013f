//! Who is calling, from the JWT claims PostgREST puts in `request.jwt.claims`.
//! Plain Rust. It never fails: anything but a uuid in `sub` means "no signed-in user", and
//! anything but a known level in `app_metadata.quota_role` means no pg_quota role.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The claim of `app_metadata` that gives a signed-in user a pg_quota role. The auth server
/// lets only the service role write `app_metadata` (a user writes `user_metadata`, which is
/// never read here), so a user cannot give it to themselves.
pub const QUOTA_ROLE_CLAIM: &str = "quota_role";

/// What a signed-in user may do beyond their own quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuotaRole {
    /// Reads every subject's rows and usage.
    Support,
    /// Support, and the administration functions.
    Admin,
}

impl QuotaRole {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaRole::Support => "support",
            QuotaRole::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<QuotaRole> {
        [QuotaRole::Support, QuotaRole::Admin].into_iter().find(|role| role.as_str() == text)
    }
}

/// The claims pg_quota reads, each kept raw and read on its own, so that one malformed
/// claim spoils only itself. Every other claim is skipped unread, without a nesting limit
/// (serde_json skips an ignored value iteratively), so a deep `user_metadata`, which the
/// auth server copies into the token from what the user wrote, cannot hide the `sub`.
#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(borrow)]
    sub: Option<&'a RawValue>,
    #[serde(borrow)]
    role: Option<&'a RawValue>,
    #[serde(borrow)]
    app_metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AppMetadata<'a> {
    #[serde(borrow)]
    quota_role: Option<&'a RawValue>,
}

/// The caller as the claims say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub subject: Option<uuid::Uuid>,
    /// The database role PostgREST switched to (`authenticated`, `service_role`, ...).
    pub role: Option<String>,
    pub quota_role: Option<QuotaRole>,
}

fn text(raw: Option<&RawValue>) -> Option<String> {
    serde_json::from_str::<String>(raw?.get()).ok()
}

/// Reads the claims; empty (a pooled connection after a request), absent or malformed
/// claims are nobody.
pub fn read_claims(claims: Option<&str>) -> Claims {
    let Some(raw) = claims.and_then(|claims| serde_json::from_str::<RawClaims>(claims.trim()).ok()) else {
        return Claims::default();
    };
    let quota_role = raw
        .app_metadata
        .and_then(|app_metadata| serde_json::from_str::<AppMetadata>(app_metadata.get()).ok())
        .and_then(|app_metadata| text(app_metadata.quota_role))
        .and_then(|role| QuotaRole::parse(&role));
    Claims {
        subject: text(raw.sub).and_then(|sub| uuid::Uuid::parse_str(sub.trim()).ok()),
        role: text(raw.role),
        quota_role,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "a11ce000-0000-4000-8000-000000000001";

    fn subject_from_claims(claims: Option<&str>) -> Option<uuid::Uuid> {
        read_claims(claims).subject
    }

    #[test]
    fn reads_sub_and_never_fails() {
        let claims = format!(r#"{{"sub": "{ALICE}", "role": "authenticated"}}"#);
        assert_eq!(subject_from_claims(Some(&claims)).map(|u| u.to_string()), Some(ALICE.to_string()));
        for nobody in [
            None,
            Some(""),
            Some("   "),
            Some("{}"),
            Some(r#"{"role": "anon"}"#),
            Some(r#"{"sub": ""}"#),
            Some(r#"{"sub": "not-a-uuid"}"#),
            Some(r#"{"sub": 42}"#),
            Some(r#"{"sub": null}"#),
            Some(r#"{"sub": [[[[["a11ce000-0000-4000-8000-000000000001"]]]]]}"#),
            Some("not json"),
            Some("[1, 2]"),
            Some(r#"{"sub": "a11ce000-0000-4000-8000-000000000001""#),
        ] {
            assert_eq!(subject_from_claims(nobody), None, "{nobody:?}");
        }
    }

    #[test]
    fn deep_and_large_user_metadata_do_not_hide_the_subject() {
        for depth in [127, 128, 129, 1_000, 100_000] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", r#"{"a": "#.repeat(depth), "}".repeat(depth));
            for metadata in [deep, objects] {
                let before = format!(r#"{{"user_metadata": {metadata}, "sub": "{ALICE}"}}"#);
                let after = format!(r#"{{"sub": "{ALICE}", "user_metadata": {metadata}, "role": "authenticated"}}"#);
                for claims in [before, after] {
                    assert_eq!(subject_from_claims(Some(&claims)).map(|u| u.to_string()).as_deref(), Some(ALICE), "depth {depth}");
                }
            }
        }
        let large = format!(r#"{{"sub": "{ALICE}", "user_metadata": {{"bio": "{}"}}}}"#, "x".repeat(1 << 20));
        assert_eq!(subject_from_claims(Some(&large)).map(|u| u.to_string()).as_deref(), Some(ALICE));
    }

    #[test]
    fn only_app_metadata_gives_a_quota_role() {
        let with = |extra: &str| read_claims(Some(&format!(r#"{{"sub": "{ALICE}", "role": "authenticated", {extra}}}"#)));
        assert_eq!(with(r#""app_metadata": {"quota_role": "admin", "provider": "email"}"#).quota_role, Some(QuotaRole::Admin));
        assert_eq!(with(r#""app_metadata": {"quota_role": "support"}"#).quota_role, Some(QuotaRole::Support));
        for none in [
            r#""user_metadata": {"quota_role": "admin"}"#,
            r#""quota_role": "admin""#,
            r#""app_metadata": {"quota_role": "Admin"}"#,
            r#""app_metadata": {"quota_role": ["admin"]}"#,
            r#""app_metadata": {"roles": {"quota_role": "admin"}}"#,
            r#""app_metadata": "admin""#,
            r#""app_metadata": null"#,
        ] {
            let claims = with(none);
            assert_eq!(claims.quota_role, None, "{none}");
            // A malformed app_metadata spoils only itself.
            assert_eq!(claims.subject.map(|u| u.to_string()).as_deref(), Some(ALICE), "{none}");
            assert_eq!(claims.role.as_deref(), Some("authenticated"));
        }
    }
}
