//! `TF_Status` as a Rust error.

use std::ffi::CStr;
use tensorflow_sys as sys;
use tfgate_tensor::code::Code;

/// An error reported by TensorFlow (its `TF_Code`, named once in [`Status::check`]) or
/// by the worker around it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TfError {
    pub code: Code,
    pub message: String,
}

impl TfError {
    pub fn new(code: Code, message: impl Into<String>) -> TfError {
        TfError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_argument(message: impl Into<String>) -> TfError {
        TfError::new(Code::InvalidArgument, message)
    }
    pub fn internal(message: impl Into<String>) -> TfError {
        TfError::new(Code::Internal, message)
    }
}

/// An owned `TF_Status`.
pub(crate) struct Status(*mut sys::TF_Status);

impl Status {
    pub(crate) fn new() -> Status {
        // SAFETY: TF_NewStatus has no preconditions and returns an owned, non-null status.
        Status(unsafe { sys::TF_NewStatus() })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::TF_Status {
        self.0
    }

    /// `Ok(())` if the status is OK, else the code and message.
    pub(crate) fn check(&self) -> Result<(), TfError> {
        // SAFETY: self.0 is a live status owned by self.
        let code = unsafe { sys::TF_GetCode(self.0) } as i32;
        if code == 0 {
            return Ok(());
        }
        // SAFETY: TF_Message returns a NUL-terminated string owned by the status, valid
        // until the status is next modified or deleted; we copy it out at once.
        let message = unsafe { CStr::from_ptr(sys::TF_Message(self.0)) }
            .to_string_lossy()
            .into_owned();
        Err(TfError {
            code: Code::from_canonical(code),
            message,
        })
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        // SAFETY: self.0 came from TF_NewStatus and is deleted exactly once.
        unsafe { sys::TF_DeleteStatus(self.0) }
    }
}
