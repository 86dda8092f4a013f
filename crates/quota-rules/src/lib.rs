//! The rules of pg_quota, without PostgreSQL: plain Rust, tested with `cargo test -p
//! quota-rules` on any machine. The extension (`src/` at the top of the repository) maps
//! SQL values to these types, runs the statements, and gives each error its SQLSTATE.
//!
//! - `window`: how a window is computed (period, anchor, time zone; DST-safe tiling).
//! - `plan`: names and plan definitions, what `quota.create_plan()` accepts.
//! - `governing`: what governs one (subject, metric), and which window and allowance follow.
//! - `decide`: limit arithmetic, the split between allowance and grants, decisions.
//! - `request`: argument rules of the entry points, replays, hold lifetimes, ledger kinds.
//! - `batch`: the events of `quota.record_batch()`. `claims`: who is calling (JWT `sub`).
//! - `bundle`: the amounts of `quota.consume_many()` and their replay.
//! - `denial`: what a raised denial says.
//! - `alert`: usage alert rules, when each holds, and what the fast path watches.
//! - `rollover`: which unused allowance carries into the next windows, and how much.
//! - `pool`: how a pool pays for its members, within their caps.
//! - `rate`: rate rules (token buckets kept as GCRA), and the rules in force for a subject.
//! - `keys`: the subject of a key that is not a user (an IP address, an API key).
//! - `memory_table`: where the shared-memory rate limiter keeps a rule's state.
//! - `journal`: what a raised denial records, and the ring that holds it until written.
//! - `locks`: the advisory-lock seeds shared with the hand-written SQL.
//! - `rng`: the seeded generator of every property test and of the test harness.

#![forbid(unsafe_code)]

use std::fmt;

pub mod alert;
pub mod batch;
pub mod bundle;
pub mod claims;
pub mod decide;
pub mod denial;
pub mod governing;
pub mod journal;
pub mod keys;
pub mod locks;
pub mod memory_table;
pub mod plan;
pub mod pool;
pub mod rate;
pub mod request;
pub mod rng;
pub mod rollover;
pub mod window;

/// A value read back from pg_quota's own tables that pg_quota could not have written:
/// corruption or a bug, reported as an internal error, never mistaken for a valid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptValue {
    pub what: &'static str,
    pub value: String,
}

impl CorruptValue {
    pub fn new(what: &'static str, value: &str) -> Self {
        CorruptValue { what, value: value.to_string() }
    }
}

impl fmt::Display for CorruptValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt {} read back: {:?}", self.what, self.value)
    }
}

impl std::error::Error for CorruptValue {}
