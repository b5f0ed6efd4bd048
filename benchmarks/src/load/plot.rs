//! Latency against throughput across a sweep, as SVG: one colour per RPC series,
//! p50 solid with dots (labelled with the step), p99 dashed; both axes logarithmic.

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

/// One step of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The step's name (`c=32`, `r=100`).
    pub step: String,
    /// Successful requests per second.
    pub throughput: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th-percentile latency, ms.
    pub p99_ms: f64,
}

/// One RPC of one run across its steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// The steps with successful requests, in run order.
    pub points: Vec<Point>,
}

/// The series of a run's JSON report (as `report::to_json` writes it): one per RPC,
/// named by the run's label, followed by the RPC when the run mixes several.
pub fn series(run: &Value) -> Result<Vec<Series>> {
    let label = run["label"].as_str().unwrap_or("run");
    let steps = run["steps"]
        .as_array()
        .context("the report has no `steps` array")?;
    let mut out: Vec<Series> = Vec::new();
    for step in steps {
        let rpcs = step["rpcs"].as_object().context("a step has no `rpcs`")?;
        for (rpc, r) in rpcs {
            let name = if rpcs.len() == 1 {
                label.to_string()
            } else {
                format!("{label} · {rpc}")
            };
            let throughput = r["throughput_rps"].as_f64().unwrap_or(0.0);
            let (p50, p99) = (&r["latency_ms"]["p50"], &r["latency_ms"]["p99"]);
            let (Some(p50_ms), Some(p99_ms)) = (p50.as_f64(), p99.as_f64()) else {
                bail!("step {} of {label}: no latency for {rpc}", step["name"]);
            };
            if throughput <= 0.0 || p50_ms <= 0.0 {
                continue;
            }
            let point = Point {
                step: step["name"].as_str().unwrap_or("").to_string(),
                throughput,
                p50_ms,
                p99_ms: p99_ms.max(p50_ms),
            };
            match out.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push(point),
                None => out.push(Series {
                    name,
                    points: vec![point],
                }),
            }
        }
    }
    Ok(out)
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// An axis label: three significant digits, no trailing zeros (`0.25`, `12.5`, `3000`).
fn tick(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2 - v.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A logarithmic axis range covering `values` with some room on both sides.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo / 1.6, hi * 1.6)
}

/// Draws `series` into an SVG file at `path`.
pub fn write_svg(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    let points = || series.iter().flat_map(|s| &s.points);
    if points().next().is_none() {
        bail!("nothing to plot: no step had successful requests");
    }
    let x = log_range(points().map(|p| p.throughput));
    let y = log_range(points().flat_map(|p| [p.p50_ms, p.p99_ms]));
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| draw(&e))?;
    // The legend gets its own column, so it never hides a point.
    let (plot_area, legend_area) = root.split_horizontally(760);
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((x.0..x.1).log_scale(), (y.0..y.1).log_scale())
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("throughput, requests/s (log)")
        .y_desc("latency, ms (log)")
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| draw(&e))?;
    let font = |colour: RGBColor| ("sans-serif", 12).into_font().color(&colour);
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let p50: Vec<(f64, f64)> = s.points.iter().map(|p| (p.throughput, p.p50_ms)).collect();
        let p99: Vec<(f64, f64)> = s.points.iter().map(|p| (p.throughput, p.p99_ms)).collect();
        chart
            .draw_series(LineSeries::new(p50, colour.stroke_width(2)))
            .map_err(|e| draw(&e))?;
        chart
            .draw_series(DashedLineSeries::new(
                p99.clone(),
                6,
                4,
                colour.stroke_width(1),
            ))
            .map_err(|e| draw(&e))?;
        chart
            .draw_series(
                p99.into_iter()
                    .map(|c| Circle::new(c, 3, colour.stroke_width(1))),
            )
            .map_err(|e| draw(&e))?;
        chart
            .draw_series(s.points.iter().map(|p| {
                EmptyElement::at((p.throughput, p.p50_ms))
                    + Circle::new((0, 0), 3, colour.filled())
                    + Text::new(p.step.clone(), (5, -14), font(colour))
            }))
            .map_err(|e| draw(&e))?;
        let y = 40 + 46 * i as i32;
        let legend = [
            (
                PathElement::new([(10, y), (40, y)], colour.stroke_width(2)),
                format!("{} p50", s.name),
                y,
            ),
            (
                PathElement::new([(10, y + 18), (18, y + 18)], colour.stroke_width(1)),
                format!("{} p99 (dashed)", s.name),
                y + 18,
            ),
        ];
        for (line, text, y) in legend {
            legend_area.draw(&line).map_err(|e| draw(&e))?;
            legend_area
                .draw(&Text::new(text, (48, y - 7), font(colour)))
                .map_err(|e| draw(&e))?;
        }
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rpc(rps: f64, p50: f64, p99: f64) -> Value {
        json!({"throughput_rps": rps, "latency_ms": {"p50": p50, "p99": p99}})
    }

    #[test]
    fn one_series_per_rpc_skipping_empty_steps() {
        let run = json!({"label": "mixed", "steps": [
            {"name": "c=1", "rpcs": {"embed": rpc(60.0, 15.0, 20.0), "search": rpc(0.0, 0.0, 0.0)}},
            {"name": "c=8", "rpcs": {"embed": rpc(70.0, 100.0, 130.0), "search": rpc(900.0, 0.5, 2.0)}},
        ]});
        let s = series(&run).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "mixed · embed");
        assert_eq!(s[0].points.len(), 2);
        assert_eq!(s[0].points[1].step, "c=8");
        assert_eq!(s[1].name, "mixed · search");
        assert_eq!(s[1].points.len(), 1);
        assert_eq!(s[1].points[0].throughput, 900.0);
    }

    #[test]
    fn a_single_rpc_run_is_named_by_its_label() {
        let run = json!({"label": "search (vector)", "steps": [
            {"name": "c=1", "rpcs": {"search": rpc(500.0, 1.9, 3.0)}},
        ]});
        assert_eq!(series(&run).unwrap()[0].name, "search (vector)");
        assert!(series(&json!({"label": "x"})).is_err());
    }

    #[test]
    fn ticks_have_three_significant_digits() {
        let ticks: Vec<String> = [0.25, 0.1234, 1.0, 12.5, 100.0, 3000.0, 45_678.0]
            .into_iter()
            .map(tick)
            .collect();
        assert_eq!(
            ticks,
            ["0.25", "0.123", "1", "12.5", "100", "3000", "45678"]
        );
    }

    #[test]
    fn writes_an_svg_with_the_legend_and_step_labels() {
        let run = json!({"label": "embed", "steps": [
            {"name": "c=1", "rpcs": {"embed": rpc(60.0, 15.0, 20.0)}},
            {"name": "c=32", "rpcs": {"embed": rpc(70.0, 450.0, 600.0)}},
        ]});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        write_svg(&path, "latency against throughput", &series(&run).unwrap()).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for text in [
            "embed p50",
            "embed p99",
            "c=32",
            "latency against throughput",
        ] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
        let empty = json!({"label": "none", "steps": []});
        assert!(write_svg(&path, "t", &series(&empty).unwrap()).is_err());
    }
}
