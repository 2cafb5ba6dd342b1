//! A PredictRequest's `TensorProto` inputs, converted (`tfgate_tensor::proto`) once the
//! servable and signature are known, so an unknown model is NOT_FOUND even when a tensor
//! is malformed, as in TF Serving.

use crate::error::ServingError;
use crate::request::DecodeInputs;
use std::collections::BTreeMap;
use tfgate_proto::tensorflow::{SignatureDef, TensorProto};
use tfgate_tensor::proto::{from_proto, ParseError};
use tfgate_tensor::tensor::Tensor;

/// The inputs of a gRPC PredictRequest.
pub struct ProtoInputs(pub BTreeMap<String, TensorProto>);

impl DecodeInputs for ProtoInputs {
    fn decode(self, _: &SignatureDef) -> Result<Vec<(String, Tensor)>, ServingError> {
        self.0
            .into_iter()
            .map(|(alias, proto)| match from_proto(&proto) {
                Ok(t) => Ok((alias, t)),
                Err(ParseError) => Err(ServingError::invalid_argument(format!(
                    "tensor parsing error: {alias}"
                ))),
            })
            .collect()
    }
}
