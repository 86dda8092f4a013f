//! The pools part of the simulation: each connection owns a pool (plan sim_pool: 150
//! "calls", lifetime) and its two members (plan sim_a with an override of 2 "calls" and of
//! none: the second pays only with what it is given, so the pooled fast path decides it), and
//! drives them with consume, record, check, reserve, settle, release, give_back, allocate,
//! revoke, caps, leaving and joining. The model, written from docs/pools.md: a member's own
//! means (its allowance, then its grants, allocations among them) pay an amount they cover
//! in full, else the pool pays, within the member's cap less what it drew and holds there;
//! record and settle count what the cap or the pool cannot cover as overage.

use uuid::Uuid;

use super::{compare, db, decision, fail, Expected, Fail, Grant, Hold, Subject, Worker, DECISION};

/// The pool's plan: its limit of "calls" (METRICS[0]).
pub const POOL_PLAN: (&str, i64) = ("sim_pool", 150);
/// What each member's own plan allows it (an override of sim_a's "calls").
const OWN_ALLOWANCE: [i64; 2] = [2, 0];
const CALLS: usize = 0;

#[derive(Debug, Clone)]
struct Allocation {
    id: Uuid,
    /// Index of its grant in the member's grants.
    grant: usize,
    amount: i64,
    open: bool,
}

#[derive(Debug, Clone)]
struct PooledHold {
    id: Uuid,
    member: usize,
    amount: i64,
    open: bool,
}

#[derive(Debug, Clone)]
struct Member {
    subject: Subject,
    drawn: i64,
    /// Its own cap: None = the pool's default; Some(None) = no cap.
    cap: Option<Option<i64>>,
    in_pool: bool,
    allocations: Vec<Allocation>,
}

#[derive(Debug, Clone)]
pub struct PoolModel {
    pool: Uuid,
    used: i64,
    default_cap: Option<i64>,
    members: Vec<Member>,
    holds: Vec<PooledHold>,
}

impl PoolModel {
    pub fn new(pool: Uuid, members: [Uuid; 2]) -> Self {
        let members = members
            .iter()
            .zip(OWN_ALLOWANCE)
            .map(|(&id, own)| {
                let mut subject = Subject::new(id);
                subject.overrides[CALLS] = Some(Some(own));
                Member { subject, drawn: 0, cap: None, in_pool: true, allocations: Vec::new() }
            })
            .collect();
        PoolModel { pool, used: 0, default_cap: None, members, holds: Vec::new() }
    }

    fn cap(&self, m: usize) -> Option<i64> {
        self.members[m].cap.unwrap_or(self.default_cap)
    }

    fn pool_holds(&self, except: Option<Uuid>) -> i64 {
        self.holds.iter().filter(|h| h.open && Some(h.id) != except).map(|h| h.amount).sum()
    }

    /// The pool's room after its holds.
    fn room(&self, except: Option<Uuid>) -> i64 {
        (POOL_PLAN.1 - self.used - self.pool_holds(except)).max(0)
    }

    /// What the member may still draw: its cap less what it drew and holds (None = no cap).
    fn cap_left(&self, m: usize, except: Option<Uuid>) -> Option<i64> {
        let held: i64 = self.holds.iter().filter(|h| h.open && h.member == m && Some(h.id) != except).map(|h| h.amount).sum();
        self.cap(m).map(|cap| (cap - self.members[m].drawn - held).max(0))
    }

    /// The pool's decision of a member's call: (expected, reason); `overage`: record/settle.
    fn pooled(&self, m: usize, amount: i64, overage: bool, except: Option<Uuid>) -> (Expected, &'static str) {
        let (room, cap_left) = (self.room(except), self.cap_left(m, except));
        let within = cap_left.map_or(amount, |left| amount.min(left));
        if overage {
            let from_allowance = within.min(room);
            let rest = amount - from_allowance;
            let expected = Expected { allowed: true, from_allowance, from_grants: 0, overage: rest, used: self.used + amount };
            return (expected, if rest > 0 { "overage" } else { "ok" });
        }
        if within == amount && amount <= room {
            return (Expected { allowed: true, from_allowance: amount, from_grants: 0, overage: 0, used: self.used + amount }, "ok");
        }
        let denied = Expected { allowed: false, from_allowance: 0, from_grants: 0, overage: 0, used: self.used };
        if within < amount && amount <= room {
            // The cap's denial reports what the member drew.
            let member = &self.members[m];
            return (Expected { used: member.drawn, ..denied }, "cap_reached");
        }
        (denied, "quota_exceeded")
    }

    pub fn verify(&self, client: &mut postgres::Client) -> Result<(), Fail> {
        let used: i64 = client
            .query_one("SELECT coalesce((SELECT used FROM quota.counters WHERE subject = $1 AND metric = 'calls'), 0)", &[&self.pool])
            .map_err(db)?
            .get(0);
        if used != self.used {
            return fail(format!("pool {}: used {used}, model {}", self.pool, self.used));
        }
        for member in &self.members {
            let row = client
                .query_one(
                    "SELECT coalesce((SELECT sum(drawn)::int8 FROM quota.pool_draws WHERE pool = $1 AND member = $2), 0),
                            coalesce((SELECT used FROM quota.counters WHERE subject = $2 AND metric = 'calls'), 0)",
                    &[&self.pool, &member.subject.id],
                )
                .map_err(db)?;
            let (drawn, own): (i64, i64) = (row.get(0), row.get(1));
            if drawn != member.drawn || own != member.subject.used[CALLS][0] {
                return fail(format!(
                    "member {}: drawn/own used {drawn}/{own}, model {}/{}",
                    member.subject.id, member.drawn, member.subject.used[CALLS][0]
                ));
            }
            for grant in &member.subject.grants {
                let remaining: i64 = client.query_one("SELECT remaining FROM quota.grants WHERE grant_id = $1", &[&grant.id]).map_err(db)?.get(0);
                if remaining != grant.remaining {
                    return fail(format!("allocation grant {}: remaining {remaining}, model {}", grant.id, grant.remaining));
                }
            }
        }
        let held: i64 = client
            .query_one("SELECT coalesce(sum(amount), 0)::int8 FROM quota.reservations WHERE subject = $1 AND status = 'held'", &[&self.pool])
            .map_err(db)?
            .get(0);
        if held != self.pool_holds(None) {
            return fail(format!("pool {}: {held} held, model {}", self.pool, self.pool_holds(None)));
        }
        Ok(())
    }
}

impl Worker {
    /// Creates the connection's pool and members (counted as the administration they are).
    pub fn setup_pool(&mut self) -> Result<(), Fail> {
        let pool = self.pool.pool;
        self.client.execute("SELECT quota.assign_plan($1, $2)", &[&pool, &POOL_PLAN.0]).map_err(db)?;
        self.count("assign_plan");
        for m in 0..2 {
            let id = self.pool.members[m].subject.id;
            self.client.execute("SELECT quota.assign_plan($1, 'sim_a')", &[&id]).map_err(db)?;
            self.client.execute("SELECT quota.set_override($1, 'calls', $2)", &[&id, &OWN_ALLOWANCE[m]]).map_err(db)?;
            self.client.execute("SELECT quota.join_pool($1, $2)", &[&pool, &id]).map_err(db)?;
            self.count("assign_plan");
            self.count("set_override");
            self.count("join_pool");
        }
        Ok(())
    }

    pub fn pool_step(&mut self) -> Result<(), Fail> {
        let m = self.rng.below(2) as usize;
        self.trace.push(format!("pool member {m}:"));
        match self.rng.below(100) {
            0..=29 => self.pool_consume(m, false),
            30..=39 => self.pool_consume(m, true),
            40..=44 => self.pool_check(m),
            45..=54 => self.pool_allocate(m),
            55..=59 => self.pool_revoke(m),
            60..=67 => self.pool_cap(m),
            68..=77 => self.pool_reserve(m),
            78..=85 => self.pool_settle(),
            86..=89 => self.pool_release(),
            90..=94 => self.pool_give_back(m),
            _ => self.pool_leave_or_join(m),
        }
    }

    /// consume (or record) of a member: its own means when they cover the amount, else the
    /// pool within the cap.
    fn pool_consume(&mut self, m: usize, record: bool) -> Result<(), Fail> {
        self.count(if record { "pool record" } else { "pool consume" });
        let amount = self.rng.range(1, 6);
        let id = self.pool.members[m].subject.id;
        let function = if record { "record" } else { "consume" };
        let sql = format!("SELECT {DECISION}, reason FROM quota.{function}($1, 'calls', $2)");
        let row = self.client.query_one(&sql, &[&id, &amount]).map_err(db)?;
        let model = &mut self.pool;
        let member = &mut model.members[m];
        let own = member.subject.pay(CALLS, 0, amount, if record && !member.in_pool { None } else { Some(0) }, None);
        let (expected, reason) = match (own, member.in_pool) {
            (Some(payment), _) => {
                member.subject.apply(CALLS, 0, &payment);
                let reason = if payment.expected.overage > 0 { "overage" } else { "ok" };
                (payment.expected, reason)
            }
            (None, false) => (member.subject.denial(CALLS), "quota_exceeded"),
            (None, true) => {
                let (expected, reason) = model.pooled(m, amount, record, None);
                if expected.allowed {
                    model.used += amount;
                    model.members[m].drawn += amount;
                }
                (expected, reason)
            }
        };
        compare(&format!("pool {function} {amount}"), &expected, &decision(&row))?;
        check_reason(function, reason, &row)
    }

    fn pool_check(&mut self, m: usize) -> Result<(), Fail> {
        self.count("pool check");
        let amount = self.rng.range(1, 6);
        let sql = format!("SELECT {DECISION}, reason FROM quota.check($1, 'calls', $2)");
        let row = self.client.query_one(&sql, &[&self.pool.members[m].subject.id, &amount]).map_err(db)?;
        let model = &self.pool;
        let member = &model.members[m];
        let (expected, reason) = match (member.subject.pay(CALLS, 0, amount, Some(0), None), member.in_pool) {
            (Some(payment), _) => (Expected { used: member.subject.used[CALLS][0], ..payment.expected }, "ok"),
            (None, false) => (member.subject.denial(CALLS), "quota_exceeded"),
            // check reports the window as it is: the pool's usage before the call.
            (None, true) => match model.pooled(m, amount, false, None) {
                (expected, "ok") => (Expected { used: model.used, ..expected }, "ok"),
                denied => denied,
            },
        };
        compare(&format!("pool check {amount}"), &expected, &decision(&row))?;
        check_reason("check", reason, &row)
    }

    fn pool_allocate(&mut self, m: usize) -> Result<(), Fail> {
        let amount = self.rng.range(1, 4);
        let (pool, id) = (self.pool.pool, self.pool.members[m].subject.id);
        let result = self.client.query_one("SELECT allocation_id, grant_id, allowed, reason FROM quota.allocate($1, $2, 'calls', $3)", &[&pool, &id, &amount]);
        let model = &self.pool;
        if !model.members[m].in_pool {
            return match result {
                Err(e) if pg_quota_harness::sqlstate(&e).as_deref() == Some("42704") => Ok(()),
                other => fail(format!("allocate to a subject that left: expected 42704, got {other:?}")),
            };
        }
        let row = result.map_err(db)?;
        let fits = amount <= model.room(None);
        if row.get::<_, bool>("allowed") != fits {
            return fail(format!("allocate {amount}: model allowed={fits}, pg_quota {}", !fits));
        }
        self.count(if fits { "allocate" } else { "allocate denied" });
        if !fits {
            return Ok(());
        }
        self.grant_seq += 1;
        let model = &mut self.pool;
        model.used += amount;
        let member = &mut model.members[m];
        let grant = Grant { id: row.get("grant_id"), metric: CALLS, remaining: amount, priority: 0, expiry: 0, seq: self.grant_seq, revoked: false, carry: None };
        member.subject.grants.push(grant);
        let grant = member.subject.grants.len() - 1;
        member.allocations.push(Allocation { id: row.get("allocation_id"), grant, amount, open: true });
        Ok(())
    }

    /// What revoking an allocation returns to the pool: what its grant has left, at most
    /// what it took from the pool's allowance (all of it: the pool has no grants here).
    fn close_allocation(model: &mut PoolModel, m: usize, a: usize) -> i64 {
        let member = &mut model.members[m];
        let allocation = &mut member.allocations[a];
        allocation.open = false;
        let grant = &mut member.subject.grants[allocation.grant];
        grant.revoked = true;
        let returned = grant.remaining.min(allocation.amount).min(model.used);
        model.used -= returned;
        returned
    }

    fn pool_revoke(&mut self, m: usize) -> Result<(), Fail> {
        let open: Vec<usize> = (0..self.pool.members[m].allocations.len()).filter(|&a| self.pool.members[m].allocations[a].open).collect();
        if open.is_empty() {
            return Ok(());
        }
        self.count("revoke_allocation");
        let a = *self.rng.pick(&open);
        let id = self.pool.members[m].allocations[a].id;
        let returned: i64 = self.client.query_one("SELECT quota.revoke_allocation($1)", &[&id]).map_err(db)?.get(0);
        let expected = Self::close_allocation(&mut self.pool, m, a);
        if returned != expected {
            return fail(format!("revoke_allocation: returned {returned}, model {expected}"));
        }
        // Revoking again returns nothing and records nothing.
        let again: i64 = self.client.query_one("SELECT quota.revoke_allocation($1)", &[&id]).map_err(db)?.get(0);
        if again != 0 {
            return fail(format!("revoke_allocation again returned {again}"));
        }
        Ok(())
    }

    fn pool_cap(&mut self, m: usize) -> Result<(), Fail> {
        let cap = if self.rng.chance(25) { None } else { Some(self.rng.range(0, 10)) };
        let pool = self.pool.pool;
        let id = self.pool.members[m].subject.id;
        match self.rng.below(4) {
            0 => {
                self.client.execute("SELECT quota.set_pool_cap($1, 'calls', $2)", &[&pool, &cap]).map_err(db)?;
                self.pool.default_cap = cap;
                self.count("set_pool_cap");
            }
            1 => {
                self.client.execute("SELECT quota.clear_pool_cap($1, 'calls')", &[&pool]).map_err(db)?;
                self.pool.default_cap = None;
                self.count("clear_pool_cap");
            }
            2 if self.pool.members[m].in_pool => {
                self.client.execute("SELECT quota.set_pool_cap($1, 'calls', $2, $3)", &[&pool, &cap, &id]).map_err(db)?;
                self.pool.members[m].cap = Some(cap);
                self.count("set_pool_cap");
            }
            3 if self.pool.members[m].in_pool => {
                self.client.execute("SELECT quota.clear_pool_cap($1, 'calls', $2)", &[&pool, &id]).map_err(db)?;
                self.pool.members[m].cap = None;
                self.count("clear_pool_cap");
            }
            _ => {}
        }
        Ok(())
    }

    fn pool_reserve(&mut self, m: usize) -> Result<(), Fail> {
        self.count("pool reserve");
        let amount = self.rng.range(1, 6);
        let id = self.pool.members[m].subject.id;
        let row = self
            .client
            .query_one("SELECT reservation_id, allowed, reason FROM quota.reserve($1, 'calls', $2, interval '1 hour')", &[&id, &amount])
            .map_err(db)?;
        let model = &mut self.pool;
        let member = &mut model.members[m];
        let (allowed, reason, pooled) = match (member.subject.pay(CALLS, 0, amount, Some(0), None), member.in_pool) {
            (Some(_), _) => (true, "ok", false),
            (None, false) => (false, "quota_exceeded", false),
            (None, true) => {
                let (expected, reason) = model.pooled(m, amount, false, None);
                (expected.allowed, reason, true)
            }
        };
        if row.get::<_, bool>("allowed") != allowed || row.get::<_, String>("reason") != reason {
            return fail(format!("pool reserve {amount}: model {allowed} {reason}, pg_quota {} {}", row.get::<_, bool>("allowed"), row.get::<_, String>("reason")));
        }
        if allowed {
            let hold_id: Uuid = row.get("reservation_id");
            match pooled {
                true => model.holds.push(PooledHold { id: hold_id, member: m, amount, open: true }),
                false => model.members[m].subject.holds.push(Hold { id: hold_id, metric: CALLS, amount, epoch: 0, open: true }),
            }
        }
        Ok(())
    }

    /// An open hold, pooled or a member's own: (member, Some(index in pool holds) or None
    /// with the index in the member's holds).
    fn pick_pool_hold(&mut self) -> Option<(usize, Option<usize>, usize)> {
        let mut open = Vec::new();
        for (h, hold) in self.pool.holds.iter().enumerate() {
            if hold.open {
                open.push((hold.member, Some(h), 0));
            }
        }
        for (m, member) in self.pool.members.iter().enumerate() {
            for (h, hold) in member.subject.holds.iter().enumerate() {
                if hold.open {
                    open.push((m, None, h));
                }
            }
        }
        (!open.is_empty()).then(|| *self.rng.pick(&open))
    }

    fn pool_settle(&mut self) -> Result<(), Fail> {
        let Some((m, pooled, own)) = self.pick_pool_hold() else { return Ok(()) };
        self.count("pool settle");
        let actual = self.rng.range(1, 8);
        let id = match pooled {
            Some(h) => self.pool.holds[h].id,
            None => self.pool.members[m].subject.holds[own].id,
        };
        let sql = format!("SELECT {DECISION}, reason FROM quota.settle($1, $2)");
        let row = self.client.query_one(&sql, &[&id, &actual]).map_err(db)?;
        let model = &mut self.pool;
        let (expected, reason) = match pooled {
            Some(h) => {
                // After leaving, a hold settles without a cap: it was admitted.
                let in_pool = model.members[m].in_pool;
                let (mut expected, reason) = model.pooled(m, actual, true, Some(id));
                if !in_pool {
                    let from_allowance = actual.min(model.room(Some(id)));
                    expected = Expected { from_allowance, overage: actual - from_allowance, ..expected };
                }
                let reason = if expected.overage > 0 { "overage" } else if in_pool { reason } else { "ok" };
                model.used += actual;
                model.members[m].drawn += actual;
                model.holds[h].open = false;
                (expected, reason)
            }
            None => {
                let member = &mut model.members[m];
                let payment = member.subject.pay(CALLS, 0, actual, None, Some(id)).ok_or("settle must never be refused")?;
                member.subject.apply(CALLS, 0, &payment);
                member.subject.holds[own].open = false;
                let reason = if payment.expected.overage > 0 { "overage" } else { "ok" };
                (payment.expected, reason)
            }
        };
        compare(&format!("pool settle {actual}"), &expected, &decision(&row))?;
        check_reason("settle", reason, &row)
    }

    fn pool_release(&mut self) -> Result<(), Fail> {
        let Some((m, pooled, own)) = self.pick_pool_hold() else { return Ok(()) };
        self.count("pool release");
        let id = match pooled {
            Some(h) => {
                self.pool.holds[h].open = false;
                self.pool.holds[h].id
            }
            None => {
                self.pool.members[m].subject.holds[own].open = false;
                self.pool.members[m].subject.holds[own].id
            }
        };
        self.client.execute("SELECT quota.release($1)", &[&id]).map_err(db).map(drop)
    }

    /// give_back returns units to the member's own window when it used any, else to its pool.
    fn pool_give_back(&mut self, m: usize) -> Result<(), Fail> {
        self.count("pool give_back");
        let amount = self.rng.range(1, 4);
        let id = self.pool.members[m].subject.id;
        let returned: i64 = self.client.query_one("SELECT amount FROM quota.give_back($1, 'calls', $2)", &[&id, &amount]).map_err(db)?.get(0);
        let model = &mut self.pool;
        let member = &mut model.members[m];
        let own = member.subject.used[CALLS][0];
        let expected = if own > 0 || !member.in_pool {
            let given = amount.min(own);
            member.subject.used[CALLS][0] -= given;
            given
        } else {
            let given = amount.min(member.drawn).min(model.used);
            member.drawn -= given;
            model.used -= given;
            given
        };
        if returned != expected {
            return fail(format!("pool give_back {amount}: returned {returned}, model {expected}"));
        }
        Ok(())
    }

    /// A member leaves (its open allocations are revoked) or joins again (its draws in the
    /// pool's window continue).
    fn pool_leave_or_join(&mut self, m: usize) -> Result<(), Fail> {
        let (pool, id) = (self.pool.pool, self.pool.members[m].subject.id);
        if self.pool.members[m].in_pool {
            self.client.execute("SELECT quota.leave_pool($1, $2)", &[&pool, &id]).map_err(db)?;
            self.count("leave_pool");
            let open: Vec<usize> = (0..self.pool.members[m].allocations.len()).filter(|&a| self.pool.members[m].allocations[a].open).collect();
            for a in open {
                Self::close_allocation(&mut self.pool, m, a);
                self.count("revoke_allocation");
            }
            self.pool.members[m].in_pool = false;
        } else {
            self.client.execute("SELECT quota.join_pool($1, $2)", &[&pool, &id]).map_err(db)?;
            self.count("join_pool");
            self.pool.members[m].in_pool = true;
        }
        Ok(())
    }
}

fn check_reason(function: &str, expected: &str, row: &postgres::Row) -> Result<(), Fail> {
    let got: String = row.get("reason");
    if got != expected {
        return fail(format!("pool {function}: model reason {expected}, pg_quota {got}"));
    }
    Ok(())
}
