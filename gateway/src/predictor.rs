//! The one entry every front end calls after decoding: admit the request, resolve the
//! servable, validate against its signature (looked up once), run it on the pool, and
//! shape the result. Front ends only decode and encode.

use crate::batching::Batcher;
use crate::classifier::{self, Class};
use crate::edge::observe;
use crate::error::ServingError;
use crate::lifecycle::{Admitted, Lifecycle};
use crate::request::{DecodeInputs, ExamplesRequest, MultiInferenceRequest, PredictRequest};
use crate::request_log::{RequestLog, Sampled};
use crate::servables::{Servable, ServableId, ServableRequest, Servables};
use crate::status::model_status;
use crate::validation;
use crate::validation::examples::{self, ExamplesMethod, MethodNameCheck};
use crate::workers::{RunOutput, WorkerPool};
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tfgate_proto::tensorflow::serving::GetModelStatusResponse;
use tfgate_tensor::tensor::{DataType, Tensor};

/// A successful call: the version that served it, the signature that ran, the result.
#[derive(Debug)]
pub struct Served<T> {
    pub servable: ServableId,
    pub signature_name: String,
    pub value: T,
}

impl<T> Served<T> {
    /// Encodes the answer at the edge, timed as the request's `response_encoding` phase.
    pub fn encode<U>(self, encode: impl FnOnce(Served<T>) -> U) -> U {
        let (servable, signature) = (self.servable.clone(), self.signature_name.clone());
        let started = std::time::Instant::now();
        let out = encode(self);
        let micros = started.elapsed().as_micros() as u64;
        observe::encoding(&servable, &signature, micros);
        out
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Served<U> {
        Served {
            servable: self.servable,
            signature_name: self.signature_name,
            value: f(self.value),
        }
    }
}

/// What one Classify or Regress run gives back.
#[derive(Debug)]
pub enum InferenceResult {
    /// Per example, its classes.
    Classification(Vec<Vec<Class>>),
    /// Per example, one value.
    Regression(Vec<f32>),
}

/// Turns a run's outputs into a method's result, for `n` examples.
type Shape<T> = fn(&[(String, Tensor)], usize) -> Result<T, ServingError>;

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
    /// With `--request_log_dir`, where sampled requests are written.
    request_log: Option<RequestLog>,
}

impl Predictor {
    pub fn new(
        servables: Servables,
        pool: WorkerPool,
        lifecycle: Lifecycle,
        batcher: Option<Batcher>,
        method_name_check: MethodNameCheck,
        request_log: Option<RequestLog>,
    ) -> Predictor {
        Predictor {
            servables,
            pool,
            lifecycle,
            batcher,
            method_name_check,
            request_log,
        }
    }

    /// Predict.
    pub async fn predict<D: DecodeInputs>(
        &self,
        request: PredictRequest<D>,
    ) -> Result<Served<Outputs>, ServingError> {
        let _admitted = self.lifecycle.admit();
        let servable = self.servables.resolve(&request.servable)?;
        let run = validation::validate_predict(&servable, request)?;
        let sampled = self.request_log.as_ref().and_then(|log| {
            let sampled =
                log.sample_predict(&servable.id.name, run.inputs(), run.output_filter())?;
            Some((log, sampled))
        });
        let served = self.run(run, Some("Predict")).await?;
        if let Some((log, sampled)) = sampled {
            log.predict(
                sampled,
                &served.servable,
                &served.signature_name,
                &served.value,
            );
        }
        Ok(served)
    }

    /// Classify: per-example classes.
    pub async fn classify(
        &self,
        request: ExamplesRequest,
    ) -> Result<Served<Vec<Vec<Class>>>, ServingError> {
        let shape = classifier::classifications;
        self.examples_call(
            request,
            ExamplesMethod::Classify,
            shape,
            |log, sampled, served| {
                let result = classifier::classification_result(served.value.clone());
                log.classify(sampled, &served.servable, &served.signature_name, result);
            },
        )
        .await
    }

    /// Regress: one value per example.
    pub async fn regress(
        &self,
        request: ExamplesRequest,
    ) -> Result<Served<Vec<f32>>, ServingError> {
        let shape = classifier::regressions;
        self.examples_call(
            request,
            ExamplesMethod::Regress,
            shape,
            |log, sampled, served| {
                let result = classifier::regression_result(served.value.clone());
                log.regress(sampled, &served.servable, &served.signature_name, result);
            },
        )
        .await
    }

    /// A Classify or Regress call: run, shaped, and handed to `log` if the request log
    /// sampled it.
    async fn examples_call<T>(
        &self,
        request: ExamplesRequest,
        method: ExamplesMethod,
        shape: Shape<T>,
        log: impl FnOnce(&RequestLog, Sampled, &Served<T>),
    ) -> Result<Served<T>, ServingError> {
        let api = match method {
            ExamplesMethod::Classify => "Classify",
            ExamplesMethod::Regress => "Regress",
        };
        let (_admitted, run, n, sampled) = self.examples(request, method)?;
        let served = self.run_shaped(run, n, Some(api), shape).await?;
        if let (Some(request_log), Some(sampled)) = (&self.request_log, sampled) {
            log(request_log, sampled, &served);
        }
        Ok(served)
    }

    /// Admits, resolves and validates a Classify or Regress call: the admission (held
    /// until the answer), the run, the example count, and the examples if the request
    /// log samples this call.
    fn examples(
        &self,
        request: ExamplesRequest,
        method: ExamplesMethod,
    ) -> Result<(Admitted, validation::ValidRun, usize, Option<Sampled>), ServingError> {
        let admitted = self.lifecycle.admit();
        let servable = self.servables.resolve(&request.servable)?;
        let n = request.examples.len();
        let sampled = self
            .request_log
            .as_ref()
            .and_then(|log| log.sample_examples(&servable.id.name, &request.examples));
        let run = examples::validate_examples(&servable, request, method, self.method_name_check)?;
        Ok((admitted, run, n, sampled))
    }

    /// MultiInference: every task validated, then the tasks' runs side by side; the
    /// results in task order, each with the signature its task named.
    pub async fn multi_inference(
        &self,
        request: MultiInferenceRequest,
    ) -> Result<Vec<Served<InferenceResult>>, ServingError> {
        let _admitted = self.lifecycle.admit();
        let servable = self.servables.resolve(&request.servable)?;
        let n = request.examples.len();
        let runs = examples::validate_multi_inference(&servable, request, self.method_name_check)?;
        let results = futures_util::future::try_join_all(
            runs.into_iter()
                .map(|(method, run)| self.infer(method, run, n)),
        )
        .await?;
        crate::monitoring::series::examples(&servable.id.name, n);
        Ok(results)
    }

    /// One MultiInference task's run, its result shaped by the task's method.
    async fn infer(
        &self,
        method: ExamplesMethod,
        run: validation::ValidRun,
        n: usize,
    ) -> Result<Served<InferenceResult>, ServingError> {
        Ok(match method {
            ExamplesMethod::Classify => self
                .run_shaped(run, n, None, classifier::classifications)
                .await?
                .map(InferenceResult::Classification),
            ExamplesMethod::Regress => self
                .run_shaped(run, n, None, classifier::regressions)
                .await?
                .map(InferenceResult::Regression),
        })
    }

    /// Runs `run` and shapes its outputs for `n` examples.
    async fn run_shaped<T>(
        &self,
        run: validation::ValidRun,
        n: usize,
        api: Option<&str>,
        shape: Shape<T>,
    ) -> Result<Served<T>, ServingError> {
        let served = self.run(run, api).await?;
        let value = shape(&served.value, n)?;
        Ok(served.map(|_| value))
    }

    /// The dtype of the one input of the signature `signature_name` (the default when
    /// `None`) of the version `request` resolves to now; `None` where that signature is
    /// not found or has several inputs. A guess for a decoder that wants to read values
    /// straight into their dtype: the version may change before the request runs, and
    /// `predict` decodes against the one it resolves then.
    pub fn single_input_dtype(
        &self,
        request: &ServableRequest,
        signature_name: Option<&str>,
    ) -> Option<DataType> {
        let servable = self.servables.resolve(request).ok()?;
        let key = validation::signature_key(signature_name.unwrap_or_default());
        let mut inputs = servable.signature(key)?.inputs.values();
        match (inputs.next(), inputs.next()) {
            (Some(info), None) => DataType::from_i32(info.dtype),
            _ => None,
        }
    }

    /// The servable GetModelMetadata describes.
    pub fn metadata(&self, request: &ServableRequest) -> Result<Servable, ServingError> {
        self.servables.resolve(request)
    }

    /// The versions of `name` AVAILABLE now, ascending (V2's model metadata).
    pub fn available_versions(&self, name: &str) -> Vec<i64> {
        self.servables
            .versions(name)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, s)| s.state == State::Available)
            .map(|(v, _)| v)
            .collect()
    }

    /// Whether `request` names a version AVAILABLE now (V2's model readiness).
    pub fn is_ready(&self, request: &ServableRequest) -> bool {
        self.servables.resolve(request).is_ok_and(|s| {
            self.servables
                .versions(&s.id.name)
                .and_then(|vs| vs.get(&s.id.version).map(|v| v.state == State::Available))
                .unwrap_or(false)
        })
    }

    /// The batching parameters `servable` runs with; `None` when it does not batch.
    pub fn batching(&self, servable: &ServableId) -> Option<crate::batching::Parameters> {
        self.batcher
            .as_ref()
            .and_then(|b| b.params(servable).ok().flatten())
    }

    /// GetModelStatus for every version of `name`, or one.
    pub fn status(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<GetModelStatusResponse, ServingError> {
        model_status(&self.servables, name, version)
    }

    /// Runs on the pool (through the batch queues with batching). A run for `api`
    /// records TF Serving's runtime latency (MultiInference's runs do not, as in TF
    /// Serving).
    async fn run(
        &self,
        run: validation::ValidRun,
        api: Option<&str>,
    ) -> Result<Served<Outputs>, ServingError> {
        let signature_name = run.signature_key().to_string();
        let started = std::time::Instant::now();
        let RunOutput {
            servable,
            outputs,
            timing,
        } = match &self.batcher {
            Some(batcher) => batcher.run(run).await?,
            None => self.pool.run(run).await?,
        };
        let micros = started.elapsed().as_micros() as u64;
        let batched = self.batcher.is_some();
        observe::run(&servable, &signature_name, &timing, batched, api, micros);
        Ok(Served {
            servable,
            signature_name,
            value: outputs,
        })
    }
}
