//! The one entry every front end calls after decoding: admit the request, resolve the
//! servable, validate against its signature (looked up once), run it on the pool, and
//! shape the result. Front ends only decode and encode.

use crate::batching::Batcher;
use crate::classifier::{self, Class};
use crate::error::ServingError;
use crate::lifecycle::Lifecycle;
use crate::request::{DecodeInputs, ExamplesRequest, PredictRequest};
use crate::servables::{Servable, ServableId, ServableRequest, Servables};
use crate::status::model_status;
use crate::validation;
use crate::validation::examples::{self, MethodNameCheck};
use crate::workers::{RunOutput, WorkerPool};
use shm_protocol::tensor::Tensor;
use tfgate_proto::tensorflow::serving::GetModelStatusResponse;

/// A successful call: the version that served it, the signature that ran, the result.
#[derive(Debug)]
pub struct Served<T> {
    pub servable: ServableId,
    pub signature_name: String,
    pub value: T,
}

/// Outputs by alias.
pub type Outputs = Vec<(String, Tensor)>;

/// Shared by the front ends.
#[derive(Clone)]
pub struct Predictor {
    servables: Servables,
    pool: WorkerPool,
    lifecycle: Lifecycle,
    /// With `--enable_batching`, runs go through the batch queues.
    batcher: Option<Batcher>,
    /// `--enable_signature_method_name_check`.
    method_name_check: MethodNameCheck,
}

impl Predictor {
    pub fn new(
        servables: Servables,
        pool: WorkerPool,
        lifecycle: Lifecycle,
        batcher: Option<Batcher>,
        method_name_check: MethodNameCheck,
    ) -> Predictor {
        Predictor {
            servables,
            pool,
            lifecycle,
            batcher,
            method_name_check,
        }
    }

    /// Predict.
    pub async fn predict<D: DecodeInputs>(
        &self,
        request: PredictRequest<D>,
    ) -> Result<Served<Outputs>, ServingError> {
        let _admitted = self.lifecycle.admit()?;
        let servable = self.servables.resolve(&request.servable)?;
        let run = validation::validate_predict(&servable, request)?;
        self.run(run).await
    }

    /// Classify: per-example classes.
    pub async fn classify(
        &self,
        request: ExamplesRequest,
    ) -> Result<Served<Vec<Vec<Class>>>, ServingError> {
        let _admitted = self.lifecycle.admit()?;
        let servable = self.servables.resolve(&request.servable)?;
        let n = request.examples.len();
        let run = examples::validate_classify(&servable, request, self.method_name_check)?;
        let served = self.run(run).await?;
        let value = classifier::classifications(&served.value, n)?;
        Ok(Served {
            servable: served.servable,
            signature_name: served.signature_name,
            value,
        })
    }

    /// Regress: one value per example.
    pub async fn regress(
        &self,
        request: ExamplesRequest,
    ) -> Result<Served<Vec<f32>>, ServingError> {
        let _admitted = self.lifecycle.admit()?;
        let servable = self.servables.resolve(&request.servable)?;
        let n = request.examples.len();
        let run = examples::validate_regress(&servable, request, self.method_name_check)?;
        let served = self.run(run).await?;
        let value = classifier::regressions(&served.value, n)?;
        Ok(Served {
            servable: served.servable,
            signature_name: served.signature_name,
            value,
        })
    }

    /// The servable GetModelMetadata describes.
    pub fn metadata(&self, request: &ServableRequest) -> Result<Servable, ServingError> {
        self.servables.resolve(request)
    }

    /// GetModelStatus for every version of `name`, or one.
    pub fn status(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<GetModelStatusResponse, ServingError> {
        model_status(&self.servables, name, version)
    }

    async fn run(&self, run: validation::ValidRun) -> Result<Served<Outputs>, ServingError> {
        let signature_name = run.signature_key().to_string();
        let RunOutput { servable, outputs } = match &self.batcher {
            Some(batcher) => batcher.run(run).await?,
            None => self.pool.run(run).await?,
        };
        Ok(Served {
            servable,
            signature_name,
            value: outputs,
        })
    }
}
