//! How fast a model has been running lately: the basis of the deadline check (can a
//! request still finish in time?) and of the retry hint sent with `RESOURCE_EXHAUSTED`
//! (when will the queue have room?).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Batches remembered.
const WINDOW: usize = 32;

/// One finished batch.
#[derive(Clone, Copy)]
struct Sample {
    elapsed: Duration,
    tokens: usize,
}

/// The last [`WINDOW`] batches of one model.
#[derive(Default)]
pub struct Estimate {
    recent: Mutex<VecDeque<Sample>>,
}

impl Estimate {
    /// Records a finished batch of `tokens` tokens.
    pub fn record(&self, elapsed: Duration, tokens: usize) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(Sample {
            elapsed,
            tokens: tokens.max(1),
        });
    }

    /// The least time `tokens` tokens take at the fastest per-token rate of the recent
    /// batches; `None` before the first batch. A lower bound: a request refused on it
    /// could not have finished in time even on the model's best recent form.
    pub fn fastest(&self, tokens: usize) -> Option<Duration> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .map(|s| s.elapsed.as_secs_f64() / s.tokens as f64)
            .min_by(f64::total_cmp)
            .map(|per_token| Duration::from_secs_f64(per_token * tokens as f64))
    }

    /// The mean duration of the recent batches; zero before the first batch.
    pub fn mean_batch(&self) -> Duration {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        match recent.len() {
            0 => Duration::ZERO,
            n => recent.iter().map(|s| s.elapsed).sum::<Duration>() / n as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fastest_rate_and_mean_batch() {
        let e = Estimate::default();
        assert_eq!(e.fastest(100), None);
        assert_eq!(e.mean_batch(), Duration::ZERO);
        e.record(Duration::from_millis(10), 100); // 0.1 ms per token
        e.record(Duration::from_millis(30), 100); // 0.3 ms per token
        assert_eq!(e.fastest(50), Some(Duration::from_millis(5)));
        assert_eq!(e.mean_batch(), Duration::from_millis(20));
        for _ in 0..WINDOW {
            e.record(Duration::from_millis(40), 100);
        }
        // The fast batch left the window.
        assert_eq!(e.fastest(100), Some(Duration::from_millis(40)));
    }
}
