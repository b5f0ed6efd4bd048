//! Deadlines inside the engine: when a caller stops waiting, and whether work can still
//! finish before then. Work nobody waits for is never started: a request is refused
//! when it could not finish in time even at its model's fastest recent rate (see
//! [`Estimate::fastest`]). Where a deadline comes from (gRPC's `grpc-timeout`) is the
//! transport's business.

use super::error::EngineError;
use super::estimate::Estimate;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// Runs `work` until `deadline` (if any), failing with the deadline's error when it
/// passes first. `E` is the caller's error type (the engine's, or a transport's).
pub async fn within<T, E: From<EngineError>>(
    deadline: Option<Deadline>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match deadline {
        None => work.await,
        Some(d) => tokio::select! {
            biased;
            result = work => result,
            () = d.expiry() => Err(d.exceeded().into()),
        },
    }
}

/// When a call must be answered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// The moment it passes.
    pub at: Instant,
    /// The timeout the client asked for.
    pub timeout: Duration,
}

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The error of a call cut at this deadline.
    pub fn exceeded(&self) -> EngineError {
        EngineError::DeadlineExceeded(format!(
            "the call's deadline of {} ms passed",
            self.timeout.as_millis()
        ))
    }

    /// A future that completes when the deadline passes. It checks the clock itself, so
    /// it is never late relative to a timer set for the same moment or later.
    pub fn expiry(&self) -> Expiry {
        Expiry {
            at: self.at,
            sleep: Box::pin(tokio::time::sleep_until(self.at.into())),
        }
    }
}

/// Completes when a deadline passes (see [`Deadline::expiry`]).
pub struct Expiry {
    at: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl Future for Expiry {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        self.sleep.as_mut().poll(cx)
    }
}

/// The error for a request that would finish after its deadline.
pub fn cannot_finish(model: &str, needed: Duration, remaining: Duration) -> EngineError {
    EngineError::DeadlineExceeded(format!(
        "model {model} needs at least {} ms for this request and {} ms remain before its deadline; not run",
        needed.as_millis(),
        remaining.as_millis()
    ))
}

/// Refuses a request for `model` costing `cost` (tokens for text, inputs otherwise)
/// whose deadline has passed, or that cannot finish by it even at the model's fastest
/// recent rate.
pub fn check_can_finish(
    model: &str,
    estimate: &Estimate,
    deadline: Option<Deadline>,
    cost: usize,
) -> Result<(), EngineError> {
    let Some(deadline) = deadline else {
        return Ok(());
    };
    if deadline.passed() {
        return Err(deadline.exceeded());
    }
    match estimate.fastest(cost) {
        Some(needed) if needed > deadline.remaining() => {
            Err(cannot_finish(model, needed, deadline.remaining()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_that_cannot_finish_in_time_is_refused() {
        let estimate = Estimate::default();
        let soon = Some(Deadline::after(Duration::from_millis(50)));
        // No batch yet: nothing to judge by.
        assert!(check_can_finish("m", &estimate, soon, 1_000_000).is_ok());
        estimate.record(Duration::from_millis(10), 100);
        assert!(check_can_finish("m", &estimate, soon, 100).is_ok());
        let refused = check_can_finish("m", &estimate, soon, 1000).unwrap_err();
        assert!(
            matches!(&refused, EngineError::DeadlineExceeded(m) if m.starts_with("model m needs at least 100 ms")),
            "{refused}"
        );
        let passed = Some(Deadline::after(Duration::ZERO));
        let late = check_can_finish("m", &estimate, passed, 1).unwrap_err();
        assert_eq!(late.to_string(), "the call's deadline of 0 ms passed");
        assert!(check_can_finish("m", &estimate, None, 1_000_000).is_ok());
    }
}
