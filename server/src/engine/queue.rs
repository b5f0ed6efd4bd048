//! A model's queue places and per-model admission: a request takes one place per
//! input before it is tokenized and holds them until its job leaves the queue, so the
//! work waiting for a model is bounded by `batching.max_queue_inputs`. A request that
//! finds too few places free is refused at once, with a hint of when to retry.

use super::error::EngineError;
use super::estimate::Estimate;
use crate::config::Batching;
use crate::metrics::ModelMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shortest and longest retry hint sent with a full queue.
const RETRY_HINT: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(60));

/// A model's queue places (`max_queue_inputs` of them).
pub struct Queue {
    model: String,
    limits: Batching,
    estimate: Arc<Estimate>,
    metrics: Arc<ModelMetrics>,
    places: Arc<Semaphore>,
}

impl Queue {
    /// The queue of `model`, with `limits.max_queue_inputs` places; the retry hint
    /// follows `estimate`, and `metrics`' queue-depth gauge follows the places taken.
    pub fn new(
        model: &str,
        limits: &Batching,
        estimate: Arc<Estimate>,
        metrics: Arc<ModelMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            model: model.to_string(),
            limits: limits.clone(),
            estimate,
            metrics,
            places: Arc::new(Semaphore::new(limits.max_queue_inputs)),
        })
    }

    /// Places taken: inputs waiting (including those being tokenized) or running.
    pub fn taken(&self) -> usize {
        self.limits.max_queue_inputs - self.places.available_permits()
    }

    /// Reserves `inputs` places, or fails with [`EngineError::Overloaded`] and a retry
    /// hint.
    pub fn admit(self: &Arc<Self>, inputs: usize) -> Result<QueueSlot, EngineError> {
        let permit = u32::try_from(inputs)
            .ok()
            .and_then(|n| Arc::clone(&self.places).try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            let queued = self.taken();
            let capacity = self.limits.max_queue_inputs;
            return Err(EngineError::Overloaded {
                message: format!(
                    "model {} is overloaded: {queued} of {capacity} queue places taken \
                     (batching.max_queue_inputs = {capacity}), {inputs} requested",
                    self.model
                ),
                retry_after: self.retry_hint((queued + inputs).saturating_sub(capacity)),
            });
        };
        self.metrics.set_queue_depth(self.taken());
        Ok(QueueSlot {
            permit: Some(permit),
            queue: Arc::clone(self),
        })
    }

    /// When `missing` more queue places will likely be free: the batches needed to run
    /// that many inputs at the recent mean batch time, plus the batching delay.
    fn retry_hint(&self, missing: usize) -> Duration {
        let batches = missing.max(1).div_ceil(self.limits.max_batch_size) as u32;
        let delay = Duration::from_micros(self.limits.max_queue_delay_us);
        (self.estimate.mean_batch() * batches + delay).clamp(RETRY_HINT.0, RETRY_HINT.1)
    }
}

/// Places held in a model's queue by one request, from admission (before
/// tokenization) until its job leaves the queue: answered, failed, or dropped because
/// its caller went away or its deadline passed. The queue-depth gauge follows.
pub struct QueueSlot {
    permit: Option<OwnedSemaphorePermit>,
    queue: Arc<Queue>,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.queue.metrics.set_queue_depth(self.queue.taken());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_held_until_the_slot_goes_and_overload_hints_a_retry() {
        let limits = Batching {
            max_batch_size: 4,
            max_batch_tokens: 100,
            max_queue_delay_us: 0,
            max_queue_inputs: 5,
        };
        let estimate = Arc::new(Estimate::default());
        estimate.record(Duration::from_millis(40), 10);
        let queue = Queue::new("m", &limits, estimate, Arc::new(ModelMetrics::new("m")));
        let slot = queue.admit(3).unwrap();
        assert_eq!(queue.taken(), 3);
        let Err(EngineError::Overloaded {
            message,
            retry_after,
        }) = queue.admit(7)
        else {
            panic!("7 places admitted with 2 free")
        };
        assert_eq!(
            message,
            "model m is overloaded: 3 of 5 queue places taken (batching.max_queue_inputs = 5), 7 requested"
        );
        // 5 inputs missing: 2 batches of 4 at 40 ms each.
        assert_eq!(retry_after, Duration::from_millis(80));
        drop(slot);
        assert_eq!(queue.taken(), 0);
        assert!(queue.admit(5).is_ok());
    }
}
