//! `BatchingParameters` (`--batching_parameters_file`, a version's
//! `batching_params.pbtxt`) with TF Serving's defaults and checks
//! (`bundle_factory_util.cc`, TensorFlow's `SharedBatchScheduler`).

use crate::error::ServingError;
use std::time::Duration;
use tfgate_proto::tensorflow::serving::BatchingParameters;

/// The file a version directory may hold with `--enable_per_model_batching_parameters`.
pub const PER_MODEL_FILE: &str = "batching_params.pbtxt";

/// Batching settings for one servable, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameters {
    /// The largest request, in rows (`max_batch_size`, default 1000).
    pub max_batch_size: usize,
    /// How long an under-full batch waits for more (default 0: it runs at once when a
    /// worker is free).
    pub batch_timeout: Duration,
    /// Queue bound, in batches (default 10).
    pub max_enqueued_batches: usize,
    /// Sizes to pad a batch up to (the first that fits, in list order).
    pub allowed_batch_sizes: Vec<usize>,
    /// Requests larger than `max_execution_batch_size` are split across batches.
    pub split: bool,
    /// The largest batch run (`max_batch_size` unless splitting).
    pub max_execution_batch_size: usize,
    /// Requests whose inputs differ in non-batch dimensions share a batch, each padded to
    /// the batch's largest with its own first element (without it they run in separate
    /// batches).
    pub pad_variable_length_inputs: bool,
    /// Batches that may run at once over every queue (`num_batch_threads`; default: the
    /// cores the gateway may use, TF Serving's `port::MaxParallelism()`). Only the global
    /// file's counts, as in TF Serving, whose batch threads are one shared pool.
    pub num_batch_threads: usize,
    /// The `thread_pool_name` label of the queuing-latency series (default
    /// `batch_threads`).
    pub thread_pool_name: String,
}

/// TF Serving's default `thread_pool_name`.
const DEFAULT_THREAD_POOL_NAME: &str = "batch_threads";

/// TF Serving's default `num_batch_threads`: the cores this process may run on.
fn max_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn positive(v: i64) -> usize {
    usize::try_from(v).unwrap_or(0)
}

impl Parameters {
    /// Defaults applied and checked as TF Serving checks them when it loads a model.
    pub fn from_proto(p: &BatchingParameters) -> Result<Parameters, ServingError> {
        let max_batch_size = p.max_batch_size.unwrap_or(1000);
        let num_batch_threads = match p.num_batch_threads {
            Some(threads) if threads < 1 => {
                return Err(ServingError::invalid_argument(format!(
                    "num_batch_threads must be positive; was {threads}"
                )));
            }
            Some(threads) => positive(threads),
            None => max_parallelism(),
        };
        if max_batch_size <= 0 {
            return Err(ServingError::invalid_argument(format!(
                "input_batch_size_limit must be positive; was {max_batch_size}"
            )));
        }
        let timeout = p.batch_timeout_micros.unwrap_or(0);
        if timeout < 0 {
            return Err(ServingError::invalid_argument(format!(
                "batch_timeout_micros must be non-negative; was {timeout}"
            )));
        }
        if let Some(&last) = p.allowed_batch_sizes.last() {
            if last != max_batch_size {
                return Err(ServingError::invalid_argument(format!(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last entry was {last}; expected {max_batch_size}"
                )));
            }
        }
        let split = p.enable_large_batch_splitting.unwrap_or(false);
        let max_execution_batch_size = if split {
            p.max_execution_batch_size.unwrap_or(max_batch_size)
        } else {
            max_batch_size
        };
        if split && (max_execution_batch_size <= 0 || max_batch_size < max_execution_batch_size) {
            return Err(ServingError::invalid_argument(format!(
                "When enable_large_batch_splitting is true, input_batch_size_limit must be greater than or equal to max_execution_batch_size.{}{max_batch_size}{max_execution_batch_size}",
                u8::from(split)
            )));
        }
        let queued = p.max_enqueued_batches.unwrap_or(10);
        if split && queued <= 0 {
            return Err(ServingError::invalid_argument(format!(
                "max_enqueued_batches must be positive; was {queued}"
            )));
        }
        Ok(Parameters {
            max_batch_size: positive(max_batch_size),
            batch_timeout: Duration::from_micros(timeout as u64),
            // 0 is taken as 1 without splitting, as TensorFlow's scheduler does.
            max_enqueued_batches: positive(queued).max(1),
            allowed_batch_sizes: p.allowed_batch_sizes.iter().map(|&s| positive(s)).collect(),
            split,
            max_execution_batch_size: positive(max_execution_batch_size),
            pad_variable_length_inputs: p.pad_variable_length_inputs,
            num_batch_threads,
            thread_pool_name: p
                .thread_pool_name
                .clone()
                .unwrap_or_else(|| DEFAULT_THREAD_POOL_NAME.to_string()),
        })
    }

    /// Parses a `BatchingParameters` text file.
    pub fn read_file(path: &str) -> Result<Parameters, ServingError> {
        let proto: BatchingParameters =
            crate::text_format::read_file(path, "tensorflow.serving.BatchingParameters")?;
        Parameters::from_proto(&proto)
    }

    /// Parses `BatchingParameters` text (a version's `batching_params.pbtxt`).
    pub fn parse(text: &str, path: &str) -> Result<Parameters, ServingError> {
        let proto: BatchingParameters = crate::text_format::parse(
            "tensorflow.serving.BatchingParameters",
            text,
        )
        .map_err(|e| {
            tracing::error!("Error parsing text-format tensorflow.serving.BatchingParameters: {e}");
            ServingError::invalid_argument(format!("Invalid protobuf file: '{path}'"))
        })?;
        Parameters::from_proto(&proto)
    }
}

impl Default for Parameters {
    fn default() -> Self {
        Parameters {
            max_batch_size: 1000,
            batch_timeout: Duration::ZERO,
            max_enqueued_batches: 10,
            allowed_batch_sizes: Vec::new(),
            split: false,
            max_execution_batch_size: 1000,
            pad_variable_length_inputs: false,
            num_batch_threads: max_parallelism(),
            thread_pool_name: DEFAULT_THREAD_POOL_NAME.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Parameters, ServingError> {
        Parameters::parse(text, "/b.pbtxt")
    }

    #[test]
    fn defaults_and_tf_servings_checks() {
        assert_eq!(parse("").unwrap(), Parameters::default());
        let p = parse(
            "max_batch_size { value: 8 } batch_timeout_micros { value: 500 } max_enqueued_batches { value: 2 }
             allowed_batch_sizes: 2 allowed_batch_sizes: 4 allowed_batch_sizes: 8 num_batch_threads { value: 4 }",
        )
        .unwrap();
        assert_eq!(p.max_batch_size, 8);
        assert_eq!(p.batch_timeout, Duration::from_micros(500));
        assert_eq!(p.allowed_batch_sizes, vec![2, 4, 8]);
        assert_eq!(p.max_execution_batch_size, 8);
        assert_eq!(p.num_batch_threads, 4);
        assert_eq!(parse("").unwrap().num_batch_threads, max_parallelism());
        assert_eq!(
            parse("max_batch_size { value: 8 } allowed_batch_sizes: 4").unwrap_err().message,
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"
        );
        assert_eq!(
            parse("allowed_batch_sizes: 4").unwrap_err().message,
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 1000"
        );
        assert_eq!(
            parse("num_batch_threads { value: 0 }").unwrap_err().message,
            "num_batch_threads must be positive; was 0"
        );
        assert_eq!(
            parse("max_batch_size { value: 0 }").unwrap_err().message,
            "input_batch_size_limit must be positive; was 0"
        );
        let split = parse(
            "max_batch_size { value: 16 } enable_large_batch_splitting { value: true } max_execution_batch_size { value: 4 }",
        )
        .unwrap();
        assert!(split.split);
        assert_eq!(split.max_execution_batch_size, 4);
        assert_eq!(
            parse("max_batch_size { value: 8 } enable_large_batch_splitting { value: true } max_execution_batch_size { value: 16 }")
                .unwrap_err()
                .message,
            "When enable_large_batch_splitting is true, input_batch_size_limit must be greater than or equal to max_execution_batch_size.1816"
        );
        assert_eq!(
            parse("not text format").unwrap_err().message,
            "Invalid protobuf file: '/b.pbtxt'"
        );
    }
}
