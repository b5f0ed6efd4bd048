//! gRPC deadlines. A tower layer reads the client's `grpc-timeout` when a call arrives,
//! hands the deadline to the handler (a request extension, an engine [`Deadline`]), and
//! answers `DEADLINE_EXCEEDED` when the call is still running at the deadline. Handlers
//! pass the deadline on to the engine, so that work nobody waits for is never started.
//!
//! tonic's own timeout layer, outside this one, would answer `CANCELLED` at the same
//! moment; this layer's deadline is taken earlier and checked against the clock, so
//! the `DEADLINE_EXCEEDED` answer always wins.

use crate::engine::deadline::{Deadline, Expiry};
use futures::future::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

/// Reading a call's deadline, as the deadline layer left it.
pub trait DeadlineOf {
    /// The deadline of a call, if its client set one.
    fn of<T>(request: &tonic::Request<T>) -> Option<Deadline>;
}

impl DeadlineOf for Deadline {
    fn of<T>(request: &tonic::Request<T>) -> Option<Deadline> {
        request.extensions().get::<Deadline>().copied()
    }
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Wraps a response stream so that it ends with `DEADLINE_EXCEEDED` at the deadline.
pub struct Bounded<S> {
    inner: S,
    expiry: Option<(Deadline, Expiry)>,
    done: bool,
}

impl<S> Bounded<S> {
    /// `inner`, cut at `deadline` if there is one.
    pub fn new(inner: S, deadline: Option<Deadline>) -> Self {
        Self {
            inner,
            expiry: deadline.map(|d| (d, d.expiry())),
            done: false,
        }
    }
}

impl<S, T> futures::Stream for Bounded<S>
where
    S: futures::Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            self.done = item.is_none();
            return Poll::Ready(item);
        }
        if let Some((deadline, expiry)) = &mut self.expiry {
            if Pin::new(expiry).poll(cx).is_ready() {
                let status = deadline.exceeded().into();
                self.done = true;
                return Poll::Ready(Some(Err(status)));
            }
        }
        Poll::Pending
    }
}

/// The layer that reads `grpc-timeout` and enforces it.
#[derive(Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone)]
pub struct DeadlineService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for DeadlineService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let Some(timeout) = timeout else {
            return Box::pin(self.inner.call(request));
        };
        let deadline = Deadline::after(timeout);
        request.extensions_mut().insert(deadline);
        let path = request.uri().path().to_string();
        let call = self.inner.call(request);
        Box::pin(async move {
            tokio::select! {
                biased;
                response = call => response,
                () = deadline.expiry() => {
                    // The handler had not started (or it would have answered first).
                    crate::metrics::record_rejected(&path, tonic::Code::DeadlineExceeded);
                    Ok(Status::from(deadline.exceeded()).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::deadline::within;
    use futures::StreamExt;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99999999))
        );
        assert_eq!(parse_grpc_timeout("5000000u"), Some(Duration::from_secs(5)));
        for bad in ["", "m", "1", "123456789S", "1x", "-1S", "1.5S", " 1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn work_past_its_deadline_is_cut() {
        let d = Some(Deadline::after(Duration::from_millis(5)));
        let slow = within(d, async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), Status>(())
        });
        assert_eq!(
            slow.await.unwrap_err().code(),
            tonic::Code::DeadlineExceeded
        );
        assert_eq!(within(None, async { Ok::<_, Status>(7) }).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn streams_end_with_deadline_exceeded() {
        let d = Deadline::after(Duration::from_millis(5));
        let endless = futures::stream::pending::<Result<u32, Status>>();
        let items: Vec<_> = Bounded::new(endless, Some(d)).collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].as_ref().unwrap_err().code(),
            tonic::Code::DeadlineExceeded
        );
        let short = futures::stream::iter([Ok(1), Ok(2)]);
        let items: Vec<_> = Bounded::new(short, Some(d)).collect().await;
        assert_eq!(items.len(), 2);
    }
}
