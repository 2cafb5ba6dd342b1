//! V2's system shared-memory extension: a client registers a POSIX shared-memory object
//! (`shm_open`'s name, under this host's `/dev/shm`) with an offset and a size; inputs
//! and outputs then name a region, an offset into it and a byte size instead of carrying
//! data, so tensors go between the client's memory and the worker's arenas with no socket
//! in between. Regions are local to the host the gateway runs on (in a container: its
//! `/dev/shm`).
//!
//! **Who may be reached.** The extension is off unless `--enable_v2_system_shared_memory`
//! turns it on: a network client names an object by key, so the server must never open
//! one not meant for it. When on, an object is used only if it is a regular file in
//! `/dev/shm` owned by the server's own user or by one of
//! `--v2_shared_memory_owners` (ownership, not a name, is the guard: Triton's clients
//! choose their keys), and its key starts with `--v2_shared_memory_key_prefix` when one
//! is set. The key is opened `O_PATH | O_NOFOLLOW` (no link followed, nothing opened
//! that could block or act: a FIFO, a device), its type and owner checked on that
//! descriptor, and only then is the same inode reopened for reading and writing
//! (`O_NONBLOCK`, through `/proc/self/fd`, its identity checked again).
//!
//! The registered range is mapped into the gateway once, at registration
//! ([`ClientObject`]), as Triton does, so a tensor is one `memcpy` between the client's
//! pages and an arena block. The client may truncate the object at any time, and a
//! mapped page past its new end raises SIGBUS: every copy through the mapping runs under
//! a guard that puts zero pages there instead, and the request's bytes are then copied
//! through the file (`pread`/`pwrite`), where a short file is an error for that request
//! alone; that region goes through the file from then on. A client's pages that the
//! gateway has touched count in its resident memory (shared, not a copy).
//!
//! Every offset and size is checked against the region at registration and at each use.
//!
//! **One copy each way.** A numeric input stays in the object
//! ([`TensorData::File`](tfgate_tensor::TensorData::File)) until the request's frame is
//! written: it is then copied from the client's pages straight into the request arena
//! block, where TensorFlow reads it in place. An output asked for in a region is written there by the
//! completion task straight from the response arena, before that space is released
//! (`workers::incarnation`). Both copies run where the frame's other bytes are copied (on
//! the event loop: they are memory copies). With batching, inputs are read into the batch
//! and outputs answered from memory, as for every API; BYTES and BOOL inputs, which the gateway checks, are read first too. Other reads
//! and writes run off the async threads (`off_the_loop`). A region holds its file open,
//! and each request holds the region: one unregistered while a request uses it stays open
//! until that request is answered.

use crate::error::ServingError;
use bytes::Bytes;
use parking_lot::Mutex;
use shm_protocol::ClientObject;
use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;
use tfgate_tensor::FileBytes;

/// At most this many regions are registered at once (each holds a file descriptor, counted
/// in the process's descriptor budget).
pub const MAX_REGIONS: usize = 1024;

/// Where shared-memory objects live.
const SHM_DIR: &str = "/dev/shm";

/// The message for a registration while the extension is off.
pub const OFF: &str = "the system shared memory extension is off: start tfgate with --enable_v2_system_shared_memory to register regions";

/// Which objects the server may use, from the flags.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `--enable_v2_system_shared_memory`.
    pub enabled: bool,
    /// Users whose objects may be used: the server's own and `--v2_shared_memory_owners`.
    pub owners: Vec<u32>,
    /// `--v2_shared_memory_key_prefix` (without a leading `/`); empty: any key.
    pub key_prefix: String,
}

impl Policy {
    /// The policy the flags describe; owners are uids or user names (`/etc/passwd`).
    pub fn new(enabled: bool, owners: &str, key_prefix: &str) -> Result<Policy, String> {
        let mut uids = vec![rustix::process::geteuid().as_raw()];
        for owner in owners.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let uid = match owner.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => uid_of(owner).ok_or_else(|| {
                    format!("--v2_shared_memory_owners: no user '{owner}' in /etc/passwd")
                })?,
            };
            uids.push(uid);
        }
        if !enabled && (!owners.is_empty() || !key_prefix.is_empty()) {
            return Err("--v2_shared_memory_owners and --v2_shared_memory_key_prefix need --enable_v2_system_shared_memory".into());
        }
        Ok(Policy {
            enabled,
            owners: uids,
            key_prefix: key_prefix
                .strip_prefix('/')
                .unwrap_or(key_prefix)
                .to_string(),
        })
    }
}

/// A user's uid from `/etc/passwd` (the accounts a container image or host declares).
fn uid_of(name: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

/// Runs a file operation off the async threads: on the multi-threaded runtime the
/// thread hands its tasks to another first (`block_in_place`); elsewhere (tests) inline.
fn off_the_loop<T>(op: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(op)
        }
        _ => op(),
    }
}

/// One registered region.
#[derive(Debug)]
pub struct Region {
    pub name: String,
    pub key: String,
    /// Where the region starts in the object.
    pub offset: u64,
    pub byte_size: u64,
    file: Arc<ClientObject>,
    /// "shared memory region 'r' (key '/k')", for messages.
    what: Arc<str>,
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
        off_the_loop(|| self.file.write_at(data, at)).map_err(|e| {
            ServingError::internal(format!(
                "cannot write shared memory region '{}' (key '{}'): {e}",
                self.name, self.key
            ))
        })
    }
}

/// The object's name under /dev/shm that `key` gives: one path component, as `shm_open`
/// takes it (an optional leading `/`), so no key reaches outside /dev/shm.
fn object_name<'k>(key: &'k str, prefix: &str) -> Result<&'k str, ServingError> {
    let name = key.strip_prefix('/').unwrap_or(key);
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(bad(format!(
            "'{key}' is not a shared memory key: one name, with an optional leading '/'"
        )));
    }
    if !name.starts_with(prefix) {
        return Err(bad(format!(
            "shared memory key '{key}' is outside this server's prefix '/{prefix}' (--v2_shared_memory_key_prefix)"
        )));
    }
    Ok(name)
}

/// Opens the object `name` in /dev/shm for reading (and writing when its mode allows),
/// checking what it is before any byte moves; returns the file and whether it is
/// read-only. See the module's docs for the order of the checks.
fn open_object(key: &str, name: &str, owners: &[u32]) -> Result<(File, bool), ServingError> {
    use rustix::fs::{FileType, Mode, OFlags};
    let cannot =
        |e: rustix::io::Errno| bad(format!("unable to open shared memory object '{key}': {e}"));
    let dir = rustix::fs::open(
        SHM_DIR,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(cannot)?;
    // O_PATH: nothing is opened for I/O, so no FIFO waits and no device acts.
    let path = rustix::fs::openat(
        &dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(cannot)?;
    let seen = rustix::fs::fstat(&path).map_err(cannot)?;
    if FileType::from_raw_mode(seen.st_mode) != FileType::RegularFile {
        return Err(bad(format!(
            "'{key}' is not a shared memory object (a {})",
            kind(FileType::from_raw_mode(seen.st_mode))
        )));
    }
    if !owners.contains(&seen.st_uid) {
        return Err(bad(format!(
            "shared memory object '{key}' belongs to uid {}, not to this server's user or one of --v2_shared_memory_owners",
            seen.st_uid
        )));
    }
    // The same inode, opened for I/O through the checked descriptor.
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&path));
    let reopen = |flags: OFlags| {
        rustix::fs::open(
            proc_path.as_str(),
            flags | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let (fd, read_only) = match reopen(OFlags::RDWR) {
        Ok(fd) => (fd, false),
        Err(rustix::io::Errno::ACCESS) => (reopen(OFlags::RDONLY).map_err(cannot)?, true),
        Err(e) => return Err(cannot(e)),
    };
    let opened = rustix::fs::fstat(&fd).map_err(cannot)?;
    if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino) {
        return Err(bad(format!(
            "shared memory object '{key}' changed while it was opened"
        )));
    }
    Ok((File::from(fd), read_only))
}

/// A file type in words, for the refusal.
fn kind(t: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType::*;
    match t {
        Directory => "directory",
        Symlink => "symbolic link",
        Fifo => "FIFO",
        Socket => "socket",
        CharacterDevice | BlockDevice => "device",
        _ => "file of another kind",
    }
}

/// The registered regions, shared by the REST and gRPC front ends.
#[derive(Clone, Default)]
pub struct Registry {
    regions: Arc<Mutex<BTreeMap<String, Arc<Region>>>>,
    policy: Arc<Policy>,
}

impl Registry {
    pub fn new(policy: Policy) -> Registry {
        Registry {
            regions: Default::default(),
            policy: Arc::new(policy),
        }
    }

    /// Whether the extension is on (server metadata lists it only then).
    pub fn enabled(&self) -> bool {
        self.policy.enabled
    }

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
        if !self.policy.enabled {
            return Err(ServingError::failed_precondition(OFF));
        }
        let object = object_name(key, &self.policy.key_prefix)?;
        let (file, read_only) = off_the_loop(|| open_object(key, object, &self.policy.owners))?;
        let meta = off_the_loop(|| file.metadata())
            .map_err(|e| bad(format!("cannot inspect shared memory object '{key}': {e}")))?;
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
            file: Arc::new(ClientObject::new(file, offset, byte_size, !read_only)),
            what: format!("shared memory region '{name}' (key '{key}')").into(),
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
    /// A name that is not registered is no error, as in Triton (its client helpers
    /// unregister a name before registering it).
    pub fn unregister(&self, name: Option<&str>) -> Result<(), ServingError> {
        let mut regions = self.regions.lock();
        match name {
            None => regions.clear(),
            Some(n) => {
                regions.remove(n);
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
        if !self.policy.enabled {
            return Err(ServingError::failed_precondition(OFF));
        }
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

    /// An input's bytes where they are, to be copied once, straight into shared memory
    /// for the worker; at most `limit` of them, the bound a request carrying its data
    /// would have (`--max_request_body_mb`, gRPC's receive limit).
    pub fn input(&self, limit: usize) -> Result<FileBytes, ServingError> {
        if self.at.byte_size > limit as u64 {
            return Err(ServingError::resource_exhausted(format!(
                "shared memory input of {} bytes exceeds the request limit of {limit} bytes",
                self.at.byte_size
            )));
        }
        let offset = self.region.locate(&self.at)?;
        let len = usize::try_from(self.at.byte_size).map_err(|_| {
            bad(format!(
                "shared memory byte size {} is too large",
                self.at.byte_size
            ))
        })?;
        Ok(FileBytes {
            file: self.region.file.clone(),
            offset,
            len,
            what: self.region.what.clone(),
        })
    }

    /// A copy of an input's bytes (BYTES and BOOL inputs, which are checked here).
    pub fn read(&self, limit: usize) -> Result<Bytes, ServingError> {
        let input = self.input(limit)?;
        off_the_loop(|| input.read()).map_err(bad)
    }

    /// Where an output may be written straight from the worker's answer: the bytes the
    /// request gave it (`len` is their count); `None` for a read-only region, whose
    /// refusal the front end gives.
    pub fn output_target(&self) -> Option<FileBytes> {
        if self.region.read_only {
            return None;
        }
        Some(FileBytes {
            file: self.region.file.clone(),
            offset: self.region.offset.checked_add(self.at.offset)?,
            len: usize::try_from(self.at.byte_size).ok()?,
            what: self.region.what.clone(),
        })
    }

    /// Whether `f` is bytes of this region where this tensor goes.
    pub fn holds(&self, f: &FileBytes) -> bool {
        Arc::ptr_eq(&f.file, &self.region.file)
            && Some(f.offset) == self.region.offset.checked_add(self.at.offset)
            && f.len as u64 <= self.at.byte_size
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

    fn on() -> Registry {
        Registry::new(Policy::new(true, "", "").unwrap())
    }

    /// The bytes `at` names in `region`, as an input reads them.
    fn read(region: &Arc<Region>, at: Reference) -> Result<Bytes, ServingError> {
        Held {
            region: region.clone(),
            at,
        }
        .read(usize::MAX)
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
        let reg = on();
        reg.register("r", &obj.0, 2, 4).unwrap();
        let r = reg.get("r").unwrap();
        assert_eq!(&read(&r, reference("r", 1, 2)).unwrap()[..], &[3, 4]);
        r.write(&reference("r", 0, 2), "y", &[9, 9]).unwrap();
        assert_eq!(&read(&r, reference("r", 0, 4)).unwrap()[..], &[9, 9, 4, 5]);
        let e = read(&r, reference("r", 3, 2)).unwrap_err();
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
        assert!(read(&r, reference("r", 0, 4)).is_err());
    }

    #[test]
    fn registration_is_checked() {
        let obj = Object::new("reg", &[0; 16]);
        let reg = on();
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
        assert_eq!(read(&held, reference("r", 0, 2)).unwrap().len(), 2);
        assert!(reg.get("r").is_err());
        reg.unregister(Some("r"))
            .expect("a name not registered unregisters, as in Triton");
        reg.register("a", &obj.0, 0, 1).unwrap();
        reg.register("b", &obj.0, 0, 1).unwrap();
        assert_eq!(reg.status(None).unwrap().len(), 2);
        reg.unregister(None).unwrap();
        assert!(reg.status(None).unwrap().is_empty());
    }

    /// Objects not meant for the server are refused before any byte moves: the extension
    /// off, another user's object, a FIFO (whose open would block), a link, a key outside
    /// the prefix.
    #[test]
    fn only_the_servers_own_objects_are_reached() {
        let obj = Object::new("own", &[7; 16]);
        let off = Registry::default();
        let e = off.register("r", &obj.0, 0, 16).unwrap_err();
        assert_eq!(e.message, OFF);
        assert!(!off.enabled());
        assert_eq!(off.get("r").unwrap_err().message, OFF);

        // Another user's: the policy names owners that exclude this process's user.
        let me = rustix::process::geteuid().as_raw();
        let strangers = Registry::new(Policy {
            enabled: true,
            owners: vec![me.wrapping_add(1)],
            key_prefix: String::new(),
        });
        let e = strangers.register("r", &obj.0, 0, 16).unwrap_err();
        assert_eq!(
            e.message,
            format!("shared memory object '{}' belongs to uid {me}, not to this server's user or one of --v2_shared_memory_owners", obj.0)
        );

        let reg = on();
        let fifo = format!("/tfgate-test-{}-fifo", std::process::id());
        rustix::fs::mknodat(
            rustix::fs::CWD,
            format!("/dev/shm{fifo}").as_str(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let t = std::time::Instant::now();
        let e = reg.register("f", &fifo, 0, 1).unwrap_err();
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            e.message,
            format!("'{fifo}' is not a shared memory object (a FIFO)")
        );
        let _ = std::fs::remove_file(format!("/dev/shm{fifo}"));

        let link = format!("/tfgate-test-{}-link", std::process::id());
        std::os::unix::fs::symlink(format!("/dev/shm{}", obj.0), format!("/dev/shm{link}"))
            .unwrap();
        let e = reg.register("l", &link, 0, 1).unwrap_err();
        let _ = std::fs::remove_file(format!("/dev/shm{link}"));
        assert_eq!(
            e.message,
            format!("'{link}' is not a shared memory object (a symbolic link)")
        );
        assert_eq!(
            &std::fs::read(format!("/dev/shm{}", obj.0)).unwrap()[..],
            &[7; 16]
        );

        let narrow = Registry::new(Policy::new(true, "", "/app-").unwrap());
        let e = narrow.register("r", &obj.0, 0, 16).unwrap_err();
        assert_eq!(
            e.message,
            format!("shared memory key '{}' is outside this server's prefix '/app-' (--v2_shared_memory_key_prefix)", obj.0)
        );
    }

    #[test]
    fn owners_are_uids_or_names() {
        let p = Policy::new(true, "0, root", "").unwrap();
        assert_eq!(p.owners[1..], [0, 0]);
        assert_eq!(
            Policy::new(true, "no-such-user-here", "").unwrap_err(),
            "--v2_shared_memory_owners: no user 'no-such-user-here' in /etc/passwd"
        );
        assert!(
            Policy::new(false, "0", "").is_err(),
            "owners without the extension"
        );
    }
}
