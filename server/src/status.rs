//! Mapping errors to gRPC statuses.

use marquee_plugin_api::host::HostError;
use marquee_plugin_api::Status as PluginStatus;
use tonic::{Code, Status};

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
