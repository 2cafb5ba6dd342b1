//! The request values front ends build after decoding, and hand to the
//! [`Predictor`](crate::predictor::Predictor): what to resolve, which signature, the
//! inputs, and until when the caller waits. Nothing here is validated yet.

use crate::error::ServingError;
use crate::servables::ServableRequest;
use tfgate_proto::tensorflow::SignatureDef;
use tfgate_tensor::tensor::Tensor;
use tokio::time::Instant;

/// Which front end a request came through. TF Serving words a few errors differently
/// for each (an unknown signature is FAILED_PRECONDITION over gRPC, INVALID_ARGUMENT
/// over REST), and metrics label requests by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entrypoint {
    Rest,
    Grpc,
}

/// Turns a front end's inputs into tensors once the signature is known (REST's JSON
/// needs the signature's dtypes; gRPC's `TensorProto`s carry their own).
pub trait DecodeInputs {
    fn decode(self, signature: &SignatureDef) -> Result<Vec<(String, Tensor)>, ServingError>;
}

/// Tensors decoded without the signature (gRPC).
impl DecodeInputs for Vec<(String, Tensor)> {
    fn decode(self, _: &SignatureDef) -> Result<Vec<(String, Tensor)>, ServingError> {
        Ok(self)
    }
}

/// A Predict call.
pub struct PredictRequest<D> {
    pub servable: ServableRequest,
    /// As requested; empty means `serving_default`.
    pub signature_name: String,
    pub inputs: D,
    /// Output aliases to fetch; empty means every output of the signature.
    pub output_filter: Vec<String>,
    /// When the caller stops waiting; it also bounds the session run.
    pub deadline: Instant,
    pub entrypoint: Entrypoint,
    /// Outputs to be written from the worker's answer straight into a client's file (V2
    /// system shared memory), by alias: see [`OutputTarget`].
    pub output_targets: Vec<OutputTarget>,
}

/// An output that goes from the response arena straight into a client's shared-memory
/// region (`pwrite`), never through the gateway's heap: the alias, and the region's
/// writable bytes (`len` is its capacity). The response's tensor then names the bytes
/// written ([`TensorData::File`](tfgate_tensor::TensorData::File)). An output that does
/// not fit, a run batched with others, or a write that fails is answered in memory, and
/// the front end writes (or refuses) it as before.
pub type OutputTarget = (String, tfgate_tensor::FileBytes);

/// A Classify or Regress call over serialized `tf.Example`s.
pub struct ExamplesRequest {
    pub servable: ServableRequest,
    /// As requested; empty means `serving_default`.
    pub signature_name: String,
    /// Serialized `tf.Example`s, context already merged in
    /// (`tfgate_tensor::proto::with_context`).
    pub examples: Vec<Vec<u8>>,
    pub deadline: Instant,
}

/// One task of a MultiInference call.
pub struct InferenceTask {
    pub model_name: String,
    /// As requested; empty means `serving_default`.
    pub signature_name: String,
    /// `tensorflow/serving/classify` or `tensorflow/serving/regress`.
    pub method_name: String,
}

/// A MultiInference call: several Classify/Regress tasks over the same examples.
pub struct MultiInferenceRequest {
    /// What the first task's spec names (TF Serving resolves the model once, by it).
    pub servable: ServableRequest,
    pub tasks: Vec<InferenceTask>,
    /// Serialized `tf.Example`s, context already merged in.
    pub examples: Vec<Vec<u8>>,
    pub deadline: Instant,
}
