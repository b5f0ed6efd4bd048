//! Mapping plugin errors to gRPC statuses.

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
