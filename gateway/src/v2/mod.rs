//! KServe V2, the Open Inference Protocol: a third front end on the one predictor, beside
//! TF Serving's REST and gRPC APIs, on the same ports and serving the same models,
//! versions and labels. REST (`/v2/...`, with the binary tensor extension) is in
//! [`rest`], gRPC (`inference.GRPCInferenceService`) in [`grpc`]; what both share — the
//! datatype table, the model's description, inputs made tensors — in the modules
//! beside them.

pub mod datatype;
pub mod grpc;
pub mod infer;
mod json_head;
pub mod model;
pub mod rest;
pub mod shared_memory;

use crate::servables::ServableRequest;

/// The server's name in V2's server metadata.
pub const SERVER_NAME: &str = "tfgate";

/// The protocol extensions served (server metadata lists only these); system shared
/// memory only when `--enable_v2_system_shared_memory` turns it on.
pub fn extensions(system_shared_memory: bool) -> Vec<&'static str> {
    let mut served = vec!["binary_tensor_data", "model_configuration", "parameters"];
    if system_shared_memory {
        served.push("system_shared_memory");
    }
    served
}

/// The request parameter that names a signature other than `serving_default`.
pub const SIGNATURE_PARAMETER: &str = "signature_name";

/// What a V2 model name and version string ask for: no version, the latest; a number, that
/// version; anything else, a version label (a tfgate extension: TF Serving's labels
/// reachable from V2 clients).
pub fn servable_request(name: &str, version: &str) -> ServableRequest {
    if version.is_empty() {
        ServableRequest::Latest(name.to_string())
    } else if let Some(v) = version
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| version.parse::<i64>().ok())
        .flatten()
    {
        ServableRequest::Specific(name.to_string(), v)
    } else {
        ServableRequest::Label(name.to_string(), version.to_string())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tfgate_proto::tensorflow::tensor_shape_proto::Dim;
    use tfgate_proto::tensorflow::TensorInfo;
    use tfgate_proto::tensorflow::TensorShapeProto;
    use tfgate_tensor::tensor::DataType;

    /// A signature's tensor of `dtype` and `dims`, for the V2 modules' tests.
    pub(crate) fn info(dtype: DataType, dims: &[i64]) -> TensorInfo {
        TensorInfo {
            dtype: dtype as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|&size| Dim {
                        size,
                        name: String::new(),
                    })
                    .collect(),
                unknown_rank: false,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn versions_are_numbers_or_labels() {
        assert_eq!(
            servable_request("m", ""),
            ServableRequest::Latest("m".into())
        );
        assert_eq!(
            servable_request("m", "7"),
            ServableRequest::Specific("m".into(), 7)
        );
        assert_eq!(
            servable_request("m", "stable"),
            ServableRequest::Label("m".into(), "stable".into())
        );
        assert_eq!(
            servable_request("m", "-1"),
            ServableRequest::Label("m".into(), "-1".into())
        );
    }
}
