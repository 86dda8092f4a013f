//! The enforce part of the simulation: one table, `sim_seats (id, shelf, owner, seats)`,
//! partitioned by `shelf` (0 and 1), under `quota.enforce` for "seats" (lifetime,
//! SEATS_LIMITS per plan) and "seat_changes" (yearly, CHANGES_LIMITS), the amount of both the
//! `seats` column. Each connection inserts, resizes, moves (to another subject) and relocates
//! (to the other partition, often resized) rows of its own subjects, deletes them, resets
//! their windows, and rolls some of those writes back. The model, written from README
//! "Enforcing limits on app tables": a row's seats (or a resize's growth) are charged to its
//! subject's current windows and to the table's account, all or nothing (PT429 when they do
//! not fit: the write fails); a delete (or a shrink) gives "seats" back what the row was
//! charged, at most what the account holds, to the current window, never below zero, and
//! "seat_changes" (windowed) nothing; a row moved to another subject is charged there in
//! full for "seats" (lifetime) and the old subject gets its seats back, "seat_changes" only
//! the growth (none); a row relocated to the other partition is a delete and an insert to
//! PostgreSQL's row triggers: "seats" gives the row back and charges it again, "seat_changes"
//! is charged only the growth, as a resize in place.

use uuid::Uuid;

use super::{db, fail, sqlstate, Fail, Worker, PLANS};

/// The limit of "seats" in each plan of PLANS (sim_a, sim_b).
pub const SEATS_LIMITS: [i64; 2] = [6, 9];
pub const SEATS: &str = "seats";
/// The yearly limit of "seat_changes" in each plan of PLANS.
pub const CHANGES_LIMITS: [i64; 2] = [30, 45];
pub const CHANGES: &str = "seat_changes";

#[derive(Debug, Clone)]
struct SeatRow {
    id: i64,
    /// Its partition (0 or 1).
    shelf: i32,
    /// Index of its subject in the worker's subjects.
    owner: usize,
    seats: i64,
}

/// The connection's rows of sim_seats and what "seats" stands at for each of its subjects.
#[derive(Debug, Clone, Default)]
pub struct EnforceModel {
    rows: Vec<SeatRow>,
    /// Usage of the subject's current "seats" window.
    used: [i64; 4],
    /// What the table charged the subject (quota.enforced_charges, both partitions).
    charged: [i64; 4],
    /// Usage of the subject's current "seat_changes" window.
    changes: [i64; 4],
}

/// The table and its trigger, once per run (setup's connection).
pub fn setup_table(client: &mut postgres::Client) -> Result<(), Fail> {
    client
        .batch_execute(
            "CREATE TABLE public.sim_seats (id bigserial, shelf int NOT NULL, owner uuid NOT NULL, seats int NOT NULL,
                                            PRIMARY KEY (id, shelf)) PARTITION BY LIST (shelf);
             CREATE TABLE public.sim_seats_0 PARTITION OF public.sim_seats FOR VALUES IN (0);
             CREATE TABLE public.sim_seats_1 PARTITION OF public.sim_seats FOR VALUES IN (1);
             SELECT quota.enforce_on('public.sim_seats', 'seats', subject_column => 'owner', amount => 'seats');
             SELECT quota.enforce_on('public.sim_seats', 'seat_changes', subject_column => 'owner', amount => 'seats');",
        )
        .map_err(db)
}

/// What the write did, as the model expects it.
enum Outcome {
    Allowed,
    Denied,
}

impl Worker {
    /// One write in a transaction of its own, committed, or (one in ten) rolled back.
    pub fn enforce_step(&mut self) -> Result<(), Fail> {
        let s = self.rng.below(self.subjects.len() as u64) as usize;
        self.trace.push(format!("seats of subject {s}:"));
        let rolled_back = self.rng.chance(10);
        let before = self.enforced.clone();
        self.client.batch_execute("BEGIN").map_err(db)?;
        let written = match self.rng.below(100) {
            0..=34 => self.seats_insert(s),
            35..=52 => self.seats_delete(),
            53..=65 => self.seats_resize(),
            66..=77 => self.seats_move(),
            78..=91 => self.seats_relocate(),
            _ => self.seats_reset(s, rolled_back),
        };
        if rolled_back {
            // Whatever the write did: nothing of it stays.
            self.enforced = before;
        }
        let end = if rolled_back || written.is_err() { "ROLLBACK" } else { "COMMIT" };
        let ended = self.client.batch_execute(end).map_err(db);
        written.and(ended)
    }

    fn limit(&self, s: usize) -> i64 {
        SEATS_LIMITS[self.subjects[s].plan]
    }

    /// Charges `seats` to subject `s` for "seats" and `changed` for "seat_changes" (the write
    /// fails if either does not fit; the caller restores the model then).
    fn charge(&mut self, s: usize, seats: i64, changed: i64) -> Outcome {
        let seats_fit = seats == 0 || self.enforced.used[s] + seats <= self.limit(s);
        let changes_fit = changed == 0 || self.enforced.changes[s] + changed <= CHANGES_LIMITS[self.subjects[s].plan];
        if !(seats_fit && changes_fit) {
            return Outcome::Denied;
        }
        self.enforced.used[s] += seats;
        self.enforced.charged[s] += seats;
        self.enforced.changes[s] += changed;
        Outcome::Allowed
    }

    /// Gives back what a row of subject `s` was charged, at most what its account holds.
    fn refund(&mut self, s: usize, seats: i64) {
        let refund = seats.min(self.enforced.charged[s]);
        self.enforced.charged[s] -= refund;
        self.enforced.used[s] = (self.enforced.used[s] - refund).max(0);
    }

    /// Runs a write and checks it against the model's outcome: the row id an INSERT returns.
    fn seats_write(&mut self, what: &str, expected: Outcome, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Option<i64>, Fail> {
        // A denial fails the statement, and the step's transaction goes on past it, as an app's
        // would that tries something else.
        self.client.batch_execute("SAVEPOINT seats").map_err(db)?;
        let result = self.client.query_opt(sql, params);
        match (expected, result) {
            (Outcome::Allowed, Ok(row)) => {
                self.client.batch_execute("RELEASE SAVEPOINT seats").map_err(db)?;
                Ok(row.map(|row| row.get::<_, i64>(0)))
            }
            (Outcome::Denied, Err(e)) if sqlstate(&e).as_deref() == Some("PT429") => {
                self.client.batch_execute("ROLLBACK TO SAVEPOINT seats; RELEASE SAVEPOINT seats").map_err(db)?;
                self.count("seats denied: PT429");
                Ok(None)
            }
            (Outcome::Allowed, Err(e)) => fail(format!("{what}: the model allows it, the trigger refused: {}", db(e))),
            (Outcome::Denied, Ok(_)) => fail(format!("{what}: the model denies it (PT429), the trigger let it through")),
            (Outcome::Denied, Err(e)) => fail(format!("{what}: expected PT429, got {}", db(e))),
        }
    }

    fn seats_insert(&mut self, s: usize) -> Result<(), Fail> {
        self.count("seats insert");
        let seats = self.rng.range(0, 3);
        let shelf = self.rng.below(2) as i32;
        let before = self.enforced.clone();
        let expected = self.charge(s, seats, seats);
        let denied = matches!(expected, Outcome::Denied);
        let owner = self.subjects[s].id;
        let sql = "INSERT INTO public.sim_seats (shelf, owner, seats) VALUES ($1, $2, $3) RETURNING id";
        let id = self.seats_write("insert", expected, sql, &[&shelf, &owner, &(seats as i32)])?;
        match id {
            Some(id) => self.enforced.rows.push(SeatRow { id, shelf, owner: s, seats }),
            None if denied => self.enforced = before,
            None => return fail("insert: no row id returned"),
        }
        Ok(())
    }

    fn pick_row(&mut self) -> Option<usize> {
        let count = self.enforced.rows.len() as u64;
        (count > 0).then(|| self.rng.below(count) as usize)
    }

    fn seats_delete(&mut self) -> Result<(), Fail> {
        let Some(r) = self.pick_row() else { return Ok(()) };
        self.count("seats delete");
        let SeatRow { id, owner, seats, .. } = self.enforced.rows.remove(r);
        self.refund(owner, seats);
        self.seats_write("delete", Outcome::Allowed, "DELETE FROM public.sim_seats WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn seats_resize(&mut self) -> Result<(), Fail> {
        let Some(r) = self.pick_row() else { return Ok(()) };
        self.count("seats resize");
        let SeatRow { id, owner, seats, .. } = self.enforced.rows[r].clone();
        let resized = self.rng.range(0, 4);
        let before = self.enforced.clone();
        let expected = if resized >= seats {
            self.charge(owner, resized - seats, resized - seats)
        } else {
            self.refund(owner, seats - resized);
            Outcome::Allowed
        };
        let denied = matches!(expected, Outcome::Denied);
        self.seats_write("resize", expected, "UPDATE public.sim_seats SET seats = $2 WHERE id = $1", &[&id, &(resized as i32)])?;
        if denied {
            self.enforced = before;
        } else {
            self.enforced.rows[r].seats = resized;
        }
        Ok(())
    }

    /// A row to another of the connection's subjects: charged there in full, given back here.
    fn seats_move(&mut self) -> Result<(), Fail> {
        let Some(r) = self.pick_row() else { return Ok(()) };
        let SeatRow { id, owner, seats, .. } = self.enforced.rows[r].clone();
        let to = (owner + 1 + self.rng.below(self.subjects.len() as u64 - 1) as usize) % self.subjects.len();
        self.count("seats move");
        let before = self.enforced.clone();
        let expected = self.charge(to, seats, 0);
        let denied = matches!(expected, Outcome::Denied);
        if !denied {
            self.refund(owner, seats);
        }
        let new_owner: Uuid = self.subjects[to].id;
        self.seats_write("move", expected, "UPDATE public.sim_seats SET owner = $2 WHERE id = $1", &[&id, &new_owner])?;
        if denied {
            self.enforced = before;
        } else {
            self.enforced.rows[r].owner = to;
        }
        Ok(())
    }

    /// A row to the other partition, resized one time in two: a DELETE and an INSERT to the
    /// row triggers, which the trigger pairs. "seats" gives the row back (at most what the
    /// account holds, never below zero) and charges the new size; "seat_changes" is charged
    /// only the growth.
    fn seats_relocate(&mut self) -> Result<(), Fail> {
        let Some(r) = self.pick_row() else { return Ok(()) };
        let SeatRow { id, shelf, owner, seats } = self.enforced.rows[r].clone();
        self.count("seats relocate");
        let resized = if self.rng.chance(50) { self.rng.range(0, 4) } else { seats };
        let before = self.enforced.clone();
        self.refund(owner, seats);
        let expected = self.charge(owner, resized, (resized - seats).max(0));
        let denied = matches!(expected, Outcome::Denied);
        let sql = "UPDATE public.sim_seats SET shelf = 1 - shelf, seats = $3 WHERE id = $1 AND shelf = $2";
        self.seats_write("relocate", expected, sql, &[&id, &shelf, &(resized as i32)])?;
        if denied {
            self.enforced = before;
        } else {
            self.enforced.rows[r].shelf = 1 - shelf;
            self.enforced.rows[r].seats = resized;
        }
        Ok(())
    }

    /// A new "seats" or "seat_changes" window: usage starts at 0, the table's account stays.
    fn seats_reset(&mut self, s: usize, rolled_back: bool) -> Result<(), Fail> {
        // Counted as the administration it is (quota.admin_changes), unless rolled back.
        self.count(if rolled_back { "seats reset rolled back" } else { "reset" });
        let metric = if self.rng.chance(50) { SEATS } else { CHANGES };
        self.client.execute("SELECT quota.reset($1, $2)", &[&self.subjects[s].id, &metric]).map_err(db)?;
        match metric {
            SEATS => self.enforced.used[s] = 0,
            _ => self.enforced.changes[s] = 0,
        }
        Ok(())
    }

    /// The database against the model: each subject's "seats" and "seat_changes" usage, its
    /// "seats" account and its live rows, on which partition.
    pub fn verify_enforced(&self, client: &mut postgres::Client) -> Result<(), Fail> {
        for (s, subject) in self.subjects.iter().enumerate() {
            let used: i64 = client
                .query_one("SELECT coalesce((SELECT used FROM quota.usage($1) WHERE metric = $2), 0)", &[&subject.id, &SEATS])
                .map_err(db)?
                .get(0);
            let charged: i64 = client
                .query_one("SELECT coalesce(sum(units), 0)::int8 FROM quota.enforced_charges WHERE subject = $1 AND metric = $2", &[&subject.id, &SEATS])
                .map_err(db)?
                .get(0);
            let changes: i64 = client
                .query_one("SELECT coalesce((SELECT used FROM quota.usage($1) WHERE metric = $2), 0)", &[&subject.id, &CHANGES])
                .map_err(db)?
                .get(0);
            let (rows, seats, on_shelf_1): (i64, i64, i64) = client
                .query_one(
                    "SELECT count(*), coalesce(sum(seats), 0)::int8, count(*) FILTER (WHERE tableoid = 'public.sim_seats_1'::regclass)
                       FROM public.sim_seats WHERE owner = $1",
                    &[&subject.id],
                )
                .map_err(db)
                .map(|row| (row.get(0), row.get(1), row.get(2)))?;
            let model_rows = self.enforced.rows.iter().filter(|row| row.owner == s);
            let (model_count, model_seats, model_on_1) =
                model_rows.fold((0, 0, 0), |(count, total, on_1), row| (count + 1, total + row.seats, on_1 + i64::from(row.shelf)));
            let got = (used, changes, charged, rows, seats, on_shelf_1);
            let expected = (self.enforced.used[s], self.enforced.changes[s], self.enforced.charged[s], model_count, model_seats, model_on_1);
            if got != expected {
                return fail(format!(
                    "subject {} (plan {}) seats: (used, seat_changes, charged, rows, seats, rows on shelf 1) {got:?}, the model {expected:?}",
                    subject.id, PLANS[subject.plan].0
                ));
            }
        }
        Ok(())
    }
}
