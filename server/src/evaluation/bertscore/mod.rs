//! BERTScore exactly as `bert_score.score` 0.3.13 computes it, from the per-token hidden
//! states of one layer of a text encoder (what `num_layers=L` gives: transformers'
//! `hidden_states[L]`).
//!
//! For one candidate `c` and one reference `r`, both tokenized with their special tokens:
//! - every token state is L2-normalised; `sim(i, j)` is the cosine of token `i` of `c` and
//!   token `j` of `r`, special tokens included in the matching;
//! - precision `P = Σᵢ wᶜᵢ · maxⱼ sim(i, j) / Σᵢ wᶜᵢ`, recall
//!   `R = Σⱼ wʳⱼ · maxᵢ sim(i, j) / Σⱼ wʳⱼ` (greedy matching);
//! - without IDF every token weighs 1 and the two special tokens' ids weigh 0; with IDF a
//!   token id weighs `ln((M + 1) / (df + 1))`, `M` the number of reference texts of the
//!   whole call (every reference of every item, repeats counted) and `df` the number of
//!   them that contain the id (`ln(M + 1)` for an id in no reference). The special tokens,
//!   in every reference, weigh `ln(1) = 0`;
//! - `F = 2PR / (P + R)`, and NaN becomes 0;
//! - a text of the two special tokens alone (an empty text) sets P and R to 0 on both sides
//!   (bert-score warns "Empty candidate sentence detected"); F is then 0 through the NaN
//!   rule, as the weights of an empty text sum to 0;
//! - a text whose weights all are 0 without being empty (with IDF, a candidate made only of
//!   ids found in every reference) has `0 / 0`: P (or R) is NaN and F is 0, as in
//!   bert-score; the means over items are then NaN too.
//!
//! With several references an item keeps, for P, R and F each, the largest value over its
//! references (`max(dim=0)`, NaN winning), so the three may come from different
//! references; [`ItemScore::best_reference`] names the one with the best F. A baseline
//! ([`Baseline`]) rescales after that maximum.
//!
//! bert-score pads a batch's shorter texts with similarities of 0, so in a batch a token
//! whose cosines are all negative matches at 0 rather than at its best negative cosine;
//! this module takes the maximum over real tokens only (bert-score with `batch_size=1`).
//! The golden fixture checks both agree on its texts.

mod baseline;

pub use baseline::{Baseline, BaselineRow};

use std::collections::HashMap;

use super::generation_input::GenerationInputError;

/// How many special tokens bert-score's tokenizers wrap each text in ([CLS] … [SEP]).
pub const SPECIAL_TOKENS_PER_TEXT: usize = 2;

/// One text as the encoder saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedText {
    /// Token ids, special tokens included (truncated as the encoder's tokenizer truncates).
    pub ids: Vec<u32>,
    /// Each token's hidden state, `ids.len() × dim` floats, row `t` for token `t`.
    pub states: Vec<f32>,
}

/// One candidate and its references, encoded.
#[derive(Clone, Debug)]
pub struct EncodedItem<'a> {
    /// The generated text.
    pub candidate: &'a EncodedText,
    /// The texts it is scored against (at least one).
    pub references: Vec<&'a EncodedText>,
}

/// What the scores depend on besides the texts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BertScoreSettings {
    /// Width of a token state.
    pub dim: usize,
    /// The ids of the tokenizer's two special tokens (for BERT, [CLS] and [SEP]): they
    /// weigh 0 without IDF.
    pub special_ids: [u32; 2],
    /// bert-score's `idf=True`: weights from the references' document frequencies.
    pub idf: bool,
    /// The baselines of the layer used, to rescale with (`rescale_with_baseline=True`).
    pub baseline: Option<BaselineRow>,
}

/// Precision, recall and F1.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    /// Greedy-matched similarity weighted over the candidate's tokens.
    pub precision: f64,
    /// Greedy-matched similarity weighted over the reference's tokens.
    pub recall: f64,
    /// `2PR / (P + R)`, 0 where that is NaN.
    pub f1: f64,
}

/// One item's scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItemScore {
    /// Each of P, R and F1 is its maximum over the item's references (rescaled when a
    /// baseline is given).
    pub scores: Scores,
    /// Index of the reference with the highest F1 before rescaling (the first on a tie).
    pub best_reference: usize,
}

/// BERTScore of every item and the means over the items.
#[derive(Clone, Debug, PartialEq)]
pub struct BertScoreReport {
    /// Arithmetic means of each item's P, R and F1 (NaN when one of them is NaN).
    pub mean: Scores,
    /// Each item's scores, in the items' order.
    pub per_item: Vec<ItemScore>,
}

/// Input BERTScore refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BertScoreError {
    /// No item, or an item without references.
    #[error(transparent)]
    Input(#[from] GenerationInputError),
    /// A text whose states do not match its ids and the state width.
    #[error("a text of {tokens} tokens has {values} state values, not {tokens} × {dim}")]
    StateShape {
        /// Its token count.
        tokens: usize,
        /// Its state values.
        values: usize,
        /// The state width.
        dim: usize,
    },
    /// A text without its two special tokens.
    #[error("a text has {tokens} tokens; BERTScore needs its {SPECIAL_TOKENS_PER_TEXT} special tokens at least")]
    MissingSpecialTokens {
        /// Its token count.
        tokens: usize,
    },
    /// A baseline file that is not in bert-score's format.
    #[error("baseline file, line {line}: {message}")]
    InvalidBaseline {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A baseline file with no row for the layer used.
    #[error("the baseline file has no row for layer {layer} (it has {rows} rows, layers 0 to {})", rows.saturating_sub(1))]
    BaselineMissingLayer {
        /// The layer asked for.
        layer: u32,
        /// Rows in the file.
        rows: usize,
    },
}

/// Scores every item as `bert_score.score(candidates, references, idf=...)` does and
/// averages the scores.
pub fn bertscore(
    items: &[EncodedItem<'_>],
    settings: &BertScoreSettings,
) -> Result<BertScoreReport, BertScoreError> {
    check(items, settings.dim)?;
    let weigh = Weights::new(items, settings);
    let prepare = |text: &EncodedText| Prepared::new(text, settings.dim, &weigh);
    let per_item: Vec<ItemScore> = items
        .iter()
        .map(|item| {
            let candidate = prepare(item.candidate);
            let pairs: Vec<Scores> = item
                .references
                .iter()
                .map(|reference| score_pair(&candidate, &prepare(reference), settings.dim))
                .collect();
            best_of(&pairs, settings.baseline)
        })
        .collect();
    let n = per_item.len() as f64;
    let mean = Scores {
        precision: per_item.iter().map(|i| i.scores.precision).sum::<f64>() / n,
        recall: per_item.iter().map(|i| i.scores.recall).sum::<f64>() / n,
        f1: per_item.iter().map(|i| i.scores.f1).sum::<f64>() / n,
    };
    Ok(BertScoreReport { mean, per_item })
}

/// At least one item, every item with a reference, every text well formed.
fn check(items: &[EncodedItem<'_>], dim: usize) -> Result<(), BertScoreError> {
    if items.is_empty() {
        return Err(GenerationInputError::NoItems.into());
    }
    if let Some(index) = items.iter().position(|item| item.references.is_empty()) {
        return Err(GenerationInputError::NoReferences { index }.into());
    }
    let texts = items
        .iter()
        .flat_map(|item| std::iter::once(item.candidate).chain(item.references.iter().copied()));
    for text in texts {
        let tokens = text.ids.len();
        if tokens < SPECIAL_TOKENS_PER_TEXT {
            return Err(BertScoreError::MissingSpecialTokens { tokens });
        }
        if text.states.len() != tokens * dim {
            return Err(BertScoreError::StateShape {
                tokens,
                values: text.states.len(),
                dim,
            });
        }
    }
    Ok(())
}

/// Token weights: IDF over the references, or 1 with the special tokens at 0.
enum Weights {
    Uniform {
        special_ids: [u32; 2],
    },
    Idf {
        documents: f64,
        df: HashMap<u32, usize>,
    },
}

impl Weights {
    fn new(items: &[EncodedItem<'_>], settings: &BertScoreSettings) -> Self {
        if !settings.idf {
            return Weights::Uniform {
                special_ids: settings.special_ids,
            };
        }
        let mut df: HashMap<u32, usize> = HashMap::new();
        let mut documents = 0usize;
        for reference in items.iter().flat_map(|item| &item.references) {
            documents += 1;
            let mut seen: Vec<u32> = reference.ids.clone();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                *df.entry(id).or_default() += 1;
            }
        }
        Weights::Idf {
            documents: documents as f64,
            df,
        }
    }

    fn of(&self, id: u32) -> f64 {
        match self {
            Weights::Uniform { special_ids } => f64::from(u8::from(!special_ids.contains(&id))),
            Weights::Idf { documents, df } => {
                let df = df.get(&id).copied().unwrap_or(0) as f64;
                ((documents + 1.0) / (df + 1.0)).ln()
            }
        }
    }
}

/// A text ready to match: unit token states and weights summing to 1 (NaN when they
/// sum to 0, as bert-score's `0 / 0`).
struct Prepared {
    units: Vec<f64>,
    weights: Vec<f64>,
    empty: bool,
}

impl Prepared {
    fn new(text: &EncodedText, dim: usize, weigh: &Weights) -> Self {
        let units: Vec<f64> = text
            .states
            .chunks_exact(dim)
            .flat_map(|row| {
                let norm = row
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt();
                row.iter().map(move |&v| f64::from(v) / norm)
            })
            .collect();
        let raw: Vec<f64> = text.ids.iter().map(|&id| weigh.of(id)).collect();
        let total: f64 = raw.iter().sum();
        Self {
            units,
            weights: raw.iter().map(|w| w / total).collect(),
            empty: text.ids.len() == SPECIAL_TOKENS_PER_TEXT,
        }
    }
}

/// `greedy_cos_idf` for one candidate and one reference.
fn score_pair(candidate: &Prepared, reference: &Prepared, dim: usize) -> Scores {
    let (c_len, r_len) = (candidate.weights.len(), reference.weights.len());
    let mut best_for_candidate = vec![f64::NEG_INFINITY; c_len];
    let mut best_for_reference = vec![f64::NEG_INFINITY; r_len];
    for (i, c) in candidate.units.chunks_exact(dim).enumerate() {
        for (j, r) in reference.units.chunks_exact(dim).enumerate() {
            let sim: f64 = c.iter().zip(r).map(|(a, b)| a * b).sum();
            best_for_candidate[i] = best_for_candidate[i].max(sim);
            best_for_reference[j] = best_for_reference[j].max(sim);
        }
    }
    let weighted = |best: &[f64], weights: &[f64]| -> f64 {
        best.iter().zip(weights).map(|(s, w)| s * w).sum()
    };
    let mut precision = weighted(&best_for_candidate, &candidate.weights);
    let mut recall = weighted(&best_for_reference, &reference.weights);
    let f1 = 2.0 * precision * recall / (precision + recall);
    if candidate.empty || reference.empty {
        precision = 0.0;
        recall = 0.0;
    }
    Scores {
        precision,
        recall,
        f1: if f1.is_nan() { 0.0 } else { f1 },
    }
}

/// The per-column maximum over an item's references (NaN wins, as in `torch.max`), the
/// reference with the best F1, and the rescaling.
fn best_of(pairs: &[Scores], baseline: Option<BaselineRow>) -> ItemScore {
    let nan_max = |a: f64, b: f64| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    };
    let mut scores = pairs[0];
    let mut best_reference = 0;
    for (index, pair) in pairs.iter().enumerate().skip(1) {
        scores.precision = nan_max(scores.precision, pair.precision);
        scores.recall = nan_max(scores.recall, pair.recall);
        if pair.f1 > pairs[best_reference].f1 {
            best_reference = index;
        }
        scores.f1 = nan_max(scores.f1, pair.f1);
    }
    if let Some(baseline) = baseline {
        let [precision, recall, f1] = baseline.rescale(scores.precision, scores.recall, scores.f1);
        scores = Scores {
            precision,
            recall,
            f1,
        };
    }
    ItemScore {
        scores,
        best_reference,
    }
}

#[cfg(test)]
mod tests;
