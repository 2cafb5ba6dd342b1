//! The one error type for everything a request can fail with: a TF Serving status code
//! and TF Serving's message. It is classified once, where the failure is found, and
//! mapped once at the edge by the two tables below it: [`http_status`] for every HTTP
//! front end (TF Serving's REST, V2 over HTTP) and `From<ServingError> for
//! tonic::Status` for every gRPC one. The code's name is the label metrics use.

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

/// The HTTP status of a code, as TF Serving's REST server answers it
/// (`http_server.cc::ToHTTPStatusCode`); V2 over HTTP uses the same table.
pub fn http_status(code: Code) -> u16 {
    match code {
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

/// TF Serving cuts gRPC error messages at this many bytes.
const MAX_GRPC_MESSAGE: usize = 1024;

/// The gRPC status of an error: its code, and the message cut as TF Serving cuts it.
impl From<ServingError> for tonic::Status {
    fn from(e: ServingError) -> tonic::Status {
        let code = tonic::Code::from_i32(e.code.canonical());
        if e.message.len() <= MAX_GRPC_MESSAGE {
            return tonic::Status::new(code, e.message);
        }
        let mut cut = MAX_GRPC_MESSAGE;
        while !e.message.is_char_boundary(cut) {
            cut -= 1;
        }
        tonic::Status::new(code, format!("{}...TRUNCATED", &e.message[..cut]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_keep_their_code_and_long_messages_are_cut() {
        let s = tonic::Status::from(ServingError::not_found("gone"));
        assert_eq!((s.code(), s.message()), (tonic::Code::NotFound, "gone"));
        let s = tonic::Status::from(ServingError::internal("a".repeat(2000)));
        assert_eq!(s.code(), tonic::Code::Internal);
        assert_eq!(s.message().len(), 1024 + "...TRUNCATED".len());
        assert!(s.message().ends_with("...TRUNCATED"));
    }

    #[test]
    fn http_statuses_follow_tf_serving() {
        assert_eq!(http_status(Code::Unimplemented), 501);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(http_status(Code::Cancelled), 499);
    }
}
