//! What one step measured: per-RPC latency histograms (HDR, microseconds), successes,
//! errors by gRPC code, and the server-side breakdown from Embed's `timings`.

use super::mix::RpcKind;
use hdrhistogram::Histogram;
use marquee_client::proto::Timings;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest value a histogram tracks exactly, in µs (one hour); larger ones saturate.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"))
    }
}

/// Count, mean and percentiles of a histogram, in its unit (µs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value (to the histogram's precision).
    pub max: f64,
}

impl Hist {
    /// Records one value in µs.
    pub fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros);
    }

    /// Records a duration.
    pub fn record_duration(&mut self, d: Duration) {
        self.record(d.as_micros().min(u128::from(MAX_MICROS)) as u64);
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The summary; all zeros when nothing was recorded.
    pub fn percentiles(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let q = |q: f64| self.0.value_at_quantile(q) as f64;
        Percentiles {
            count: self.0.len(),
            mean: self.0.mean(),
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            max: self.0.max() as f64,
        }
    }
}

/// Server-side stages of Embed requests, from the responses' `timings`, in µs.
#[derive(Clone, Debug, Default)]
pub struct ServerBreakdown {
    /// Waiting in the model's queue.
    pub queue: Hist,
    /// Tokenizing.
    pub tokenize: Hist,
    /// The batches that carried the request.
    pub inference: Hist,
    /// Receipt to response on the server.
    pub total: Hist,
    /// total − queue − tokenize − inference: the serving code's own time.
    pub overhead: Hist,
    /// total − queue − inference: the definition of overhead (tokenizing included).
    pub overhead_with_tokenize: Hist,
    /// Client-observed latency − server total: network, HTTP/2, (de)serialisation, client.
    pub client_minus_server: Hist,
}

impl ServerBreakdown {
    /// Records one response's timings against the latency the client saw.
    pub fn record(&mut self, t: &Timings, client: Duration) {
        self.queue.record(t.queue_us);
        self.tokenize.record(t.tokenize_us);
        self.inference.record(t.inference_us);
        self.total.record(t.total_us);
        let waits = t.queue_us.saturating_add(t.inference_us);
        self.overhead.record(
            t.total_us
                .saturating_sub(waits.saturating_add(t.tokenize_us)),
        );
        self.overhead_with_tokenize
            .record(t.total_us.saturating_sub(waits));
        let client_us = client.as_micros().min(u128::from(MAX_MICROS)) as u64;
        self.client_minus_server
            .record(client_us.saturating_sub(t.total_us));
    }

    /// The stages by report name, in report order.
    pub fn stages(&self) -> [(&'static str, &Hist); 7] {
        [
            ("queue", &self.queue),
            ("tokenize", &self.tokenize),
            ("inference", &self.inference),
            ("total", &self.total),
            (
                "overhead_total_minus_queue_tokenize_inference",
                &self.overhead,
            ),
            (
                "overhead_total_minus_queue_inference",
                &self.overhead_with_tokenize,
            ),
            ("client_minus_server_total", &self.client_minus_server),
        ]
    }
}

/// What a successful request returned that the report counts.
#[derive(Clone, Debug, Default)]
pub struct Success {
    /// Inputs embedded (Embed), else 0.
    pub inputs: u64,
    /// Tokens fed to the model (Embed's `usage`), else 0.
    pub tokens: u64,
    /// Server timings (Embed), when the response carried them.
    pub timings: Option<Timings>,
}

/// One finished request.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Which RPC.
    pub kind: RpcKind,
    /// Time from sending to the response, as the client saw it.
    pub latency: Duration,
    /// The response's figures, or the failure's gRPC code.
    pub result: Result<Success, tonic::Code>,
}

/// Everything measured for one RPC kind in one step.
#[derive(Clone, Debug, Default)]
pub struct RpcStats {
    /// Latency of successful requests.
    pub latency: Hist,
    /// Failed requests by gRPC code name (e.g. `ResourceExhausted`).
    pub errors: BTreeMap<String, u64>,
    /// Inputs embedded by successful Embed requests.
    pub inputs: u64,
    /// Tokens embedded by successful Embed requests.
    pub tokens: u64,
    /// Server-side stages (Embed only; empty otherwise).
    pub server: ServerBreakdown,
}

impl RpcStats {
    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.latency.len()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The measurements of one step.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// Per RPC kind that the mix sends.
    pub rpcs: BTreeMap<RpcKind, RpcStats>,
    /// Open loop: due requests not sent because the in-flight cap was reached.
    pub dropped: u64,
    /// Open loop: requests sent more than `schedule::LATE_AFTER` behind schedule.
    pub late: u64,
    /// Open loop: how far behind schedule each sent request left (µs).
    pub lag: Hist,
}

impl StepStats {
    /// Empty statistics for these kinds.
    pub fn new(kinds: &[RpcKind]) -> StepStats {
        StepStats {
            rpcs: kinds.iter().map(|k| (*k, RpcStats::default())).collect(),
            ..StepStats::default()
        }
    }

    /// Adds one finished request.
    pub fn record(&mut self, outcome: &Outcome) {
        let stats = self.rpcs.entry(outcome.kind).or_default();
        match &outcome.result {
            Ok(success) => {
                stats.latency.record_duration(outcome.latency);
                stats.inputs += success.inputs;
                stats.tokens += success.tokens;
                if let Some(t) = &success.timings {
                    stats.server.record(t, outcome.latency);
                }
            }
            Err(code) => *stats.errors.entry(format!("{code:?}")).or_default() += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Hist::default();
        for ms in 1..=1000u64 {
            h.record(ms * 1000);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        // Three significant digits: within 0.1% of the exact order statistics.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 1e-3;
        assert!(close(p.p50, 500_000.0), "p50 {}", p.p50);
        assert!(close(p.p90, 900_000.0), "p90 {}", p.p90);
        assert!(close(p.p95, 950_000.0), "p95 {}", p.p95);
        assert!(close(p.p99, 990_000.0), "p99 {}", p.p99);
        assert!(close(p.max, 1_000_000.0), "max {}", p.max);
        assert!(close(p.mean, 500_500.0), "mean {}", p.mean);
    }

    #[test]
    fn empty_and_saturated_histograms() {
        assert_eq!(Hist::default().percentiles(), Percentiles::default());
        let mut h = Hist::default();
        h.record_duration(Duration::from_secs(10_000));
        h.record(0);
        assert_eq!(h.len(), 2);
        assert!(h.percentiles().max >= 3.6e9 * 0.999);
        assert_eq!(h.percentiles().p50, 0.0);
    }

    #[test]
    fn errors_are_counted_by_code_and_kept_out_of_latency() {
        let mut step = StepStats::new(&[RpcKind::Search]);
        let failed = |code| Outcome {
            kind: RpcKind::Search,
            latency: Duration::from_millis(1),
            result: Err(code),
        };
        step.record(&failed(tonic::Code::ResourceExhausted));
        step.record(&failed(tonic::Code::ResourceExhausted));
        step.record(&failed(tonic::Code::NotFound));
        step.record(&Outcome {
            kind: RpcKind::Search,
            latency: Duration::from_millis(2),
            result: Ok(Success::default()),
        });
        let s = &step.rpcs[&RpcKind::Search];
        assert_eq!(s.ok(), 1);
        assert_eq!(s.failed(), 3);
        assert_eq!(s.errors["ResourceExhausted"], 2);
        assert_eq!(s.errors["NotFound"], 1);
        assert_eq!(s.latency.percentiles().max, 2000.0);
    }

    #[test]
    fn server_breakdown_subtracts_stages_and_never_underflows() {
        let mut step = StepStats::new(&[RpcKind::Embed]);
        let timings = |q, t, i, total| Timings {
            queue_us: q,
            tokenize_us: t,
            inference_us: i,
            total_us: total,
        };
        step.record(&Outcome {
            kind: RpcKind::Embed,
            latency: Duration::from_micros(12_500),
            result: Ok(Success {
                inputs: 2,
                tokens: 40,
                timings: Some(timings(100, 300, 12_000, 12_450)),
            }),
        });
        // Inconsistent timings (stages above the total) clamp at zero.
        step.record(&Outcome {
            kind: RpcKind::Embed,
            latency: Duration::from_micros(10),
            result: Ok(Success {
                inputs: 1,
                tokens: 5,
                timings: Some(timings(10, 10, 10, 20)),
            }),
        });
        let s = &step.rpcs[&RpcKind::Embed];
        assert_eq!((s.inputs, s.tokens), (3, 45));
        let server = &s.server;
        assert_eq!(server.overhead.percentiles().max, 50.0);
        assert_eq!(server.overhead.percentiles().p50, 0.0);
        assert_eq!(server.overhead_with_tokenize.percentiles().max, 350.0);
        assert_eq!(server.client_minus_server.percentiles().max, 50.0);
        assert_eq!(server.client_minus_server.percentiles().p50, 0.0);
        assert_eq!(server.stages().len(), 7);
    }
}
