//! The server-wide budget of request bytes held in memory
//! (`limits.max_request_memory_bytes`).
//!
//! A gRPC call is charged each request message's length as soon as the message's
//! 5-byte prefix arrives, before its bytes are buffered and decoded; the charge is held
//! while the call handles that message: until the call's next message arrives (the
//! handler asked for it) or the call ends. An HTTP API call is charged its body's
//! declared length (the most it may send, `limits.max_message_bytes`, when undeclared)
//! until its response is sent. A message that does not fit in what is left is answered
//! `RESOURCE_EXHAUSTED` with a retry hint, and its bytes are never read. Health checks
//! and reflection are not charged.

use crate::admission::{Guarded, EXEMPT_PREFIXES, RETRY_AFTER};
use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tonic::body::Body;
use tower::{Layer, Service};

/// Bytes of a gRPC message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// The budget, shared by every connection and both APIs.
#[derive(Clone)]
pub struct RequestMemory {
    used: Arc<AtomicUsize>,
    limit: usize,
}

impl RequestMemory {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            used: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// `bytes` of the budget, released when the charge is dropped; `None` when they do
    /// not fit in what is left.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .ok()?;
        Some(Charge {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Why a request of `bytes` is refused.
    pub fn refusal(&self, bytes: usize) -> String {
        format!(
            "the server is holding too many request bytes: {} of {} in use, this message needs {bytes} \
             (limits.max_request_memory_bytes = {})",
            self.used(),
            self.limit,
            self.limit
        )
    }
}

/// Bytes taken from a [`RequestMemory`], given back when dropped.
pub struct Charge {
    budget: RequestMemory,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl<S> Layer<S> for RequestMemory {
    type Service = MeteredService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MeteredService {
            inner,
            budget: self.clone(),
        }
    }
}

/// See [`RequestMemory`]: charges a gRPC call's request messages.
#[derive(Clone)]
pub struct MeteredService<S> {
    inner: S,
    budget: RequestMemory,
}

/// The charge of the message a call is handling, shared by its request body (which
/// replaces it as messages arrive) and its response body (which keeps it until sent).
type Held = Arc<Mutex<Option<Charge>>>;

impl<S> Service<http::Request<Body>> for MeteredService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if EXEMPT_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Box::pin(self.inner.call(request));
        }
        let held = Held::default();
        let (budget, for_body) = (self.budget.clone(), Arc::clone(&held));
        let request = request.map(|body| {
            Body::new(Metered {
                body,
                budget,
                held: for_body,
                framing: Framing::default(),
            })
        });
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| Body::new(Guarded::new(body, held))))
        })
    }
}

/// Where a request body is in its sequence of gRPC messages.
#[derive(Default)]
struct Framing {
    /// Prefix bytes of the next message seen so far.
    prefix: Vec<u8>,
    /// Bytes of the current message still to come.
    remaining: usize,
}

impl Framing {
    /// Reads `chunk`; returns the lengths of the messages whose prefix it completes.
    fn feed(&mut self, mut chunk: &[u8]) -> Vec<usize> {
        let mut started = Vec::new();
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(chunk.len());
                self.remaining -= skip;
                chunk = &chunk[skip..];
                continue;
            }
            let take = (PREFIX - self.prefix.len()).min(chunk.len());
            self.prefix.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.prefix.len() == PREFIX {
                let len = u32::from_be_bytes(self.prefix[1..].try_into().expect("4 bytes"));
                self.prefix.clear();
                self.remaining = len as usize;
                started.push(len as usize);
            }
        }
        started
    }
}

/// A gRPC request body that charges each message before passing its bytes on.
struct Metered {
    body: Body,
    budget: RequestMemory,
    held: Held,
    framing: Framing,
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            for len in self.framing.feed(data.chunk()) {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                // The previous message is handled (the call asked for the next one).
                *held = None;
                match self.budget.try_charge(len) {
                    Some(charge) => *held = Some(charge),
                    None => {
                        crate::metrics::record_request_memory_refusal();
                        let status = crate::services::status::overloaded(
                            self.budget.refusal(len),
                            RETRY_AFTER,
                        );
                        return Poll::Ready(Some(Err(status)));
                    }
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
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

    fn message(len: usize) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, len));
        bytes
    }

    #[test]
    fn charges_fit_the_budget_and_are_given_back() {
        let budget = RequestMemory::new(100);
        let a = budget.try_charge(60).unwrap();
        assert!(budget.try_charge(41).is_none());
        let b = budget.try_charge(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.try_charge(101).is_none());
        assert!(budget
            .refusal(101)
            .contains("0 of 100 in use, this message needs 101"));
    }

    #[test]
    fn message_lengths_are_read_from_prefixes_split_anywhere() {
        let mut stream = message(3);
        stream.extend(message(0));
        stream.extend(message(300));
        stream.extend(message(2));
        for split in 1..stream.len() {
            let mut framing = Framing::default();
            let mut seen = Vec::new();
            for chunk in stream.chunks(split) {
                seen.extend(framing.feed(chunk));
            }
            assert_eq!(seen, [3, 0, 300, 2], "chunks of {split}");
        }
    }
}
