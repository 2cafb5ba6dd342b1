//! A loaded SavedModel: its graph, session and MetaGraphDef.

use super::status::{Status, TfError};
use super::tensor::{InputTensor, OutputTensor, OutputView};
use prost::Message;
use shm_protocol::InPlacePayload;
use std::ffi::CString;
use std::os::raw::c_int;
use tensorflow_sys as sys;
use tfgate_proto::tensorflow::MetaGraphDef;
use tfgate_tensor::tensor::{DataType, Tensor};

/// A graph tensor, resolved from a TensorInfo name such as `"x:0"`.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef {
    oper: *mut sys::TF_Operation,
    index: c_int,
}

// SAFETY: a TF_Operation pointer is an immutable handle into a graph that outlives every
// TensorRef (both live in SavedModel); TF allows concurrent reads of a finalized graph.
unsafe impl Send for TensorRef {}
// SAFETY: as above; the handle is never written through.
unsafe impl Sync for TensorRef {}

/// One input to feed: a tensor to copy into TensorFlow, or a numeric payload TensorFlow
/// reads in place in shared memory.
pub enum Feed {
    Copy(Tensor),
    InPlace {
        dtype: DataType,
        shape: Vec<i64>,
        payload: InPlacePayload,
    },
}

impl Feed {
    /// Its 0th dimension (1 for a scalar): the rows of a batch.
    pub fn rows(&self) -> usize {
        let shape = match self {
            Feed::Copy(t) => &t.shape,
            Feed::InPlace { shape, .. } => shape,
        };
        shape
            .first()
            .map_or(1, |&d| usize::try_from(d).unwrap_or(0))
    }
}

/// A serialized `RunOptions`: `timeout_in_ms` when non-zero, and `inter_op_thread_pool =
/// -1` (run every op on the calling thread) when `inline`; `None` when neither is set.
fn run_options(timeout_ms: u64, inline: bool) -> Option<Vec<u8>> {
    if timeout_ms == 0 && !inline {
        return None;
    }
    let options = tfgate_proto::tensorflow::RunOptions {
        timeout_in_ms: timeout_ms.min(i64::MAX as u64) as i64,
        inter_op_thread_pool: if inline { -1 } else { 0 },
        ..Default::default()
    };
    Some(options.encode_to_vec())
}

/// An owned `TF_Buffer`.
struct Buffer(*mut sys::TF_Buffer);

impl Buffer {
    fn new() -> Buffer {
        // SAFETY: TF_NewBuffer has no preconditions.
        Buffer(unsafe { sys::TF_NewBuffer() })
    }

    /// A buffer holding a copy of `bytes` (TF_NewBufferFromString copies).
    fn from_bytes(bytes: &[u8]) -> Buffer {
        // SAFETY: `bytes` is valid for `len` bytes for the call; TF copies them.
        Buffer(unsafe { sys::TF_NewBufferFromString(bytes.as_ptr() as *const _, bytes.len()) })
    }
    fn to_vec(&self) -> Vec<u8> {
        // SAFETY: a TF-filled buffer holds `length` readable bytes at `data` (or is empty).
        unsafe {
            let b = &*self.0;
            if b.data.is_null() || b.length == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(b.data as *const u8, b.length).to_vec()
            }
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: from TF_NewBuffer, deleted once (TF frees the data it allocated).
        unsafe { sys::TF_DeleteBuffer(self.0) }
    }
}

/// A SavedModel loaded into its own graph and session.
pub struct SavedModel {
    graph: *mut sys::TF_Graph,
    session: *mut sys::TF_Session,
    pub meta_graph_def: MetaGraphDef,
}

// SAFETY: TF_Session is thread-safe for TF_SessionRun (TensorFlow's documented contract);
// the graph is only read after loading. Both are freed once in Drop.
unsafe impl Send for SavedModel {}
// SAFETY: see above; &SavedModel only permits TF_SessionRun and graph lookups.
unsafe impl Sync for SavedModel {}

impl SavedModel {
    /// Loads `export_dir` with the given MetaGraph tags. `config` is a serialized
    /// `ConfigProto` (empty for TensorFlow's defaults).
    pub fn load(export_dir: &str, tags: &[String], config: &[u8]) -> Result<SavedModel, TfError> {
        let dir = CString::new(export_dir)
            .map_err(|_| TfError::invalid_argument("export dir contains NUL"))?;
        let tags: Vec<CString> = tags
            .iter()
            .map(|t| CString::new(t.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| TfError::invalid_argument("tag contains NUL"))?;
        let tag_ptrs: Vec<*const std::os::raw::c_char> = tags.iter().map(|t| t.as_ptr()).collect();
        let status = Status::new();
        let meta = Buffer::new();
        // SAFETY: every pointer passed is live for the call; TF copies the config bytes and
        // strings; the graph and session it returns are owned by the SavedModel below.
        unsafe {
            let opts = sys::TF_NewSessionOptions();
            if !config.is_empty() {
                sys::TF_SetConfig(
                    opts,
                    config.as_ptr() as *const _,
                    config.len(),
                    status.as_ptr(),
                );
                if let Err(e) = status.check() {
                    sys::TF_DeleteSessionOptions(opts);
                    return Err(e);
                }
            }
            let graph = sys::TF_NewGraph();
            let session = sys::TF_LoadSessionFromSavedModel(
                opts,
                std::ptr::null(),
                dir.as_ptr(),
                tag_ptrs.as_ptr(),
                tag_ptrs.len() as c_int,
                graph,
                meta.0,
                status.as_ptr(),
            );
            sys::TF_DeleteSessionOptions(opts);
            if let Err(e) = status.check() {
                sys::TF_DeleteGraph(graph);
                return Err(e);
            }
            // Owned from here on: an early return below frees graph and session.
            let mut model = SavedModel {
                graph,
                session,
                meta_graph_def: MetaGraphDef::default(),
            };
            model.meta_graph_def = MetaGraphDef::decode(meta.to_vec().as_slice()).map_err(|e| {
                TfError::internal(format!("cannot decode MetaGraphDef of {export_dir}: {e}"))
            })?;
            Ok(model)
        }
    }

    /// Resolves a TensorInfo name (`op` or `op:index`) in this model's graph.
    pub fn tensor(&self, name: &str) -> Result<TensorRef, TfError> {
        let (op, index) = match name.rsplit_once(':') {
            Some((op, idx)) => (
                op,
                idx.parse::<c_int>()
                    .map_err(|_| TfError::internal(format!("bad tensor name {name}")))?,
            ),
            None => (name, 0),
        };
        let c = CString::new(op).map_err(|_| TfError::internal("tensor name contains NUL"))?;
        // SAFETY: graph is live; c is a valid C string for the call.
        let oper = unsafe { sys::TF_GraphOperationByName(self.graph, c.as_ptr()) };
        if oper.is_null() {
            return Err(TfError::internal(format!(
                "tensor {name} not found in graph"
            )));
        }
        Ok(TensorRef { oper, index })
    }

    /// Feeds `inputs` and fetches `outputs`, which stay in TensorFlow's buffers (see
    /// [`RunOutputs`]). A non-zero `timeout_ms` becomes `RunOptions.timeout_in_ms`:
    /// TensorFlow cancels the run with DEADLINE_EXCEEDED when it passes. `inline` runs
    /// every op on this thread instead of the inter-op pool (`crate::run_mode`).
    pub fn run(
        &self,
        inputs: Vec<(TensorRef, Feed)>,
        outputs: &[TensorRef],
        timeout_ms: u64,
        inline: bool,
    ) -> Result<RunOutputs, TfError> {
        let run_options = run_options(timeout_ms, inline).map(|b| Buffer::from_bytes(&b));
        let mut refs = Vec::with_capacity(inputs.len());
        let mut feeds = Vec::with_capacity(inputs.len());
        for (r, feed) in inputs {
            refs.push(r);
            feeds.push(match feed {
                Feed::Copy(t) => InputTensor::from_tensor(&t)?,
                Feed::InPlace {
                    dtype,
                    shape,
                    payload,
                } => InputTensor::from_payload(dtype, &shape, payload)?,
            });
        }
        let feed_ptrs: Vec<*mut sys::TF_Tensor> = feeds.iter().map(|t| t.as_ptr()).collect();
        let input_ops: Vec<sys::TF_Output> = refs
            .iter()
            .map(|r| sys::TF_Output {
                oper: r.oper,
                index: r.index,
            })
            .collect();
        let output_ops: Vec<sys::TF_Output> = outputs
            .iter()
            .map(|r| sys::TF_Output {
                oper: r.oper,
                index: r.index,
            })
            .collect();
        let mut fetched: Vec<*mut sys::TF_Tensor> = vec![std::ptr::null_mut(); outputs.len()];
        let status = Status::new();
        // SAFETY: all arrays have the lengths passed; feeds stay alive until after the
        // call (TF does not take ownership of inputs); TF writes one owned tensor per
        // output into `fetched`.
        unsafe {
            sys::TF_SessionRun(
                self.session,
                run_options
                    .as_ref()
                    .map_or(std::ptr::null(), |b| b.0 as *const _),
                input_ops.as_ptr(),
                feed_ptrs.as_ptr(),
                input_ops.len() as c_int,
                output_ops.as_ptr(),
                fetched.as_mut_ptr(),
                output_ops.len() as c_int,
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                status.as_ptr(),
            );
        }
        // Take ownership first, so fetched tensors are freed on every path.
        let outputs: Vec<OutputTensor> = fetched.into_iter().map(OutputTensor).collect();
        status.check()?;
        Ok(RunOutputs { outputs, feeds })
    }
}

/// A run's outputs, read where TensorFlow left them: the response frame is encoded
/// straight from these buffers into the response arena, with no copy in between. The
/// feeds live as long, since an output may alias an input's buffer.
pub struct RunOutputs {
    // Declared first: outputs are freed before the feeds they may alias.
    outputs: Vec<OutputTensor>,
    feeds: Vec<InputTensor>,
}

impl RunOutputs {
    /// Each output, checked, in fetch order.
    pub fn views(&self) -> Result<Vec<OutputView<'_>>, TfError> {
        let shared: Vec<_> = self.feeds.iter().filter_map(InputTensor::shared).collect();
        self.outputs.iter().map(|o| o.view(&shared)).collect()
    }
}

impl Drop for SavedModel {
    fn drop(&mut self) {
        let status = Status::new();
        // SAFETY: session and graph are owned by self and freed exactly once, session first.
        unsafe {
            sys::TF_CloseSession(self.session, status.as_ptr());
            sys::TF_DeleteSession(self.session, status.as_ptr());
            sys::TF_DeleteGraph(self.graph);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_options_carry_the_timeout_and_the_pool() {
        // Field 2 (timeout_in_ms) and field 3 (inter_op_thread_pool), as varints.
        assert_eq!(run_options(0, false), None);
        assert_eq!(run_options(1, false), Some(vec![0x10, 1]));
        assert_eq!(
            run_options(30_000, false),
            Some(vec![0x10, 0xb0, 0xea, 0x01])
        );
        let inline = run_options(0, true).expect("set");
        assert_eq!(
            tfgate_proto::tensorflow::RunOptions::decode(inline.as_slice())
                .expect("decodes")
                .inter_op_thread_pool,
            -1
        );
    }
}
