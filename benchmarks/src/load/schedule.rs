//! Open-loop arrival schedules: when each request is due, as an offset from the start
//! of a step, at a constant rate or as a Poisson process of the same mean rate.
//!
//! Offsets are absolute (not accumulated sleeps), so a client that falls behind does
//! not shift the schedule; it counts the requests it sends late instead.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// How long after its due time a request counts as sent late (below it is the OS's
/// sleep and wake-up jitter).
pub const LATE_AFTER: Duration = Duration::from_millis(2);

/// Request due times of one open-loop step.
pub struct Arrivals {
    rate: f64,
    poisson: Option<StdRng>,
    count: u64,
    clock: f64,
}

impl Arrivals {
    /// `rate` requests per second (> 0), evenly spaced or, with `poisson`, with
    /// exponentially distributed gaps drawn from `seed`.
    pub fn new(rate: f64, poisson: bool, seed: u64) -> Arrivals {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        Arrivals {
            rate,
            poisson: poisson.then(|| StdRng::seed_from_u64(seed)),
            count: 0,
            clock: 0.0,
        }
    }
}

impl Iterator for Arrivals {
    type Item = Duration;

    /// The next due time, as an offset from the step's start; the first is at 0.
    fn next(&mut self) -> Option<Duration> {
        let at = match &mut self.poisson {
            // The k-th of evenly spaced arrivals, computed directly so no error accumulates.
            None => self.count as f64 / self.rate,
            Some(rng) => {
                let at = self.clock;
                // Inverse CDF of the exponential distribution; 1 - u lies in (0, 1].
                self.clock += -(1.0 - rng.random::<f64>()).ln() / self.rate;
                at
            }
        };
        self.count += 1;
        Some(Duration::from_secs_f64(at))
    }
}

/// What became of one due request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Sent within [`LATE_AFTER`] of its due time.
    OnTime,
    /// Sent, but more than [`LATE_AFTER`] after its due time (the client fell behind).
    Late,
    /// Not sent: the in-flight cap was reached.
    Dropped,
}

/// Classifies a due request given how far behind schedule the client is and how many
/// requests are in flight.
pub fn dispatch(behind: Duration, in_flight: usize, cap: usize) -> Dispatch {
    if in_flight >= cap {
        Dispatch::Dropped
    } else if behind > LATE_AFTER {
        Dispatch::Late
    } else {
        Dispatch::OnTime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_is_exactly_spaced_without_drift() {
        let due: Vec<Duration> = Arrivals::new(3.0, false, 0).take(3001).collect();
        assert_eq!(due[0], Duration::ZERO);
        assert_eq!(due[3], Duration::from_secs(1));
        // After 3,000 gaps of 1/3 s the schedule is still on the second.
        assert_eq!(due[3000], Duration::from_secs(1000));
    }

    #[test]
    fn poisson_gaps_are_exponential_with_the_requested_mean() {
        let rate = 200.0;
        let due: Vec<f64> = Arrivals::new(rate, true, 42)
            .take(50_001)
            .map(|d| d.as_secs_f64())
            .collect();
        let gaps: Vec<f64> = due.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g >= 0.0));
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // An exponential distribution has mean 1/rate and standard deviation = mean.
        assert!((mean * rate - 1.0).abs() < 0.02, "mean gap {mean}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.03,
            "cv {}",
            var.sqrt() / mean
        );
    }

    #[test]
    fn poisson_schedules_repeat_for_a_seed_and_differ_across_seeds() {
        let a: Vec<_> = Arrivals::new(50.0, true, 1).take(10).collect();
        let b: Vec<_> = Arrivals::new(50.0, true, 1).take(10).collect();
        let c: Vec<_> = Arrivals::new(50.0, true, 2).take(10).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn dispatch_drops_at_the_cap_and_marks_late_sends() {
        let ms = Duration::from_millis;
        assert_eq!(dispatch(ms(0), 3, 4), Dispatch::OnTime);
        assert_eq!(dispatch(LATE_AFTER, 3, 4), Dispatch::OnTime);
        assert_eq!(dispatch(ms(5), 3, 4), Dispatch::Late);
        assert_eq!(dispatch(ms(0), 4, 4), Dispatch::Dropped);
        assert_eq!(dispatch(ms(5), 9, 4), Dispatch::Dropped);
    }
}
