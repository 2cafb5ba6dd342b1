//! The one predict path REST and gRPC share after decoding: resolve the servable,
//! validate against its signature, dispatch to a worker, return the outputs.

use crate::error::ServingError;
use crate::servables::{Servable, ServableId, ServableRequest, Servables};
use crate::validation::{validate_predict, ValidPredict};
use crate::workers::WorkerPool;
use shm_protocol::frame::{RequestFrame, RequestKind, ResponseFrame};
use shm_protocol::tensor::Tensor;
use std::time::Duration;

/// The outcome of a predict.
#[derive(Debug)]
pub struct PredictResult {
    pub servable: ServableId,
    pub signature_name: String,
    pub outputs: Vec<(String, Tensor)>,
}

/// Shared by the front ends.
#[derive(Clone)]
pub struct Predictor {
    pub servables: Servables,
    pub workers: WorkerPool,
}

impl Predictor {
    /// Resolves a servable request (TF Serving's errors for unknown models/versions).
    pub fn resolve(&self, request: &ServableRequest) -> Result<Servable, ServingError> {
        self.servables.resolve(request)
    }

    /// Validates and runs a predict.
    pub async fn predict(
        &self,
        servable: &Servable,
        signature_name: &str,
        inputs: Vec<(String, Tensor)>,
        output_filter: Vec<String>,
        timeout: Duration,
    ) -> Result<PredictResult, ServingError> {
        let valid = validate_predict(servable, signature_name, inputs, output_filter)?;
        self.dispatch(valid, timeout).await
    }

    /// Runs signature `signature_key` with inputs the caller has already checked
    /// (classify and regress validate by their own rules).
    pub async fn run(
        &self,
        servable: &Servable,
        signature_key: &str,
        inputs: Vec<(String, Tensor)>,
        output_filter: Vec<String>,
        timeout: Duration,
    ) -> Result<PredictResult, ServingError> {
        let valid = ValidPredict {
            servable: servable.id.clone(),
            signature_name: signature_key.to_string(),
            inputs,
            output_filter,
        };
        self.dispatch(valid, timeout).await
    }

    async fn dispatch(
        &self,
        valid: ValidPredict,
        timeout: Duration,
    ) -> Result<PredictResult, ServingError> {
        let frame = RequestFrame {
            kind: RequestKind::Predict,
            model_name: valid.servable.name.clone(),
            version: Some(valid.servable.version),
            signature_name: valid.signature_name.clone(),
            output_filter: valid.output_filter,
            inputs: valid.inputs,
            // The request's deadline also bounds the session run (TF Serving passes it as
            // RunOptions.timeout_in_ms), so an abandoned request does not hold the worker.
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match self.workers.dispatch(&frame, timeout).await? {
            ResponseFrame::Ok {
                model_version,
                outputs,
            } => Ok(PredictResult {
                servable: ServableId {
                    name: valid.servable.name,
                    version: model_version,
                },
                signature_name: valid.signature_name,
                outputs,
            }),
            ResponseFrame::Err { code, message } => {
                Err(ServingError::new(tonic::Code::from_i32(code), message))
            }
        }
    }
}
