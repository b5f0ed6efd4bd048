//! A load run's results as JSON, CSV (one row per step and RPC) and a human table.

use super::mix::RpcKind;
use super::runner::Mode;
use super::stats::{Hist, Percentiles, RpcStats, StepStats};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::time::Duration;

/// One finished step.
pub struct StepReport {
    /// How load was generated.
    pub mode: Mode,
    /// The measured window.
    pub window: Duration,
    /// What was measured in it.
    pub stats: StepStats,
}

impl StepReport {
    /// A short name for tables and plots: `c=32` or `r=100` (`r~100` for Poisson).
    pub fn name(&self) -> String {
        match self.mode {
            Mode::Closed { concurrency } => format!("c={concurrency}"),
            Mode::Open { rate, poisson, .. } => {
                format!("r{}{rate}", if poisson { "~" } else { "=" })
            }
        }
    }

    fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.window.as_secs_f64()
    }
}

/// A whole run: its label, its settings, and its steps.
pub struct RunReport {
    /// Names the run in plots (e.g. `embed` or `search (vector)`).
    pub label: String,
    /// The run's settings, copied into the JSON as they are.
    pub config: Value,
    /// The steps in the order they ran.
    pub steps: Vec<StepReport>,
}

fn ms(p: &Percentiles) -> Value {
    json!({
        "mean": p.mean / 1e3, "p50": p.p50 / 1e3, "p90": p.p90 / 1e3,
        "p95": p.p95 / 1e3, "p99": p.p99 / 1e3, "max": p.max / 1e3,
    })
}

fn us(h: &Hist) -> Value {
    let p = h.percentiles();
    json!({
        "mean": p.mean, "p50": p.p50, "p90": p.p90, "p95": p.p95, "p99": p.p99, "max": p.max,
    })
}

fn rpc_json(step: &StepReport, s: &RpcStats) -> Value {
    let mut rpc = json!({
        "requests": s.ok() + s.failed(),
        "ok": s.ok(),
        "errors": s.errors,
        "throughput_rps": step.per_second(s.ok()),
        "inputs_per_s": step.per_second(s.inputs),
        "tokens_per_s": step.per_second(s.tokens),
        "latency_ms": ms(&s.latency.percentiles()),
    });
    if s.server.total.len() > 0 {
        let server: Map<String, Value> = s
            .server
            .stages()
            .iter()
            .map(|(name, h)| (name.to_string(), us(h)))
            .collect();
        rpc["server_us"] = Value::Object(server);
    }
    rpc
}

/// The run as one JSON document.
pub fn to_json(run: &RunReport) -> Value {
    let steps: Vec<Value> = run
        .steps
        .iter()
        .map(|step| {
            let (concurrency, rate, poisson, cap) = match step.mode {
                Mode::Closed { concurrency } => {
                    (json!(concurrency), Value::Null, Value::Null, Value::Null)
                }
                Mode::Open {
                    rate,
                    poisson,
                    max_in_flight,
                } => (
                    Value::Null,
                    json!(rate),
                    json!(poisson),
                    json!(max_in_flight),
                ),
            };
            let rpcs: Map<String, Value> = step
                .stats
                .rpcs
                .iter()
                .map(|(kind, s)| (kind.name().to_string(), rpc_json(step, s)))
                .collect();
            json!({
                "name": step.name(),
                "mode": if concurrency.is_null() { "open" } else { "closed" },
                "concurrency": concurrency,
                "rate": rate,
                "poisson": poisson,
                "max_in_flight": cap,
                "window_s": step.window.as_secs_f64(),
                "dropped": step.stats.dropped,
                "late": step.stats.late,
                "schedule_lag_ms": if concurrency.is_null() { ms(&step.stats.lag.percentiles()) } else { Value::Null },
                "rpcs": rpcs,
            })
        })
        .collect();
    json!({ "label": run.label, "config": run.config, "steps": steps })
}

/// CSV columns, one row per step and RPC. Server columns are in µs and empty for
/// RPCs whose responses carry no timings.
pub const CSV_COLUMNS: [&str; 34] = [
    "label",
    "step",
    "mode",
    "concurrency",
    "rate",
    "poisson",
    "window_s",
    "rpc",
    "requests",
    "ok",
    "errors",
    "error_codes",
    "throughput_rps",
    "inputs_per_s",
    "tokens_per_s",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "server_queue_us_mean",
    "server_tokenize_us_mean",
    "server_inference_us_mean",
    "server_total_us_mean",
    "overhead_us_p50",
    "overhead_us_p99",
    "overhead_with_tokenize_us_p50",
    "overhead_with_tokenize_us_p99",
    "client_minus_server_us_p50",
    "client_minus_server_us_p99",
    "dropped",
    "late",
    "schedule_lag_p99_ms",
];

fn csv_row(run: &RunReport, step: &StepReport, kind: RpcKind, s: &RpcStats) -> Vec<String> {
    let f = |v: f64| format!("{v:.3}");
    let (mode, concurrency, rate, poisson) = match step.mode {
        Mode::Closed { concurrency } => (
            "closed",
            concurrency.to_string(),
            String::new(),
            String::new(),
        ),
        Mode::Open { rate, poisson, .. } => {
            ("open", String::new(), rate.to_string(), poisson.to_string())
        }
    };
    let l = s.latency.percentiles();
    let codes: Vec<String> = s.errors.iter().map(|(c, n)| format!("{c}:{n}")).collect();
    let mut row = vec![
        run.label.clone(),
        step.name(),
        mode.into(),
        concurrency,
        rate,
        poisson,
        f(step.window.as_secs_f64()),
        kind.name().into(),
        (s.ok() + s.failed()).to_string(),
        s.ok().to_string(),
        s.failed().to_string(),
        codes.join(" "),
        f(step.per_second(s.ok())),
        f(step.per_second(s.inputs)),
        f(step.per_second(s.tokens)),
        f(l.p50 / 1e3),
        f(l.p90 / 1e3),
        f(l.p95 / 1e3),
        f(l.p99 / 1e3),
        f(l.max / 1e3),
        f(l.mean / 1e3),
    ];
    let server = &s.server;
    if server.total.len() > 0 {
        let p = |h: &Hist| h.percentiles();
        row.extend(
            [
                p(&server.queue).mean,
                p(&server.tokenize).mean,
                p(&server.inference).mean,
                p(&server.total).mean,
                p(&server.overhead).p50,
                p(&server.overhead).p99,
                p(&server.overhead_with_tokenize).p50,
                p(&server.overhead_with_tokenize).p99,
                p(&server.client_minus_server).p50,
                p(&server.client_minus_server).p99,
            ]
            .map(f),
        );
    } else {
        row.extend(std::iter::repeat_n(String::new(), 10));
    }
    row.push(step.stats.dropped.to_string());
    row.push(step.stats.late.to_string());
    row.push(match step.mode {
        Mode::Open { .. } => f(step.stats.lag.percentiles().p99 / 1e3),
        Mode::Closed { .. } => String::new(),
    });
    row
}

/// The run as CSV text with a header row.
pub fn to_csv(run: &RunReport) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(CSV_COLUMNS)?;
    for step in &run.steps {
        for (kind, s) in &step.stats.rpcs {
            writer.write_record(csv_row(run, step, *kind, s))?;
        }
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

/// The run as aligned text tables: client-side figures, then Embed's server breakdown.
pub fn to_table(run: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", run.label);
    let _ = writeln!(
        out,
        "{:<10} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
        "step", "rpc", "req/s", "inputs/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms"
    );
    for step in &run.steps {
        for (kind, s) in &step.stats.rpcs {
            let l = s.latency.percentiles();
            let mut errors: Vec<String> =
                s.errors.iter().map(|(c, n)| format!("{c}:{n}")).collect();
            if step.stats.dropped + step.stats.late > 0 {
                errors.push(format!(
                    "(dropped {}, late {}, lag p99 {:.1} ms)",
                    step.stats.dropped,
                    step.stats.late,
                    step.stats.lag.percentiles().p99 / 1e3
                ));
            }
            let _ = writeln!(
                out,
                "{:<10} {:<10} {:>9.1} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
                step.name(),
                kind.name(),
                step.per_second(s.ok()),
                step.per_second(s.inputs),
                l.p50 / 1e3,
                l.p90 / 1e3,
                l.p95 / 1e3,
                l.p99 / 1e3,
                l.max / 1e3,
                if errors.is_empty() {
                    "0".into()
                } else {
                    errors.join(" ")
                },
            );
        }
    }
    let with_timings: Vec<_> = run
        .steps
        .iter()
        .filter_map(|step| {
            let s = step.stats.rpcs.get(&RpcKind::Embed)?;
            (s.server.total.len() > 0).then_some((step, s))
        })
        .collect();
    if !with_timings.is_empty() {
        let _ = writeln!(
            out,
            "\nEmbed, server side (µs; mean, or p50/p99): overhead = total − queue − tokenize − inference; \
             overhead+tok = total − queue − inference; net = client latency − server total"
        );
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>9} {:>10} {:>10} {:>15} {:>15} {:>15}",
            "step", "queue", "tokenize", "inference", "total", "overhead", "overhead+tok", "net"
        );
        for (step, s) in with_timings {
            let p = |h: &Hist| h.percentiles();
            let pair = |h: &Hist| format!("{:.0}/{:.0}", p(h).p50, p(h).p99);
            let sv = &s.server;
            let _ = writeln!(
                out,
                "{:<10} {:>9.0} {:>9.0} {:>10.0} {:>10.0} {:>15} {:>15} {:>15}",
                step.name(),
                p(&sv.queue).mean,
                p(&sv.tokenize).mean,
                p(&sv.inference).mean,
                p(&sv.total).mean,
                pair(&sv.overhead),
                pair(&sv.overhead_with_tokenize),
                pair(&sv.client_minus_server),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::{Outcome, Success};
    use marquee_client::proto::Timings;

    fn run() -> RunReport {
        let mut closed = StepStats::new(&[RpcKind::Embed, RpcKind::Search]);
        for i in 1..=4u64 {
            closed.record(&Outcome {
                kind: RpcKind::Embed,
                latency: Duration::from_micros(500 * i),
                result: Ok(Success {
                    inputs: 2,
                    tokens: 30,
                    timings: Some(Timings {
                        queue_us: 100,
                        tokenize_us: 200,
                        inference_us: 9_000,
                        total_us: 9_350,
                    }),
                }),
            });
        }
        closed.record(&Outcome {
            kind: RpcKind::Search,
            latency: Duration::from_millis(1),
            result: Err(tonic::Code::NotFound),
        });
        let mut open = StepStats::new(&[RpcKind::Search]);
        open.dropped = 3;
        open.late = 1;
        open.lag.record(1500);
        open.record(&Outcome {
            kind: RpcKind::Search,
            latency: Duration::from_micros(800),
            result: Ok(Success::default()),
        });
        RunReport {
            label: "embed=1,search=1".into(),
            config: json!({"warmup_s": 1}),
            steps: vec![
                StepReport {
                    mode: Mode::Closed { concurrency: 8 },
                    window: Duration::from_secs(2),
                    stats: closed,
                },
                StepReport {
                    mode: Mode::Open {
                        rate: 50.0,
                        poisson: true,
                        max_in_flight: 16,
                    },
                    window: Duration::from_secs(1),
                    stats: open,
                },
            ],
        }
    }

    #[test]
    fn json_has_steps_rpcs_percentiles_and_server_stages() {
        let j = to_json(&run());
        assert_eq!(j["label"], "embed=1,search=1");
        assert_eq!(j["config"]["warmup_s"], 1);
        let closed = &j["steps"][0];
        assert_eq!(closed["name"], "c=8");
        assert_eq!(closed["mode"], "closed");
        assert_eq!(closed["concurrency"], 8);
        let embed = &closed["rpcs"]["embed"];
        assert_eq!(embed["ok"], 4);
        assert_eq!(embed["throughput_rps"], 2.0);
        assert_eq!(embed["inputs_per_s"], 4.0);
        assert_eq!(embed["tokens_per_s"], 60.0);
        assert_eq!(embed["latency_ms"]["p50"], 1.0);
        assert_eq!(embed["latency_ms"]["max"], 2.0);
        let server = &embed["server_us"];
        assert_eq!(
            server["overhead_total_minus_queue_tokenize_inference"]["p50"],
            50.0
        );
        assert_eq!(server["overhead_total_minus_queue_inference"]["p99"], 250.0);
        let search = &closed["rpcs"]["search"];
        assert_eq!(search["errors"]["NotFound"], 1);
        assert_eq!(search["requests"], 1);
        assert!(search.get("server_us").is_none());
        let open = &j["steps"][1];
        assert_eq!(
            (open["name"].as_str(), open["mode"].as_str()),
            (Some("r~50"), Some("open"))
        );
        assert_eq!(open["dropped"], 3);
        assert_eq!(open["max_in_flight"], 16);
        assert_eq!(open["late"], 1);
        assert_eq!(open["schedule_lag_ms"]["max"], 1.5);
        assert!(closed["schedule_lag_ms"].is_null());
        assert!(open["concurrency"].is_null());
    }

    #[test]
    fn csv_has_one_row_per_step_and_rpc_under_the_header() {
        let text = to_csv(&run()).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(header, CSV_COLUMNS);
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3);
        let col = |name: &str| CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
        // The label holds a comma and survives quoting.
        assert_eq!(&rows[0][col("label")], "embed=1,search=1");
        assert_eq!(&rows[0][col("rpc")], "embed");
        assert_eq!(&rows[0][col("p99_ms")], "2.000");
        assert_eq!(&rows[0][col("overhead_us_p50")], "50.000");
        assert_eq!(&rows[1][col("error_codes")], "NotFound:1");
        assert_eq!(&rows[1][col("server_total_us_mean")], "");
        assert_eq!(&rows[2][col("rate")], "50");
        assert_eq!(&rows[2][col("dropped")], "3");
        assert_eq!(&rows[2][col("schedule_lag_p99_ms")], "1.500");
        assert_eq!(&rows[0][col("schedule_lag_p99_ms")], "");
    }

    #[test]
    fn table_lists_every_step_and_the_server_breakdown() {
        let table = to_table(&run());
        assert!(table.contains("c=8        embed"), "{table}");
        assert!(table.contains("NotFound:1"), "{table}");
        assert!(
            table.contains("(dropped 3, late 1, lag p99 1.5 ms)"),
            "{table}"
        );
        assert!(table.contains("overhead+tok"), "{table}");
        assert!(table.contains("50/50"), "{table}");
    }
}
