//! Subjects that are not users: an IP address, an API key, an anonymous device. Each text
//! key maps to one subject uuid, the same on every database and every release: a version 5
//! (name-based, SHA-1) uuid of the key in pg_quota's own namespace, so that such keys use
//! the same plans, windows, grants and ledger as users do.

use std::fmt;

/// pg_quota's namespace for subject keys: the version 5 uuid of the URL
/// `urn:pg_quota:subject-key` in the standard URL namespace. Never changes.
pub const SUBJECT_KEY_NAMESPACE: uuid::Uuid = uuid::uuid!("5cc20a52-ab2c-54e8-8333-b338c5448f6b");

const KEY_CHARS: std::ops::RangeInclusive<usize> = 1..=255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLength {
    pub chars: usize,
}

impl fmt::Display for KeyLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a subject key must be 1 to 255 characters, got {}", self.chars)
    }
}

impl std::error::Error for KeyLength {}

/// The subject of a text key such as `ip:203.0.113.7` or `api_key:sk_live_123`. Keys are
/// compared exactly (case and spaces count): prefix them with their kind so that an IP
/// address and an API key can never share a subject.
pub fn subject_for_key(key: &str) -> Result<uuid::Uuid, KeyLength> {
    let chars = key.chars().count();
    if KEY_CHARS.contains(&chars) {
        Ok(uuid::Uuid::new_v5(&SUBJECT_KEY_NAMESPACE, key.as_bytes()))
    } else {
        Err(KeyLength { chars })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_is_the_documented_name() {
        assert_eq!(SUBJECT_KEY_NAMESPACE, uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"urn:pg_quota:subject-key"));
    }

    #[test]
    fn keys_map_to_version_5_uuids_that_never_change() {
        // Computed independently, with Python's uuid.uuid5.
        assert_eq!(subject_for_key("ip:203.0.113.7").unwrap().to_string(), "7d44bfbd-d483-549e-998c-22d00eab0bf0");
        assert_eq!(subject_for_key("api_key:sk_live_123").unwrap().to_string(), "869ff0c3-cb96-5f2e-a0bd-76135f59ea0e");
        assert_eq!(subject_for_key("ip:203.0.113.7").unwrap().get_version_num(), 5);
        assert_ne!(subject_for_key("IP:203.0.113.7"), subject_for_key("ip:203.0.113.7"));
    }

    #[test]
    fn keys_are_1_to_255_characters() {
        assert_eq!(subject_for_key(""), Err(KeyLength { chars: 0 }));
        assert!(subject_for_key(&"é".repeat(255)).is_ok());
        assert_eq!(subject_for_key(&"k".repeat(256)), Err(KeyLength { chars: 256 }));
    }
}
