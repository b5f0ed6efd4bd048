//! Mapping errors to gRPC statuses.

use marquee_plugin_api::host::HostError;
use marquee_plugin_api::Status as PluginStatus;
use std::time::Duration;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The gRPC status for a plugin failure.
pub fn from_host(error: &HostError) -> Status {
    let code = match error.status() {
        PluginStatus::InvalidArgument => Code::InvalidArgument,
        PluginStatus::NotFound => Code::NotFound,
        PluginStatus::ResourceExhausted => Code::ResourceExhausted,
        PluginStatus::Unimplemented => Code::Unimplemented,
        PluginStatus::Internal => Code::Internal,
    };
    Status::new(code, error.to_string())
}

/// `RESOURCE_EXHAUSTED` with a retry hint, in the two standard forms: the
/// `grpc-retry-pushback-ms` trailer that gRPC retry policies obey, and a
/// `google.rpc.RetryInfo` detail for clients reading rich errors. The message ends with
/// the hint too, for people.
pub fn overloaded(message: String, retry_after: Duration) -> Status {
    let ms = retry_after.as_millis().max(1);
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
