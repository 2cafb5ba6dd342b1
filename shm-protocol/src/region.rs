//! Bounds-checked byte copies in and out of a part of the shared mapping.
//!
//! This is the only place that turns an offset into a pointer for byte data. Nothing here
//! hands out a reference into the mapping: the peer may write those bytes concurrently
//! (see the crate's # Safety contract), so bytes are only ever *copied*.

use std::sync::Arc;

use crate::mapping::Mapping;

/// An offset/length that does not fit the region it was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range {offset}+{len} is outside a region of {region_len} bytes")]
pub struct OutOfBounds {
    pub offset: u64,
    pub len: u64,
    pub region_len: u64,
}

/// A byte range of the mapping (an arena), kept alive by an `Arc` of the mapping.
#[derive(Clone)]
pub(crate) struct Region {
    map: Arc<Mapping>,
    /// Start of the region within the mapping (validated against the mapping's length).
    start: usize,
    len: usize,
}

impl Region {
    /// The region `start..start+len` of `map`.
    ///
    /// Panics if the range is not inside the mapping: callers pass ranges from a layout
    /// that was validated against the mapping's size, so this is a programming error.
    pub(crate) fn new(map: Arc<Mapping>, start: usize, len: usize) -> Region {
        let end = start.checked_add(len).expect("region end overflows");
        assert!(end <= map.len(), "region outside the mapping");
        Region { map, start, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A pointer to `offset..offset+n` of this region, after checking the range.
    fn ptr(&self, offset: u64, n: usize) -> Result<*mut u8, OutOfBounds> {
        let oob = OutOfBounds {
            offset,
            len: n as u64,
            region_len: self.len as u64,
        };
        let off = usize::try_from(offset).map_err(|_| oob)?;
        let end = off.checked_add(n).ok_or(oob)?;
        if end > self.len {
            return Err(oob);
        }
        // SAFETY: `start + off + n <= start + len <= map.len()` (checked here and in `new`),
        // so the offset pointer stays inside the live mapping that `self.map` keeps alive.
        Ok(unsafe { self.map.base().add(self.start + off) })
    }

    /// The address of `offset..offset+n`, checked, for a reader that consumes the bytes
    /// in place (see [`crate::frame::InPlacePayload`]). Forming the pointer is safe; it
    /// stays inside the mapping as long as this region (its `Arc`) lives.
    pub(crate) fn checked_ptr(&self, offset: u64, n: usize) -> Result<*const u8, OutOfBounds> {
        self.ptr(offset, n).map(|p| p as *const u8)
    }

    /// Copies `dst.len()` bytes at `offset` out of shared memory.
    pub(crate) fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        let src = self.ptr(offset, dst.len())?;
        // SAFETY: `src..src+dst.len()` is inside the mapping (checked by `ptr`); `dst` is
        // private memory, so the ranges cannot overlap. The peer may write the source
        // concurrently: we then copy torn bytes, which callers validate after the copy.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `n` bytes at `offset` out of shared memory into `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `n` bytes and must not point into the mapping.
    pub(crate) unsafe fn read_raw(
        &self,
        offset: u64,
        dst: *mut u8,
        n: usize,
    ) -> Result<(), OutOfBounds> {
        let src = self.ptr(offset, n)?;
        // SAFETY: source checked by `ptr`; destination valid and disjoint per the caller.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, n) };
        Ok(())
    }

    /// Copies `src` into shared memory at `offset`.
    pub(crate) fn write_from(&self, offset: u64, src: &[u8]) -> Result<(), OutOfBounds> {
        let dst = self.ptr(offset, src.len())?;
        // SAFETY: `dst..dst+src.len()` is inside the mapping (checked by `ptr`); `src` is
        // private memory, so the ranges cannot overlap. We only write through the
        // pointer; no reference to the shared bytes is formed.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }
}
