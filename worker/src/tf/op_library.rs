//! Op libraries: shared objects that register ops and kernels with TensorFlow's global
//! registries (`TF_LoadLibrary`), and what those registries hold.

use super::status::{Status, TfError};
use std::ffi::{CStr, CString};
use std::path::Path;
use tensorflow_sys as sys;

/// `tensorflow.OpList`, only the op names (field 1 of each `OpDef`).
#[derive(Clone, PartialEq, prost::Message)]
struct OpList {
    #[prost(message, repeated, tag = "1")]
    op: Vec<OpName>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OpName {
    #[prost(string, tag = "1")]
    name: String,
}

/// `tensorflow.KernelList`, each `KernelDef` kept as its serialized bytes: two equal
/// byte strings are one kernel registered twice.
#[derive(Clone, PartialEq, prost::Message)]
struct KernelList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    kernel: Vec<Vec<u8>>,
}

/// The op a serialized `KernelDef` is for (its field 1).
pub fn kernel_op(kernel_def: &[u8]) -> String {
    use prost::Message;
    OpName::decode(kernel_def)
        .map(|k| k.name)
        .unwrap_or_default()
}

/// Loads the shared library at `path` into the process and registers its ops and
/// kernels; returns the names of the ops it registered (an op TensorFlow already knew
/// is not among them). A library stays loaded for the life of the process.
pub fn load(path: &Path) -> Result<Vec<String>, TfError> {
    use prost::Message;
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| TfError::invalid_argument("op library path contains NUL"))?;
    let status = Status::new();
    // SAFETY: `c_path` is a NUL-terminated string and `status` a live status, both valid
    // for the call; TF returns null on failure (with the loader's message in `status`).
    let handle = unsafe { sys::TF_LoadLibrary(c_path.as_ptr(), status.as_ptr()) };
    status.check()?;
    if handle.is_null() {
        return Err(TfError::internal("TF_LoadLibrary returned no handle"));
    }
    // SAFETY: `handle` is the live library handle just returned; the buffer it returns
    // by value points into the handle, which outlives the copy made here.
    let bytes = unsafe {
        let list = sys::TF_GetOpList(handle);
        if list.data.is_null() || list.length == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(list.data as *const u8, list.length).to_vec()
        }
    };
    // SAFETY: frees the handle (and its op list, copied above) once; the library itself
    // and what it registered stay loaded, as TF_DeleteLibraryHandle documents.
    unsafe { sys::TF_DeleteLibraryHandle(handle) };
    let ops = OpList::decode(bytes.as_slice())
        .map_err(|e| TfError::internal(format!("malformed OpList from {}: {e}", path.display())))?;
    Ok(ops.op.into_iter().map(|o| o.name).collect())
}

/// Every kernel registered in the process, each a serialized `KernelDef`.
pub fn registered_kernels() -> Result<Vec<Vec<u8>>, TfError> {
    use prost::Message;
    let status = Status::new();
    // SAFETY: `status` is live for the call; the returned buffer is ours to delete.
    let buffer = unsafe { sys::TF_GetAllRegisteredKernels(status.as_ptr()) };
    status.check()?;
    if buffer.is_null() {
        return Err(TfError::internal(
            "TF_GetAllRegisteredKernels returned nothing",
        ));
    }
    // SAFETY: a TF-filled buffer holds `length` readable bytes at `data` (or is empty);
    // it is decoded before the buffer is deleted, once, below.
    let decoded = unsafe {
        let b = &*buffer;
        let bytes = if b.data.is_null() || b.length == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(b.data as *const u8, b.length)
        };
        let decoded = KernelList::decode(bytes);
        sys::TF_DeleteBuffer(buffer);
        decoded
    };
    decoded
        .map(|l| l.kernel)
        .map_err(|e| TfError::internal(format!("malformed KernelList: {e}")))
}

/// The TensorFlow version the worker runs on (`TF_Version`), e.g. `2.21.0`.
pub fn tensorflow_version() -> String {
    // SAFETY: TF_Version returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::TF_Version()) }
        .to_string_lossy()
        .into_owned()
}
