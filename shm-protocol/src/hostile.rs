//! A worker that breaks the protocol on purpose (cargo feature `hostile`), for the
//! gateway's end-to-end tests: the crate's # Safety contract says the peer may write
//! any byte of the segment at any time, and this is how the tests write them. Only the
//! e2e tests enable the feature (as a dev-dependency), so neither `tfgate` nor
//! `tfgate-worker` carries it.
//!
//! [`Segment::into_hostile_worker`] gives the worker's request receiver, as a real worker
//! has it, and a [`RawResponder`] instead of the response sender: it pushes any
//! [`Descriptor`] into the response ring and writes any bytes into the response arena or
//! anywhere else in the segment (header, ring indices), each write bounds-checked against
//! this process's own mapping. What to write (a frame that lies about its tensors) is
//! `tfgate-frame`'s `forged_response`, under the same feature name.

use std::sync::Arc;

use crate::doorbell::Ringer;
use crate::layout::Layout;
use crate::mapping::Mapping;
use crate::region::{OutOfBounds, Region};
use crate::ring::{self, Descriptor, Producer, RingError};
use crate::segment::Segment;
use crate::worker::RequestReceiver;

/// The response ring's producer, without the encoder and allocator that keep a real
/// worker's responses well formed.
pub struct RawResponder {
    producer: Producer,
    arena: Region,
    segment: Region,
    layout: Layout,
    ringer: Option<Arc<Ringer>>,
}

impl Segment {
    /// The worker's endpoints with raw access to the response side (see the module docs).
    pub fn into_hostile_worker(self) -> (RequestReceiver, RawResponder) {
        let Segment {
            map,
            layout,
            ringer,
            ..
        } = self;
        let receiver = crate::worker::request_receiver(map.clone(), layout);
        // SAFETY: the layout was validated against the mapping at attach, and the segment
        // was consumed, so this is the only producer of the response ring in this process
        // (the gateway holds the consumer).
        let mut producer = unsafe {
            ring::producer(
                map.clone(),
                layout.response_ring_offset as usize,
                layout.ring_capacity,
            )
        };
        if let Some(r) = &ringer {
            producer.set_doorbell(r.clone());
        }
        let arena = Region::new(
            map.clone(),
            layout.response_arena_offset as usize,
            layout.response_arena_size as usize,
        );
        let segment = whole(map);
        (
            receiver,
            RawResponder {
                producer,
                arena,
                segment,
                layout,
                ringer,
            },
        )
    }
}

fn whole(map: Arc<Mapping>) -> Region {
    let len = map.len();
    Region::new(map, 0, len)
}

impl RawResponder {
    /// Where each part of the segment lies.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The ring index the next pushed descriptor gets.
    pub fn head(&self) -> u64 {
        self.producer.head()
    }

    /// Pushes `desc` as it is; `Ok(false)` when the ring is full. Rings the doorbell if
    /// the gateway parked, as a real push does.
    pub fn push(&mut self, desc: Descriptor) -> Result<bool, RingError> {
        self.producer.try_push(desc)
    }

    /// Writes `bytes` at `offset` of the response arena.
    pub fn write_arena(&self, offset: u64, bytes: &[u8]) -> Result<(), OutOfBounds> {
        self.arena.write_from(offset, bytes)
    }

    /// Writes `bytes` at `offset` from the start of the segment: the header, the rings'
    /// indices and wake words, the request arena.
    pub fn write_segment(&self, offset: u64, bytes: &[u8]) -> Result<(), OutOfBounds> {
        self.segment.write_from(offset, bytes)
    }

    /// Rings the gateway's doorbell whether or not it waits.
    pub fn ring_doorbell(&self) {
        if let Some(r) = &self.ringer {
            r.ring();
        }
    }
}
