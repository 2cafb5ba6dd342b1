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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tfgate_proto::tensorflow::serving::PredictRequest;
    use tfgate_proto::tensorflow::{tensor_shape_proto::Dim, TensorShapeProto};
    use tfgate_tensor::tensor::TensorData;

    /// A 1 MiB float32 `tensor_content`, decoded as tonic decodes a message (from the
    /// buffer the received bytes were gathered in), reaches the tensor handed to the
    /// frame without a copy: its bytes are still the received ones. The frame's write
    /// into the request arena is then the one copy before TensorFlow, which reads the
    /// arena block in place.
    #[test]
    fn tensor_content_stays_in_the_received_buffer() {
        let floats = 1 << 18;
        let tensor = TensorProto {
            dtype: 1,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim {
                    size: floats,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            tensor_content: vec![7u8; floats as usize * 4].into(),
            ..Default::default()
        };
        let request = PredictRequest {
            inputs: [("x".to_string(), tensor)].into_iter().collect(),
            ..Default::default()
        };
        let mut received = bytes::BytesMut::from(&request.encode_to_vec()[..]);
        let range = received.as_ptr() as usize..received.as_ptr() as usize + received.len();
        let decoded = PredictRequest::decode(&mut received).unwrap();
        let inputs = ProtoInputs(decoded.inputs)
            .decode(&SignatureDef::default())
            .unwrap();
        let TensorData::Bytes(data) = &inputs[0].1.data else {
            panic!("a float tensor holds bytes")
        };
        assert_eq!(data.len(), 1 << 20);
        assert!(
            range.contains(&(data.as_ptr() as usize)),
            "the tensor's bytes are a slice of the received buffer"
        );
    }
}
