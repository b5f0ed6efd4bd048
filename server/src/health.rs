//! `grpc.health.v1.Health`: the server and each of its services are `SERVING` until the
//! shutdown drain starts, then `NOT_SERVING`. `Watch` streams send that last change
//! and end, so that they do not hold the drain open.

use crate::shutdown::Drain;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The health service over the named services ("" is the whole server).
pub struct HealthApi {
    services: Vec<&'static str>,
    drain: Drain,
}

impl HealthApi {
    /// A health server reporting `services` (and "") while `drain` has not started.
    pub fn server(services: Vec<&'static str>, drain: Drain) -> HealthServer<HealthApi> {
        HealthServer::new(HealthApi { services, drain })
    }

    fn known(&self, service: &str) -> Result<(), Status> {
        if service.is_empty() || self.services.contains(&service) {
            Ok(())
        } else {
            Err(Status::not_found(format!("unknown service {service:?}")))
        }
    }
}

/// Where a `Watch` stream stands.
enum Step {
    /// Send the current state.
    Now(watch::Receiver<bool>),
    /// Wait for a change, then send it.
    Next(watch::Receiver<bool>),
    /// NOT_SERVING was sent.
    Done,
}

fn response(draining: bool) -> HealthCheckResponse {
    let status = if draining {
        ServingStatus::NotServing
    } else {
        ServingStatus::Serving
    };
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.known(&request.get_ref().service)?;
        Ok(Response::new(response(self.drain.started())))
    }

    type WatchStream = BoxStream<'static, Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.known(&request.get_ref().service)?;
        // The current state, then the drain's start; after NOT_SERVING the stream ends.
        let states = futures::stream::unfold(Step::Now(self.drain.watch()), |step| async move {
            let mut watch = match step {
                Step::Now(watch) => watch,
                Step::Next(mut watch) => {
                    watch.changed().await.ok()?;
                    watch
                }
                Step::Done => return None,
            };
            let draining = *watch.borrow_and_update();
            let next = if draining {
                Step::Done
            } else {
                Step::Next(watch)
            };
            Some((Ok(response(draining)), next))
        });
        Ok(Response::new(states.boxed()))
    }
}
