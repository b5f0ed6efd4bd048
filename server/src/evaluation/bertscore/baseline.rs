//! Baseline rescaling as bert-score 0.3.13 does it with `rescale_with_baseline=True` and a
//! `baseline_path`: the file is a CSV with a header (`LAYER,P,R,F`) and one row per layer
//! from 0; bert-score takes the row at position `num_layers` (`.iloc[num_layers]`) and
//! rescales each score `s` to `(s − b) / (1 − b)`.

use super::BertScoreError;

/// The baselines of one layer: what a random pair of texts scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BaselineRow {
    /// Baseline precision.
    pub precision: f64,
    /// Baseline recall.
    pub recall: f64,
    /// Baseline F1.
    pub f1: f64,
}

impl BaselineRow {
    /// `(s − b) / (1 − b)` for each of precision, recall and F1, in f32 as bert-score's
    /// tensors compute it (NaN stays NaN).
    pub fn rescale(&self, precision: f64, recall: f64, f1: f64) -> [f64; 3] {
        let one = |s: f64, b: f64| {
            let (s, b) = (s as f32, b as f32);
            f64::from((s - b) / (1.0 - b))
        };
        [
            one(precision, self.precision),
            one(recall, self.recall),
            one(f1, self.f1),
        ]
    }
}

/// A parsed baseline file: one row per layer, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    rows: Vec<BaselineRow>,
}

impl Baseline {
    /// Parses a baseline file in bert-score's format: a header line, then lines of four
    /// comma-separated numbers (layer, P, R, F). Row `i` (0-based, after the header) must
    /// name layer `i`: bert-score picks rows by position, so a file whose layer column
    /// disagrees would rescale with another layer's baseline, and is refused instead.
    pub fn parse(csv: &str) -> Result<Self, BertScoreError> {
        let mut lines = csv
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let invalid = |line: usize, message: String| BertScoreError::InvalidBaseline {
            line: line + 1,
            message,
        };
        match lines.next() {
            Some((_, header)) if header.split(',').count() == 4 => {}
            Some((n, header)) => {
                return Err(invalid(
                    n,
                    format!("header {header:?} does not have 4 columns (LAYER,P,R,F)"),
                ))
            }
            None => return Err(invalid(0, "the file is empty".into())),
        }
        let mut rows = Vec::new();
        for (n, line) in lines {
            let values: Vec<f64> = line
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| invalid(n, format!("{line:?} is not four numbers")))?;
            let [layer, precision, recall, f1] = values[..] else {
                return Err(invalid(n, format!("{line:?} is not four numbers")));
            };
            if layer != rows.len() as f64 {
                return Err(invalid(
                    n,
                    format!("row {} names layer {layer}, not {}", rows.len(), rows.len()),
                ));
            }
            rows.push(BaselineRow {
                precision,
                recall,
                f1,
            });
        }
        Ok(Self { rows })
    }

    /// The baselines of `layer` (bert-score's `num_layers`).
    pub fn row(&self, layer: u32) -> Result<BaselineRow, BertScoreError> {
        self.rows
            .get(layer as usize)
            .copied()
            .ok_or(BertScoreError::BaselineMissingLayer {
                layer,
                rows: self.rows.len(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_by_layer_and_rescale_as_bert_score() {
        let baseline = Baseline::parse("LAYER,P,R,F\n0,0.5,0.25,0.2\n1,0.6,0.52,0.56\n").unwrap();
        let row = baseline.row(1).unwrap();
        assert_eq!(
            row,
            BaselineRow {
                precision: 0.6,
                recall: 0.52,
                f1: 0.56
            }
        );
        let [p, r, f] = baseline.row(0).unwrap().rescale(0.75, 0.25, 0.0);
        assert!((p - 0.5).abs() < 1e-7 && r == 0.0 && (f + 0.25).abs() < 1e-7);
        assert!(row.rescale(f64::NAN, 0.5, 0.5)[0].is_nan());
        assert_eq!(
            baseline.row(2).unwrap_err().to_string(),
            "the baseline file has no row for layer 2 (it has 2 rows, layers 0 to 1)"
        );
    }

    #[test]
    fn malformed_files_are_refused_with_their_line() {
        let err = |csv: &str| Baseline::parse(csv).unwrap_err().to_string();
        assert_eq!(err(""), "baseline file, line 1: the file is empty");
        assert_eq!(
            err("LAYER,P,R\n0,1,2\n"),
            "baseline file, line 1: header \"LAYER,P,R\" does not have 4 columns (LAYER,P,R,F)"
        );
        assert_eq!(
            err("LAYER,P,R,F\n0,0.1,0.2,x\n"),
            "baseline file, line 2: \"0,0.1,0.2,x\" is not four numbers"
        );
        assert_eq!(
            err("LAYER,P,R,F\n0,0.1,0.2,0.3\n2,0.1,0.2,0.3\n"),
            "baseline file, line 3: row 1 names layer 2, not 1"
        );
    }
}
