//! gRPC statuses: engine errors as statuses, the overload status with its retry hint,
//! and the rewrite of tonic's oversize status.

use crate::engine::error::{retry_millis, EngineError};
use std::time::Duration;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Status {
        let code = match error {
            EngineError::Overloaded {
                message,
                retry_after,
            } => return overloaded(message, retry_after),
            EngineError::Storage(error) => return error.into(),
            EngineError::Invalid(_) => Code::InvalidArgument,
            EngineError::NotFound(_) => Code::NotFound,
            EngineError::AlreadyExists(_) => Code::AlreadyExists,
            EngineError::OutsidePluginDir(_) => Code::PermissionDenied,
            EngineError::Precondition(_) => Code::FailedPrecondition,
            EngineError::Exhausted(_) => Code::ResourceExhausted,
            EngineError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            EngineError::ShuttingDown(_) => Code::Unavailable,
            EngineError::Unsupported(_) => Code::Unimplemented,
            EngineError::Internal(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

/// `RESOURCE_EXHAUSTED` with a retry hint, in the two standard forms: the
/// `grpc-retry-pushback-ms` trailer that gRPC retry policies obey, and a
/// `google.rpc.RetryInfo` detail for clients reading rich errors. The message ends with
/// the hint too, for people.
pub fn overloaded(message: String, retry_after: Duration) -> Status {
    let ms = retry_millis(retry_after);
    let mut metadata = MetadataMap::new();
    metadata.insert("grpc-retry-pushback-ms", MetadataValue::from(ms as u64));
    Status::with_error_details_and_metadata(
        Code::ResourceExhausted,
        format!("{message}; retry in {ms} ms"),
        ErrorDetails::with_retry_info(Some(retry_after)),
        metadata,
    )
}

/// tonic answers a message over the size limit with `OUT_OF_RANGE`; the gRPC spec and
/// the reference implementations use `RESOURCE_EXHAUSTED`. Rewrites that one case in a
/// trailers-only response (how tonic returns a unary request it could not decode).
pub fn oversize_as_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let oversize = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if oversize {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_their_codes_and_messages() {
        let status = Status::from(EngineError::Invalid("input 0 is an empty string".into()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "input 0 is an empty string");
        let status = Status::from(EngineError::ShuttingDown("model m is shutting down".into()));
        assert_eq!(status.code(), Code::Unavailable);
        let status = Status::from(EngineError::Overloaded {
            message: "model m is overloaded".into(),
            retry_after: Duration::from_millis(25),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "model m is overloaded; retry in 25 ms");
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "25"
        );
        let stored = crate::engine::error::storage(
            crate::retrieval::error::StorageError::CollectionNotFound("c".into()),
        );
        let status = Status::from(stored);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "collection \"c\" does not exist");
    }
}
