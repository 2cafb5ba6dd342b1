//! V2's system shared-memory extension: a client registers a POSIX shared-memory object
//! (`shm_open`'s name, under this host's `/dev/shm`) with an offset and a size; inputs
//! and outputs then name a region, an offset into it and a byte size instead of carrying
//! data, so tensors go between the client's memory and the worker's arenas with no socket
//! in between. Regions are local to the host the gateway runs on (in a container: its
//! `/dev/shm`).
//!
//! The object is read and written with `pread`/`pwrite` on its file descriptor, never
//! mapped: the client may truncate it at any time, and a mapping past the new end would
//! kill the gateway with SIGBUS, where a short read is just an error for that request.
//! Every offset and size is checked against the region at registration and at each use.
//! A region holds its file open, and each request holds the region: one unregistered
//! while a request uses it stays open until that request is answered.

use crate::error::ServingError;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Arc;

/// At most this many regions are registered at once (each holds a file descriptor).
pub const MAX_REGIONS: usize = 1024;

/// One registered region.
#[derive(Debug)]
pub struct Region {
    pub name: String,
    pub key: String,
    /// Where the region starts in the object.
    pub offset: u64,
    pub byte_size: u64,
    file: File,
    /// Opened read-only (the object's permissions allow no more): outputs are refused.
    read_only: bool,
}

/// The request parameters that name a region.
pub const REGION: &str = "shared_memory_region";
pub const BYTE_SIZE: &str = "shared_memory_byte_size";
pub const OFFSET: &str = "shared_memory_offset";

/// What a tensor names instead of carrying data.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub region: String,
    pub offset: u64,
    pub byte_size: u64,
}

fn bad(message: String) -> ServingError {
    ServingError::invalid_argument(message)
}

impl Region {
    /// Checks `r` lies within this region; the object's offset of its first byte.
    fn locate(&self, r: &Reference) -> Result<u64, ServingError> {
        let end = r.offset.checked_add(r.byte_size);
        if end.is_none_or(|end| end > self.byte_size) {
            return Err(bad(format!(
                "shared memory region '{}': offset {} + byte size {} is past its end ({} bytes)",
                self.name, r.offset, r.byte_size, self.byte_size
            )));
        }
        Ok(self.offset + r.offset)
    }

    /// A copy of the bytes `r` names.
    pub fn read(&self, r: &Reference) -> Result<Bytes, ServingError> {
        let at = self.locate(r)?;
        let len = usize::try_from(r.byte_size).map_err(|_| {
            bad(format!(
                "shared memory byte size {} is too large",
                r.byte_size
            ))
        })?;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, at).map_err(|e| {
            bad(format!(
                "cannot read shared memory region '{}' (key '{}'): {e}",
                self.name, self.key
            ))
        })?;
        Ok(buf.into())
    }

    /// Writes `data` where `r` names; it must fit in `r`'s byte size.
    pub fn write(&self, r: &Reference, output: &str, data: &[u8]) -> Result<(), ServingError> {
        if self.read_only {
            return Err(bad(format!(
                "shared memory region '{}' is read-only to the server: output '{output}' cannot be written there",
                self.name
            )));
        }
        let at = self.locate(r)?;
        if data.len() as u64 > r.byte_size {
            return Err(bad(format!(
                "output '{output}' needs {} bytes, shared memory region '{}' was given {}",
                data.len(),
                self.name,
                r.byte_size
            )));
        }
        self.file.write_all_at(data, at).map_err(|e| {
            ServingError::internal(format!(
                "cannot write shared memory region '{}' (key '{}'): {e}",
                self.name, self.key
            ))
        })
    }
}

/// The object `key` names under /dev/shm: one path component, as `shm_open` takes it
/// (an optional leading `/`), so no key reaches outside /dev/shm.
fn object_path(key: &str) -> Result<String, ServingError> {
    let name = key.strip_prefix('/').unwrap_or(key);
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(bad(format!(
            "'{key}' is not a shared memory key: one name, with an optional leading '/'"
        )));
    }
    Ok(format!("/dev/shm/{name}"))
}

/// The registered regions, shared by the REST and gRPC front ends.
#[derive(Clone, Default)]
pub struct Registry {
    regions: Arc<Mutex<BTreeMap<String, Arc<Region>>>>,
}

impl Registry {
    /// Opens the object and registers `[offset, offset + byte_size)` of it as `name`.
    pub fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), ServingError> {
        if name.is_empty() {
            return Err(bad("a shared memory region needs a name".into()));
        }
        if self.regions.lock().contains_key(name) {
            return Err(bad(format!(
                "shared memory region '{name}' is already registered"
            )));
        }
        let path = object_path(key)?;
        let open = |write: bool| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
        };
        let (file, read_only) = match open(true) {
            Ok(f) => (f, false),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => (
                open(false).map_err(|e| {
                    bad(format!("unable to open shared memory object '{key}': {e}"))
                })?,
                true,
            ),
            Err(e) => {
                return Err(bad(format!(
                    "unable to open shared memory object '{key}': {e}"
                )))
            }
        };
        let meta = file
            .metadata()
            .map_err(|e| bad(format!("cannot inspect shared memory object '{key}': {e}")))?;
        if !meta.is_file() {
            return Err(bad(format!("'{key}' is not a shared memory object")));
        }
        if offset
            .checked_add(byte_size)
            .is_none_or(|end| end > meta.len())
        {
            return Err(bad(format!(
                "shared memory region '{name}': offset {offset} + byte size {byte_size} is past the end of '{key}' ({} bytes)",
                meta.len()
            )));
        }
        let region = Arc::new(Region {
            name: name.to_string(),
            key: key.to_string(),
            offset,
            byte_size,
            file,
            read_only,
        });
        let mut regions = self.regions.lock();
        if regions.len() >= MAX_REGIONS {
            return Err(ServingError::resource_exhausted(format!(
                "{MAX_REGIONS} shared memory regions are registered already"
            )));
        }
        if regions.contains_key(name) {
            return Err(bad(format!(
                "shared memory region '{name}' is already registered"
            )));
        }
        regions.insert(name.to_string(), region);
        Ok(())
    }

    /// Unregisters `name`, or every region when `None`. Requests using a region keep it.
    pub fn unregister(&self, name: Option<&str>) -> Result<(), ServingError> {
        let mut regions = self.regions.lock();
        match name {
            None => regions.clear(),
            Some(n) => {
                regions.remove(n).ok_or_else(|| not_registered(n))?;
            }
        }
        Ok(())
    }

    /// `name`'s region, or every region, sorted by name.
    pub fn status(&self, name: Option<&str>) -> Result<Vec<Arc<Region>>, ServingError> {
        let regions = self.regions.lock();
        match name {
            None => Ok(regions.values().cloned().collect()),
            Some(n) => Ok(vec![regions
                .get(n)
                .cloned()
                .ok_or_else(|| not_registered(n))?]),
        }
    }

    /// The region a tensor names, held for the request.
    pub fn get(&self, name: &str) -> Result<Arc<Region>, ServingError> {
        self.regions
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| not_registered(name))
    }
}

/// A region a request holds, and where in it its tensor is.
#[derive(Debug, Clone)]
pub struct Held {
    pub region: Arc<Region>,
    pub at: Reference,
}

impl Held {
    /// Resolves `at` now: an unknown region fails the request before it runs.
    pub fn resolve(registry: &Registry, at: Reference) -> Result<Held, ServingError> {
        let region = registry.get(&at.region)?;
        region.locate(&at)?;
        Ok(Held { region, at })
    }

    /// An input's bytes; at most `limit` of them, the bound a request carrying its data
    /// would have (`--max_request_body_mb`, gRPC's receive limit).
    pub fn read(&self, limit: usize) -> Result<Bytes, ServingError> {
        if self.at.byte_size > limit as u64 {
            return Err(ServingError::resource_exhausted(format!(
                "shared memory input of {} bytes exceeds the request limit of {limit} bytes",
                self.at.byte_size
            )));
        }
        self.region.read(&self.at)
    }

    /// Writes an output; returns the bytes written.
    pub fn write(&self, output: &str, data: &[u8]) -> Result<usize, ServingError> {
        self.region
            .write(&self.at, output, data)
            .map(|()| data.len())
    }
}

fn not_registered(name: &str) -> ServingError {
    bad(format!("shared memory region '{name}' is not registered"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared-memory object for one test, unlinked when dropped.
    struct Object(String);

    impl Object {
        fn new(tag: &str, bytes: &[u8]) -> Object {
            let key = format!("/tfgate-test-{}-{tag}", std::process::id());
            std::fs::write(format!("/dev/shm{key}"), bytes).unwrap();
            Object(key)
        }
    }

    impl Drop for Object {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(format!("/dev/shm{}", self.0));
        }
    }

    fn reference(region: &str, offset: u64, byte_size: u64) -> Reference {
        Reference {
            region: region.into(),
            offset,
            byte_size,
        }
    }

    #[test]
    fn regions_read_and_write_within_their_bounds() {
        let obj = Object::new("rw", &[0, 1, 2, 3, 4, 5, 6, 7]);
        let reg = Registry::default();
        reg.register("r", &obj.0, 2, 4).unwrap();
        let r = reg.get("r").unwrap();
        assert_eq!(&r.read(&reference("r", 1, 2)).unwrap()[..], &[3, 4]);
        r.write(&reference("r", 0, 2), "y", &[9, 9]).unwrap();
        assert_eq!(&r.read(&reference("r", 0, 4)).unwrap()[..], &[9, 9, 4, 5]);
        let e = r.read(&reference("r", 3, 2)).unwrap_err();
        assert_eq!(
            e.message,
            "shared memory region 'r': offset 3 + byte size 2 is past its end (4 bytes)"
        );
        let e = r.write(&reference("r", 0, 1), "y", &[1, 2]).unwrap_err();
        assert_eq!(
            e.message,
            "output 'y' needs 2 bytes, shared memory region 'r' was given 1"
        );
        let held = Held::resolve(&reg, reference("r", 0, 4)).unwrap();
        assert_eq!(held.read(4).unwrap().len(), 4);
        assert_eq!(
            held.read(3).unwrap_err().message,
            "shared memory input of 4 bytes exceeds the request limit of 3 bytes"
        );
        // Truncated by its owner: an error for that request, never a crash.
        std::fs::File::options()
            .write(true)
            .open(format!("/dev/shm{}", obj.0))
            .unwrap()
            .set_len(3)
            .unwrap();
        assert!(r.read(&reference("r", 0, 4)).is_err());
    }

    #[test]
    fn registration_is_checked() {
        let obj = Object::new("reg", &[0; 16]);
        let reg = Registry::default();
        let e = reg.register("r", &obj.0, 8, 9).unwrap_err();
        assert!(e.message.contains("is past the end of"), "{}", e.message);
        reg.register("r", &obj.0, 0, 16).unwrap();
        let e = reg.register("r", &obj.0, 0, 16).unwrap_err();
        assert_eq!(e.message, "shared memory region 'r' is already registered");
        for key in ["/../etc/passwd", "a/b", "", "/", ".."] {
            let e = reg.register("x", key, 0, 1).unwrap_err();
            assert!(
                e.message.contains("is not a shared memory key"),
                "{key}: {}",
                e.message
            );
        }
        let e = reg
            .register("x", "/tfgate-no-such-object", 0, 1)
            .unwrap_err();
        assert!(e.message.starts_with("unable to open shared memory object"));

        // Unregistered while in use: the holder keeps reading it.
        let held = reg.get("r").unwrap();
        reg.unregister(Some("r")).unwrap();
        assert_eq!(held.read(&reference("r", 0, 2)).unwrap().len(), 2);
        assert!(reg.get("r").is_err());
        assert!(reg.unregister(Some("r")).is_err());
        reg.register("a", &obj.0, 0, 1).unwrap();
        reg.register("b", &obj.0, 0, 1).unwrap();
        assert_eq!(reg.status(None).unwrap().len(), 2);
        reg.unregister(None).unwrap();
        assert!(reg.status(None).unwrap().is_empty());
    }
}
