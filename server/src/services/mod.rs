//! gRPC service implementations.

pub mod embedding;
pub mod evaluation;
pub mod models;
pub mod retrieval;

use std::future::Future;
use std::time::Instant;
use tonic::{Response, Status};

/// Runs an RPC body and records its status code and latency.
pub(crate) async fn observed<T>(
    rpc: &'static str,
    body: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let result = body.await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    crate::metrics::record_request(rpc, code, start.elapsed());
    if let Err(s) = &result {
        tracing::debug!(rpc, code = ?s.code(), message = s.message(), "request failed");
    }
    result.map(Response::new)
}
