//! The shared-memory tier, there only when pg_quota is in `shared_preload_libraries`: the
//! memory-only rate limiter (`memory_rates`) and the denial journal (`journal`). Their state
//! lives in one block of shared memory sized at server start by `pg_quota.memory_rate_keys`
//! and `pg_quota.journal_size`, never in a table: no WAL, no write, so the limiter works in
//! read-only transactions and on hot standbys, and the journal outlives the transaction
//! that raised a denial; a restart empties both.
//!
//! The block is a header (counters, the journal's positions) followed by the limiter's sets
//! of slots (quota_rules::memory_table) and the journal's records (quota_rules::journal).
//! Sets are guarded by LOCKS LWLocks, set i by lock i % LOCKS, so calls on different keys
//! rarely wait for each other; the journal by one more lock of the same tranche.

pub mod journal;
pub mod memory_rates;

use std::cell::UnsafeCell;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

use quota_rules::journal::{Denial, RingState};
use quota_rules::memory_table::{sets_for, Slot, WAYS};

use crate::error::{QResult, QuotaError};

/// `pg_quota.memory_rate_keys`: how many rule states the limiter holds at once.
static MEMORY_RATE_KEYS: GucSetting<i32> = GucSetting::<i32>::new(65_536);
const MIN_KEYS: i32 = (WAYS * LOCKS) as i32;
const MAX_KEYS: i32 = 1 << 24;

/// `pg_quota.journal_size`: how many raised denials wait for the journal's worker at most.
static JOURNAL_SIZE: GucSetting<i32> = GucSetting::<i32>::new(4_096);
/// `pg_quota.journal_denials`: whether this session's raised denials are journaled.
pub static JOURNAL_DENIALS: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pg_quota.journal_database`: the database whose ledger the worker writes.
static JOURNAL_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// LWLocks guarding the sets; the one after them guards the journal.
const LOCKS: usize = 64;
const JOURNAL_LOCK: usize = LOCKS;
const TRANCHE: &CStr = c"pg_quota";
const BLOCK: &CStr = c"pg_quota shared tier";

/// The start of the block: what the tier has done since the server started.
#[repr(C)]
struct Header {
    sets: usize,
    admitted: AtomicU64,
    limited: AtomicU64,
    lossy_evictions: AtomicU64,
    journal_capacity: usize,
    /// Under JOURNAL_LOCK.
    journal: UnsafeCell<RingState>,
    /// When this block was made: tells one server start's `seq`s from another's.
    journal_epoch: i64,
    /// The worker's database once it has connected (0 before), and its latch while it runs.
    journal_database: AtomicU32,
    journal_latch: AtomicPtr<pg_sys::Latch>,
    /// Denials raised in another database than the worker's: not journaled.
    journal_other_database: AtomicU64,
    /// Moved by every committed change to what decides rate rules (memory_rates' cache).
    configuration_generation: AtomicU64,
}

/// The block, once attached in this process (null: not preloaded).
static HEADER: AtomicPtr<Header> = AtomicPtr::new(std::ptr::null_mut());
static LOCK_ARRAY: AtomicPtr<pg_sys::LWLockPadded> = AtomicPtr::new(std::ptr::null_mut());
static mut PREVIOUS_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREVIOUS_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

fn block_size(sets: usize, journal_capacity: usize) -> usize {
    std::mem::size_of::<Header>() + sets * std::mem::size_of::<[Slot; WAYS]>() + journal_capacity * std::mem::size_of::<Denial>()
}

/// (sets, journal capacity) as the settings ask; their minimums are positive.
fn configured() -> (usize, usize) {
    let sets = sets_for(usize::try_from(MEMORY_RATE_KEYS.get()).unwrap_or(MIN_KEYS as usize));
    (sets, usize::try_from(JOURNAL_SIZE.get()).unwrap_or(1))
}

/// Called from _PG_init: defines the settings and asks for the block, when the library is
/// being preloaded (later, shared memory can no longer be had).
pub fn init() {
    // SAFETY: a postmaster global, read in _PG_init.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    GucRegistry::define_int_guc(
        c"pg_quota.memory_rate_keys",
        c"How many rate-rule states the shared-memory limiter holds (quota.limit_in_memory).",
        c"Each state takes 56 bytes of shared memory. When its set of 8 is full, the state closest to a full bucket is evicted.",
        &MEMORY_RATE_KEYS,
        MIN_KEYS,
        MAX_KEYS,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_quota.journal_size",
        c"How many raised denials wait in shared memory for the journal's worker at most.",
        c"Each takes about 500 bytes. A denial raised while the journal is full is counted as dropped; the caller never waits.",
        &JOURNAL_SIZE,
        1,
        1 << 20,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_quota.journal_denials",
        c"Whether raised denials are written to the ledger by the denial journal.",
        c"On by default; a superuser may turn it off, e.g. for a session that raises denials by design.",
        &JOURNAL_DENIALS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_quota.journal_database",
        c"The database whose ledger (quota.events) the denial journal's worker writes.",
        c"Denials raised in other databases are counted, not journaled.",
        &JOURNAL_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    // Every pg_quota.* setting is defined above: a misspelt one in postgresql.conf is reported.
    // SAFETY: called once in _PG_init, after the settings are defined, as PostgreSQL asks.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"pg_quota".as_ptr()) };
    journal::register_worker();
    // SAFETY: hooks are installed once, in the postmaster's _PG_init, chaining the previous.
    unsafe {
        PREVIOUS_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request_block);
        PREVIOUS_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(attach_block);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn request_block() {
    // SAFETY: called by the postmaster in its shmem_request_hook, as the API asks.
    unsafe {
        if let Some(previous) = PREVIOUS_REQUEST_HOOK {
            previous();
        }
        let (sets, journal_capacity) = configured();
        pg_sys::RequestAddinShmemSpace(block_size(sets, journal_capacity));
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), (LOCKS + 1) as i32);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn attach_block() {
    // SAFETY: shmem_startup_hook runs in the postmaster (and in each backend under
    // EXEC_BACKEND) with the block requested above; AddinShmemInitLock serializes the
    // first initialization. The block is zeroed before anyone reads it: all-zero is an empty
    // table (every slot unused) and zero counters; the journal's records are read only once
    // written.
    unsafe {
        if let Some(previous) = PREVIOUS_STARTUP_HOOK {
            previous();
        }
        let (sets, journal_capacity) = configured();
        let size = block_size(sets, journal_capacity);
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let block = pg_sys::ShmemInitStruct(BLOCK.as_ptr(), size, &mut found).cast::<Header>();
        if !found {
            std::ptr::write_bytes(block.cast::<u8>(), 0, size);
            (*block).sets = sets;
            (*block).journal_capacity = journal_capacity;
            (*block).journal = UnsafeCell::new(RingState::new());
            (*block).journal_epoch = pg_sys::GetCurrentTimestamp();
        }
        LOCK_ARRAY.store(pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr()), Ordering::Release);
        HEADER.store(block, Ordering::Release);
        pg_sys::LWLockRelease(init_lock);
    }
}

/// The attached block, or the error of a server that did not preload pg_quota.
fn header(feature: &str) -> QResult<&'static Header> {
    let block = HEADER.load(Ordering::Acquire);
    // SAFETY: once attached, the block lives as long as the server.
    unsafe { block.as_ref() }.ok_or_else(|| QuotaError::not_preloaded(feature))
}

/// The block's bytes after its header (the sets, then the journal's records), from the
/// pointer the block was attached at: a pointer derived from `&Header` may reach only the
/// header's own bytes.
fn block_after_header() -> *mut u8 {
    // SAFETY: only called on an attached block (through a Table or a Journal), which is
    // larger than its header.
    unsafe { HEADER.load(Ordering::Acquire).add(1).cast::<u8>() }
}

/// Moves the configuration generation (a transaction that changed the configuration has
/// committed). Runs in a commit callback: nothing here may raise.
pub fn bump_generation() {
    if let Ok(header) = header("the configuration generation") {
        header.configuration_generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Whether this server preloaded pg_quota (and so has the shared-memory tier).
pub fn preloaded() -> bool {
    !HEADER.load(Ordering::Acquire).is_null()
}

/// The limiter's table in the block.
pub struct Table {
    header: &'static Header,
}

/// Sets of the table whose locks this process holds (see Table::with_sets).
pub struct LockedSets<'a> {
    table: &'a Table,
    locks: &'a [usize],
}

impl LockedSets<'_> {
    fn set_ptr(&self, set: usize) -> *mut [Slot; WAYS] {
        // Callers index sets modulo `sets` under their lock (Table::with_sets): these cannot
        // fire short of a bug, and an ERROR then beats a read outside the shared block.
        assert!(set < self.table.header.sets, "set {set} of {}", self.table.header.sets);
        assert!(self.locks.contains(&(set % LOCKS)), "set {set} read without its lock");
        // SAFETY: the sets follow the header in the block, which holds `sets` of them.
        unsafe { block_after_header().cast::<[Slot; WAYS]>().add(set) }
    }

    pub fn read(&self, set: usize) -> [Slot; WAYS] {
        // SAFETY: in the block, and guarded by a lock this process holds exclusively.
        unsafe { self.set_ptr(set).read() }
    }

    pub fn write(&mut self, set: usize, way: usize, slot: Slot) {
        // SAFETY: as in read.
        unsafe { (*self.set_ptr(set))[way] = slot };
    }
}

impl Table {
    pub fn attach(feature: &str) -> QResult<Table> {
        Ok(Table { header: header(feature)? })
    }

    pub fn sets(&self) -> usize {
        self.header.sets
    }

    /// Runs `body` on the sets `indexes` under their LWLocks, taken exclusively in ascending
    /// order (so that two calls on several sets cannot deadlock). `body` must not raise an
    /// error: it is arithmetic on the copied slots, no PostgreSQL call.
    pub fn with_sets<R>(&self, indexes: &[usize], body: impl FnOnce(&mut LockedSets) -> R) -> R {
        let mut locks: Vec<usize> = indexes.iter().map(|set| set % LOCKS).collect();
        locks.sort_unstable();
        locks.dedup();
        let _held: Vec<Held> = locks.iter().map(|&lock| Held::acquire(lock)).collect();
        body(&mut LockedSets { table: self, locks: &locks })
    }

    pub fn generation(&self) -> u64 {
        self.header.configuration_generation.load(Ordering::Acquire)
    }

    pub fn count(&self, admitted: bool, lossy_evictions: u64) {
        let counter = if admitted { &self.header.admitted } else { &self.header.limited };
        counter.fetch_add(1, Ordering::Relaxed);
        self.header.lossy_evictions.fetch_add(lossy_evictions, Ordering::Relaxed);
    }

    /// (admitted, limited, lossy evictions) since the server started.
    pub fn counters(&self) -> (u64, u64, u64) {
        let header = self.header;
        (header.admitted.load(Ordering::Relaxed), header.limited.load(Ordering::Relaxed), header.lossy_evictions.load(Ordering::Relaxed))
    }

    pub fn bytes(&self) -> usize {
        block_size(self.header.sets, self.header.journal_capacity)
    }
}

/// An exclusive LWLock of the tranche, released when dropped.
struct Held(*mut pg_sys::LWLock);

impl Held {
    fn acquire(lock: usize) -> Held {
        // SAFETY: the tranche holds LOCKS + 1 locks, attached with the block.
        let lock = unsafe { &raw mut (*LOCK_ARRAY.load(Ordering::Acquire).add(lock)).lock };
        // SAFETY: a valid LWLock in shared memory.
        unsafe { pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        Held(lock)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: acquired by this process in Held::acquire.
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}

/// The denial journal's ring in the block.
pub struct Journal {
    header: &'static Header,
}

impl Journal {
    pub fn attach(feature: &str) -> QResult<Journal> {
        Ok(Journal { header: header(feature)? })
    }

    /// Runs `body` on the ring's positions and records under the journal's lock; `body`
    /// must not raise an error.
    fn locked<R>(&self, body: impl FnOnce(&mut RingState, &mut [Denial]) -> R) -> R {
        let _held = Held::acquire(JOURNAL_LOCK);
        let header = self.header;
        // SAFETY: the records follow the limiter's sets in the block; the ring state and the
        // records are only touched under the journal's lock, which is held.
        unsafe {
            let records = block_after_header().cast::<[Slot; WAYS]>().add(header.sets).cast::<Denial>();
            body(&mut *header.journal.get(), std::slice::from_raw_parts_mut(records, header.journal_capacity))
        }
    }

    /// Queues a denial raised in database `database` and wakes the worker; false when it is
    /// not journaled (the journal is full, or serves another database).
    pub fn push(&self, denial: Denial) -> bool {
        let served = self.header.journal_database.load(Ordering::Acquire);
        if served != 0 && served != denial.database {
            self.header.journal_other_database.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let queued = self.locked(|ring, records| ring.push(records, denial));
        let latch = self.header.journal_latch.load(Ordering::Acquire);
        if queued && !latch.is_null() {
            // SAFETY: a latch in the shared PGPROC array: at worst a process that took the
            // worker's slot wakes once for nothing.
            unsafe { pg_sys::SetLatch(latch) };
        }
        queued
    }

    pub fn peek(&self, max: usize) -> Vec<Denial> {
        self.locked(|ring, records| ring.peek(records, max))
    }

    pub fn release(&self, through_seq: u64) {
        self.locked(|ring, _| ring.release(through_seq));
    }

    pub fn ring(&self) -> RingState {
        self.locked(|ring, _| *ring)
    }

    pub fn capacity(&self) -> usize {
        self.header.journal_capacity
    }

    pub fn epoch(&self) -> i64 {
        self.header.journal_epoch
    }

    pub fn other_database(&self) -> u64 {
        self.header.journal_other_database.load(Ordering::Relaxed)
    }

    /// The worker says which database it serves and where to wake it (null: stopped).
    pub fn serve(&self, database: u32, latch: *mut pg_sys::Latch) {
        self.header.journal_database.store(database, Ordering::Release);
        self.header.journal_latch.store(latch, Ordering::Release);
    }
}

/// The database the journal's worker connects to.
pub fn journal_database() -> String {
    JOURNAL_DATABASE.get().map_or_else(|| "postgres".to_string(), |name| name.to_string_lossy().into_owned())
}
