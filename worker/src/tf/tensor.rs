//! Owned `TF_Tensor`s, built from and copied into [`tfgate_tensor::tensor::Tensor`].

use super::status::TfError;
use shm_protocol::InPlacePayload;
use std::mem::size_of;
use std::ops::Range;
use tensorflow_sys as sys;
use tfgate_tensor::tensor::{num_elements, DataType, Tensor, TensorData};

/// Converts tfgate's dtype to the C API's.
pub(crate) fn to_tf_dtype(dtype: DataType) -> sys::TF_DataType {
    use sys::TF_DataType as T;
    match dtype {
        DataType::Float => T::TF_FLOAT,
        DataType::Double => T::TF_DOUBLE,
        DataType::Int32 => T::TF_INT32,
        DataType::Uint8 => T::TF_UINT8,
        DataType::Int16 => T::TF_INT16,
        DataType::Int8 => T::TF_INT8,
        DataType::String => T::TF_STRING,
        DataType::Complex64 => T::TF_COMPLEX64,
        DataType::Int64 => T::TF_INT64,
        DataType::Bool => T::TF_BOOL,
        DataType::Bfloat16 => T::TF_BFLOAT16,
        DataType::Uint16 => T::TF_UINT16,
        DataType::Complex128 => T::TF_COMPLEX128,
        DataType::Half => T::TF_HALF,
        DataType::Uint32 => T::TF_UINT32,
        DataType::Uint64 => T::TF_UINT64,
    }
}

/// A tensor allocated by this process and fed to a session. Strings are initialised
/// `TF_TString`s that this type deallocates.
pub(crate) struct InputTensor {
    ptr: *mut sys::TF_Tensor,
    strings: usize,
    /// The addresses of a payload fed in place from shared memory.
    shared: Option<Range<usize>>,
}

// SAFETY: a TF_Tensor is a plain heap object with no thread affinity; InputTensor owns it
// exclusively.
unsafe impl Send for InputTensor {}

impl InputTensor {
    /// Allocates a TF tensor holding a copy of `t`.
    pub(crate) fn from_tensor(t: &Tensor) -> Result<InputTensor, TfError> {
        t.check()
            .map_err(|e| TfError::invalid_argument(format!("bad tensor: {e}")))?;
        let n = t.num_elements();
        let byte_len = match &t.data {
            TensorData::Bytes(b) => b.len(),
            // Only the gateway holds a client's file; a frame never carries one.
            TensorData::File(_) => {
                return Err(TfError::internal(
                    "a tensor still in a file reached a worker",
                ))
            }
            TensorData::Strings(s) => s.len() * size_of::<sys::TF_TString>(),
        };
        let dims = t.shape.as_slice();
        let rank = i32::try_from(dims.len())
            .map_err(|_| TfError::invalid_argument("tensor rank too large"))?;
        // SAFETY: dims points to `rank` i64s; TF copies them. A null result means failure.
        let ptr =
            unsafe { sys::TF_AllocateTensor(to_tf_dtype(t.dtype), dims.as_ptr(), rank, byte_len) };
        if ptr.is_null() {
            return Err(TfError::internal("TF_AllocateTensor failed"));
        }
        let mut out = InputTensor {
            ptr,
            strings: 0,
            shared: None,
        };
        match &t.data {
            TensorData::Bytes(b) => {
                if !b.is_empty() {
                    // SAFETY: TF allocated byte_len == b.len() bytes at TF_TensorData; the
                    // regions cannot overlap (ours is a Rust Vec).
                    unsafe {
                        let dst = sys::TF_TensorData(out.ptr) as *mut u8;
                        std::ptr::copy_nonoverlapping(b.as_ptr(), dst, b.len());
                    }
                }
            }
            TensorData::File(_) => {}
            TensorData::Strings(s) => {
                // SAFETY: the buffer holds n TF_TStrings (byte_len above); each is
                // initialised before use and counted in `strings` so Drop frees exactly
                // the initialised ones.
                unsafe {
                    let base = sys::TF_TensorData(out.ptr) as *mut sys::TF_TString;
                    for (i, bytes) in s.iter().enumerate().take(n) {
                        let ts = base.add(i);
                        sys::TF_StringInit(ts);
                        out.strings = i + 1;
                        sys::TF_StringCopy(ts, bytes.as_ptr() as *const _, bytes.len());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Wraps a numeric payload that stays in shared memory: TensorFlow reads it in place,
    /// with no copy. The payload (and so the mapping) lives until TensorFlow releases the
    /// buffer, which may be after this value drops. TF does not write into or forward a
    /// buffer it does not own, so the request arena is only ever read.
    pub(crate) fn from_payload(
        dtype: DataType,
        shape: &[i64],
        payload: InPlacePayload,
    ) -> Result<InputTensor, TfError> {
        let expected = num_elements(shape)
            .ok()
            .and_then(|n| n.checked_mul(dtype.element_size()?))
            .ok_or_else(|| TfError::invalid_argument("bad tensor shape"))?;
        if expected != payload.len() {
            return Err(TfError::invalid_argument(
                "tensor size does not match its shape",
            ));
        }
        let rank = i32::try_from(shape.len())
            .map_err(|_| TfError::invalid_argument("tensor rank too large"))?;
        let data = payload.as_ptr() as *mut std::os::raw::c_void;
        let len = payload.len();
        let arg = Box::into_raw(Box::new(payload));

        /// Called by TensorFlow when the last reference to the buffer goes away.
        unsafe extern "C" fn release(
            _data: *mut std::os::raw::c_void,
            _len: usize,
            arg: *mut std::os::raw::c_void,
        ) {
            // SAFETY: `arg` is the Box::into_raw above, handed to TF exactly once; TF calls
            // the deallocator exactly once.
            drop(unsafe { Box::from_raw(arg as *mut InPlacePayload) });
        }

        // SAFETY: `data` is valid for `len` bytes of reads for as long as the boxed payload
        // lives, which TF keeps until it calls `release`; the length matches dtype × shape
        // (checked above), so TF_NewTensor cannot fail on size.
        let ptr = unsafe {
            sys::TF_NewTensor(
                to_tf_dtype(dtype),
                shape.as_ptr(),
                rank,
                data,
                len,
                Some(release),
                arg as *mut _,
            )
        };
        if ptr.is_null() {
            // SAFETY: TF refused the tensor without taking ownership of `arg`.
            drop(unsafe { Box::from_raw(arg) });
            return Err(TfError::internal("TF_NewTensor failed"));
        }
        Ok(InputTensor {
            ptr,
            strings: 0,
            shared: Some(data as usize..data as usize + len),
        })
    }

    /// Where the shared-memory payload lies, for an in-place input.
    pub(crate) fn shared(&self) -> Option<Range<usize>> {
        self.shared.clone()
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::TF_Tensor {
        self.ptr
    }
}

impl Drop for InputTensor {
    fn drop(&mut self) {
        // SAFETY: the first `strings` elements were initialised by TF_StringInit; the
        // buffer from TF_AllocateTensor does not run tstring destructors itself, so heap
        // strings are freed here, once, before the tensor is deleted.
        unsafe {
            if self.strings > 0 {
                let base = sys::TF_TensorData(self.ptr) as *mut sys::TF_TString;
                for i in 0..self.strings {
                    sys::TF_StringDealloc(base.add(i));
                }
            }
            sys::TF_DeleteTensor(self.ptr);
        }
    }
}

/// A tensor returned by `TF_SessionRun`, owned until dropped.
pub(crate) struct OutputTensor(pub(crate) *mut sys::TF_Tensor);

impl Drop for OutputTensor {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: TF_SessionRun handed us ownership of this tensor; deleted once.
            unsafe { sys::TF_DeleteTensor(self.0) }
        }
    }
}

/// An output read where TensorFlow left it: numeric bytes in place; copied when the
/// buffer is (part of) an input fed in place from shared memory, which the gateway may
/// write at any time, and for strings, as a `TF_TString` array is not one buffer.
pub(crate) enum OutputData<'a> {
    Bytes(&'a [u8]),
    Copied(Vec<u8>),
    Strings(Vec<Vec<u8>>),
}

/// A checked look at an [`OutputTensor`], valid while it lives.
pub struct OutputView<'a> {
    pub(crate) dtype: DataType,
    pub(crate) shape: Vec<i64>,
    pub(crate) data: OutputData<'a>,
}

impl OutputView<'_> {
    /// The frame encoder's borrowed form.
    pub fn as_frame_ref(&self) -> tfgate_frame::TensorRef<'_> {
        use tfgate_frame::{TensorDataRef, TensorRef};
        TensorRef {
            dtype: self.dtype,
            shape: &self.shape,
            data: match &self.data {
                OutputData::Bytes(b) => TensorDataRef::Bytes(b),
                OutputData::Copied(b) => TensorDataRef::Bytes(b),
                OutputData::Strings(s) => TensorDataRef::Strings(s),
            },
        }
    }
}

impl OutputTensor {
    /// Checks the tensor's dtype, shape and size and borrows its data, or copies it when
    /// it overlaps one of the `shared` (in-place input) ranges.
    pub(crate) fn view(&self, shared: &[Range<usize>]) -> Result<OutputView<'_>, TfError> {
        if self.0.is_null() {
            return Err(TfError::internal("session returned a null tensor"));
        }
        // SAFETY: self.0 is a live tensor owned by self; these accessors only read it.
        let (raw_dtype, rank) =
            unsafe { (sys::TF_TensorType(self.0) as i32, sys::TF_NumDims(self.0)) };
        let dtype = DataType::from_i32(raw_dtype).ok_or_else(|| {
            TfError::invalid_argument(format!(
                "Failed to write JSON value for tensor type: {raw_dtype}"
            ))
        })?;
        // SAFETY: dim indices are in 0..rank.
        let shape: Vec<i64> = (0..rank)
            .map(|i| unsafe { sys::TF_Dim(self.0, i) })
            .collect();
        // SAFETY: reads the live tensor's byte size and data pointer.
        let (len, data) = unsafe { (sys::TF_TensorByteSize(self.0), sys::TF_TensorData(self.0)) };
        let elements = tfgate_tensor::tensor::num_elements(&shape)
            .map_err(|e| TfError::internal(format!("bad output shape: {e}")))?;
        let data = match dtype.element_size() {
            Some(size) => {
                if elements.checked_mul(size) != Some(len) {
                    return Err(TfError::internal(
                        "output byte size does not match its shape",
                    ));
                }
                let at = data as usize;
                if len == 0 {
                    OutputData::Bytes(&[])
                } else if shared.iter().any(|r| at < r.end && r.start < at + len) {
                    let mut v = vec![0u8; len];
                    // SAFETY: TF guarantees `len` readable bytes at `data`; the bytes are
                    // copied as plain bytes (no reference to shared memory is formed).
                    unsafe {
                        std::ptr::copy_nonoverlapping(data as *const u8, v.as_mut_ptr(), len)
                    };
                    OutputData::Copied(v)
                } else {
                    // SAFETY: TF guarantees `len` readable bytes at `data` while the tensor
                    // lives; the buffer is TensorFlow's own (not shared memory, checked
                    // above), and the slice borrows self; nothing writes an output tensor.
                    OutputData::Bytes(unsafe { std::slice::from_raw_parts(data as *const u8, len) })
                }
            }
            None => {
                if elements.checked_mul(size_of::<sys::TF_TString>()) != Some(len) {
                    return Err(TfError::internal(
                        "string output size does not match its shape",
                    ));
                }
                let base = data as *const sys::TF_TString;
                let mut v = Vec::with_capacity(elements);
                for i in 0..elements {
                    // SAFETY: the tensor holds `elements` initialised TF_TStrings; each
                    // data pointer is valid for its reported size while the tensor lives.
                    let bytes = unsafe {
                        let ts = base.add(i);
                        let p = sys::TF_StringGetDataPointer(ts) as *const u8;
                        let n = sys::TF_StringGetSize(ts);
                        if n == 0 {
                            Vec::new()
                        } else {
                            std::slice::from_raw_parts(p, n).to_vec()
                        }
                    };
                    v.push(bytes);
                }
                OutputData::Strings(v)
            }
        };
        Ok(OutputView { dtype, shape, data })
    }
}
