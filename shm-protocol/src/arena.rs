//! Allocators for the two tensor arenas. Their state lives in the *writer's* private
//! memory; the reader only learns offsets through descriptors, which it bounds-checks.
//!
//! * [`RequestArena`] (gateway): best-fit over free ranges, with coalescing. A block is
//!   freed when the response for its request arrives; completions come in any order.
//! * [`ResponseArena`] (worker): circular. Blocks are handed out in ring order and released
//!   as the response ring's tail (the gateway's "consumed" mark) moves past them.
//!
//! All blocks are 64-byte aligned and a multiple of 64 bytes long.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Allocation granularity and alignment.
pub const ALIGN: u64 = 64;

/// Which arena (the gateway names the flag that sizes it in a "too large" error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArenaSide {
    Request,
    Response,
}

impl ArenaSide {
    pub(crate) fn noun(self) -> &'static str {
        match self {
            ArenaSide::Request => "request",
            ArenaSide::Response => "response",
        }
    }
}

/// Why an allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocError {
    /// Not enough contiguous space now; retry after frees.
    Full,
    /// Larger than the whole arena: will never fit.
    TooLarge { needed: u64, capacity: u64 },
}

/// Rounds a byte count up to the allocation granularity.
pub fn round_up(len: u64) -> Option<u64> {
    len.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// An allocated block: `offset..offset+len` within the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub offset: u64,
    pub len: u64,
}

/// Best-fit allocator with out-of-order frees (gateway's request arena).
#[derive(Debug)]
pub struct RequestArena {
    capacity: u64,
    /// Free ranges by offset → length.
    by_offset: BTreeMap<u64, u64>,
    /// Free ranges by (length, offset), for best fit.
    by_size: BTreeSet<(u64, u64)>,
    free: u64,
}

impl RequestArena {
    pub fn new(capacity: u64) -> RequestArena {
        let capacity = capacity & !(ALIGN - 1);
        let mut a = RequestArena {
            capacity,
            by_offset: BTreeMap::new(),
            by_size: BTreeSet::new(),
            free: 0,
        };
        a.insert(0, capacity);
        a
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn free_bytes(&self) -> u64 {
        self.free
    }

    fn insert(&mut self, offset: u64, len: u64) {
        if len > 0 {
            self.by_offset.insert(offset, len);
            self.by_size.insert((len, offset));
            self.free += len;
        }
    }

    fn remove(&mut self, offset: u64, len: u64) {
        self.by_offset.remove(&offset);
        self.by_size.remove(&(len, offset));
        self.free -= len;
    }

    /// Allocates `len` bytes (rounded up to 64).
    pub fn alloc(&mut self, len: u64) -> Result<Block, AllocError> {
        let too_large = AllocError::TooLarge {
            needed: len,
            capacity: self.capacity,
        };
        let len = round_up(len.max(1)).ok_or(too_large)?;
        if len > self.capacity {
            return Err(too_large);
        }
        let &(free_len, offset) = self
            .by_size
            .range((len, 0)..)
            .next()
            .ok_or(AllocError::Full)?;
        self.remove(offset, free_len);
        self.insert(offset + len, free_len - len);
        Ok(Block { offset, len })
    }

    /// Returns a block from [`RequestArena::alloc`] to the free ranges, coalescing.
    pub fn free(&mut self, block: Block) {
        let (mut offset, mut len) = (block.offset, block.len);
        debug_assert!(offset + len <= self.capacity);
        if let Some((&prev_off, &prev_len)) = self.by_offset.range(..offset).next_back() {
            debug_assert!(prev_off + prev_len <= offset, "double free");
            if prev_off + prev_len == offset {
                self.remove(prev_off, prev_len);
                offset = prev_off;
                len += prev_len;
            }
        }
        if let Some(&next_len) = self.by_offset.get(&(offset + len)) {
            self.remove(offset + len, next_len);
            len += next_len;
        }
        self.insert(offset, len);
    }
}

/// Circular allocator (worker's response arena). Positions are free-running byte counters;
/// a block never straddles the end of the arena (the remainder is skipped instead).
#[derive(Debug)]
pub struct ResponseArena {
    capacity: u64,
    /// Next free position (free-running).
    head: u64,
    /// Oldest position still in use (free-running).
    tail: u64,
    /// (ring index of the descriptor, end position of its block), in ring order.
    pending: VecDeque<(u64, u64)>,
}

impl ResponseArena {
    pub fn new(capacity: u64) -> ResponseArena {
        ResponseArena {
            capacity: capacity & !(ALIGN - 1),
            head: 0,
            tail: 0,
            pending: VecDeque::new(),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Releases every block whose descriptor index is below `ring_tail` (the validated
    /// tail of the response ring: the gateway has consumed those responses).
    pub fn release_until(&mut self, ring_tail: u64) {
        while let Some(&(index, end)) = self.pending.front() {
            // Wrapping comparison: `index < ring_tail` on free-running counters.
            if ring_tail.wrapping_sub(index).wrapping_sub(1) < (1 << 63) {
                self.tail = end;
                self.pending.pop_front();
            } else {
                break;
            }
        }
        if self.pending.is_empty() {
            // Nothing in use: restart at the beginning so a block of `capacity` fits.
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Allocates `len` bytes (rounded up to 64) for the descriptor that will get ring
    /// index `ring_index`.
    pub fn alloc(&mut self, len: u64, ring_index: u64) -> Result<Block, AllocError> {
        let too_large = AllocError::TooLarge {
            needed: len,
            capacity: self.capacity,
        };
        let len = round_up(len.max(1)).ok_or(too_large)?;
        if len > self.capacity {
            return Err(too_large);
        }
        let pos = self.head % self.capacity;
        let start = if pos + len > self.capacity {
            self.head + (self.capacity - pos)
        } else {
            self.head
        };
        if start + len - self.tail > self.capacity {
            return Err(AllocError::Full);
        }
        self.head = start + len;
        self.pending.push_back((ring_index, self.head));
        Ok(Block {
            offset: start % self.capacity,
            len,
        })
    }

    /// Undoes the most recent `alloc` (its descriptor could not be pushed).
    pub fn unalloc_last(&mut self) {
        if self.pending.pop_back().is_some() {
            self.head = self.pending.back().map_or(self.tail, |&(_, end)| end);
        }
    }

    pub fn in_use(&self) -> u64 {
        self.head - self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_arena_exhaustion_recovery_and_out_of_order_frees() {
        let mut a = RequestArena::new(64 * 10);
        let blocks: Vec<Block> = (0..10).map(|_| a.alloc(50).unwrap()).collect();
        assert_eq!(a.alloc(1), Err(AllocError::Full));
        assert_eq!(
            a.alloc(641),
            Err(AllocError::TooLarge {
                needed: 641,
                capacity: 640
            })
        );
        // Free out of order; holes coalesce.
        for i in [7, 2, 9, 0, 4] {
            a.free(blocks[i]);
        }
        assert_eq!(a.free_bytes(), 5 * 64);
        assert_eq!(
            a.alloc(128),
            Err(AllocError::Full),
            "no two adjacent free blocks yet"
        );
        a.free(blocks[8]); // 7,8,9 adjacent now
        let b = a.alloc(192).unwrap();
        assert_eq!(b.offset, 7 * 64);
        for i in [1, 3, 5, 6] {
            a.free(blocks[i]);
        }
        a.free(b);
        assert_eq!(a.free_bytes(), 640);
        assert_eq!(
            a.alloc(640).unwrap(),
            Block {
                offset: 0,
                len: 640
            }
        );
    }

    #[test]
    fn request_arena_random_frees_keep_accounting() {
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut a = RequestArena::new(1 << 20);
        let mut live: Vec<Block> = Vec::new();
        for _ in 0..20_000 {
            if rnd() % 2 == 0 || live.is_empty() {
                if let Ok(b) = a.alloc(rnd() % 20_000) {
                    for l in &live {
                        assert!(b.offset + b.len <= l.offset || l.offset + l.len <= b.offset);
                    }
                    live.push(b);
                }
            } else {
                let i = (rnd() % live.len() as u64) as usize;
                a.free(live.swap_remove(i));
            }
            let used: u64 = live.iter().map(|b| b.len).sum();
            assert_eq!(used + a.free_bytes(), 1 << 20);
        }
        for b in live.drain(..) {
            a.free(b);
        }
        assert_eq!(a.by_offset.len(), 1);
    }

    #[test]
    fn response_arena_is_circular() {
        let mut a = ResponseArena::new(1024);
        assert_eq!(
            a.alloc(1025, 0),
            Err(AllocError::TooLarge {
                needed: 1025,
                capacity: 1024
            })
        );
        let b0 = a.alloc(400, 0).unwrap();
        let b1 = a.alloc(400, 1).unwrap();
        assert_eq!((b0.offset, b1.offset), (0, 448));
        assert_eq!(
            a.alloc(200, 2),
            Err(AllocError::Full),
            "would straddle the end"
        );
        a.release_until(1); // descriptor 0 consumed
        let b2 = a.alloc(200, 2).unwrap();
        assert_eq!(b2.offset, 0, "wrapped to the start");
        assert_eq!(a.alloc(300, 3), Err(AllocError::Full));
        a.release_until(2); // descriptor 1 consumed; 2 still in use, plus the skipped tail
        assert_eq!(a.in_use(), 128 + 256);
        let b3 = a.alloc(300, 3).unwrap();
        assert_eq!(b3.offset, 256);
        a.unalloc_last();
        a.release_until(4);
        assert_eq!(a.in_use(), 0);
        assert_eq!(
            a.alloc(1024, 4).unwrap().offset,
            0,
            "a whole-arena block fits when empty"
        );
    }
}
