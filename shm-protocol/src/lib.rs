//! Shared-memory transport between the tfgate gateway and its workers.
//!
//! The gateway creates one [`Segment`] per worker *incarnation* (an anonymous, sealed
//! `memfd`; nothing ever appears in `/dev/shm`), sends its fd to the worker over the
//! gateway↔worker Unix socket ([`fd_passing::send_fd`]), and the worker maps it with
//! [`Segment::attach`]. Requests travel gateway → worker and responses worker → gateway
//! through two single-producer/single-consumer rings of fixed-size [`Descriptor`]s; each
//! descriptor points into an arena block that holds one [`Frame`]: bytes whose meaning
//! (tensors, names, status codes) belongs to the layer above, `tfgate-frame`. This crate
//! depends on no tfgate crate and no protobuf: it moves bytes and guards memory.
//!
//! # Region layout
//!
//! All offsets are from the start of the memfd; every part starts on a 64-byte boundary
//! (arenas on a page boundary). Offsets, never pointers, cross the process boundary.
//!
//! ```text
//!  0        +--------------------------------------------------------------+
//!           | Header (#[repr(C)], 128 B; page 0 reserved)                  |
//!           |   magic "TFGSHM\0\x01", layout_version, header_size,         |
//!           |   generation (bumped per worker incarnation), total_size,    |
//!           |   ring_capacity, descriptor_size, spin_ns (advisory),        |
//!           |   offset+size of each of the four parts below                |
//!  4096     +--------------------------------------------------------------+
//!           | request ring   (gateway → worker)                            |
//!           |   RingControl: [head][tail][data_ready][space_ready][closed] |
//!           |                 one 64-byte cache line each                  |
//!           |   Descriptor slots[ring_capacity] (32 B each)                |
//!           +--------------------------------------------------------------+
//!           | response ring  (worker → gateway), same shape                |
//!           +------------------------- page aligned -----------------------+
//!           | request arena  (written by the gateway, read by the worker)  |
//!           |   frames at 64-byte aligned offsets; best-fit allocator      |
//!           |   state lives in the gateway's private memory                |
//!           +------------------------- page aligned -----------------------+
//!           | response arena (written by the worker, read by the gateway)  |
//!           |   circular allocator in the worker's private memory,         |
//!           |   space released as the response ring's tail advances        |
//!  total    +--------------------------------------------------------------+
//! ```
//!
//! What a block holds is the frame's business: `tfgate-frame` documents its layout.
//!
//! # High-level API
//!
//! Gateway:
//! ```text
//! let seg = Segment::create(&SegmentConfig::default(), generation)?;
//! fd_passing::send_fd(&socket, seg.fd(), b"hello")?;
//! let (tx, mut rx) = seg.into_gateway();            // RequestSender: Clone + Send + Sync
//! tx.try_send(request_id, &frame)?;                // frame: impl Frame
//!                                                  // Err(SendError::Full) => wait, retry
//! // on one dedicated OS thread; `decode` copies the block out (region, offset, len):
//! while let Some((id, response)) = rx.recv(timeout, decode)? { /* frees id's block */ }
//! ```
//! `try_send` returning [`SendError::Full`] means: wait until `recv` returned `Some`
//! again (see [`gateway`] for the `tokio::sync::Notify` pattern), then retry.
//! Worker:
//! ```text
//! let (fd, _) = fd_passing::recv_fd(&socket, &mut buf)?;
//! let seg = Segment::attach(fd, expected_generation)?;
//! let (mut rx, mut tx) = seg.into_worker();
//! if let Some(req) = rx.recv(timeout)? {
//!     let view = decode(req.region(), req.offset(), req.frame_len())?;
//!     tx.send(req.id(), &response, timeout)?;      // blocks (spin, then park) while full
//! }
//! ```
//!
//! # Safety contract
//!
//! `unsafe` exists only in this crate, and only to touch the mapping. The rules:
//! 1. The mapping outlives every pointer into it: each handle that dereferences the region
//!    holds an `Arc` of the mapping (`mapping::Mapping`), and pointers are derived
//!    from it only after bounds checks against the layout *validated at create/attach and
//!    kept in private memory* (the header is never re-read).
//! 2. The peer may write any byte of the region at any time. So no `&[u8]`/`&T`
//!    reference to non-atomic shared bytes is ever created: bytes are copied in and out
//!    with `ptr::copy_nonoverlapping` / volatile reads into private memory, and every value
//!    read (indices, offsets, lengths, metadata) is validated *after* it was copied. The
//!    only references into the region are to atomics (`RingControl`, wake words), for
//!    which every bit pattern is valid. A racing peer can therefore make us read garbage,
//!    which decoding rejects, but never make us read out of bounds.
//! 3. The memfd is sealed against shrink and grow (`F_SEAL_SHRINK | F_SEAL_GROW |
//!    F_SEAL_SEAL`) before it is shared, and attach refuses an unsealed fd, so the peer
//!    cannot truncate it under us (no SIGBUS).
//! 4. The region is zero-filled at creation, which is the valid initial state of both
//!    rings; with [`SegmentConfig::prefault`] every page is faulted in up front.
//! 5. Allocator metadata lives in the writer's private memory; the reader only ever
//!    learns offsets through descriptors, which it bounds-checks.
//! 6. A client's file ([`ClientObject`]) cannot be sealed: its owner may truncate it
//!    under the gateway's mapping. Every copy through that mapping runs under a SIGBUS
//!    guard and is made again through the file when the guard fired (see its module).
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod arena;
pub mod client_object;
pub mod control;
pub mod doorbell;
pub mod fd_passing;
pub mod gateway;
#[cfg(feature = "hostile")]
pub mod hostile;
mod layout;
mod mapping;
mod region;
pub mod ring;
pub mod segment;
pub mod wake;
pub mod worker;

pub use arena::ArenaSide;
pub use client_object::ClientObject;
pub use doorbell::{doorbell, Chime, Ringer};
pub use gateway::{RequestSender, ResponseReceiver};
pub use region::{InPlacePayload, OutOfBounds, Region, WriteError};
pub use ring::{Descriptor, RingError};
pub use segment::{Segment, SegmentConfig, SegmentError};
pub use wake::SpinConfig;
pub use worker::{IncomingRequest, RequestReceiver, ResponseSender};

/// Now on CLOCK_MONOTONIC in nanoseconds: the clock request deadlines are written in.
/// One clock for every process on the host (containers included), unlike
/// `std::time::Instant`, whose values cannot cross a process boundary.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// What a sender puts into an arena block. The transport knows only how long it is and
/// that it writes bytes; what they mean (tensors, model names, status codes) is the layer
/// above's (`tfgate-frame`), and the reader's decoder checks every byte of it.
pub trait Frame {
    /// Bytes the frame needs in the arena.
    fn len(&self) -> u64;

    /// True for a frame of no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the frame into `region` at `offset`, a block of at least `len()` bytes.
    fn write(&self, region: &Region, offset: u64) -> Result<(), WriteError>;
}

impl From<WriteError> for SendError {
    fn from(e: WriteError) -> SendError {
        match e {
            WriteError::OutOfBounds(e) => SendError::Invalid(e),
            WriteError::File(e) => SendError::Source(e),
        }
    }
}

/// Why a send did not happen. Nothing was written to the ring when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The ring, the arena or the in-flight table is full right now; wait and retry.
    #[error("shared memory is full")]
    Full,
    /// The frame can never fit: it is larger than the whole arena.
    #[error("{} needs {needed} bytes of shared memory but the {} arena holds {capacity} bytes",
        side.noun(), side.noun())]
    TooLarge {
        side: ArenaSide,
        needed: u64,
        capacity: u64,
    },
    /// The worker (or gateway) side closed its end, or we gave up waiting on it.
    #[error("the peer closed the shared-memory channel")]
    Closed,
    /// Waited the whole timeout for space (worker side only).
    #[error("timed out waiting for shared-memory space")]
    Timeout,
    /// `try_send` with a request id that is still in flight.
    #[error("request id {0} is already in flight")]
    DuplicateId(u64),
    /// The frame wrote outside the block it said it needed.
    #[error("the frame wrote outside its block: {0}")]
    Invalid(#[from] OutOfBounds),
    /// A file the frame copies from failed or was shorter than it said (its owner
    /// truncated it): that request fails; the channel is fine.
    #[error("{0}")]
    Source(std::io::Error),
    /// The peer wrote impossible ring indices; the segment must be torn down.
    #[error(transparent)]
    Corrupt(#[from] RingError),
}

impl SendError {
    /// True for the transient errors after which waiting and retrying makes sense.
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full | SendError::Timeout)
    }
}

/// Why a receive failed (a timeout is `Ok(None)`, not an error).
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The peer closed its end and everything it sent has been received.
    #[error("the peer closed the shared-memory channel")]
    Closed,
    /// The peer wrote impossible ring indices; the segment must be torn down.
    #[error(transparent)]
    Corrupt(#[from] RingError),
}
