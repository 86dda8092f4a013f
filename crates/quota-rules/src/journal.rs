//! The denial journal, as plain data: what a raised denial records before its error rolls
//! the transaction back, and the ring that holds the records until a background worker has
//! written them to the ledger. The extension keeps the ring in shared memory under a lock;
//! this module decides what goes in, what is dropped and what is written next.
//!
//! Records are numbered in the order they enter (`seq`, from 1, per server start). The ring
//! never waits: a record that finds it full is dropped and counted. The worker copies the
//! oldest records, writes them and the last `seq` written in one transaction, and only then
//! frees them, so that a worker that dies in between writes nothing twice (it skips what
//! its progress row says was written).

use crate::window::Micros;

/// Text of at most N bytes, cut at a character boundary, kept inline (shared memory holds
/// no pointers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct InlineText<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> Default for InlineText<N> {
    fn default() -> Self {
        InlineText { len: 0, bytes: [0; N] }
    }
}

impl<const N: usize> InlineText<N> {
    pub fn new(text: &str) -> Self {
        let mut end = text.len().min(N);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; N];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        InlineText { len: u16::try_from(end).expect("N fits in u16"), bytes }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("cut at a character boundary")
    }
}

/// What one raised denial records: the decision's figures, what raised it and who called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Denial {
    /// Assigned by the ring; 0 until then.
    pub seq: u64,
    pub database: u32,
    /// The statement's instant when the denial was raised.
    pub at: Micros,
    pub subject: [u8; 16],
    pub metric: InlineText<64>,
    pub reason: InlineText<16>,
    pub requested: i64,
    pub used: i64,
    pub reserved: i64,
    pub allowance: Option<i64>,
    pub remaining: Option<i64>,
    /// None: a lifetime window that was never reset.
    pub window_start: Option<Micros>,
    pub window_end: Option<Micros>,
    pub retry_after: Option<Micros>,
    /// require, require_many, require_reservation, enforce, limit_request.
    pub raised_by: InlineText<32>,
    /// The table of an `enforce` denial.
    pub source_table: InlineText<136>,
    /// The database role that made the call, and the JWT subject if signed in.
    pub role: InlineText<64>,
    pub jwt_subject: Option<[u8; 16]>,
}

/// The ring's counters and positions; its records are a slice of the same capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct RingState {
    /// `seq` of the next record to enter; records `next_to_write..next_seq` are queued.
    pub next_seq: u64,
    pub next_to_write: u64,
    pub dropped: u64,
    pub written: u64,
}

impl RingState {
    pub fn new() -> Self {
        RingState { next_seq: 1, next_to_write: 1, dropped: 0, written: 0 }
    }

    pub fn queued(&self) -> u64 {
        self.next_seq - self.next_to_write
    }

    /// Puts `denial` in `slots` (the ring's records, its capacity); false when full, and the
    /// denial is counted as dropped.
    pub fn push(&mut self, slots: &mut [Denial], mut denial: Denial) -> bool {
        assert!(self.next_to_write <= self.next_seq, "ring positions crossed: {self:?}");
        if self.queued() >= slots.len() as u64 {
            self.dropped += 1;
            return false;
        }
        denial.seq = self.next_seq;
        slots[index(self.next_seq, slots.len())] = denial;
        self.next_seq += 1;
        true
    }

    /// Copies the oldest queued records, at most `max`.
    pub fn peek(&self, slots: &[Denial], max: usize) -> Vec<Denial> {
        let count = self.queued().min(max as u64);
        (self.next_to_write..self.next_to_write + count).map(|seq| slots[index(seq, slots.len())]).collect()
    }

    /// Frees the records up to `through_seq` once they are in the ledger (written now, or
    /// by a worker that died before it could free them).
    pub fn release(&mut self, through_seq: u64) {
        assert!(through_seq < self.next_seq && through_seq + 1 >= self.next_to_write, "release past the queue: {through_seq} {self:?}");
        self.written += through_seq + 1 - self.next_to_write;
        self.next_to_write = through_seq + 1;
    }
}

fn index(seq: u64, capacity: usize) -> usize {
    // The remainder is below the capacity, a usize.
    (seq % capacity as u64) as usize
}

/// Of a peeked batch, the records not yet in the ledger: a worker that died after writing a
/// batch but before releasing it finds `written_through` (its progress row, for this
/// server start) at or past their `seq`.
pub fn unwritten(batch: &[Denial], written_through: u64) -> impl Iterator<Item = &Denial> {
    batch.iter().filter(move |denial| denial.seq > written_through)
}

/// The progress row after writing a batch that ends at `last`: never backwards, since a
/// smaller batch than the one a killed worker wrote may follow it.
pub fn progress_after(written_through: u64, last: u64) -> u64 {
    written_through.max(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn denial(n: i64) -> Denial {
        Denial { requested: n, metric: InlineText::new("ai"), ..Denial::default() }
    }

    #[test]
    fn inline_text_cuts_at_a_character_boundary() {
        assert_eq!(InlineText::<8>::new("projects").as_str(), "projects");
        assert_eq!(InlineText::<4>::new("projects").as_str(), "proj");
        // "é" is two bytes: a cut inside it keeps the character out.
        assert_eq!(InlineText::<4>::new("abcé").as_str(), "abc");
        assert_eq!(InlineText::<16>::new("").as_str(), "");
    }

    #[test]
    fn a_full_ring_drops_and_counts() {
        let mut slots = [Denial::default(); 3];
        let mut ring = RingState::new();
        assert!((1..=3).all(|n| ring.push(&mut slots, denial(n))));
        assert!(!ring.push(&mut slots, denial(4)));
        assert_eq!((ring.queued(), ring.dropped), (3, 1));
        let batch = ring.peek(&slots, 2);
        assert_eq!(batch.iter().map(|d| (d.seq, d.requested)).collect::<Vec<_>>(), [(1, 1), (2, 2)]);
        ring.release(2);
        assert!(ring.push(&mut slots, denial(5)));
        assert_eq!(ring.peek(&slots, 10).iter().map(|d| (d.seq, d.requested)).collect::<Vec<_>>(), [(3, 3), (4, 5)]);
    }

    /// Pushers and a worker that sometimes dies between writing a batch and releasing it,
    /// against a model ledger: every pushed record is written exactly once or dropped.
    #[test]
    fn written_plus_dropped_is_raised_and_nothing_is_written_twice() {
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let mut slots = vec![Denial::default(); 1 + rng.below(8) as usize];
            let mut ring = RingState::new();
            let (mut raised, mut ledger, mut progress) = (0u64, Vec::<u64>::new(), 0u64);
            // One pass of the worker: the rows and the progress row in one transaction, then
            // the release, unless the worker is killed in between.
            let mut work = |ring: &mut RingState, slots: &[Denial], max: usize, killed: bool| {
                let batch = ring.peek(slots, max);
                let Some(last) = batch.last().map(|d| d.seq) else { return };
                ledger.extend(unwritten(&batch, progress).map(|d| d.seq));
                progress = progress_after(progress, last);
                if !killed {
                    ring.release(last);
                }
            };
            for step in 0..5_000 {
                if rng.chance(60) {
                    raised += 1;
                    ring.push(&mut slots, denial(step));
                } else {
                    let (max, killed) = (1 + rng.below(4) as usize, rng.chance(20));
                    work(&mut ring, &slots, max, killed);
                }
            }
            work(&mut ring, &slots, slots.len(), false);
            let mut distinct = ledger.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), ledger.len(), "seed {seed}: a record written twice");
            assert_eq!((ring.queued(), ring.written + ring.dropped), (0, raised), "seed {seed}: {ring:?}");
            assert_eq!(ring.written, ledger.len() as u64, "seed {seed}");
            assert!(ring.dropped > 0, "seed {seed}: rings of at most 8 records drop some");
        }
    }
}
