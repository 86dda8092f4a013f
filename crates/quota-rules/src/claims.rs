//! Who is calling, from the JWT claims PostgREST puts in `request.jwt.claims`.
//! Plain Rust. It never fails: anything but a uuid in `sub` means "no signed-in user".

use serde_json::Value;

/// The `sub` claim as a uuid. A pooled connection keeps an empty string after a request;
/// anonymous requests have no `sub`; a malformed value is nobody.
pub fn subject_from_claims(claims: Option<&str>) -> Option<uuid::Uuid> {
    let claims: Value = serde_json::from_str(claims?.trim()).ok()?;
    let sub = claims.get("sub")?.as_str()?;
    uuid::Uuid::parse_str(sub.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sub_and_never_fails() {
        let alice = "a11ce000-0000-4000-8000-000000000001";
        let claims = format!(r#"{{"sub": "{alice}", "role": "authenticated"}}"#);
        assert_eq!(subject_from_claims(Some(&claims)).map(|u| u.to_string()), Some(alice.to_string()));
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
            Some("not json"),
            Some("[1, 2]"),
            Some(r#"{"sub": "a11ce000-0000-4000-8000-000000000001""#),
        ] {
            assert_eq!(subject_from_claims(nobody), None, "{nobody:?}");
        }
    }
}
