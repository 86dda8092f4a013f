//! What the drivers share: a seeded random generator (so that a failing run is replayed
//! from its seed alone) and connections configured from the libpq environment.

use postgres::{Client, NoTls};

/// SplitMix64: tiny, fast, and the same sequence for the same seed on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi, "empty range");
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (self.next_u64() as u128 % span) as i128) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A uuid drawn from this generator (reproducible, unlike Uuid::new_v4).
    pub fn uuid(&mut self) -> uuid::Uuid {
        let bytes = ((self.next_u64() as u128) << 64 | self.next_u64() as u128).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

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

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(43).next_u64(), xs[0]);
    }

    #[test]
    fn range_stays_inside() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let x = rng.range(-3, 5);
            assert!((-3..=5).contains(&x));
        }
        let extremes: Vec<i64> = (0..1000).map(|_| rng.range(i64::MIN, i64::MAX)).collect();
        assert!(extremes.iter().any(|x| *x < 0) && extremes.iter().any(|x| *x > 0));
    }
}
