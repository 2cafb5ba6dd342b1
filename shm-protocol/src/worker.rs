//! The worker's endpoints: [`RequestReceiver`] and [`ResponseSender`], both used from the
//! worker's serving thread(s); each is `Send` (not `Sync`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::arena::{AllocError, ArenaSide, ResponseArena};
use crate::doorbell::Ringer;
use crate::layout::Layout;
use crate::mapping::Mapping;
use crate::region::Region;
use crate::ring::{self, Consumer, Descriptor, Producer};
use crate::wake::{SpinConfig, Wait};
use crate::{Frame, RecvError, SendError};

/// Receives requests from the gateway.
pub struct RequestReceiver {
    consumer: Consumer,
    region: Region,
    spin: SpinConfig,
    adapt: SpinAdapt,
}

/// Whether spinning for the next request pays: a spin that ends in a park anyway burned
/// its budget on a core the gateway and the clients share. After the spins have mostly
/// lost (fewer than one in five caught a request, as a moving average) the receiver parks
/// at once, spinning again one wait in 16 to notice when requests come closer together.
#[derive(Debug, Clone, Copy)]
pub struct SpinAdapt {
    /// Moving average of spins that caught a request (1.0: all did).
    wins: f32,
    waits: u64,
}

impl Default for SpinAdapt {
    fn default() -> Self {
        SpinAdapt {
            wins: 1.0,
            waits: 0,
        }
    }
}

impl SpinAdapt {
    /// Spins below this share of wins stop, but for the probes.
    const MIN_WINS: f32 = 0.2;
    const PROBE_EVERY: u64 = 16;
    const WEIGHT: f32 = 0.125;

    /// The spin budget for the next wait.
    pub fn budget(&mut self, configured: SpinConfig) -> SpinConfig {
        self.waits += 1;
        if self.wins >= Self::MIN_WINS || self.waits.is_multiple_of(Self::PROBE_EVERY) {
            configured
        } else {
            SpinConfig {
                spin: Duration::ZERO,
            }
        }
    }

    /// How a wait with a spin budget ended: a request within the spin, or not.
    pub fn record(&mut self, won: bool) {
        let x = if won { 1.0 } else { 0.0 };
        self.wins += Self::WEIGHT * (x - self.wins);
    }
}

/// A request taken off the ring. Its frame stays in the request arena until the gateway
/// receives the response for its id: decode and copy the inputs out *before* sending
/// the response.
pub struct IncomingRequest {
    id: u64,
    offset: u64,
    len: u64,
    region: Region,
}

/// Sends responses to the gateway; blocks (spin, then park) while the response arena or
/// ring is full.
pub struct ResponseSender {
    producer: Producer,
    arena: ResponseArena,
    region: Region,
    spin: SpinConfig,
}

pub(crate) fn endpoints(
    map: Arc<Mapping>,
    layout: Layout,
    doorbell: Option<Arc<Ringer>>,
) -> (RequestReceiver, ResponseSender) {
    let receiver = request_receiver(map.clone(), layout);
    // SAFETY: the layout was validated against the mapping, and `Segment::into_worker`
    // consumed the segment, so this process creates exactly one producer of the response
    // ring; the gateway holds the consumer.
    let mut producer = unsafe {
        ring::producer(
            map.clone(),
            layout.response_ring_offset as usize,
            layout.ring_capacity,
        )
    };
    if let Some(d) = doorbell {
        // The gateway waits for responses in its event loop: ring, do not futex-wake.
        producer.set_doorbell(d);
    }
    let resp_region = Region::new(
        map,
        layout.response_arena_offset as usize,
        layout.response_arena_size as usize,
    );
    (
        receiver,
        ResponseSender {
            producer,
            arena: ResponseArena::new(layout.response_arena_size),
            region: resp_region,
            spin: layout.spin,
        },
    )
}

/// The request ring's consumer over the request arena (the segment was consumed by the
/// caller: one per process).
pub(crate) fn request_receiver(map: Arc<Mapping>, layout: Layout) -> RequestReceiver {
    // SAFETY: the layout was validated against the mapping, and the caller consumed the
    // segment, so this process creates exactly one consumer of the request ring; the
    // gateway holds the producer.
    let consumer = unsafe {
        ring::consumer(
            map.clone(),
            layout.request_ring_offset as usize,
            layout.ring_capacity,
        )
    };
    RequestReceiver {
        consumer,
        region: Region::new(
            map,
            layout.request_arena_offset as usize,
            layout.request_arena_size as usize,
        ),
        spin: layout.spin,
        adapt: SpinAdapt::default(),
    }
}

impl RequestReceiver {
    /// The next request, waiting up to `timeout`. `Ok(None)` on timeout;
    /// `Err(Closed)` once the gateway dropped its sender and the ring is drained.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<IncomingRequest>, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = self.consumer.try_pop()? {
                return Ok(Some(IncomingRequest {
                    id: d.id,
                    offset: d.offset,
                    len: d.len,
                    region: self.region.clone(),
                }));
            }
            if self.consumer.is_producer_closed() {
                if self.consumer.peek()?.is_some() {
                    continue;
                }
                return Err(RecvError::Closed);
            }
            let spin = self.adapt.budget(self.spin);
            let started = Instant::now();
            let waited = self.consumer.wait_for_data(spin, deadline);
            if !spin.spin.is_zero() {
                self.adapt
                    .record(waited == Wait::Ready && started.elapsed() < spin.spin);
            }
            if waited == Wait::TimedOut {
                return Ok(None);
            }
        }
    }
}

impl ResponseSender {
    /// Writes `enc` straight into the response arena as the response to `request_id`,
    /// waiting up to `timeout` for space.
    ///
    /// Errors: [`SendError::TooLarge`] (the frame can never fit: send a small error frame
    /// instead, which is always possible since nothing was written),
    /// [`SendError::Timeout`] (still full after `timeout`), [`SendError::Closed`],
    /// [`SendError::Invalid`], [`SendError::Corrupt`].
    pub fn send(
        &mut self,
        request_id: u64,
        enc: &impl Frame,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let need = enc.len();
        let capacity = self.arena.capacity();
        if crate::arena::round_up(need).is_none_or(|n| n > capacity) {
            return Err(SendError::TooLarge {
                side: ArenaSide::Response,
                needed: need,
                capacity,
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.producer.is_consumer_closed() {
                return Err(SendError::Closed);
            }
            let tail = self.producer.refresh_tail()?;
            self.arena.release_until(tail);
            if self.producer.free_slots()? > 0 {
                match self.arena.alloc(need, self.producer.head()) {
                    Ok(block) => {
                        if let Err(e) = enc.write(&self.region, block.offset) {
                            self.arena.unalloc_last();
                            return Err(e.into());
                        }
                        let desc = Descriptor {
                            id: request_id,
                            offset: block.offset,
                            len: need,
                            ..Descriptor::default()
                        };
                        match self.producer.try_push(desc) {
                            Ok(true) => return Ok(()),
                            // Cannot happen (we checked for a free slot and are the only
                            // producer), but stay consistent if it does.
                            Ok(false) => self.arena.unalloc_last(),
                            Err(e) => {
                                self.arena.unalloc_last();
                                return Err(SendError::Corrupt(e));
                            }
                        }
                    }
                    Err(AllocError::Full) => {}
                    Err(AllocError::TooLarge { needed, capacity }) => {
                        return Err(SendError::TooLarge {
                            side: ArenaSide::Response,
                            needed,
                            capacity,
                        })
                    }
                }
            }
            if self.producer.wait_for_space(tail, self.spin, deadline) == Wait::TimedOut {
                return Err(SendError::Timeout);
            }
        }
    }

    /// Capacity of the response arena in bytes.
    pub fn arena_capacity(&self) -> u64 {
        self.arena.capacity()
    }
}

impl IncomingRequest {
    /// The gateway's request id; pass it to [`ResponseSender::send`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Length of the encoded frame (as claimed by the gateway).
    pub fn frame_len(&self) -> u64 {
        self.len
    }

    /// The request arena; the frame lies at [`IncomingRequest::offset`] for
    /// [`IncomingRequest::frame_len`] bytes, as the gateway's descriptor claims (checked
    /// against nothing: the decoder checks it).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Where the frame starts in [`IncomingRequest::region`] (as claimed by the gateway).
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_stop_when_they_lose_and_come_back_when_they_win() {
        let configured = SpinConfig::default();
        let mut a = SpinAdapt::default();
        assert_eq!(a.budget(configured), configured, "spin at first");
        for _ in 0..20 {
            a.record(false);
        }
        let spun = (0..64)
            .filter(|_| a.budget(configured) == configured)
            .count();
        assert_eq!(spun, 4, "only the probes spin after a run of losses");
        for _ in 0..20 {
            a.record(true);
        }
        assert_eq!(a.budget(configured), configured);
    }
}
