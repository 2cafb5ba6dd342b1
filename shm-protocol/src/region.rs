//! Bounds-checked byte copies in and out of a part of the shared mapping: all that a
//! layer above the transport (the frames' encoder and decoder) gets to touch.
//!
//! This is the only place that turns an offset into a pointer for byte data. Nothing here
//! hands out a reference into the mapping: the peer may write those bytes concurrently
//! (see the crate's # Safety contract), so bytes are only ever *copied*, or read in place
//! through an [`InPlacePayload`] by a consumer that treats every bit pattern as valid.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use memfd::MemfdOptions;

use crate::client_object::{file_io, ClientObject, Direction};
use crate::mapping::Mapping;

/// An offset/length that does not fit the region it was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range {offset}+{len} is outside a region of {region_len} bytes")]
pub struct OutOfBounds {
    pub offset: u64,
    pub len: u64,
    pub region_len: u64,
}

/// A byte range of the mapping (an arena), kept alive by an `Arc` of the mapping. Every
/// access is bounds-checked against it; cloning it is an `Arc` clone.
#[derive(Clone)]
pub struct Region {
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

    /// A private mapping of `len` zero bytes, shaped like an arena (at least one page is
    /// mapped; the region is exactly `len` long, so nothing past it can be read): for
    /// frames kept in byte slices (fuzz targets, seed files, tests), not for a hot path.
    pub fn scratch(len: usize) -> std::io::Result<Region> {
        let mapped = len.max(1).div_ceil(4096) * 4096;
        let memfd = MemfdOptions::new()
            .create("tfgate-scratch")
            .map_err(std::io::Error::other)?;
        memfd.as_file().set_len(mapped as u64)?;
        let map = Mapping::new(memfd.into_file(), mapped)?;
        Ok(Region::new(Arc::new(map), 0, len))
    }

    /// A scratch region holding a copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> std::io::Result<Region> {
        let region = Region::scratch(bytes.len())?;
        region.write_from(0, bytes).map_err(std::io::Error::other)?;
        Ok(region)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a region of no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

    /// Leaves `offset..offset+n` where it is, for a consumer that reads it in place
    /// instead of copying it out (the worker hands a request's numeric input to
    /// TensorFlow as the tensor's buffer). See [`InPlacePayload`] for what the reader
    /// must uphold.
    pub fn in_place(&self, offset: u64, n: usize) -> Result<InPlacePayload, OutOfBounds> {
        let ptr = self.ptr(offset, n)?;
        Ok(InPlacePayload {
            _region: self.clone(),
            ptr,
            len: n,
        })
    }

    /// Copies `dst.len()` bytes at `offset` out of shared memory.
    pub fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        let src = self.ptr(offset, dst.len())?;
        // SAFETY: `src..src+dst.len()` is inside the mapping (checked by `ptr`); `dst` is
        // private memory, so the ranges cannot overlap. The peer may write the source
        // concurrently: we then copy torn bytes, which callers validate after the copy.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `len` bytes at `offset` into a new `Vec`, without zero-filling it first.
    /// The range is checked before anything is allocated, so a length a peer wrote cannot
    /// cause a huge allocation.
    pub fn read_to_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>, OutOfBounds> {
        let src = self.ptr(offset, len)?;
        let mut v = Vec::<u8>::with_capacity(len);
        // SAFETY: `src..src+len` is inside the mapping (checked by `ptr`); the spare
        // capacity is valid for `len` bytes of writes and is private memory, so the
        // ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src, v.as_mut_ptr(), len) };
        // SAFETY: the copy above initialized all `len` bytes.
        unsafe { v.set_len(len) };
        Ok(v)
    }

    /// Copies `src` into shared memory at `offset`.
    pub fn write_from(&self, offset: u64, src: &[u8]) -> Result<(), OutOfBounds> {
        let dst = self.ptr(offset, src.len())?;
        // SAFETY: `dst..dst+src.len()` is inside the mapping (checked by `ptr`); `src` is
        // private memory, so the ranges cannot overlap. We only write through the
        // pointer; no reference to the shared bytes is formed.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }
}

/// Why bytes could not be copied between a file and the mapping.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The range is outside the region (a bug in the caller's layout).
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
    /// The file failed, or ended before the range did (its owner truncated it).
    #[error(transparent)]
    File(std::io::Error),
}

impl Region {
    /// Fills `offset..offset+len` from `file` at `file_offset` (`pread`): the kernel
    /// copies the file's pages straight into the mapping, so the bytes take no detour
    /// through this process's heap. A file that ends before the range is an error.
    pub fn fill_from_file(
        &self,
        offset: u64,
        len: usize,
        file: BorrowedFd<'_>,
        file_offset: u64,
    ) -> Result<(), WriteError> {
        let p = self.ptr(offset, len)?;
        // SAFETY: `p..p+len` is inside the mapping (checked by `ptr`).
        unsafe { file_io(Direction::FromFile, file.as_raw_fd(), p, len, file_offset) }
            .map_err(WriteError::File)
    }

    /// Fills `offset..offset+len` from a client's object at `object_offset`: one
    /// `memcpy` from its mapped pages (or the file's `pread` where it is not mapped).
    pub fn fill_from_object(
        &self,
        offset: u64,
        len: usize,
        object: &ClientObject,
        object_offset: u64,
    ) -> Result<(), WriteError> {
        let p = self.ptr(offset, len)?;
        // SAFETY: `p..p+len` is inside this process's arena mapping (checked by `ptr`),
        // which is not the client's.
        unsafe { object.copy(Direction::FromFile, object_offset, p, len) }.map_err(WriteError::File)
    }

    /// Writes `offset..offset+len` of the mapping into a client's object at
    /// `object_offset`, straight from shared memory.
    pub fn copy_to_object(
        &self,
        offset: u64,
        len: usize,
        object: &ClientObject,
        object_offset: u64,
    ) -> Result<(), WriteError> {
        let p = self.ptr(offset, len)?;
        // SAFETY: as in `fill_from_object`; the copy only reads `p..p+len`.
        unsafe { object.copy(Direction::ToFile, object_offset, p, len) }.map_err(WriteError::File)
    }
}

/// Bytes read in place in shared memory. It keeps the mapping alive, so the pointer stays
/// valid for as long as this value lives. When the bytes are an in-flight request's, the
/// gateway frees their block once the response arrives, so read nothing through it (or
/// through anything aliasing it) after answering. The peer can still write them at any
/// time, so they must only ever be read as plain numbers (every bit pattern valid) —
/// never as a `&[T]`.
pub struct InPlacePayload {
    _region: Region,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the payload is an address range inside a mapping kept alive by the `Arc` in
// `_region`; it has no thread affinity, and this type never dereferences it.
unsafe impl Send for InPlacePayload {}

impl InPlacePayload {
    /// Start of the bytes; valid for `len()` bytes of reads.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `dst.len()` bytes at `offset` of the payload into `dst`: a safe read for a
    /// consumer that streams the payload rather than handing its address on.
    pub fn read_into(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        let end = offset.checked_add(dst.len());
        if end.is_none_or(|e| e > self.len) {
            return Err(OutOfBounds {
                offset: offset as u64,
                len: dst.len() as u64,
                region_len: self.len as u64,
            });
        }
        // SAFETY: `ptr..ptr+len` lies inside the mapping `_region` keeps alive (checked
        // when the payload was made) and `offset + dst.len() <= len` (checked above);
        // `dst` is private memory, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }
}

impl std::fmt::Debug for InPlacePayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlacePayload")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::os::fd::AsFd;

    fn file_of(bytes: &[u8]) -> std::fs::File {
        let memfd = MemfdOptions::new().create("tfgate-test-file").unwrap();
        std::io::Write::write_all(&mut memfd.as_file(), bytes).unwrap();
        memfd.into_file()
    }

    #[test]
    fn files_are_copied_in_and_out_within_bounds() {
        let region = Region::scratch(64).unwrap();
        let file = file_of(&(0u8..32).collect::<Vec<_>>());
        region.fill_from_file(8, 16, file.as_fd(), 4).unwrap();
        assert_eq!(
            region.read_to_vec(8, 16).unwrap(),
            (4u8..20).collect::<Vec<_>>()
        );

        // A client's object: mapped, both ways.
        let object = ClientObject::new(file.try_clone().unwrap(), 0, 32, true);
        assert!(object.is_mapped());
        region.fill_from_object(0, 8, &object, 20).unwrap();
        assert_eq!(
            region.read_to_vec(0, 8).unwrap(),
            (20u8..28).collect::<Vec<_>>()
        );
        region.write_from(40, &[9; 8]).unwrap();
        region.copy_to_object(40, 8, &object, 24).unwrap();
        let mut back = vec![0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, 24).unwrap();
        assert_eq!(back, [9; 8]);
        assert!(matches!(
            region.copy_to_object(60, 8, &object, 0),
            Err(WriteError::OutOfBounds(_))
        ));

        // Outside the region: refused before the file is touched.
        assert!(matches!(
            region.fill_from_file(60, 8, file.as_fd(), 0),
            Err(WriteError::OutOfBounds(_))
        ));
        // A file shorter than the range (truncated by its owner): an error, no hang.
        file.set_len(10).unwrap();
        match region.fill_from_file(0, 16, file.as_fd(), 4) {
            Err(WriteError::File(e)) => {
                assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
                assert_eq!(e.to_string(), "the file ends 6 bytes into a range of 16");
            }
            other => panic!("{other:?}"),
        }
    }
}
