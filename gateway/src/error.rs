//! One error type for everything a request can fail with, mapped to TF Serving's HTTP
//! status and gRPC code once, at the edge (`http_server.cc::ToHTTPStatusCode`).

use tonic::Code;

/// A failed request: a canonical (absl/gRPC) code and TF Serving's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
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

    /// The HTTP status TF Serving's REST server answers with for this code.
    pub fn http_status(&self) -> u16 {
        match self.code {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::Unauthenticated => 401,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
        }
    }

    /// The gRPC status, with the message cut at 1024 bytes as TF Serving does.
    pub fn to_status(&self) -> tonic::Status {
        const MAX: usize = 1024;
        if self.message.len() <= MAX {
            return tonic::Status::new(self.code, self.message.clone());
        }
        let mut cut = MAX;
        while !self.message.is_char_boundary(cut) {
            cut -= 1;
        }
        tonic::Status::new(self.code, format!("{}...TRUNCATED", &self.message[..cut]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_codes_like_tf_serving() {
        assert_eq!(ServingError::not_found("x").http_status(), 404);
        assert_eq!(ServingError::invalid_argument("x").http_status(), 400);
        assert_eq!(ServingError::failed_precondition("x").http_status(), 400);
        assert_eq!(ServingError::unavailable("x").http_status(), 503);
        assert_eq!(ServingError::unimplemented("x").http_status(), 501);
        assert_eq!(ServingError::resource_exhausted("x").http_status(), 429);
    }

    #[test]
    fn truncates_long_grpc_messages() {
        let e = ServingError::internal("a".repeat(2000));
        let s = e.to_status();
        assert_eq!(s.message().len(), 1024 + "...TRUNCATED".len());
        assert!(s.message().ends_with("...TRUNCATED"));
    }
}
