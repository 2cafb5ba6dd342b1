//! The shared region of one worker incarnation: a sealed memfd, its header and layout.
//!
//! The gateway [`Segment::create`]s it (sizes it, seals it against shrink/grow, writes the
//! [`Header`]) and sends [`Segment::fd`] to the worker, which [`Segment::attach`]es after
//! checking the magic, the layout version, the generation and that every part named by
//! the header fits the file's real size. The validated [`Layout`] is kept in private
//! memory; the header is never read again.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use memfd::{FileSeal, MemfdOptions};

use crate::doorbell::{Chime, Ringer};
use crate::gateway::{self, RequestSender, ResponseReceiver};
pub use crate::layout::Layout;
use crate::mapping::Mapping;
use crate::ring::{
    ring_bytes, Descriptor, MAX_RING_CAPACITY, MIN_RING_CAPACITY, RING_CONTROL_SIZE,
};
use crate::wake::SpinConfig;
use crate::worker::{self, RequestReceiver, ResponseSender};

/// `b"TFGSHM\0\x01"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TFGSHM\0\x01");
/// Bumped whenever the header, ring or frame layout changes incompatibly.
pub const LAYOUT_VERSION: u32 = 2;
/// The header occupies the first page; the rings start after it.
const HEADER_REGION: u64 = 4096;
const PAGE: u64 = 4096;
/// The most spin the header may ask the worker for.
const MAX_SPIN: Duration = Duration::from_millis(10);
/// Largest arena accepted (1 TiB): keeps all offset arithmetic far from overflow.
const MAX_ARENA_BYTES: u64 = 1 << 40;

/// The `#[repr(C)]` header at offset 0 of the region. Written once by the gateway before
/// the fd is shared; read once (copied, then validated) by the worker.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: u64,
    pub layout_version: u32,
    /// `size_of::<Header>()`.
    pub header_size: u32,
    /// Incarnation number: the gateway bumps it for every worker it starts.
    pub generation: u64,
    /// Size of the whole memfd.
    pub total_size: u64,
    /// Descriptors per ring (power of two).
    pub ring_capacity: u64,
    /// `size_of::<Descriptor>()`.
    pub descriptor_size: u32,
    /// Size of a ring's control block (the slots follow it).
    pub ring_control_size: u32,
    /// Advisory spin budget for the worker's waits, in ns (capped at 10 ms on attach).
    pub spin_ns: u64,
    pub request_ring_offset: u64,
    pub request_ring_size: u64,
    pub response_ring_offset: u64,
    pub response_ring_size: u64,
    pub request_arena_offset: u64,
    pub request_arena_size: u64,
    pub response_arena_offset: u64,
    pub response_arena_size: u64,
    /// Bit 0: [`FLAG_PREFAULT`]. Unknown bits are ignored.
    pub flags: u64,
}

/// Header flag: both sides fault the whole region in up front.
pub const FLAG_PREFAULT: u64 = 1;

const _: () = assert!(std::mem::size_of::<Header>() == 128);
const _: () = assert!(std::mem::align_of::<Header>() == 8);
const _: () = assert!(std::mem::size_of::<Header>() as u64 <= HEADER_REGION);

/// Sizes of the region, as a gateway flag set chooses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentConfig {
    /// Descriptors per ring; a power of two. Also the most requests in flight. Default 1024.
    pub ring_capacity: u32,
    /// Request arena bytes. Default 256 MiB.
    pub request_arena_bytes: u64,
    /// Response arena bytes. Default 256 MiB.
    pub response_arena_bytes: u64,
    /// Spin before parking, for both sides (the worker reads it from the header).
    /// Default 50 µs.
    pub spin: SpinConfig,
    /// Allocate and map every page of the region at create/attach
    /// (`MADV_POPULATE_WRITE`) instead of on first touch: no page faults on the hot path
    /// (a first touch costs a fault plus zeroing a page, expensive in a VM), at the price
    /// of committing the whole region's RAM up front. Default false.
    pub prefault: bool,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            ring_capacity: 1024,
            request_arena_bytes: 256 << 20,
            response_arena_bytes: 256 << 20,
            spin: SpinConfig::default(),
            prefault: false,
        }
    }
}

/// Why a segment could not be created or attached.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("shared memory I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("memfd: {0}")]
    Memfd(#[from] memfd::Error),
    #[error("invalid shared-memory configuration: {0}")]
    Config(String),
    #[error("the fd is not a memfd sealed against shrink and grow")]
    NotSealed,
    #[error("bad magic {0:#018x}: not a tfgate shared-memory segment")]
    BadMagic(u64),
    #[error("layout version {found}, expected {expected}")]
    BadVersion { found: u32, expected: u32 },
    #[error("segment generation {found}, expected {expected} (stale worker incarnation)")]
    WrongGeneration { found: u64, expected: u64 },
    #[error("bad segment layout: {0}")]
    BadLayout(String),
}

/// One worker incarnation's shared region, before it is split into endpoint handles.
pub struct Segment {
    pub(crate) map: Arc<Mapping>,
    pub(crate) layout: Layout,
    /// The gateway's side of the responses' doorbell, when set ([`Segment::with_chime`]).
    pub(crate) chime: Option<Arc<Chime>>,
    /// The worker's side of it ([`Segment::with_ringer`]).
    pub(crate) ringer: Option<Arc<Ringer>>,
}

/// A region size as a mapping length.
fn address_space(len: u64) -> Result<usize, SegmentError> {
    usize::try_from(len)
        .map_err(|_| SegmentError::BadLayout("size exceeds the address space".into()))
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    Some(v.checked_add(a - 1)? / a * a)
}

impl Segment {
    /// Creates, sizes, seals and initializes a region (gateway side).
    pub fn create(config: &SegmentConfig, generation: u64) -> Result<Segment, SegmentError> {
        let cap = u64::from(config.ring_capacity);
        if !cap.is_power_of_two() || !(MIN_RING_CAPACITY..=MAX_RING_CAPACITY).contains(&cap) {
            return Err(SegmentError::Config(format!(
                "ring capacity {cap} must be a power of two in {MIN_RING_CAPACITY}..={MAX_RING_CAPACITY}"
            )));
        }
        let arena = |bytes: u64, side: &str| {
            if bytes == 0 || bytes > MAX_ARENA_BYTES {
                return Err(SegmentError::Config(format!(
                    "{side} arena size {bytes} out of range"
                )));
            }
            align_up(bytes, PAGE)
                .ok_or_else(|| SegmentError::Config(format!("{side} arena size overflows")))
        };
        let req_arena = arena(config.request_arena_bytes, "request")?;
        let resp_arena = arena(config.response_arena_bytes, "response")?;
        let ring = ring_bytes(cap);
        // All terms are bounded (rings ≤ 32 MiB, arenas ≤ 1 TiB): no overflow.
        let req_ring_off = HEADER_REGION;
        let resp_ring_off = req_ring_off + ring;
        let req_arena_off = resp_ring_off + ring;
        let req_arena_off = req_arena_off.div_ceil(PAGE) * PAGE;
        let resp_arena_off = req_arena_off + req_arena;
        let total = resp_arena_off + resp_arena;
        let spin_ns = config.spin.spin.min(MAX_SPIN).as_nanos() as u64;
        let header = Header {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: std::mem::size_of::<Header>() as u32,
            generation,
            total_size: total,
            ring_capacity: cap,
            descriptor_size: std::mem::size_of::<Descriptor>() as u32,
            ring_control_size: RING_CONTROL_SIZE as u32,
            spin_ns,
            request_ring_offset: req_ring_off,
            request_ring_size: ring,
            response_ring_offset: resp_ring_off,
            response_ring_size: ring,
            request_arena_offset: req_arena_off,
            request_arena_size: req_arena,
            response_arena_offset: resp_arena_off,
            response_arena_size: resp_arena,
            flags: if config.prefault { FLAG_PREFAULT } else { 0 },
        };
        let layout = validate(&header, total, generation)?;

        let memfd = MemfdOptions::new()
            .allow_sealing(true)
            .close_on_exec(true)
            .create(format!("tfgate-shm-gen{generation}"))?;
        memfd.as_file().set_len(total)?;
        // After this neither side can change the size: no peer can truncate the file and
        // make our accesses SIGBUS.
        memfd.add_seals(&[FileSeal::SealShrink, FileSeal::SealGrow, FileSeal::SealSeal])?;
        let map = Mapping::new(memfd.into_file(), address_space(total)?)?;
        // SAFETY: the mapping is `total >= HEADER_REGION` bytes, page aligned, and not yet
        // shared with anyone; Header is plain integers. The new file is zero-filled, which is
        // the valid initial state of both rings (all indices and flags 0).
        unsafe { map.base().cast::<Header>().write_volatile(header) };
        if config.prefault {
            map.populate();
        }
        Ok(Segment {
            map: Arc::new(map),
            layout,
            chime: None,
            ringer: None,
        })
    }

    /// Maps a region received from the gateway (worker side), after validating it.
    pub fn attach(fd: OwnedFd, expected_generation: u64) -> Result<Segment, SegmentError> {
        let memfd = memfd::Memfd::try_from_fd(fd).map_err(|_| SegmentError::NotSealed)?;
        let seals = memfd.seals()?;
        if !seals.contains(&FileSeal::SealShrink) || !seals.contains(&FileSeal::SealGrow) {
            return Err(SegmentError::NotSealed);
        }
        let file = memfd.into_file();
        let size = file.metadata()?.len();
        if size < HEADER_REGION {
            return Err(SegmentError::BadLayout(format!(
                "file is only {size} bytes"
            )));
        }
        let map = Mapping::new(file, address_space(size)?)?;
        // SAFETY: the mapping is at least HEADER_REGION bytes (checked above; sealed, so it
        // cannot shrink) and page aligned. Header is plain integers, so any bytes are a valid
        // value; we copy it once and validate the copy.
        let header = unsafe { map.base().cast::<Header>().read_volatile() };
        let layout = validate(&header, size, expected_generation)?;
        if layout.prefault {
            map.populate();
        }
        Ok(Segment {
            map: Arc::new(map),
            layout,
            chime: None,
            ringer: None,
        })
    }

    /// The memfd, to send to the worker with [`crate::fd_passing::send_fd`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd()
    }

    pub fn generation(&self) -> u64 {
        self.layout.generation
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Replaces the spin budget used by this side's waits (the worker otherwise uses the
    /// gateway's, from the header).
    pub fn with_spin(mut self, spin: SpinConfig) -> Segment {
        self.layout.spin = spin;
        self
    }

    /// Gateway side: the worker announces responses by ringing a doorbell (`doorbell.rs`)
    /// whose chime this is, instead of the response ring's futex, so that the gateway can
    /// wait for them in its event loop. Send the ringer with the segment's fd.
    pub fn with_chime(mut self, chime: Chime) -> Segment {
        self.chime = Some(Arc::new(chime));
        self
    }

    /// Worker side: ring `ringer` for a parked gateway instead of waking the futex (the
    /// gateway sent it with the segment).
    pub fn with_ringer(mut self, ringer: Ringer) -> Segment {
        self.ringer = Some(Arc::new(ringer));
        self
    }

    /// The gateway's endpoints: produce requests, consume responses.
    pub fn into_gateway(self) -> (RequestSender, ResponseReceiver) {
        gateway::endpoints(self.map, self.layout, self.chime)
    }

    /// The worker's endpoints: consume requests, produce responses.
    pub fn into_worker(self) -> (RequestReceiver, ResponseSender) {
        worker::endpoints(self.map, self.layout, self.ringer)
    }
}

/// Checks a header copy against the real file size; returns the layout to trust.
fn validate(h: &Header, file_size: u64, expected_generation: u64) -> Result<Layout, SegmentError> {
    let bad = |m: String| Err(SegmentError::BadLayout(m));
    if h.magic != MAGIC {
        return Err(SegmentError::BadMagic(h.magic));
    }
    if h.layout_version != LAYOUT_VERSION {
        return Err(SegmentError::BadVersion {
            found: h.layout_version,
            expected: LAYOUT_VERSION,
        });
    }
    if h.generation != expected_generation {
        return Err(SegmentError::WrongGeneration {
            found: h.generation,
            expected: expected_generation,
        });
    }
    if h.header_size as usize != std::mem::size_of::<Header>()
        || h.descriptor_size as usize != std::mem::size_of::<Descriptor>()
        || h.ring_control_size as usize != RING_CONTROL_SIZE
    {
        return bad("header, descriptor or ring control size differs from this build".into());
    }
    if h.total_size != file_size {
        return bad(format!(
            "header says {} bytes, the file has {file_size}",
            h.total_size
        ));
    }
    let cap = h.ring_capacity;
    if !cap.is_power_of_two() || !(MIN_RING_CAPACITY..=MAX_RING_CAPACITY).contains(&cap) {
        return bad(format!("ring capacity {cap}"));
    }
    if h.request_ring_size != ring_bytes(cap) || h.response_ring_size != ring_bytes(cap) {
        return bad("ring size does not match its capacity".into());
    }
    if h.request_arena_size == 0 || h.response_arena_size == 0 {
        return bad("empty arena".into());
    }
    let mut parts = [
        ("request ring", h.request_ring_offset, h.request_ring_size),
        (
            "response ring",
            h.response_ring_offset,
            h.response_ring_size,
        ),
        (
            "request arena",
            h.request_arena_offset,
            h.request_arena_size,
        ),
        (
            "response arena",
            h.response_arena_offset,
            h.response_arena_size,
        ),
    ];
    for (name, off, size) in parts {
        let end = off.checked_add(size);
        if off % 64 != 0 || off < HEADER_REGION || end.is_none_or(|e| e > file_size) {
            return bad(format!(
                "{name} {off}+{size} does not fit a {file_size}-byte file"
            ));
        }
        if usize::try_from(size).is_err() {
            return bad(format!("{name} too large"));
        }
    }
    parts.sort_by_key(|p| p.1);
    for w in parts.windows(2) {
        if w[0].1 + w[0].2 > w[1].1 {
            return bad(format!("{} overlaps {}", w[0].0, w[1].0));
        }
    }
    Ok(Layout {
        generation: h.generation,
        total_size: h.total_size,
        ring_capacity: cap,
        request_ring_offset: h.request_ring_offset,
        response_ring_offset: h.response_ring_offset,
        request_arena_offset: h.request_arena_offset,
        request_arena_size: h.request_arena_size,
        response_arena_offset: h.response_arena_offset,
        response_arena_size: h.response_arena_size,
        spin: SpinConfig {
            spin: Duration::from_nanos(h.spin_ns).min(MAX_SPIN),
        },
        prefault: h.flags & FLAG_PREFAULT != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::AsRawFd;

    fn small() -> SegmentConfig {
        SegmentConfig {
            ring_capacity: 8,
            request_arena_bytes: 64 << 10,
            response_arena_bytes: 64 << 10,
            spin: SpinConfig::default(),
            prefault: true,
        }
    }

    fn dup(seg: &Segment) -> OwnedFd {
        seg.fd().try_clone_to_owned().unwrap()
    }

    /// Writes `bytes` at `offset` of the segment's file (as a hostile gateway would).
    fn poke(seg: &Segment, offset: u64, bytes: &[u8]) {
        rustix::io::pwrite(seg.fd(), bytes, offset).unwrap();
    }

    #[test]
    fn attach_checks_everything() {
        let seg = Segment::create(&small(), 7).unwrap();
        assert!(!seg.fd().as_raw_fd().is_negative());
        let w = Segment::attach(dup(&seg), 7).unwrap();
        assert_eq!(w.layout(), seg.layout());
        assert!(matches!(
            Segment::attach(dup(&seg), 8),
            Err(SegmentError::WrongGeneration {
                found: 7,
                expected: 8
            })
        ));

        let fresh = || Segment::create(&small(), 1).unwrap();
        let s = fresh();
        poke(&s, 0, b"NOTMAGIC");
        assert!(matches!(
            Segment::attach(dup(&s), 1),
            Err(SegmentError::BadMagic(_))
        ));
        let s = fresh();
        poke(&s, 8, &(LAYOUT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            Segment::attach(dup(&s), 1),
            Err(SegmentError::BadVersion { found, .. }) if found == LAYOUT_VERSION + 1
        ));
        // An arena that runs past the end of the file.
        let s = fresh();
        let off = std::mem::offset_of!(Header, response_arena_size) as u64;
        poke(&s, off, &(1u64 << 30).to_le_bytes());
        assert!(matches!(
            Segment::attach(dup(&s), 1),
            Err(SegmentError::BadLayout(_))
        ));
        // Overflowing offset.
        let s = fresh();
        let off = std::mem::offset_of!(Header, request_arena_offset) as u64;
        poke(&s, off, &(u64::MAX - 63).to_le_bytes());
        assert!(matches!(
            Segment::attach(dup(&s), 1),
            Err(SegmentError::BadLayout(_))
        ));
        // Overlapping parts.
        let s = fresh();
        let off = std::mem::offset_of!(Header, response_ring_offset) as u64;
        poke(&s, off, &HEADER_REGION.to_le_bytes());
        assert!(matches!(
            Segment::attach(dup(&s), 1),
            Err(SegmentError::BadLayout(_))
        ));
        // Total size lies.
        let s = fresh();
        let off = std::mem::offset_of!(Header, total_size) as u64;
        poke(&s, off, &(s.layout().total_size + 4096).to_le_bytes());
        assert!(matches!(
            Segment::attach(dup(&s), 1),
            Err(SegmentError::BadLayout(_))
        ));
        // Non-power-of-two capacity.
        let s = fresh();
        let off = std::mem::offset_of!(Header, ring_capacity) as u64;
        poke(&s, off, &6u64.to_le_bytes());
        assert!(matches!(
            Segment::attach(dup(&s), 1),
            Err(SegmentError::BadLayout(_))
        ));
    }

    #[test]
    fn attach_refuses_unsealed_and_non_memfd() {
        let memfd = MemfdOptions::new().allow_sealing(true).create("x").unwrap();
        memfd.as_file().set_len(1 << 20).unwrap();
        let fd: OwnedFd = memfd.into_file().into();
        assert!(matches!(
            Segment::attach(fd, 0),
            Err(SegmentError::NotSealed)
        ));
        let f: OwnedFd = File::open("/proc/self/cmdline").unwrap().into();
        assert!(matches!(
            Segment::attach(f, 0),
            Err(SegmentError::NotSealed)
        ));
    }

    #[test]
    fn sealed_against_resize() {
        let seg = Segment::create(&small(), 1).unwrap();
        let f = File::from(dup(&seg));
        assert!(f.set_len(4096).is_err());
        assert!(f.set_len(seg.layout().total_size * 2).is_err());
    }

    #[test]
    fn config_is_checked() {
        let mut c = small();
        c.ring_capacity = 6;
        assert!(Segment::create(&c, 0).is_err());
        let mut c = small();
        c.request_arena_bytes = 0;
        assert!(Segment::create(&c, 0).is_err());
    }
}
