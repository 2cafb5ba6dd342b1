//! The mapped memfd every handle into the region holds (see the crate's # Safety).

use std::fs::File;
#[cfg(test)]
use std::sync::Arc;

#[cfg(test)]
use memfd::MemfdOptions;
use memmap2::{MmapOptions, MmapRaw};

/// The mapped memfd. Every pointer into the region is derived from [`Mapping::base`] and
/// kept alive by an `Arc<Mapping>`.
pub(crate) struct Mapping {
    raw: MmapRaw,
    file: File,
}

impl Mapping {
    pub(crate) fn new(file: File, len: usize) -> std::io::Result<Mapping> {
        // MmapRaw never hands out `&[u8]` to the shared bytes (see the crate's # Safety).
        let raw = MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Mapping { raw, file })
    }

    /// Faults in every page of the mapping for writing (best effort).
    pub(crate) fn populate(&self) {
        // SAFETY: the range is exactly our live mapping; MADV_POPULATE_WRITE only
        // allocates/maps pages (the memfd is MAP_SHARED, so nothing is copied or zeroed
        // that the peer could observe changing) and never changes their contents.
        let r = unsafe {
            rustix::mm::madvise(
                self.base().cast(),
                self.len(),
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        };
        // Older kernels (< 5.14) lack it: then pages are simply faulted in on first use.
        let _ = r;
    }

    /// Page-aligned start of the mapping.
    pub(crate) fn base(&self) -> *mut u8 {
        self.raw.as_mut_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// The memfd, to send to the worker.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.file)
    }
}

/// A zero-filled private-to-the-test mapping of at least `len` bytes.
#[cfg(test)]
pub(crate) fn test_mapping(len: usize) -> Arc<Mapping> {
    let len = (len as u64).div_ceil(4096) * 4096;
    let memfd = MemfdOptions::new().create("tfgate-test").unwrap();
    memfd.as_file().set_len(len).unwrap();
    Arc::new(Mapping::new(memfd.into_file(), len as usize).unwrap())
}
