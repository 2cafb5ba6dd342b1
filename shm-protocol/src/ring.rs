//! Single-producer/single-consumer rings of fixed-size [`Descriptor`]s in shared memory.
//!
//! `head` (written only by the producer) and `tail` (written only by the consumer) are
//! free-running `u64` counters on separate cache lines; slot `i` is `slots[i % capacity]`.
//! Each side keeps its own index in private memory and only *publishes* it; the other
//! side's index is read from shared memory and treated as untrusted: if
//! `head - tail > capacity` the ring is reported [`RingError::Corrupt`], never indexed out
//! of bounds and never waited on forever. The raw slot accesses are hidden behind
//! [`Producer`] and [`Consumer`], created once per side by the segment.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::doorbell::{Chime, Ringer};
use crate::mapping::Mapping;
use crate::wake::{SpinConfig, Wait, WakeWord};

/// One ring entry: a request or response id and where its frame lies in the arena.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// The request id (a response carries the id of its request).
    pub id: u64,
    /// Offset of the frame within the sender's arena.
    pub offset: u64,
    /// Length of the frame in bytes.
    pub len: u64,
    /// Reserved for flags; 0.
    pub flags: u32,
    pub _reserved: u32,
}

const _: () = assert!(std::mem::size_of::<Descriptor>() == 32);
const _: () = assert!(std::mem::align_of::<Descriptor>() == 8);

/// A value alone on a 64-byte cache line.
#[repr(C, align(64))]
pub(crate) struct CacheLine<T>(pub(crate) T);

/// The shared control block at the start of each ring.
#[repr(C)]
pub(crate) struct RingControl {
    /// Next slot the producer writes (free-running). Written by the producer only.
    head: CacheLine<AtomicU64>,
    /// Next slot the consumer reads (free-running). Written by the consumer only.
    tail: CacheLine<AtomicU64>,
    /// The consumer parks here while the ring is empty; the producer notifies.
    data_ready: WakeWord,
    /// The producer parks here while it has no space; the consumer notifies.
    space_ready: WakeWord,
    /// [producer_closed, consumer_closed]: set to 1 when that side drops its handle.
    closed: CacheLine<[AtomicU32; 2]>,
}

/// Size of a ring's control block; descriptor slots follow it.
pub(crate) const RING_CONTROL_SIZE: usize = std::mem::size_of::<RingControl>();
const _: () = assert!(RING_CONTROL_SIZE == 5 * 64);
const _: () = assert!(std::mem::align_of::<RingControl>() == 64);

/// Smallest and largest ring capacity accepted (descriptors, power of two).
pub const MIN_RING_CAPACITY: u64 = 2;
pub const MAX_RING_CAPACITY: u64 = 1 << 20;

/// Bytes a ring of `capacity` descriptors occupies.
pub(crate) fn ring_bytes(capacity: u64) -> u64 {
    RING_CONTROL_SIZE as u64 + capacity * std::mem::size_of::<Descriptor>() as u64
}

/// The peer broke the ring protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("corrupt ring: head {head} and tail {tail} are more than {capacity} apart")]
    Corrupt { head: u64, tail: u64, capacity: u64 },
}

/// A ring mapped in this process (both sides use the same view type).
struct Ring {
    /// Keeps the mapping (and so `ctrl` and `slots`) alive.
    _map: Arc<Mapping>,
    ctrl: NonNull<RingControl>,
    slots: NonNull<Descriptor>,
    capacity: u64,
}

// SAFETY: the pointers refer to the shared mapping kept alive by `_map`; the control block
// holds only atomics and slots are accessed with volatile copies, so the view may move to
// and be shared between threads (exclusive use of a side is enforced by `&mut self` on
// Producer/Consumer).
unsafe impl Send for Ring {}
// SAFETY: see `Send`; `&Ring` only gives access to atomics.
unsafe impl Sync for Ring {}

impl Ring {
    /// # Safety
    /// `offset` must be 64-byte aligned and `offset + ring_bytes(capacity)` must lie inside
    /// `map`; `capacity` must be a power of two in `MIN_RING_CAPACITY..=MAX_RING_CAPACITY`.
    unsafe fn new(map: Arc<Mapping>, offset: usize, capacity: u64) -> Ring {
        debug_assert!(offset.is_multiple_of(64) && capacity.is_power_of_two());
        debug_assert!(offset as u64 + ring_bytes(capacity) <= map.len() as u64);
        // SAFETY: in bounds per the caller; the mapping base is page aligned, so
        // `base + offset` is 64-byte aligned as `RingControl` requires.
        let ctrl = unsafe { map.base().add(offset) };
        // SAFETY: slots follow the control block, still inside the ring's range.
        let slots = unsafe { ctrl.add(RING_CONTROL_SIZE) };
        Ring {
            ctrl: NonNull::new(ctrl.cast()).expect("mapping base is non-null"),
            slots: NonNull::new(slots.cast()).expect("mapping base is non-null"),
            _map: map,
            capacity,
        }
    }

    fn ctrl(&self) -> &RingControl {
        // SAFETY: `ctrl` is in bounds and aligned (see `new`) and lives as long as `_map`.
        // RingControl consists only of atomics (and padding), for which any bit pattern the
        // peer writes is valid, so a shared reference to it is sound.
        unsafe { self.ctrl.as_ref() }
    }

    fn slot(&self, index: u64) -> *mut Descriptor {
        let i = (index & (self.capacity - 1)) as usize;
        // SAFETY: `i < capacity`, and `capacity` slots follow the control block (see `new`).
        unsafe { self.slots.as_ptr().add(i) }
    }

    fn check(&self, head: u64, tail: u64) -> Result<u64, RingError> {
        let used = head.wrapping_sub(tail);
        if used > self.capacity {
            return Err(RingError::Corrupt {
                head,
                tail,
                capacity: self.capacity,
            });
        }
        Ok(used)
    }
}

/// The producing side of a ring. One per ring, owned by one thread at a time.
pub struct Producer {
    ring: Ring,
    /// Our head: the only authority on it; `ctrl.head` merely publishes it.
    head: u64,
    /// Last tail read from shared memory (validated).
    tail: u64,
    /// Whether the last push had to wake a parked consumer.
    woke: bool,
    /// Where the consumer parks, when it waits in an event loop rather than on the futex.
    doorbell: Option<Arc<Ringer>>,
}

/// The consuming side of a ring. One per ring, owned by one thread at a time.
pub struct Consumer {
    ring: Ring,
    /// Our tail: the only authority on it; `ctrl.tail` merely publishes it.
    tail: u64,
    /// Last head read from shared memory (validated).
    head: u64,
    /// Where we park (instead of the futex), when the producer rings it.
    doorbell: Option<Arc<Chime>>,
}

/// Creates the producer of the ring at `offset`.
///
/// # Safety
/// As for `Ring::new`, and no other `Producer` of this ring may exist in any process.
pub(crate) unsafe fn producer(map: Arc<Mapping>, offset: usize, capacity: u64) -> Producer {
    // SAFETY: forwarded to the caller.
    let ring = unsafe { Ring::new(map, offset, capacity) };
    // Acquire: pairs with the consumer's Release store of `tail` (stale values are fine,
    // they are re-read and validated on use).
    let tail = ring.ctrl().tail.0.load(Ordering::Acquire);
    // Relaxed: our own previous incarnation's value; a fresh segment has 0.
    let head = ring.ctrl().head.0.load(Ordering::Relaxed);
    Producer {
        ring,
        head,
        tail,
        woke: false,
        doorbell: None,
    }
}

/// Creates the consumer of the ring at `offset`.
///
/// # Safety
/// As for `Ring::new`, and no other `Consumer` of this ring may exist in any process.
pub(crate) unsafe fn consumer(map: Arc<Mapping>, offset: usize, capacity: u64) -> Consumer {
    // SAFETY: forwarded to the caller.
    let ring = unsafe { Ring::new(map, offset, capacity) };
    // Relaxed: see `producer`.
    let tail = ring.ctrl().tail.0.load(Ordering::Relaxed);
    Consumer {
        ring,
        tail,
        head: tail,
        doorbell: None,
    }
}

impl Producer {
    pub fn capacity(&self) -> u64 {
        self.ring.capacity
    }

    /// Our head, i.e. the ring index the next pushed descriptor gets.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Re-reads the consumer's tail and returns it (validated).
    pub fn refresh_tail(&mut self) -> Result<u64, RingError> {
        // Acquire: pairs with the consumer's Release store in `Consumer::advance`, so the
        // consumer's reads of the freed slot (and of the arena block) happen before we reuse it.
        let tail = self.ring.ctrl().tail.0.load(Ordering::Acquire);
        self.ring.check(self.head, tail)?;
        // A tail that moved backwards (but stayed within capacity) is also corrupt.
        if tail.wrapping_sub(self.tail) > self.ring.capacity {
            return Err(RingError::Corrupt {
                head: self.head,
                tail,
                capacity: self.ring.capacity,
            });
        }
        self.tail = tail;
        Ok(tail)
    }

    /// Free slots, re-reading the tail if the cached one says the ring is full.
    pub fn free_slots(&mut self) -> Result<u64, RingError> {
        let mut used = self.ring.check(self.head, self.tail)?;
        if used == self.ring.capacity {
            self.refresh_tail()?;
            used = self.ring.check(self.head, self.tail)?;
        }
        Ok(self.ring.capacity - used)
    }

    /// Pushes one descriptor; `Ok(false)` if the ring is full. Wakes a parked consumer.
    pub fn try_push(&mut self, desc: Descriptor) -> Result<bool, RingError> {
        let pushed = self.publish(desc)?;
        if pushed {
            self.wake_consumer();
        }
        Ok(pushed)
    }

    /// [`Producer::try_push`] without the wake-up: the caller calls
    /// [`Producer::wake_consumer`] next (in between it may note the time of the push,
    /// which waking a parked consumer can delay by handing it this thread's CPU).
    pub fn publish(&mut self, desc: Descriptor) -> Result<bool, RingError> {
        if self.free_slots()? == 0 {
            return Ok(false);
        }
        // SAFETY: `slot` is in bounds; the slot is ours to write because the consumer's
        // published tail (read with Acquire) shows it has finished with it. Volatile
        // write: the memory is shared with another process; no reference is formed.
        unsafe { self.ring.slot(self.head).write_volatile(desc) };
        self.head = self.head.wrapping_add(1);
        // Release: publishes the slot write above; pairs with the consumer's Acquire load
        // of `head` in `Consumer::peek` / `has_data`.
        self.ring.ctrl().head.0.store(self.head, Ordering::Release);
        Ok(true)
    }

    /// Wakes the consumer if it parked (after [`Producer::publish`]).
    pub fn wake_consumer(&mut self) {
        self.woke = self.notify_consumer();
    }

    /// Wakes a parked consumer, on its doorbell if it has one.
    fn notify_consumer(&self) -> bool {
        let word = &self.ring.ctrl().data_ready;
        match &self.doorbell {
            Some(d) => word.notify_doorbell(d),
            None => word.notify(),
        }
    }

    /// From now on a parked consumer is woken by ringing `doorbell` (it waits in an event
    /// loop) instead of on the futex.
    pub fn set_doorbell(&mut self, doorbell: Arc<Ringer>) {
        self.doorbell = Some(doorbell);
    }

    /// Whether the last push found the consumer parked and woke it: it is not running,
    /// so an answer from it is a scheduler wake-up away, not a spin away.
    pub fn woke_consumer(&self) -> bool {
        self.woke
    }

    /// Waits (spin, then park) until the consumer's tail moves past `seen_tail` or
    /// `deadline` passes.
    pub fn wait_for_space(&self, seen_tail: u64, spin: SpinConfig, deadline: Instant) -> Wait {
        let ctrl = self.ring.ctrl();
        ctrl.space_ready.wait_until(spin, deadline, || {
            // Acquire: pairs with the consumer's Release store of `tail`.
            ctrl.tail.0.load(Ordering::Acquire) != seen_tail || consumer_closed(ctrl)
        })
    }

    /// True once the consumer dropped its handle.
    pub fn is_consumer_closed(&self) -> bool {
        consumer_closed(self.ring.ctrl())
    }
}

fn consumer_closed(ctrl: &RingControl) -> bool {
    // Relaxed: a hint; nothing is read based on it.
    ctrl.closed.0[1].load(Ordering::Relaxed) != 0
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Release: pairs with the consumer's Acquire in `is_producer_closed`, so all
        // descriptors pushed before are visible once it sees the flag.
        self.ring.ctrl().closed.0[0].store(1, Ordering::Release);
        self.notify_consumer();
    }
}

impl Consumer {
    pub fn capacity(&self) -> u64 {
        self.ring.capacity
    }

    /// The next descriptor without consuming it (call [`Consumer::advance`] when done
    /// with its frame), or `None` if the ring is empty.
    pub fn peek(&mut self) -> Result<Option<Descriptor>, RingError> {
        if self.head == self.tail {
            // Acquire: pairs with the producer's Release store in `try_push`, making the
            // slot contents written before it visible.
            let head = self.ring.ctrl().head.0.load(Ordering::Acquire);
            self.ring.check(head, self.tail)?;
            self.head = head;
            if head == self.tail {
                return Ok(None);
            }
        }
        // SAFETY: `slot` is in bounds; the producer published it (Acquire above) and does
        // not rewrite it before we advance the tail. A misbehaving producer may, which only
        // yields a garbage descriptor: every field is a plain integer and is validated by
        // the caller. Volatile read: shared memory, no reference formed.
        Ok(Some(unsafe { self.ring.slot(self.tail).read_volatile() }))
    }

    /// Releases the slot returned by the last `peek`. Wakes a producer waiting for space.
    pub fn advance(&mut self) {
        debug_assert!(self.head != self.tail);
        self.tail = self.tail.wrapping_add(1);
        // Release: orders our reads of the slot and of its arena block before the producer
        // reuses them; pairs with the producer's Acquire load in `refresh_tail` / `wait_for_space`.
        self.ring.ctrl().tail.0.store(self.tail, Ordering::Release);
        self.ring.ctrl().space_ready.notify();
    }

    /// Pops the next descriptor (peek + advance).
    pub fn try_pop(&mut self) -> Result<Option<Descriptor>, RingError> {
        let d = self.peek()?;
        if d.is_some() {
            self.advance();
        }
        Ok(d)
    }

    /// Our tail: the ring index of the next descriptor to be read.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Waits (spin, then park) until a descriptor is available, the producer closed, or
    /// `deadline` passes.
    pub fn wait_for_data(&self, spin: SpinConfig, deadline: Instant) -> Wait {
        let ctrl = self.ring.ctrl();
        let ready = || self.has_data_or_closed();
        match &self.doorbell {
            Some(d) => ctrl.data_ready.wait_with_doorbell(spin, deadline, d, ready),
            None => ctrl.data_ready.wait_until(spin, deadline, ready),
        }
    }

    fn has_data_or_closed(&self) -> bool {
        let ctrl = self.ring.ctrl();
        // Acquire: pairs with the producer's Release store of `head`.
        ctrl.head.0.load(Ordering::Acquire) != self.tail
            || ctrl.closed.0[0].load(Ordering::Relaxed) != 0
    }

    /// Parks on `doorbell`, which the producer then rings, instead of the futex.
    pub fn set_doorbell(&mut self, doorbell: Arc<Chime>) {
        self.doorbell = Some(doorbell);
    }

    /// For a consumer in an event loop: announces that it is about to wait on its
    /// doorbell, unless a descriptor arrived (or the producer closed) meanwhile: then
    /// false, do not wait. After waiting, call [`Consumer::end_wait`].
    pub fn begin_wait(&self) -> bool {
        self.ring
            .ctrl()
            .data_ready
            .announce(|| self.has_data_or_closed())
            .is_err()
    }

    /// Ends a wait that [`Consumer::begin_wait`] began.
    pub fn end_wait(&self) {
        self.ring.ctrl().data_ready.retract();
    }

    /// True once the producer dropped its handle.
    pub fn is_producer_closed(&self) -> bool {
        // Acquire: pairs with the Release store in `Producer::drop`.
        self.ring.ctrl().closed.0[0].load(Ordering::Acquire) != 0
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Relaxed: a hint for the producer (it stops sending); nothing is published.
        self.ring.ctrl().closed.0[1].store(1, Ordering::Relaxed);
        self.ring.ctrl().space_ready.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::test_mapping;
    use std::sync::atomic::AtomicU64;

    fn pair(capacity: u64) -> (Producer, Consumer, Arc<Mapping>) {
        let map = test_mapping(ring_bytes(capacity) as usize);
        // SAFETY: the test mapping is exactly one ring, page aligned; one side each.
        let p = unsafe { producer(map.clone(), 0, capacity) };
        // SAFETY: as above.
        let c = unsafe { consumer(map.clone(), 0, capacity) };
        (p, c, map)
    }

    fn d(id: u64) -> Descriptor {
        Descriptor {
            id,
            offset: id * 64,
            len: id,
            ..Default::default()
        }
    }

    #[test]
    fn wraps_around_and_fills() {
        let (mut p, mut c, _m) = pair(8);
        let mut next_in = 0;
        let mut next_out = 0;
        for round in 0..100u64 {
            let n = round % 9;
            for _ in 0..n {
                if p.try_push(d(next_in)).unwrap() {
                    next_in += 1;
                }
            }
            for _ in 0..(round * 7) % 9 {
                if let Some(x) = c.try_pop().unwrap() {
                    assert_eq!(x, d(next_out));
                    next_out += 1;
                }
            }
        }
        while let Some(x) = c.try_pop().unwrap() {
            assert_eq!(x, d(next_out));
            next_out += 1;
        }
        assert_eq!(next_in, next_out);
        assert!(next_in > 16, "exercised wrap-around");
        // Full ring.
        for i in 0..8 {
            assert!(p.try_push(d(i)).unwrap());
        }
        assert!(!p.try_push(d(99)).unwrap());
        assert_eq!(c.try_pop().unwrap(), Some(d(0)));
        assert!(p.try_push(d(8)).unwrap());
    }

    fn head_word(m: &Mapping) -> &AtomicU64 {
        // SAFETY: offset 0 of the test mapping is the ring's control block; the head is
        // its first field, an AtomicU64.
        unsafe { &*(m.base() as *const AtomicU64) }
    }
    fn tail_word(m: &Mapping) -> &AtomicU64 {
        // SAFETY: the tail is the second cache line of the control block.
        unsafe { &*(m.base().add(64) as *const AtomicU64) }
    }

    #[test]
    fn untrusted_indices_are_reported_not_followed() {
        // Hand-rolled seeded LCG: fuzz the peer's indices.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 11 ^ seed
        };
        for case in 0..50_000u32 {
            let (mut p, mut c, m) = pair(16);
            for i in 0..(case % 5) as u64 {
                p.try_push(d(i)).unwrap();
            }
            let v = match case % 4 {
                0 => rnd(),
                1 => rnd() % 64,
                2 => u64::MAX - rnd() % 64,
                _ => (case % 40) as u64,
            };
            if case % 2 == 0 {
                head_word(&m).store(v, Ordering::Relaxed);
                for _ in 0..20 {
                    match c.try_pop() {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            } else {
                tail_word(&m).store(v, Ordering::Relaxed);
                for i in 0..20 {
                    match p.try_push(d(i)) {
                        Ok(true) => {}
                        Ok(false) | Err(_) => break,
                    }
                }
            }
        }
        let (mut p, mut c, m) = pair(16);
        head_word(&m).store(1000, Ordering::Relaxed);
        assert!(matches!(c.try_pop(), Err(RingError::Corrupt { .. })));
        tail_word(&m).store(5, Ordering::Relaxed);
        assert!(matches!(p.refresh_tail(), Err(RingError::Corrupt { .. })));
    }
}
