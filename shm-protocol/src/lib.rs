//! Shared-memory transport between the tfgate gateway and its workers.
pub mod control;
pub mod tensor;
