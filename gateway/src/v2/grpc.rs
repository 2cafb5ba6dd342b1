//! V2 over gRPC: `inference.GRPCInferenceService` on the gRPC port, beside TF Serving's
//! services. Inputs come typed (`contents`) or raw (`raw_input_contents`, kept as slices
//! of the received message); outputs always go back raw, one `raw_output_contents` entry
//! per output, as Triton answers. Calls V2 defines but tfgate does not serve (streaming,
//! statistics, the repository, trace and log settings) answer UNIMPLEMENTED; CUDA shared
//! memory answers that it is not supported.

use crate::error::ServingError;
use crate::health::Health;
use crate::predictor::Predictor;
use crate::request::Entrypoint;
use crate::v2::infer::{self, Call, Input, InputData};
use crate::v2::shared_memory::{self, Held, Reference, Registry};
use crate::v2::{datatype, model, servable_request, SERVER_NAME, SIGNATURE_PARAMETER};
use std::collections::BTreeMap;
use tfgate_proto::inference as pb;
use tfgate_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use tfgate_proto::inference::infer_parameter::ParameterChoice;
use tfgate_tensor::tensor::{DataType, TensorData};
use tonic::{Request, Response, Status};

/// The V2 gRPC service.
#[derive(Clone)]
pub struct InferenceService {
    pub predictor: Predictor,
    pub health: Health,
    /// V2's registered system shared-memory regions (shared with REST).
    pub shared_memory: Registry,
    /// `grpc.max_receive_message_length`: also bounds an input read from shared memory.
    pub max_receive_message_length: usize,
    /// `grpc.max_send_message_length`.
    pub max_send_message_length: usize,
}

fn model_request(name: &str, version: &str) -> Result<crate::servables::ServableRequest, Status> {
    if name.is_empty() {
        return Err(ServingError::invalid_argument("the request names no model").into());
    }
    Ok(servable_request(name, version))
}

/// A string parameter, `None` when absent.
fn string_param(
    parameters: &BTreeMap<String, pb::InferParameter>,
    name: &str,
) -> Result<Option<String>, ServingError> {
    match parameters
        .get(name)
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => Ok(None),
        Some(ParameterChoice::StringParam(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ServingError::invalid_argument(format!(
            "parameter '{name}' must be a string"
        ))),
    }
}

/// A non-negative integer parameter (`int64_param` or `uint64_param`), `None` when absent.
fn size_param(
    parameters: &BTreeMap<String, pb::InferParameter>,
    what: &str,
    name: &str,
) -> Result<Option<u64>, ServingError> {
    match parameters
        .get(name)
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(v)) if *v >= 0 => Ok(Some(*v as u64)),
        Some(ParameterChoice::Uint64Param(v)) => Ok(Some(*v)),
        Some(_) => Err(ServingError::invalid_argument(format!(
            "{what}: {name} must be a non-negative integer"
        ))),
    }
}

/// The region a tensor's parameters name, if any.
fn region_reference(
    what: &str,
    parameters: &BTreeMap<String, pb::InferParameter>,
    regions: &Registry,
) -> Result<Option<Held>, ServingError> {
    let Some(region) = string_param(parameters, shared_memory::REGION)? else {
        return Ok(None);
    };
    let byte_size = size_param(parameters, what, shared_memory::BYTE_SIZE)?.ok_or_else(|| {
        ServingError::invalid_argument(format!(
            "{what} names shared memory region '{region}' without shared_memory_byte_size"
        ))
    })?;
    let at = Reference {
        region,
        offset: size_param(parameters, what, shared_memory::OFFSET)?.unwrap_or(0),
        byte_size,
    };
    Held::resolve(regions, at).map(Some)
}

/// Typed `contents` packed for the input's datatype; each datatype reads only its own
/// field, as V2 assigns them.
fn typed(
    name: &str,
    dtype: DataType,
    c: pb::InferTensorContents,
) -> Result<TensorData, ServingError> {
    use DataType as D;
    let ints = |v: Vec<i128>| infer::pack_ints(name, dtype, v.into_iter());
    match dtype {
        D::Bool => ints(c.bool_contents.into_iter().map(i128::from).collect()),
        D::Int8 | D::Int16 | D::Int32 => ints(c.int_contents.into_iter().map(i128::from).collect()),
        D::Int64 => ints(c.int64_contents.into_iter().map(i128::from).collect()),
        D::Uint8 | D::Uint16 | D::Uint32 => {
            ints(c.uint_contents.into_iter().map(i128::from).collect())
        }
        D::Uint64 => ints(c.uint64_contents.into_iter().map(i128::from).collect()),
        D::Float => infer::pack_floats(name, dtype, c.fp32_contents.into_iter().map(f64::from)),
        D::Double => infer::pack_floats(name, dtype, c.fp64_contents.into_iter()),
        D::String => Ok(TensorData::Strings(c.bytes_contents)),
        D::Half | D::Bfloat16 => Err(ServingError::invalid_argument(format!(
            "input '{name}' is {}: send it in raw_input_contents",
            datatype::name(dtype).unwrap_or("?")
        ))),
        D::Complex64 | D::Complex128 => Err(ServingError::invalid_argument(format!(
            "input '{name}' has a datatype V2 cannot carry"
        ))),
    }
}

/// The request's inputs: all typed, or all raw (V2 forbids mixing), or in shared memory.
/// Raw contents are given in order to the inputs that name no region.
fn inputs(
    request: &mut pb::ModelInferRequest,
    regions: &Registry,
    limit: usize,
) -> Result<Vec<Input>, ServingError> {
    let raw = std::mem::take(&mut request.raw_input_contents);
    let mut held = Vec::with_capacity(request.inputs.len());
    for i in &request.inputs {
        held.push(region_reference(
            &format!("input '{}'", i.name),
            &i.parameters,
            regions,
        )?);
    }
    let carried = held.iter().filter(|h| h.is_none()).count();
    if !raw.is_empty() && raw.len() != carried {
        return Err(ServingError::invalid_argument(format!(
            "{} raw_input_contents for {carried} inputs: give one per input, or none",
            raw.len(),
        )));
    }
    let mut raw = raw.into_iter();
    std::mem::take(&mut request.inputs)
        .into_iter()
        .zip(held)
        .map(|(i, held)| {
            if let Some(held) = held {
                if i.contents.is_some() {
                    return Err(ServingError::invalid_argument(format!(
                        "input '{}' names a shared memory region and carries data as well",
                        i.name
                    )));
                }
                return Ok(Input {
                    name: i.name,
                    datatype: i.datatype,
                    shape: i.shape,
                    data: InputData::Region(held, limit),
                });
            }
            let data = match (raw.next(), i.contents) {
                (Some(_), Some(_)) => {
                    return Err(ServingError::invalid_argument(format!(
                        "input '{}' has both contents and raw_input_contents",
                        i.name
                    )))
                }
                (Some(bytes), None) => InputData::Raw(bytes),
                (None, contents) => {
                    let dtype = datatype::parse(&i.datatype).ok_or_else(|| {
                        ServingError::invalid_argument(format!(
                            "input '{}' has unknown datatype '{}'",
                            i.name, i.datatype
                        ))
                    })?;
                    InputData::Packed(typed(&i.name, dtype, contents.unwrap_or_default())?)
                }
            };
            Ok(Input {
                name: i.name,
                datatype: i.datatype,
                shape: i.shape,
                data,
            })
        })
        .collect()
}

impl InferenceService {
    async fn infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<pb::ModelInferResponse, ServingError> {
        let deadline = crate::edge::deadline::grpc(&request);
        let mut r = request.into_inner();
        if r.model_name.is_empty() {
            return Err(ServingError::invalid_argument("the request names no model"));
        }
        let signature_name = string_param(&r.parameters, SIGNATURE_PARAMETER)?.unwrap_or_default();
        let inputs = inputs(&mut r, &self.shared_memory, self.max_receive_message_length)?;
        let mut wanted = Vec::with_capacity(r.outputs.len());
        for o in &r.outputs {
            let what = format!("output '{}'", o.name);
            wanted.push((
                o.name.clone(),
                region_reference(&what, &o.parameters, &self.shared_memory)?,
            ));
        }
        let served = infer::run(
            &self.predictor,
            Call {
                servable: servable_request(&r.model_name, &r.model_version),
                signature_name,
                inputs: crate::v2::infer::Given::Listed(inputs),
                outputs: r.outputs.iter().map(|o| o.name.clone()).collect(),
                output_targets: wanted
                    .iter()
                    .filter_map(|(name, held)| {
                        Some((name.clone(), held.as_ref()?.output_target()?))
                    })
                    .collect(),
                deadline,
                entrypoint: Entrypoint::Grpc,
            },
        )
        .await?;
        served.encode(|s| {
            let mut outputs = Vec::with_capacity(s.value.len());
            let mut raw = Vec::with_capacity(s.value.len());
            for (name, tensor) in &s.value {
                let datatype = datatype::name(tensor.dtype).ok_or_else(|| {
                    ServingError::unimplemented(format!(
                        "output '{name}' is {}, which V2 cannot carry",
                        tensor.dtype.name()
                    ))
                })?;
                let region = wanted
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, h)| h.as_ref());
                let mut parameters = BTreeMap::new();
                if let Some(held) = region {
                    let written = infer::write_output(held, name, tensor)?;
                    let param = |c| pb::InferParameter {
                        parameter_choice: Some(c),
                    };
                    parameters.insert(
                        shared_memory::REGION.to_string(),
                        param(ParameterChoice::StringParam(held.at.region.clone())),
                    );
                    parameters.insert(
                        shared_memory::BYTE_SIZE.to_string(),
                        param(ParameterChoice::Int64Param(written as i64)),
                    );
                    parameters.insert(
                        shared_memory::OFFSET.to_string(),
                        param(ParameterChoice::Int64Param(held.at.offset as i64)),
                    );
                    // An empty entry keeps the indices of raw_output_contents aligned.
                    raw.push(bytes::Bytes::new());
                } else {
                    raw.push(infer::raw(tensor)?);
                }
                outputs.push(pb::model_infer_response::InferOutputTensor {
                    name: name.clone(),
                    datatype: datatype.into(),
                    shape: tensor.shape.clone(),
                    parameters,
                    ..Default::default()
                });
            }
            Ok(pb::ModelInferResponse {
                model_name: s.servable.name.clone(),
                model_version: s.servable.version.to_string(),
                id: r.id.clone(),
                parameters: BTreeMap::new(),
                outputs,
                raw_output_contents: raw,
            })
        })
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = self.health.readiness().is_ready();
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = self
            .predictor
            .is_ready(&model_request(&r.name, &r.version)?);
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: crate::v2::extensions(self.shared_memory.enabled())
                .into_iter()
                .map(String::from)
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let servable = self
            .predictor
            .metadata(&model_request(&r.name, &r.version)?)?;
        let m = model::metadata(
            &servable,
            &self.predictor.available_versions(&servable.id.name),
        );
        let tensors = |ts: Vec<model::TensorMeta>| {
            ts.into_iter()
                .map(|t| pb::model_metadata_response::TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.into(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let servable = self
            .predictor
            .metadata(&model_request(&r.name, &r.version)?)?;
        let batching = self.predictor.batching(&servable.id);
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(model::config(&servable, batching.as_ref())),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let started = tokio::time::Instant::now();
        let name = request.get_ref().model_name.clone();
        let result = self
            .infer(request)
            .await
            .and_then(|resp| crate::edge::within_send_limit(resp, self.max_send_message_length));
        let result = crate::edge::observe::call(&name, "infer", Entrypoint::Grpc, started, result);
        Ok(Response::new(result?))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryStatusResponse>, Status> {
        let name = request.into_inner().name;
        let list = self
            .shared_memory
            .status((!name.is_empty()).then_some(name.as_str()))?;
        let regions = list
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    pb::system_shared_memory_status_response::RegionStatus {
                        name: r.name.clone(),
                        key: r.key.clone(),
                        offset: r.offset,
                        byte_size: r.byte_size,
                    },
                )
            })
            .collect();
        Ok(Response::new(pb::SystemSharedMemoryStatusResponse {
            regions,
        }))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryRegisterResponse>, Status> {
        let r = request.into_inner();
        self.shared_memory
            .register(&r.name, &r.key, r.offset, r.byte_size)?;
        Ok(Response::new(pb::SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryUnregisterResponse>, Status> {
        let name = request.into_inner().name;
        self.shared_memory
            .unregister((!name.is_empty()).then_some(name.as_str()))?;
        Ok(Response::new(pb::SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryStatusResponse>, Status> {
        Err(cuda_not_supported())
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryRegisterResponse>, Status> {
        Err(cuda_not_supported())
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryUnregisterResponse>, Status> {
        Err(cuda_not_supported())
    }
}

/// CUDA shared memory: the gateway holds no GPU memory to map it into.
pub const CUDA_NOT_SUPPORTED: &str =
    "CUDA shared memory is not supported by tfgate: use system shared memory or send the data";

fn cuda_not_supported() -> Status {
    Status::unimplemented(CUDA_NOT_SUPPORTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn tensor(
        name: &str,
        datatype: &str,
        shape: &[i64],
    ) -> pb::model_infer_request::InferInputTensor {
        pb::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_inputs() {
        let mut r = pb::ModelInferRequest {
            inputs: vec![tensor("a", "FP32", &[1]), tensor("b", "INT8", &[2])],
            raw_input_contents: vec![
                Bytes::from_static(&[0, 0, 128, 63]),
                Bytes::from_static(&[1, 255]),
            ],
            ..Default::default()
        };
        let got = inputs(&mut r, &Registry::default(), 1 << 20).unwrap();
        assert!(matches!(&got[0].data, InputData::Raw(b) if b.as_ref() == [0, 0, 128, 63]));

        let mut t = tensor("c", "INT16", &[2]);
        t.contents = Some(pb::InferTensorContents {
            int_contents: vec![-1, 2],
            ..Default::default()
        });
        let mut r = pb::ModelInferRequest {
            inputs: vec![t],
            ..Default::default()
        };
        let got = inputs(&mut r, &Registry::default(), 1 << 20).unwrap();
        assert!(
            matches!(&got[0].data, InputData::Packed(TensorData::Bytes(b)) if b.as_ref() == [255, 255, 2, 0])
        );

        let mut r = pb::ModelInferRequest {
            inputs: vec![tensor("a", "FP32", &[1]), tensor("b", "FP32", &[1])],
            raw_input_contents: vec![Bytes::from_static(&[0, 0, 128, 63])],
            ..Default::default()
        };
        assert_eq!(
            inputs(&mut r, &Registry::default(), 1 << 20)
                .unwrap_err()
                .message,
            "1 raw_input_contents for 2 inputs: give one per input, or none"
        );
        let mut t = tensor("h", "FP16", &[1]);
        t.contents = Some(pb::InferTensorContents::default());
        let mut r = pb::ModelInferRequest {
            inputs: vec![t],
            ..Default::default()
        };
        assert_eq!(
            inputs(&mut r, &Registry::default(), 1 << 20)
                .unwrap_err()
                .message,
            "input 'h' is FP16: send it in raw_input_contents"
        );
    }
}
