//! The values that every part of tfgate speaks about: tensors ([`tensor`]), TF Serving's
//! status codes ([`code`]) and their protobuf forms ([`proto`]), and TFRecord framing
//! ([`tfrecord`]: the worker reads warmup files, the gateway writes its request log). They live apart from the
//! shared-memory transport so that `shm-protocol` carries them in its frames without
//! knowing any product protos of its own.

pub mod code;
pub mod proto;
pub mod tensor;
pub mod tfrecord;

pub use code::{Code, Status};
pub use tensor::{num_elements, DataType, Tensor, TensorData, TensorError};
