//! The `Pg-Quota-Signature` header: Stripe's scheme, so receivers can reuse what they know.
//! `t=<unix seconds>,v1=<lowercase hex HMAC-SHA256(secret, "<t>.<body>")>`: the timestamp is
//! signed with the body, so a receiver that rejects old timestamps also rejects replays.

use hmac::Mac;

use crate::config::SigningKey;

pub const HEADER: &str = "Pg-Quota-Signature";

pub fn header_value(key: &SigningKey, unix_seconds: u64, body: &str) -> String {
    let mut mac = key.clone();
    let timestamp = unix_seconds.to_string();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::KeyInit;

    fn key(secret: &str) -> SigningKey {
        SigningKey::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
    }

    #[test]
    fn plain_hmac_sha256_vector() {
        // The well-known vector (Wikipedia's HMAC article), through the same keyed clone.
        let mut mac = key("key").clone();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn header_matches_an_independent_computation() {
        // Computed with Python 3.11, independently of this crate:
        //   body = '{"id": 42, "rule": "100%", "subject": "café"}'
        //   hmac.new(b"whsec_test", ("1700000000." + body).encode(), hashlib.sha256).hexdigest()
        let body = r#"{"id": 42, "rule": "100%", "subject": "café"}"#;
        assert_eq!(
            header_value(&key("whsec_test"), 1_700_000_000, body),
            "t=1700000000,v1=58cf89bc45093d26014a0341728333090a02dd2576f26b52662a3165a2d5fb76"
        );
    }

    #[test]
    fn header_format() {
        let value = header_value(&key("k"), 7, "{}");
        let (timestamp, digest) = value.split_once(',').expect("two parts");
        assert_eq!(timestamp, "t=7");
        let digest = digest.strip_prefix("v1=").expect("v1= prefix");
        assert_eq!(digest.len(), 64);
        assert!(digest.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        // The key, the timestamp and every byte of the body are signed.
        let digest_of = |value: String| value.split_once(",v1=").map(|(_, digest)| digest.to_owned());
        let signed = digest_of(value.clone());
        assert_ne!(digest_of(header_value(&key("K"), 7, "{}")), signed);
        assert_ne!(digest_of(header_value(&key("k"), 8, "{}")), signed);
        assert_ne!(digest_of(header_value(&key("k"), 7, "{ }")), signed);
    }
}
