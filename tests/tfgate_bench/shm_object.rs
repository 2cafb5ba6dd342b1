//! The client's side of V2 system shared memory: a POSIX shared-memory object in
//! `/dev/shm` (what `shm_open` makes, as Triton's client utilities do), mapped into the
//! bench so that each request's input is written, and its output read, with a plain
//! memcpy: the copies a client of that extension pays. Unlinked when dropped.

use memmap2::MmapMut;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// One object, mapped read-write.
pub struct ShmObject {
    /// The key tfgate is given (`/name`, as `shm_open` spells it).
    pub key: String,
    path: PathBuf,
    map: MmapMut,
}

impl ShmObject {
    /// Creates `/dev/shm/<name>` of `bytes` bytes (refusing one that exists) and maps it.
    pub fn create(name: &str, bytes: usize) -> Result<ShmObject, String> {
        let path = PathBuf::from("/dev/shm").join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        // From here on the object exists: a failure below must still unlink it.
        let unlink = |e: String| {
            let _ = std::fs::remove_file(&path);
            e
        };
        file.set_len(bytes as u64)
            .map_err(|e| unlink(format!("cannot size {}: {e}", path.display())))?;
        // SAFETY: the object was just created by this process (create_new, mode 0600) and
        // is never truncated while mapped; the only other party, the tfgate gateway, reads
        // and writes it with pread/pwrite within its size, so the mapping stays valid and
        // its bytes are plain data.
        let map = unsafe { MmapMut::map_mut(&file) }
            .map_err(|e| unlink(format!("cannot map {}: {e}", path.display())))?;
        Ok(ShmObject {
            key: format!("/{name}"),
            path,
            map,
        })
    }

    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The object's bytes, to write into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
