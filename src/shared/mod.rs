//! The shared-memory tier, there only when pg_quota is in `shared_preload_libraries`: the
//! memory-only rate limiter (`memory_rates`). Its state lives in one block of shared memory
//! sized at server start by `pg_quota.memory_rate_keys`, never in a table: no WAL, no
//! write, so it works in read-only transactions and on hot standbys, and a restart empties it.
//!
//! The block is a header of counters followed by the limiter's sets of slots
//! (quota_rules::memory_table). Sets are guarded by a tranche of LOCKS LWLocks, set i by
//! lock i % LOCKS, so calls on different keys rarely wait for each other.

pub mod memory_rates;

use std::ffi::CStr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

use quota_rules::memory_table::{sets_for, Slot, WAYS};

use crate::error::{QResult, QuotaError};

/// `pg_quota.memory_rate_keys`: how many rule states the limiter holds at once.
static MEMORY_RATE_KEYS: GucSetting<i32> = GucSetting::<i32>::new(65_536);
const MIN_KEYS: i32 = (WAYS * LOCKS) as i32;
const MAX_KEYS: i32 = 1 << 24;

/// LWLocks guarding the sets.
const LOCKS: usize = 64;
const TRANCHE: &CStr = c"pg_quota";
const BLOCK: &CStr = c"pg_quota shared tier";

/// The start of the block: what the tier has done since the server started.
#[repr(C)]
struct Header {
    sets: usize,
    admitted: AtomicU64,
    limited: AtomicU64,
    lossy_evictions: AtomicU64,
}

/// The block, once attached in this process (null: not preloaded).
static HEADER: AtomicPtr<Header> = AtomicPtr::new(std::ptr::null_mut());
static LOCK_ARRAY: AtomicPtr<pg_sys::LWLockPadded> = AtomicPtr::new(std::ptr::null_mut());
static mut PREVIOUS_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREVIOUS_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

fn block_size(sets: usize) -> usize {
    std::mem::size_of::<Header>() + sets * std::mem::size_of::<[Slot; WAYS]>()
}

fn configured_sets() -> usize {
    // The setting's minimum is positive.
    sets_for(usize::try_from(MEMORY_RATE_KEYS.get()).unwrap_or(MIN_KEYS as usize))
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
        pg_sys::RequestAddinShmemSpace(block_size(configured_sets()));
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), LOCKS as i32);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn attach_block() {
    // SAFETY: shmem_startup_hook runs in the postmaster (and in each backend under
    // EXEC_BACKEND) with the block requested above; AddinShmemInitLock serializes the
    // first initialization. The block is zeroed before anyone reads it: all-zero is an empty
    // table (every slot unused) and zero counters.
    unsafe {
        if let Some(previous) = PREVIOUS_STARTUP_HOOK {
            previous();
        }
        let sets = configured_sets();
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let block = pg_sys::ShmemInitStruct(BLOCK.as_ptr(), block_size(sets), &mut found).cast::<Header>();
        if !found {
            std::ptr::write_bytes(block.cast::<u8>(), 0, block_size(sets));
            (*block).sets = sets;
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
        assert!(set < self.table.header.sets, "set {set} of {}", self.table.header.sets);
        assert!(self.locks.contains(&(set % LOCKS)), "set {set} read without its lock");
        // SAFETY: the sets follow the header in the block, which holds `sets` of them.
        unsafe { std::ptr::from_ref(self.table.header).add(1).cast::<[Slot; WAYS]>().cast_mut().add(set) }
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
        let lock_array = LOCK_ARRAY.load(Ordering::Acquire);
        for &lock in &locks {
            // SAFETY: the tranche holds LOCKS locks, attached with the block.
            unsafe { pg_sys::LWLockAcquire(&raw mut (*lock_array.add(lock)).lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        }
        let result = body(&mut LockedSets { table: self, locks: &locks });
        for &lock in locks.iter().rev() {
            // SAFETY: acquired above.
            unsafe { pg_sys::LWLockRelease(&raw mut (*lock_array.add(lock)).lock) };
        }
        result
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
        block_size(self.header.sets)
    }
}
