//! The gateway's endpoints: [`RequestSender`] (many tokio tasks) and [`ResponseReceiver`]
//! (one consumer: a task that drains it with [`ResponseReceiver::try_recv`] and parks on the
//! segment's doorbell in the event loop, or a thread that blocks in
//! [`ResponseReceiver::recv`]).
//!
//! # Waiting for space
//!
//! `try_send` never blocks: when the request arena, the ring or the in-flight table
//! (at most `ring_capacity` requests) is full it returns [`SendError::Full`]. Space is
//! only ever freed by [`ResponseReceiver::recv`] returning `Some` (the response of a
//! request frees that request's arena block and in-flight slot, because the worker has
//! finished reading it by then). So the gateway's design is: the receiver thread calls
//! `tokio::sync::Notify::notify_waiters()` after each `Some`, and a task that got `Full`
//! awaits `notified()` (created *before* the `try_send`, to not miss a wake-up) and
//! retries. [`RequestSender::freed_count`] gives a cheap counter for the same purpose.
//! The request ring itself cannot fill up before the in-flight table does, since every
//! descriptor in it belongs to an in-flight request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::arena::{AllocError, ArenaSide, Block, RequestArena};
use crate::doorbell::Chime;
use crate::layout::Layout;
use crate::mapping::Mapping;
use crate::region::Region;
use crate::ring::{self, Consumer, Descriptor, Producer};
use crate::wake::{SpinConfig, Wait};
use crate::{Frame, RecvError, SendError};

struct InFlight {
    block: Block,
    /// Set (under the producer lock) just before the descriptor is pushed; only a pushed
    /// request's block may be freed by a response.
    pushed: bool,
}

/// Allocator state shared by the senders and the receiver (private memory only).
struct Alloc {
    arena: RequestArena,
    /// By request id (foldhash: the standard SipHash costs more than the lookup needs).
    in_flight: HashMap<u64, InFlight, foldhash::fast::RandomState>,
}

struct Shared {
    alloc: Mutex<Alloc>,
    /// Number of requests whose block was freed so far.
    freed: AtomicU64,
    /// Requests whose push had to wake the worker (see `ResponseReceiver::spin_budget`).
    woke_worker: AtomicU64,
}

struct SenderInner {
    producer: Mutex<Producer>,
    shared: Arc<Shared>,
    region: Region,
    max_in_flight: usize,
}

/// Sends requests to the worker. Cheap to clone; `Send + Sync`; never blocks.
#[derive(Clone)]
pub struct RequestSender {
    inner: Arc<SenderInner>,
}

/// Receives responses from the worker; frees the request blocks. Use from one thread.
pub struct ResponseReceiver {
    consumer: Consumer,
    region: Region,
    shared: Arc<Shared>,
    spin: SpinConfig,
    /// `Shared::woke_worker` when the last response was received.
    woke_worker_seen: u64,
    /// What the worker rings when it pushes a response while we park, if it has one.
    doorbell: Option<Arc<Chime>>,
}

pub(crate) fn endpoints(
    map: Arc<Mapping>,
    layout: Layout,
    doorbell: Option<Arc<Chime>>,
) -> (RequestSender, ResponseReceiver) {
    // SAFETY: the layout was validated against the mapping (offsets 64-aligned, in bounds,
    // capacity a power of two), and `Segment::into_gateway` consumed the segment, so this
    // process creates exactly one producer of the request ring and one consumer of the
    // response ring; the worker creates the opposite ends.
    let producer = unsafe {
        ring::producer(
            map.clone(),
            layout.request_ring_offset as usize,
            layout.ring_capacity,
        )
    };
    // SAFETY: as above.
    let mut consumer = unsafe {
        ring::consumer(
            map.clone(),
            layout.response_ring_offset as usize,
            layout.ring_capacity,
        )
    };
    if let Some(d) = &doorbell {
        consumer.set_doorbell(d.clone());
    }
    let shared = Arc::new(Shared {
        alloc: Mutex::new(Alloc {
            arena: RequestArena::new(layout.request_arena_size),
            in_flight: HashMap::default(),
        }),
        freed: AtomicU64::new(0),
        woke_worker: AtomicU64::new(0),
    });
    let req_region = Region::new(
        map.clone(),
        layout.request_arena_offset as usize,
        layout.request_arena_size as usize,
    );
    let resp_region = Region::new(
        map,
        layout.response_arena_offset as usize,
        layout.response_arena_size as usize,
    );
    let sender = RequestSender {
        inner: Arc::new(SenderInner {
            producer: Mutex::new(producer),
            shared: shared.clone(),
            region: req_region,
            max_in_flight: layout.ring_capacity as usize,
        }),
    };
    let receiver = ResponseReceiver {
        consumer,
        region: resp_region,
        shared,
        spin: layout.spin,
        woke_worker_seen: 0,
        doorbell,
    };
    (sender, receiver)
}

impl RequestSender {
    /// Writes `frame` straight into the request arena and pushes its descriptor.
    ///
    /// Errors: [`SendError::Full`] (wait for a response, retry), [`SendError::TooLarge`]
    /// (never fits), [`SendError::Closed`] (the worker
    /// dropped its receiver), [`SendError::DuplicateId`], [`SendError::Invalid`] (the
    /// frame wrote outside its block), [`SendError::Corrupt`].
    pub fn try_send(&self, request_id: u64, enc: &impl Frame) -> Result<(), SendError> {
        self.try_send_at(request_id, enc).map(drop)
    }

    /// [`RequestSender::try_send`], returning when the descriptor was published
    /// ([`crate::monotonic_ns`]): the end of forming the request, before waking a parked
    /// worker, which on a busy machine can take this thread's CPU for a while.
    pub fn try_send_at(&self, request_id: u64, enc: &impl Frame) -> Result<u64, SendError> {
        let inner = &*self.inner;
        let block = {
            let mut a = inner.shared.alloc.lock();
            if a.in_flight.contains_key(&request_id) {
                return Err(SendError::DuplicateId(request_id));
            }
            if a.in_flight.len() >= inner.max_in_flight {
                return Err(SendError::Full);
            }
            let block = match a.arena.alloc(enc.len()) {
                Ok(b) => b,
                Err(AllocError::Full) => return Err(SendError::Full),
                Err(AllocError::TooLarge { needed, capacity }) => {
                    return Err(SendError::TooLarge {
                        side: ArenaSide::Request,
                        needed,
                        capacity,
                    })
                }
            };
            a.in_flight.insert(
                request_id,
                InFlight {
                    block,
                    pushed: false,
                },
            );
            block
        };
        // The payload copy runs without any lock held.
        if let Err(e) = enc.write(&inner.region, block.offset) {
            self.unwind(request_id);
            return Err(e.into());
        }
        let desc = Descriptor {
            id: request_id,
            offset: block.offset,
            len: enc.len(),
            ..Descriptor::default()
        };
        let mut producer = inner.producer.lock();
        if producer.is_consumer_closed() {
            drop(producer);
            self.unwind(request_id);
            return Err(SendError::Closed);
        }
        if let Some(f) = inner.shared.alloc.lock().in_flight.get_mut(&request_id) {
            f.pushed = true;
        }
        match producer.publish(desc) {
            Ok(true) => {
                let published_ns = crate::monotonic_ns();
                producer.wake_consumer();
                if producer.woke_consumer() {
                    // Relaxed: a hint for the receiver's spin budget, nothing is published.
                    inner.shared.woke_worker.fetch_add(1, Ordering::Relaxed);
                }
                Ok(published_ns)
            }
            Ok(false) => {
                drop(producer);
                self.unwind(request_id);
                Err(SendError::Full)
            }
            Err(e) => {
                drop(producer);
                self.unwind(request_id);
                Err(SendError::Corrupt(e))
            }
        }
    }

    fn unwind(&self, request_id: u64) {
        let mut a = self.inner.shared.alloc.lock();
        if let Some(f) = a.in_flight.remove(&request_id) {
            a.arena.free(f.block);
        }
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inner.shared.alloc.lock().in_flight.len()
    }

    /// Free bytes in the request arena (possibly fragmented).
    pub fn free_bytes(&self) -> u64 {
        self.inner.shared.alloc.lock().arena.free_bytes()
    }

    /// Capacity of the request arena in bytes.
    pub fn arena_capacity(&self) -> u64 {
        self.inner.shared.alloc.lock().arena.capacity()
    }

    /// How many request blocks have been freed so far; it changes whenever space frees up.
    pub fn freed_count(&self) -> u64 {
        // Acquire: pairs with the Release increment in `ResponseReceiver::recv`.
        self.inner.shared.freed.load(Ordering::Acquire)
    }
}

impl ResponseReceiver {
    /// The next response, waiting up to `timeout` (spin, then park on a shared futex),
    /// read by `read` from its block (`region`, `offset`, `len`, as the worker's
    /// descriptor claims them: checked against nothing) before the slot is released.
    ///
    /// `Ok(None)`: nothing arrived within `timeout` (also what a dead worker looks like;
    /// watch the Unix socket for that). `Ok(Some((id, read's result)))`: the worker's
    /// answer for `id`, whatever `read` made of it. `Err(Closed)`: the worker dropped its
    /// sender and everything was received. `Err(Corrupt)`: tear the segment down.
    ///
    /// Returning `Some` frees the request-arena block of `id`; see the module docs.
    pub fn recv<T>(
        &mut self,
        timeout: Duration,
        mut read: impl FnMut(&Region, u64, u64) -> T,
    ) -> Result<Option<(u64, T)>, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(response) = self.try_recv(&mut read)? {
                return Ok(Some(response));
            }
            if self.consumer.wait_for_data(self.spin_budget(), deadline) == Wait::TimedOut {
                return Ok(None);
            }
        }
    }

    /// The next response if one is there, without waiting: `Ok(None)` when the ring is
    /// empty. Otherwise as [`ResponseReceiver::recv`].
    pub fn try_recv<T>(
        &mut self,
        read: impl FnOnce(&Region, u64, u64) -> T,
    ) -> Result<Option<(u64, T)>, RecvError> {
        self.try_recv_for(|_, region, at, len| read(region, at, len))
    }

    /// As [`ResponseReceiver::try_recv`], `read` also told which request the response
    /// answers (so that it can copy parts of it where that request wants them).
    pub fn try_recv_for<T>(
        &mut self,
        read: impl FnOnce(u64, &Region, u64, u64) -> T,
    ) -> Result<Option<(u64, T)>, RecvError> {
        let desc = match self.consumer.peek()? {
            Some(desc) => desc,
            None if self.consumer.is_producer_closed() => match self.consumer.peek()? {
                // Everything pushed before the close is visible now (Acquire): drain it.
                Some(desc) => desc,
                None => return Err(RecvError::Closed),
            },
            None => return Ok(None),
        };
        // Copy the frame out before releasing the slot: advancing the tail lets the
        // worker reuse the response arena block.
        let frame = read(desc.id, &self.region, desc.offset, desc.len);
        self.consumer.advance();
        let mut a = self.shared.alloc.lock();
        if a.in_flight.get(&desc.id).is_some_and(|f| f.pushed) {
            if let Some(f) = a.in_flight.remove(&desc.id) {
                a.arena.free(f.block);
            }
            // Release: pairs with the Acquire load in `freed_count`.
            self.shared.freed.fetch_add(1, Ordering::Release);
        }
        drop(a);
        self.woke_worker_seen = self.shared.woke_worker.load(Ordering::Relaxed);
        Ok(Some((desc.id, frame)))
    }

    /// The doorbell the worker rings for a parked receiver (see
    /// [`ResponseReceiver::begin_wait`]), when the segment has one.
    pub fn doorbell(&self) -> Option<&Arc<Chime>> {
        self.doorbell.as_ref()
    }

    /// For a receiver in an event loop, after [`ResponseReceiver::try_recv`] found nothing:
    /// announces that it parks on the doorbell, unless a response arrived meanwhile (then
    /// false: receive it, do not park). After the doorbell rang (or a timeout), call
    /// [`ResponseReceiver::end_wait`].
    pub fn begin_wait(&self) -> bool {
        self.consumer.begin_wait()
    }

    /// Ends a wait [`ResponseReceiver::begin_wait`] began.
    pub fn end_wait(&self) {
        self.consumer.end_wait();
    }

    /// How long to spin for the next response. When a request sent since the last
    /// response had to wake the worker, its answer is a scheduler wake-up away (tens of
    /// µs on a VM), not a spin away: spinning meanwhile only keeps a core from the worker
    /// and from the threads its answer must wake, so park at once. That halves an idle
    /// round trip and puts it below a Unix socket's (docs/benchmarks.md, shm-bench). A
    /// worker that was still spinning answers within microseconds, and spinning catches
    /// it; so does a wait that starts before the next request is sent, since the request
    /// may find the worker still spinning.
    fn spin_budget(&self) -> SpinConfig {
        if self.shared.woke_worker.load(Ordering::Relaxed) != self.woke_worker_seen {
            SpinConfig {
                spin: Duration::ZERO,
            }
        } else {
            self.spin
        }
    }
}
