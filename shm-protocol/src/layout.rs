//! Where each part of a segment lies, as validated at create/attach.

use crate::wake::SpinConfig;

/// Where each part of the region lies; validated, kept in private memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub generation: u64,
    pub total_size: u64,
    pub ring_capacity: u64,
    pub request_ring_offset: u64,
    pub response_ring_offset: u64,
    pub request_arena_offset: u64,
    pub request_arena_size: u64,
    pub response_arena_offset: u64,
    pub response_arena_size: u64,
    pub spin: SpinConfig,
    /// Header flag [`FLAG_PREFAULT`](crate::segment::FLAG_PREFAULT) was set.
    pub prefault: bool,
}
