//! What the drivers share: the seeded random generator of quota-rules (so that a failing
//! run is replayed from its seed alone) and connections configured from the libpq environment.

use postgres::{Client, NoTls};

/// The seeded generator every property test of pg_quota shares (crates/quota-rules).
pub use quota_rules::rng::Rng;

/// A seed from the command line or `SEED`, else from the clock (printed by the caller).
pub fn seed_from(arg: Option<String>) -> u64 {
    arg.or_else(|| std::env::var("SEED").ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        })
}

/// A connection to the database named by PGHOST, PGPORT, PGUSER and `dbname`.
pub fn connect(dbname: &str) -> Result<Client, postgres::Error> {
    let host = std::env::var("PGHOST").unwrap_or_else(|_| "/tmp".into());
    let port = std::env::var("PGPORT").unwrap_or_else(|_| "5432".into());
    let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into());
    Client::connect(&format!("host={host} port={port} user={user} dbname={dbname}"), NoTls)
}

/// A fresh database with pg_quota installed, and a connection to it.
pub fn fresh_database(dbname: &str) -> Result<Client, postgres::Error> {
    let mut admin = connect("postgres")?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {dbname}"))?;
    admin.batch_execute(&format!("CREATE DATABASE {dbname}"))?;
    let mut client = connect(dbname)?;
    client.batch_execute("CREATE EXTENSION pg_quota")?;
    Ok(client)
}

/// The value after `--name` on the command line.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// The SQLSTATE of a server error, None for a lost connection or a client-side error.
pub fn sqlstate(error: &postgres::Error) -> Option<String> {
    error.as_db_error().map(|db| db.code().code().to_string())
}
