//! Load for the crash test (tests/crash.sh kills the server while this runs).
//!
//!     crash_load [--seed N] [--seconds N] [--connections N] [--db NAME]
//!
//! Every logical request carries its own idempotency key: consumes and records on
//! subjects with tight limits and grants, and reserve-then-settle pairs. When the
//! connection breaks, the worker reconnects (waiting for the server to come back) and
//! retries the request in flight with the same key, as a real client would; a few are
//! abandoned instead, their outcome unknown. Afterwards, on the restarted server: every
//! acknowledged allowed request is in the ledger exactly once, as it was answered; no
//! acknowledged denial was charged; abandoned requests are entirely there or entirely
//! absent (quota.audit(): counters and grant balances equal the ledger); no allowance
//! was exceeded.

use std::thread;
use std::time::{Duration, Instant};

use pg_quota_harness::{arg, connect, fresh_database, seed_from, sqlstate, Rng};
use postgres::Client;
use uuid::Uuid;

const SUBJECTS: usize = 8;
const ALLOWANCE: i64 = 2000;

/// An answer the client received: (allowed, from_allowance, from_grants, overage).
type Answer = (bool, i64, i64, i64);

/// Errors that mean the server went away, not that the request was wrong.
fn connection_lost(error: &postgres::Error) -> bool {
    error.is_closed()
        || match sqlstate(error) {
            None => true,
            Some(state) => state.starts_with("08") || state.starts_with("57P"),
        }
}

fn reconnect(dbname: &str) -> Result<Client, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match connect(dbname) {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => return Err(format!("the server did not come back: {e}")),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

struct Worker {
    dbname: String,
    client: Client,
    rng: Rng,
    subjects: Vec<Uuid>,
    /// (subject, key, answer) of every acknowledged consume or record.
    acknowledged: Vec<(Uuid, String, Answer)>,
    /// (reservation, answer) of every acknowledged settle.
    settled: Vec<(Uuid, Answer)>,
    retried: u64,
    abandoned: u64,
}

impl Worker {
    /// Runs `call` until it is answered, reconnecting after each lost connection. Returns
    /// None when the worker abandons the request instead of retrying it.
    fn until_answered<T>(&mut self, call: impl Fn(&mut Client) -> Result<T, postgres::Error>) -> Result<Option<T>, String> {
        loop {
            match call(&mut self.client) {
                Ok(answer) => return Ok(Some(answer)),
                Err(e) if connection_lost(&e) => {
                    self.client = reconnect(&self.dbname)?;
                    if self.rng.chance(20) {
                        self.abandoned += 1;
                        return Ok(None);
                    }
                    self.retried += 1;
                }
                Err(e) => return Err(format!("unexpected error: {e} (SQLSTATE {:?})", sqlstate(&e))),
            }
        }
    }

    fn request(&mut self, n: u64) -> Result<(), String> {
        let subject = *self.rng.pick(&self.subjects);
        let key = format!("{}-{n}", self.rng.next_u64());
        let amount = self.rng.range(1, 5);
        let answer = |row: postgres::Row| -> Answer { (row.get(0), row.get(1), row.get(2), row.get(3)) };
        match self.rng.below(10) {
            0..=7 => {
                let function = if self.rng.chance(85) { "consume" } else { "record" };
                let sql = format!("SELECT allowed, from_allowance, from_grants, overage FROM quota.{function}($1, 'calls', $2, $3)");
                if let Some(row) = self.until_answered(|c| c.query_one(&sql, &[&subject, &amount, &key]))? {
                    self.acknowledged.push((subject, key, answer(row)));
                }
            }
            _ => {
                let reserve = "SELECT reservation_id FROM quota.reserve($1, 'calls', $2, interval '1 hour', $3)";
                let Some(row) = self.until_answered(|c| c.query_one(reserve, &[&subject, &amount, &key]))? else { return Ok(()) };
                let Some(id) = row.get::<_, Option<Uuid>>(0) else { return Ok(()) };
                let actual = self.rng.range(1, 6);
                let settle = "SELECT allowed, from_allowance, from_grants, overage FROM quota.settle($1, $2)";
                if let Some(row) = self.until_answered(|c| c.query_one(settle, &[&id, &actual]))? {
                    self.settled.push((id, answer(row)));
                }
            }
        }
        Ok(())
    }
}

fn setup(dbname: &str, subjects: &[Uuid]) -> Result<(), postgres::Error> {
    let mut client = fresh_database(dbname)?;
    let limits = serde_json::json!({"calls": {"limit": ALLOWANCE, "per": "lifetime"}});
    client.execute("SELECT quota.create_plan('crash', $1, true)", &[&limits])?;
    for subject in subjects.iter().step_by(2) {
        client.execute("SELECT quota.grant($1, 'calls', 50)", &[subject])?;
    }
    Ok(())
}

fn verify(client: &mut Client, workers: &[Worker]) -> Result<String, String> {
    let q = |client: &mut Client, sql: &str| -> Result<i64, String> {
        client.query_one(sql, &[]).map(|row| row.get(0)).map_err(|e| format!("{sql}: {e}"))
    };
    let mismatches = q(client, "SELECT count(*) FROM quota.audit()")?;
    if mismatches > 0 {
        return Err(format!("quota.audit() found {mismatches} mismatches: something was half-applied"));
    }
    let taken = q(
        client,
        &format!("SELECT count(*) FROM (SELECT subject FROM quota.events WHERE metric = 'calls' AND kind IN ('consume', 'record', 'settle')
                   GROUP BY subject HAVING sum(from_allowance) > {ALLOWANCE}) AS t"),
    )?;
    if taken > 0 {
        return Err(format!("{taken} subjects took more than their allowance of {ALLOWANCE}"));
    }
    let mut allowed = 0;
    for worker in workers {
        for (subject, key, (was_allowed, from_allowance, from_grants, overage)) in &worker.acknowledged {
            let rows = client
                .query(
                    "SELECT from_allowance, from_grants, overage FROM quota.events
                      WHERE subject = $1 AND idempotency_key = $2 AND kind IN ('consume', 'record')",
                    &[subject, key],
                )
                .map_err(|e| e.to_string())?;
            match (was_allowed, rows.as_slice()) {
                (true, [row]) if (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)) == (*from_allowance, *from_grants, *overage) => {
                    allowed += 1
                }
                (false, []) => {}
                _ => return Err(format!("acknowledged request {key} of {subject} (allowed={was_allowed}) is in the ledger {} times, or differs", rows.len())),
            }
        }
        for (reservation, (_, from_allowance, from_grants, overage)) in &worker.settled {
            let rows = client
                .query("SELECT from_allowance, from_grants, overage FROM quota.events WHERE reservation_id = $1 AND kind = 'settle'", &[reservation])
                .map_err(|e| e.to_string())?;
            match rows.as_slice() {
                [row] if (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)) == (*from_allowance, *from_grants, *overage) => allowed += 1,
                _ => return Err(format!("acknowledged settle of {reservation} is in the ledger {} times, or differs", rows.len())),
            }
        }
    }
    let acknowledged: usize = workers.iter().map(|w| w.acknowledged.len() + w.settled.len()).sum();
    let retried: u64 = workers.iter().map(|w| w.retried).sum();
    let abandoned: u64 = workers.iter().map(|w| w.abandoned).sum();
    Ok(format!(
        "{acknowledged} acknowledged requests ({allowed} charged) all in the ledger exactly once, {retried} retried after a lost connection, {abandoned} abandoned in flight, audit clean"
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seed = seed_from(arg(&args, "--seed"));
    let seconds: u64 = arg(&args, "--seconds").and_then(|v| v.parse().ok()).unwrap_or(10);
    let connections: usize = arg(&args, "--connections").and_then(|v| v.parse().ok()).unwrap_or(6);
    let dbname = arg(&args, "--db").unwrap_or_else(|| "pgq_crash".into());
    let mut rng = Rng::new(seed);
    let subjects: Vec<Uuid> = (0..SUBJECTS).map(|_| rng.uuid()).collect();
    let thread_seeds: Vec<u64> = (0..connections).map(|_| rng.next_u64()).collect();
    let run = || -> Result<String, String> {
        setup(&dbname, &subjects).map_err(|e| format!("setup: {e}"))?;
        println!("crash_load: ready (seed={seed})");
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let handles: Vec<_> = thread_seeds
            .iter()
            .map(|thread_seed| {
                let (rng, subjects, dbname) = (Rng::new(*thread_seed), subjects.clone(), dbname.clone());
                thread::spawn(move || -> Result<Worker, String> {
                    let client = reconnect(&dbname)?;
                    let mut worker =
                        Worker { dbname, client, rng, subjects, acknowledged: Vec::new(), settled: Vec::new(), retried: 0, abandoned: 0 };
                    let mut n = 0;
                    while Instant::now() < deadline {
                        worker.request(n)?;
                        n += 1;
                    }
                    Ok(worker)
                })
            })
            .collect();
        let workers: Vec<Worker> =
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a worker panicked".into()))).collect::<Result<_, _>>()?;
        let mut client = reconnect(&dbname)?;
        verify(&mut client, &workers)
    };
    match run() {
        Ok(summary) => println!("crash_load: ok, seed={seed}: {summary}"),
        Err(why) => {
            eprintln!("crash_load: {why}");
            eprintln!("crash_load: FAILED seed={seed}");
            std::process::exit(1);
        }
    }
}
