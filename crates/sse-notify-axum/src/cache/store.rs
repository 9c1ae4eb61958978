//! The answers kept, by path, query and class, each of one generation of its topics' head;
//! bounded by their count and their bytes (keys included), least recently used first out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lru::LruCache;
use tokio::sync::OnceCell;

use super::answer::Answer;

/// The kept answers, within their limits.
pub(super) struct Store {
    entries: Mutex<Entries>,
    max_entries: usize,
    max_bytes: usize,
}

struct Entries {
    slots: LruCache<EntryKey, Slot>,
    bytes: usize,
}

impl Entries {
    /// Whether `slot` is still the one kept under `key` (not replaced by a newer generation,
    /// nor let go).
    fn holds(&self, key: &EntryKey, slot: &Slot) -> bool {
        self.slots.peek(key).is_some_and(|kept| Arc::ptr_eq(&kept.answer, &slot.answer))
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct EntryKey {
    pub(super) path_and_query: String,
    pub(super) class: String,
}

impl EntryKey {
    /// What the key holds, counted in `CacheLimits::max_bytes` with the answers: its two
    /// strings and their bookkeeping.
    fn cost(&self) -> usize {
        self.path_and_query.len() + self.class.len() + std::mem::size_of::<(EntryKey, Slot)>()
    }
}

/// An answer of one generation of its topics' head, or the computation of it.
#[derive(Clone)]
pub(super) struct Slot {
    generation: u64,
    /// When it was made: its answer is computed after that (by the first request that needs
    /// it), so it holds every write committed before.
    made: Instant,
    pub(super) answer: Arc<OnceCell<Arc<Answer>>>,
    /// What it holds, counted in `Entries::bytes`: its key, and its answer's body once computed.
    size: Arc<AtomicUsize>,
}

impl Store {
    pub(super) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self { entries: Mutex::new(Entries { slots: LruCache::unbounded(), bytes: 0 }), max_entries, max_bytes }
    }

    /// Answers kept now, and the bytes they hold (bodies and keys).
    pub(super) fn size(&self) -> (usize, usize) {
        let e = self.entries.lock().unwrap();
        (e.slots.len(), e.bytes)
    }

    /// The slot of `key` for `generation`: the one kept if it is of that generation, else a new
    /// one that replaces it. A new slot counts its key's bytes at once (a key is what a client
    /// chooses: a long query, say), and may push the least recently used answers out.
    ///
    /// With `arrived` (a request whose cursor could not be proven seen here), only a slot made
    /// since is taken: one made before is replaced by a new one.
    pub(super) fn slot(&self, key: &EntryKey, generation: u64, arrived: Option<Instant>) -> Slot {
        let mut e = self.entries.lock().unwrap();
        let fresh = |s: &&mut Slot| s.generation == generation && arrived.is_none_or(|at| s.made >= at);
        if let Some(slot) = e.slots.get_mut(key).filter(fresh) {
            return slot.clone();
        }
        let size = key.cost();
        let made = Instant::now();
        let slot = Slot { generation, made, answer: Arc::default(), size: Arc::new(AtomicUsize::new(size)) };
        if let Some(old) = e.slots.put(key.clone(), slot.clone()) {
            e.bytes -= old.size.load(Ordering::Relaxed);
        }
        e.bytes += size;
        self.trim(&mut e);
        slot
    }

    /// Counts a computed answer's bytes, and lets go of the least recently used answers past
    /// the limits. An answer whose slot was replaced or let go meanwhile is not kept, so not
    /// counted.
    pub(super) fn account(&self, key: &EntryKey, slot: &Slot, size: usize) {
        let mut e = self.entries.lock().unwrap();
        if !e.holds(key, slot) {
            return;
        }
        slot.size.fetch_add(size, Ordering::Relaxed);
        e.bytes += size;
        self.trim(&mut e);
    }

    /// Lets go of `slot` (still under `key`) when its answer turned out not to be one to keep: a
    /// `404` of an id that does not exist, say, must not hold its key (and its room in the
    /// count of entries) until the least recently used order reaches it.
    pub(super) fn forget(&self, key: &EntryKey, slot: &Slot) {
        let mut e = self.entries.lock().unwrap();
        if e.holds(key, slot) {
            e.slots.pop(key);
            e.bytes -= slot.size.swap(0, Ordering::Relaxed);
        }
    }

    fn trim(&self, e: &mut Entries) {
        while e.slots.len() > self.max_entries.max(1) || e.bytes > self.max_bytes {
            let Some((_, old)) = e.slots.pop_lru() else { break };
            e.bytes -= old.size.swap(0, Ordering::Relaxed);
        }
    }
}
