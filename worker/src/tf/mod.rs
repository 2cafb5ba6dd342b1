//! A small safe wrapper over TensorFlow's C API (`tensorflow-sys`): load a SavedModel,
//! run a session, and move tensors in and out — DT_STRING as bytes, which the
//! `tensorflow` crate's `Tensor<String>` cannot do (see docs/architecture.md) — and load
//! op libraries.
//!
//! This module is the only place in the worker with `unsafe`; every block says why it
//! holds. Raw pointers never leave it.

pub mod op_library;
mod saved_model;
mod status;
mod tensor;

pub use saved_model::{Feed, RunOutputs, SavedModel, TensorRef};
pub use status::TfError;
