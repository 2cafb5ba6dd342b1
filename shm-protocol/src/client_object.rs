//! A file another process owns and shares with the gateway (a V2 client's system
//! shared-memory object), mapped once when it is registered, so that each request's
//! tensor is one `memcpy` between the client's pages and an arena block.
//!
//! The owner may truncate the file at any time, and touching a mapped page past the new
//! end raises SIGBUS, which would kill the gateway. So every copy through the mapping
//! runs under a guard: a SIGBUS handler (installed once, in front of whatever handled
//! SIGBUS before) that finds the faulting address inside the mapping this thread is
//! copying maps zero pages over that whole mapping, so the copy runs to its end, and
//! marks the mapping spoiled. The copy sees the mark and copies the same bytes again
//! through the file (`pread`/`pwrite`), which answers a short file with an error for
//! that request alone. A spoiled mapping is never used again; the file is. A fault
//! anywhere else goes to the handler that was there before, so a real bug still kills
//! the process. (Wayland compositors guard their clients' `wl_shm` pools this way.)
//!
//! Where the file cannot be mapped, or the handler cannot be installed, every copy goes
//! through the file.

use std::cell::Cell;
use std::fs::File;
use std::io::{Error, ErrorKind};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{compiler_fence, AtomicBool, Ordering};
use std::sync::OnceLock;

/// A client's file and, when it could be mapped, the registered range of it.
pub struct ClientObject {
    file: File,
    map: Option<Mapped>,
}

struct Mapped {
    raw: memmap2::MmapRaw,
    /// The file offset of the mapping's first byte (a page boundary).
    start: u64,
    writable: bool,
    /// Set by the SIGBUS handler once it has put zero pages over the mapping.
    spoiled: AtomicBool,
}

/// Which way a copy goes.
#[derive(Clone, Copy)]
pub(crate) enum Direction {
    /// From the file into memory.
    FromFile,
    /// From memory into the file.
    ToFile,
}

impl ClientObject {
    /// `file`, with `offset..offset+len` of it mapped (read-write when `writable`, which
    /// needs the file open for writing). Copies outside that range go through the file.
    pub fn new(file: File, offset: u64, len: u64, writable: bool) -> ClientObject {
        let map = (len > 0 && install_guard())
            .then(|| Mapped::new(&file, offset, len, writable))
            .flatten();
        ClientObject { file, map }
    }

    /// The file, for what is done through it (metadata, a write from memory).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether copies go through a mapping (false: through the file, from the start or
    /// since the owner shrank it under a copy).
    pub fn is_mapped(&self) -> bool {
        self.map
            .as_ref()
            .is_some_and(|m| !m.spoiled.load(Ordering::Acquire))
    }

    /// Reads `dst.len()` bytes at file offset `at` into `dst`; the file ending before
    /// them is an `UnexpectedEof` error.
    pub fn read_at(&self, dst: &mut [u8], at: u64) -> std::io::Result<()> {
        // SAFETY: `dst` is valid for writes of its length and is private memory, so it
        // cannot overlap the client's pages.
        unsafe { self.copy(Direction::FromFile, at, dst.as_mut_ptr(), dst.len()) }
    }

    /// Writes `src` at file offset `at` (a write past the file's end grows it, as
    /// `pwrite` does).
    pub fn write_at(&self, src: &[u8], at: u64) -> std::io::Result<()> {
        // SAFETY: `src` is valid for reads of its length, the copy only reads it, and it
        // is private memory, apart from the client's pages.
        unsafe { self.copy(Direction::ToFile, at, src.as_ptr().cast_mut(), src.len()) }
    }

    /// Copies `len` bytes between file offset `at` and `mem`: from the mapping when the
    /// range is inside it and it is intact, else through the file.
    ///
    /// # Safety
    /// `mem` is valid for `len` bytes of reads (`ToFile`) or writes (`FromFile`), and
    /// does not overlap the client's pages.
    pub(crate) unsafe fn copy(
        &self,
        way: Direction,
        at: u64,
        mem: *mut u8,
        len: usize,
    ) -> std::io::Result<()> {
        if let Some(m) = &self.map {
            if let Some(p) = m.range(way, at, len) {
                let (src, dst) = match way {
                    Direction::FromFile => (p.cast_const(), mem),
                    Direction::ToFile => (mem.cast_const(), p),
                };
                // SAFETY: `p..p+len` is inside the mapping (`range`); `mem` is valid for
                // `len` bytes and apart from it (the caller).
                if unsafe { m.guarded_copy(src, dst, len) } && self.covers(at, len) {
                    return Ok(());
                }
            }
        }
        // SAFETY: as above, for the kernel's copy.
        unsafe { file_io(way, self.file.as_raw_fd(), mem, len, at) }
    }
}

impl ClientObject {
    /// Whether the file still holds `at..at+len`. The page holding its end reads as zeros
    /// past it and takes writes that are lost, without a fault: a file shrunk to there
    /// is seen here, and the copy is made again through the file, which says so.
    fn covers(&self, at: u64, len: usize) -> bool {
        rustix::fs::fstat(&self.file).is_ok_and(|st| {
            u64::try_from(st.st_size).is_ok_and(|size| at.saturating_add(len as u64) <= size)
        })
    }
}

impl std::fmt::Debug for ClientObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientObject")
            .field("fd", &self.file.as_raw_fd())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

impl Mapped {
    fn new(file: &File, offset: u64, len: u64, writable: bool) -> Option<Mapped> {
        let page = rustix::param::page_size() as u64;
        let start = offset - offset % page;
        let map_len = usize::try_from(offset.checked_add(len)? - start).ok()?;
        let mut opts = memmap2::MmapOptions::new();
        opts.offset(start).len(map_len);
        let raw = if writable {
            opts.map_raw(file)
        } else {
            opts.map_raw_read_only(file)
        }
        .ok()?;
        Some(Mapped {
            raw,
            start,
            writable,
            spoiled: AtomicBool::new(false),
        })
    }

    /// The address of file offset `at` when `at..at+len` is mapped, the mapping intact and
    /// (for a write) writable.
    fn range(&self, way: Direction, at: u64, len: usize) -> Option<*mut u8> {
        if matches!(way, Direction::ToFile) && !self.writable
            || self.spoiled.load(Ordering::Acquire)
        {
            return None;
        }
        let from = usize::try_from(at.checked_sub(self.start)?).ok()?;
        if from.checked_add(len)? > self.raw.len() {
            return None;
        }
        // SAFETY: `from + len <= raw.len()`, so the pointer stays inside the mapping.
        Some(unsafe { self.raw.as_mut_ptr().add(from) })
    }

    /// Copies under the SIGBUS guard; false when the owner shrank the file under the copy
    /// (the bytes copied are then not the file's, and the mapping is spoiled).
    ///
    /// # Safety
    /// `src` and `dst` are valid for `len` bytes and do not overlap; the one of them in
    /// this mapping lies inside it.
    unsafe fn guarded_copy(&self, src: *const u8, dst: *mut u8, len: usize) -> bool {
        GUARD.set(Guard {
            start: self.raw.as_ptr() as usize,
            len: self.raw.len(),
            spoiled: &self.spoiled,
        });
        // The guard is in place before the first byte moves and stays until the last has:
        // a signal handler on this thread is all that reads it.
        compiler_fence(Ordering::SeqCst);
        // SAFETY: the caller's contract. A page past the file's end faults; the handler
        // puts a zero page there, and this copy goes on.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        compiler_fence(Ordering::SeqCst);
        GUARD.set(Guard::NONE);
        !self.spoiled.load(Ordering::Acquire)
    }
}

/// Copies `len` bytes between `mem` and `fd` at `at` with `pread`/`pwrite`; a file that
/// ends before the range is an `UnexpectedEof` error naming where.
///
/// # Safety
/// `mem` is valid for `len` bytes of writes (`FromFile`) or reads (`ToFile`).
pub(crate) unsafe fn file_io(
    way: Direction,
    fd: RawFd,
    mem: *mut u8,
    len: usize,
    at: u64,
) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let off = at
            .checked_add(done as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| Error::from(ErrorKind::InvalidInput))?;
        // SAFETY: `done < len`, so the kernel reads or writes `len - done` bytes inside
        // `mem`'s range (the caller's contract), through a raw pointer: no reference to
        // shared bytes is formed.
        let n = unsafe {
            let p = mem.add(done);
            match way {
                Direction::FromFile => libc::pread(fd, p.cast(), len - done, off),
                Direction::ToFile => libc::pwrite(fd, p.cast_const().cast(), len - done, off),
            }
        };
        match n {
            0 => {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("the file ends {done} bytes into a range of {len}"),
                ))
            }
            n if n > 0 => done += n as usize,
            _ => {
                let e = Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// The mapping a thread is copying through, for the SIGBUS handler.
#[derive(Clone, Copy)]
struct Guard {
    start: usize,
    len: usize,
    spoiled: *const AtomicBool,
}

impl Guard {
    const NONE: Guard = Guard {
        start: 0,
        len: 0,
        spoiled: std::ptr::null(),
    };
}

thread_local! {
    // Const-initialised and without a destructor: read in a signal handler, it is a
    // plain load from thread-local storage, with no lazy set-up.
    static GUARD: Cell<Guard> = const { Cell::new(Guard::NONE) };
}

/// The SIGBUS action before the guard's, which the guard hands other faults to.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the guard's SIGBUS handler once; false when it could not be.
fn install_guard() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: plain sigaction calls on zero-initialised (valid) structs; the handler
        // only reads `PREVIOUS` once it is set, which happens before it is installed.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(old);
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) == 0
        }
    })
}

/// The SIGBUS handler: zero pages over the guarded mapping when the fault is in it,
/// else what handled SIGBUS before. Only async-signal-safe calls (`mmap`, `sigaction`).
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let guard = GUARD.get();
    let addr = if info.is_null() {
        0
    } else {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; for SIGBUS
        // `si_addr` is the faulting address.
        unsafe { (*info).si_addr() as usize }
    };
    if guard.len != 0 && addr.wrapping_sub(guard.start) < guard.len {
        // SAFETY: `spoiled` points into the `Mapped` whose copy is running on this
        // thread (it cannot be dropped mid-copy). The new mapping replaces exactly that
        // mapping's pages with private zero pages; nothing else lives in that range.
        unsafe {
            (*guard.spoiled).store(true, Ordering::SeqCst);
            let p = libc::mmap(
                guard.start as *mut libc::c_void,
                guard.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                // The faulting access runs again, on a zero page.
                return;
            }
        }
    }
    // SAFETY: `PREVIOUS` holds the action sigaction reported; a handler there is called
    // as its flags say it takes arguments. With none to call, SIGBUS goes back to its
    // default action, and the faulting access, run again, ends the process as it would
    // have without this handler.
    unsafe {
        match PREVIOUS.get() {
            Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(old.sa_sigaction);
                    f(sig, info, ctx)
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(old.sa_sigaction);
                    f(sig)
                }
            }
            _ => {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfd::MemfdOptions;

    fn object_of(bytes: &[u8], writable: bool) -> (File, ClientObject) {
        let memfd = MemfdOptions::new().create("tfgate-client-object").unwrap();
        std::io::Write::write_all(&mut memfd.as_file(), bytes).unwrap();
        let file = memfd.into_file();
        let object = ClientObject::new(file.try_clone().unwrap(), 0, bytes.len() as u64, writable);
        (file, object)
    }

    #[test]
    fn reads_and_writes_go_through_the_mapping() {
        let page = rustix::param::page_size();
        let bytes: Vec<u8> = (0..3 * page).map(|i| (i % 251) as u8).collect();
        let (file, object) = object_of(&bytes, true);
        assert!(object.is_mapped());
        let mut got = vec![0u8; 100];
        object.read_at(&mut got, 5).unwrap();
        assert_eq!(got, bytes[5..105]);

        let src = [7u8; 64];
        object.write_at(&src, 4000).unwrap();
        let mut back = [0u8; 64];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, 4000).unwrap();
        assert_eq!(back, src);
        // Past the mapped range: through the file, which ends there.
        let e = object.read_at(&mut got, 3 * page as u64 - 10).unwrap_err();
        assert_eq!(e.to_string(), "the file ends 10 bytes into a range of 100");
        assert!(object.is_mapped());
    }

    /// The owner truncates the file under the mapping: the copy faults, the guard turns
    /// that into the file's own answer, the process lives, and later copies of what is
    /// still there succeed through the file.
    #[test]
    fn a_truncated_file_is_an_error_not_a_sigbus() {
        let page = rustix::param::page_size();
        let bytes: Vec<u8> = (0..4 * page).map(|i| (i % 253) as u8).collect();
        let (file, object) = object_of(&bytes, true);
        file.set_len(page as u64 + 16).unwrap();

        let mut got = vec![0u8; 3 * page];
        let e = object.read_at(&mut got, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
        assert_eq!(
            e.to_string(),
            format!(
                "the file ends {} bytes into a range of {}",
                page + 16,
                3 * page
            )
        );
        assert!(!object.is_mapped());

        let mut head = vec![0u8; page];
        object.read_at(&mut head, 8).unwrap();
        assert_eq!(head, bytes[8..8 + page]);
        // Writes past the end grow the file through `pwrite`, as they would have.
        object.write_at(&head, 2 * page as u64).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 3 * page as u64);
    }

    /// Shrunk inside its last page, the file faults nowhere (that page reads as zeros
    /// past the end): the size check sends the copy through the file all the same.
    #[test]
    fn a_file_shrunk_inside_its_last_page_is_seen() {
        let (file, object) = object_of(&[5u8; 100], true);
        file.set_len(40).unwrap();
        let mut got = vec![0u8; 100];
        let e = object.read_at(&mut got, 0).unwrap_err();
        assert_eq!(e.to_string(), "the file ends 40 bytes into a range of 100");
        // A write there grows the file through `pwrite` instead of being lost.
        let src = [3u8; 20];
        object.write_at(&src, 60).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 80);
        let mut back = [0u8; 20];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, 60).unwrap();
        assert_eq!(back, src);
    }

    /// A write into a truncated mapping is caught the same way.
    #[test]
    fn a_write_past_the_new_end_is_caught() {
        let page = rustix::param::page_size();
        let (file, object) = object_of(&vec![1u8; 2 * page], true);
        file.set_len(0).unwrap();
        let src = vec![9u8; page];
        object.write_at(&src, page as u64).unwrap();
        assert!(!object.is_mapped());
        let mut back = vec![0u8; page];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, page as u64).unwrap();
        assert_eq!(back, src);
    }

    /// A SIGBUS outside any guarded copy still ends the process: run in a child process
    /// (this test binary, filtered to the ignored test below), it must die of SIGBUS.
    #[test]
    fn other_faults_still_kill_the_process() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "client_object::tests::unguarded_fault",
                "--nocapture",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
    }

    #[test]
    #[ignore = "run by other_faults_still_kill_the_process, in a process of its own"]
    fn unguarded_fault() {
        let page = rustix::param::page_size();
        let (file, object) = object_of(&vec![1u8; 2 * page], false);
        assert!(object.is_mapped());
        let map = memmap2::MmapOptions::new()
            .len(2 * page)
            .map_raw(&file)
            .unwrap();
        file.set_len(0).unwrap();
        // SAFETY: inside the mapping; the page is past the file's end, so this faults.
        let v = unsafe { std::ptr::read_volatile(map.as_ptr().add(page)) };
        println!("read {v} without a fault");
    }
}
