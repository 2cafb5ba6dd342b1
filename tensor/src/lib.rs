//! The values that every part of tfgate speaks about: tensors ([`tensor`]), TF Serving's
//! status codes ([`code`]), their protobuf forms (`proto`, behind the feature of that
//! name), and TFRecord framing ([`tfrecord`]: the worker reads warmup files, the gateway
//! writes its request log). `tfgate-frame` carries them between the gateway and its
//! workers without compiling any protos.

pub mod code;
#[cfg(feature = "proto")]
pub mod proto;
pub mod tensor;
pub mod tfrecord;

pub use code::{Code, Status};
pub use tensor::{num_elements, DataType, FileBytes, Tensor, TensorData, TensorError};
