//! pg_quota: SaaS usage quotas enforced inside the PostgreSQL transaction.
//!
//! The rules (windows, plans, limit arithmetic, the split, request rules) are the pgrx-free
//! crate `quota_rules` (crates/quota-rules). This crate is glue, one module per feature:
//! `spending` (consume, check, record, record_batch, give_back), `fast_path` (consume's
//! one-statement path), `bundles` (consume_many), `reservations`, `alerts` (usage alerts and
//! their outbox), `denials` (what a raised
//! denial says), `usage` (and the end-user surface), `admin`, `callers` (who is calling and
//! what a signed-in user may do), `changes` (the audit trail of administration),
//! `enforce` (what the enforce and sign-up triggers read of a row), `shared` (the
//! shared-memory tier of a preloaded library: the memory-only rate limiter and the denial
//! journal). `store` holds every
//! statement they run, `tuples` the composite results, `error` the SQLSTATEs, `jsonb` the
//! jsonb arguments. Tables, types and hand-written SQL live in `sql/`, one file per concern.

use pgrx::prelude::*;

mod admin;
mod alerts;
mod bundles;
mod callers;
mod changes;
mod denials;
mod enforce;
mod error;
mod fast_path;
mod jsonb;
mod pools;
mod rates;
mod reservations;
mod shared;
mod spending;
mod store;
mod subject_keys;
mod tuples;
mod usage;

::pgrx::pg_module_magic!(name, version);

/// Errors that pass through Rust frames carry a Rust backtrace in their DETAIL when the
/// server runs with RUST_BACKTRACE set: internals, never for clients. RUST_LIB_BACKTRACE
/// takes precedence over it for this library's backtraces; a backend is single-threaded and
/// nothing has captured one when the library is loaded.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    shared::init();
}

// The hand-written SQL, in install order: the schema first, the privileges last, and each
// file after the Rust functions it calls.
extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/fast_path.sql", name = "fast_path");
extension_sql_file!("../sql/pools.sql", name = "pools", requires = ["fast_path", usage::current_subject]);
extension_sql_file!("../sql/alerts.sql", name = "alerts", requires = ["pools"]);
extension_sql_file!("../sql/compaction.sql", name = "compaction", requires = ["alerts"]);
extension_sql_file!("../sql/audit.sql", name = "audit", requires = ["compaction"]);
extension_sql_file!("../sql/reservations.sql", name = "reservations", requires = ["audit"]);
extension_sql_file!("../sql/journal.sql", name = "journal", requires = ["reservations"]);
extension_sql_file!(
    "../sql/memory_rates.sql",
    name = "memory_rates",
    requires = ["journal", shared::memory_rates::configuration_changed]
);
extension_sql_file!(
    "../sql/require.sql",
    name = "require",
    requires = [
        "memory_rates",
        spending::consume,
        bundles::consume_many,
        reservations::reserve,
        denials::explain_denial,
        denials::explain_decided_denial,
        shared::journal::journal_denial
    ]
);
extension_sql_file!(
    "../sql/rate_limits.sql",
    name = "rate_limits",
    requires = [
        "require",
        spending::check,
        usage::current_subject,
        subject_keys::subject_for,
        shared::memory_rates::preloaded_sql,
        shared::memory_rates::limit_in_memory
    ]
);
extension_sql_file!(
    "../sql/enforce.sql",
    name = "enforce",
    requires = ["require", spending::check, spending::give_back]
);
extension_sql_file!("../sql/supabase.sql", name = "supabase", requires = ["enforce", "reservations", usage::current_subject, enforce::row_uuid]);
extension_sql_file!("../sql/analytics.sql", name = "analytics", requires = ["supabase", usage::usage, usage::my_usage]);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

/// Tests that need to run inside PostgreSQL and are awkward in pg_regress. The SQL-level
/// suites in tests/regress cover every function and error case. Compiled only for
/// `cargo pgrx test`; a test's error (its `Err`) fails it.
#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use pgrx::spi;

    /// The tests run at once, each in its own transaction, and one drops the extension: each
    /// takes this lock first, so that none waits on another's rows while holding locks the
    /// other needs (a deadlock).
    fn one_at_a_time() -> Result<(), spi::Error> {
        Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pg_quota pg_test'))")
    }

    /// Kept plans and the cached OID of quota.decision must follow a DROP/CREATE EXTENSION in
    /// the same session: the old OIDs are gone afterwards.
    #[pg_test]
    fn survives_extension_recreated_in_session() -> Result<(), spi::Error> {
        one_at_a_time()?;
        let create_plan = "SELECT quota.create_plan('p', '{\"calls\": {\"limit\": 5, \"per\": \"day\"}}', is_default => true)";
        Spi::run(create_plan)?;
        assert_eq!(Spi::get_one::<i64>("SELECT used FROM quota.consume(gen_random_uuid(), 'calls', 2)")?, Some(2));
        Spi::run("DROP EXTENSION pg_quota; CREATE EXTENSION pg_quota")?;
        Spi::run(create_plan)?;
        assert_eq!(Spi::get_one::<i64>("SELECT used FROM quota.consume(gen_random_uuid(), 'calls', 3)")?, Some(3));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM quota.usage(gen_random_uuid())")?, Some(1));
        Ok(())
    }

    /// A virtual generated column (PostgreSQL 18) has no value in a trigger's row, so a row
    /// would be charged nothing: quota.enforce_on refuses one as the subject or the amount,
    /// and a trigger attached by hand refuses the first row it reads. A stored one is charged.
    #[cfg(feature = "pg18")]
    #[pg_test]
    fn enforce_refuses_virtual_generated_columns() -> Result<(), spi::Error> {
        one_at_a_time()?;
        Spi::run("SELECT quota.create_plan('virtual_columns', '{\"storage\": {\"limit\": 100, \"per\": \"lifetime\"}}')")?;
        Spi::run("SELECT quota.assign_plan('00000000-0000-0000-0000-000000000001', 'virtual_columns')")?;
        Spi::run(
            "CREATE FUNCTION pg_temp.sqlstate(statement text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE statement; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$",
        )?;
        let sqlstate = |statement: &str| Spi::get_one_with_args::<String>("SELECT pg_temp.sqlstate($1)", &[statement.into()]);
        Spi::run(
            "CREATE TABLE files (owner uuid, user_id uuid GENERATED ALWAYS AS (owner) VIRTUAL, content text,
                                 size_virtual int GENERATED ALWAYS AS (length(content)) VIRTUAL,
                                 size_stored int GENERATED ALWAYS AS (length(content)) STORED)",
        )?;
        assert_eq!(sqlstate("SELECT quota.enforce_on('files', 'storage', 'owner', 'size_virtual')")?.as_deref(), Some("0A000"));
        assert_eq!(sqlstate("SELECT quota.enforce_on('files', 'storage', 'user_id', 'size_stored')")?.as_deref(), Some("0A000"));
        Spi::run("CREATE TRIGGER by_hand AFTER INSERT ON files FOR EACH ROW EXECUTE FUNCTION quota.enforce('storage', 'owner', 'size_virtual')")?;
        let insert = "INSERT INTO files (owner, content) VALUES ('00000000-0000-0000-0000-000000000001', repeat('x', 7))";
        assert_eq!(sqlstate(insert)?.as_deref(), Some("0A000"));
        Spi::run("DROP TRIGGER by_hand ON files")?;
        Spi::run("SELECT quota.enforce_on('files', 'storage', 'owner', 'size_stored')")?;
        Spi::run(insert)?;
        let used = "SELECT used FROM quota.usage('00000000-0000-0000-0000-000000000001') WHERE metric = 'storage'";
        assert_eq!(Spi::get_one::<i64>(used)?, Some(7));
        Ok(())
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
