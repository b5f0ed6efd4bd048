//! Server-wide admission: at most `limits.max_concurrent_requests` calls in progress.
//! A call holds its place until its response body (a stream's last message included)
//! is finished or dropped; beyond the limit a call is answered `RESOURCE_EXHAUSTED`
//! with a retry hint at once, before any work. Health checks and reflection are not
//! counted, so probes keep working under overload.

use futures::future::BoxFuture;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::{Layer, Service};

/// The retry hint of a call refused here: the server does not know when a place frees
/// up, so it suggests a short pause.
pub const RETRY_AFTER: Duration = Duration::from_millis(100);

/// Paths not counted (nor charged to the request memory budget).
pub const EXEMPT_PREFIXES: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// The places, shared by every connection.
#[derive(Clone)]
pub struct AdmissionLayer {
    places: Arc<Semaphore>,
    limit: usize,
}

impl AdmissionLayer {
    /// At most `limit` calls at once.
    pub fn new(limit: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A place for one call, held until the permit is dropped; `None` when all are
    /// taken. The HTTP API takes its places here too, so the limit covers both.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.places).try_acquire_owned().ok()
    }

    /// The most calls in progress at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Calls in progress now.
    pub fn in_progress(&self) -> usize {
        self.limit - self.places.available_permits()
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.clone(),
        }
    }
}

/// See [`AdmissionLayer`].
#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: AdmissionLayer,
}

impl<S, B> Service<http::Request<B>> for AdmissionService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if EXEMPT_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = Arc::clone(&self.admission.places).try_acquire_owned() else {
            let limit = self.admission.limit;
            crate::metrics::record_rejected(path, tonic::Code::ResourceExhausted);
            let status = crate::services::status::overloaded(
                format!(
                    "the server is overloaded: {limit} calls in progress (limits.max_concurrent_requests = {limit})"
                ),
                RETRY_AFTER,
            );
            return Box::pin(futures::future::ready(Ok(status.into_http())));
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| Body::new(Guarded::new(body, permit))))
        })
    }
}

/// A response body that keeps `guard` (a call's admission place, say) alive until the
/// body is finished or dropped.
pub struct Guarded<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> Guarded<B, G> {
    /// `body`, holding `guard`.
    pub fn new(body: B, guard: G) -> Self {
        Self {
            body,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body + Unpin, G: Unpin> http_body::Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::Ready;
    use std::convert::Infallible;

    /// A service answering every call with an empty body that never ends.
    #[derive(Clone)]
    struct Endless;

    impl Service<http::Request<()>> for Endless {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Ready<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let endless = http_body_util::StreamBody::new(futures::stream::pending::<
                Result<http_body::Frame<bytes::Bytes>, Infallible>,
            >());
            futures::future::ready(Ok(http::Response::new(Body::new(endless))))
        }
    }

    fn call(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn places_are_held_until_the_body_is_dropped() {
        let layer = AdmissionLayer::new(2);
        let mut service = layer.layer(Endless);
        let embed = "/marquee.v1.EmbeddingService/Embed";
        let a = service.call(call(embed)).await.unwrap();
        let _b = service.call(call(embed)).await.unwrap();
        assert_eq!(layer.in_progress(), 2);
        let refused = service.call(call(embed)).await.unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(refused.headers()["grpc-retry-pushback-ms"], "100");
        // Probes pass even now.
        let health = service
            .call(call("/grpc.health.v1.Health/Check"))
            .await
            .unwrap();
        assert!(tonic::Status::from_header_map(health.headers()).is_none());
        drop(a);
        assert_eq!(layer.in_progress(), 1);
        service.call(call(embed)).await.unwrap();
    }
}
