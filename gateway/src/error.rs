//! The one error type for everything a request can fail with: a TF Serving status code
//! and TF Serving's message. It is classified once, where the failure is found; the
//! front ends map it once each — `rest::error_response` to an HTTP status and
//! `{"error": ...}`, `grpc`'s `From<ServingError> for tonic::Status` — and the code's
//! name is the label metrics use.

pub use tfgate_tensor::code::Code;

/// A failed request: its code and TF Serving's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.name())]
pub struct ServingError {
    pub code: Code,
    pub message: String,
}

impl ServingError {
    pub fn new(code: Code, message: impl Into<String>) -> ServingError {
        ServingError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_argument(message: impl Into<String>) -> ServingError {
        ServingError::new(Code::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> ServingError {
        ServingError::new(Code::NotFound, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> ServingError {
        ServingError::new(Code::Unimplemented, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> ServingError {
        ServingError::new(Code::FailedPrecondition, message)
    }
    pub fn unavailable(message: impl Into<String>) -> ServingError {
        ServingError::new(Code::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> ServingError {
        ServingError::new(Code::Internal, message)
    }
    pub fn resource_exhausted(message: impl Into<String>) -> ServingError {
        ServingError::new(Code::ResourceExhausted, message)
    }
    /// The request's deadline passed (gRPC's own wording, which TF Serving passes on).
    pub fn deadline_exceeded() -> ServingError {
        ServingError::new(Code::DeadlineExceeded, "Deadline Exceeded")
    }
}

impl From<tfgate_tensor::code::Status> for ServingError {
    fn from(s: tfgate_tensor::code::Status) -> ServingError {
        ServingError::new(s.code, s.message)
    }
}
