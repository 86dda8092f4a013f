//! The seeds of the 64-bit hashes (`hashtextextended(text, seed)`) that name pg_quota's
//! transaction-level advisory locks: one seed per kind of lock, so that two kinds never
//! share a key. The hand-written SQL names the same constants beside each number it uses;
//! the test below holds the two to each other.

/// Serializes calls with the same (subject, idempotency key) until the holder ends.
pub const IDEMPOTENCY_KEY_LOCK_SEED: i64 = 1_903_126;
/// A subject's fast-path marks: tried exclusively by a consume that marks, taken by
/// quota.forget_fast_path_of_subject().
pub const FAST_PATH_SUBJECT_LOCK_SEED: i64 = 1_903_127;
/// A plan's fast-path marks: tried shared by a consume that marks, taken exclusively by
/// quota.forget_fast_path_of_plan().
pub const FAST_PATH_PLAN_LOCK_SEED: i64 = 1_903_128;
/// One quota.compact() batch at a time (sql/compaction.sql): tried, never waited for.
pub const COMPACTION_LOCK_SEED: i64 = 1_903_129;
/// Pool memberships: quota.join_pool() takes it until its transaction ends, so that two joins
/// cannot nest pools between them.
pub const POOL_MEMBERSHIP_LOCK_SEED: i64 = 1_903_130;

pub const ALL: [(&str, i64); 5] = [
    ("IDEMPOTENCY_KEY_LOCK_SEED", IDEMPOTENCY_KEY_LOCK_SEED),
    ("FAST_PATH_SUBJECT_LOCK_SEED", FAST_PATH_SUBJECT_LOCK_SEED),
    ("FAST_PATH_PLAN_LOCK_SEED", FAST_PATH_PLAN_LOCK_SEED),
    ("COMPACTION_LOCK_SEED", COMPACTION_LOCK_SEED),
    ("POOL_MEMBERSHIP_LOCK_SEED", POOL_MEMBERSHIP_LOCK_SEED),
];

#[cfg(test)]
mod tests {
    use super::ALL;

    /// Every seed the hand-written SQL passes to hashtextextended is one of these, and the
    /// file names it (`-- FAST_PATH_PLAN_LOCK_SEED = 1903128`).
    #[test]
    fn sql_uses_the_named_seeds() {
        let sql_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql");
        let mut seen = 0;
        for entry in std::fs::read_dir(sql_dir).expect("sql/") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            // Released scripts are frozen history; the seeds never change, so they agree.
            if !name.ends_with(".sql") || name.starts_with("pg_quota--") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for (at, _) in text.match_indices("hashtextextended(") {
                let call = &text[at..];
                let close = call.find("))").expect("closing parentheses");
                let seed: i64 = call[..close].rsplit(',').next().and_then(|s| s.trim().parse().ok())
                    .unwrap_or_else(|| panic!("{name}: a hashtextextended seed is not a literal number"));
                let (constant, _) = ALL.iter().find(|(_, value)| *value == seed)
                    .unwrap_or_else(|| panic!("{name}: seed {seed} is not a named lock seed"));
                assert!(text.contains(&format!("{constant} = {seed}")), "{name}: uses {seed} without naming {constant}");
                seen += 1;
            }
        }
        assert!(seen >= 2, "the fast path's SQL takes its locks by seed");
    }
}
