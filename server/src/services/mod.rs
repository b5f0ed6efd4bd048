//! The gRPC edge: service implementations (thin adapters between protobuf messages
//! and the engine or retrieval), call deadlines, and statuses.

pub mod deadline;
pub mod embedding;
pub mod evaluation;
pub mod generation;
pub mod generation_eval;
pub mod models;
pub mod retrieval;
pub mod status;
pub mod training;

use crate::engine::deadline::Deadline;
use std::future::Future;
use std::time::Instant;
use tonic::{Response, Status};

/// One RPC in progress, for the metrics: counted in flight while it lives, recorded as
/// `CANCELLED` if dropped unfinished before its deadline (its client went away; past
/// the deadline the deadline layer records it).
struct Call {
    rpc: &'static str,
    start: Instant,
    deadline: Option<Deadline>,
    finished: bool,
}

impl Call {
    fn start(rpc: &'static str, deadline: Option<Deadline>) -> Self {
        crate::metrics::add_in_flight(rpc, 1.0);
        Self {
            rpc,
            start: Instant::now(),
            deadline,
            finished: false,
        }
    }

    fn finish(mut self, code: tonic::Code) {
        self.finished = true;
        crate::metrics::record_request(self.rpc, code, self.start.elapsed());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        crate::metrics::add_in_flight(self.rpc, -1.0);
        if !self.finished && !self.deadline.is_some_and(|d| d.passed()) {
            crate::metrics::record_request(self.rpc, tonic::Code::Cancelled, self.start.elapsed());
        }
    }
}

/// Runs an RPC body until its deadline and records its status code and latency.
pub(crate) async fn observed<T>(
    rpc: &'static str,
    deadline: Option<Deadline>,
    body: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let call = Call::start(rpc, deadline);
    let result = crate::engine::deadline::within(deadline, body).await;
    call.finish(match &result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    });
    if let Err(s) = &result {
        tracing::debug!(rpc, code = ?s.code(), message = s.message(), "request failed");
    }
    result.map(Response::new)
}
