//! ROUGE exactly as rouge-score 0.1.2 computes it with
//! `RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=...)`; with
//! stemming, NLTK's Porter stemmer (3.10.4, its default NLTK_EXTENSIONS mode).
//!
//! - ROUGE-N: clipped n-gram overlap over the candidate's n-grams (precision) and the
//!   reference's (recall), each denominator at least 1.
//! - ROUGE-L: longest common subsequence over the candidate's and the reference's lengths;
//!   0 when either has no token.
//! - ROUGE-Lsum: sentences are the non-empty lines (split on `\n` only); summary-level
//!   union LCS, each token counted at most as often as it occurs on both sides.
//! - F-measure `2PR / (P + R)`, 0 when `P + R` is 0.
//!
//! With several references an item keeps, per ROUGE type, the reference with the highest
//! F-measure (the first on a tie), as `score_multi` does. The corpus figures are the
//! arithmetic means of P, R and F over the items (rouge-score itself has no corpus score;
//! its `BootstrapAggregator` would resample).

mod lcs;
mod porter;
mod tokenizer;

pub use tokenizer::tokenize;

use std::collections::HashMap;

use super::generation_input::{check_items, GenerationInputError, GenerationItem};

/// Whether tokens are stemmed (rouge-score's `use_stemmer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stemming {
    /// `use_stemmer=False`, rouge-score's default.
    #[default]
    Off,
    /// `use_stemmer=True`: tokens longer than 3 characters become their NLTK Porter stem.
    Porter,
}

/// Precision, recall and F-measure of one ROUGE type (rouge-score's `Score`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RougeScore {
    /// Matches over the candidate's size.
    pub precision: f64,
    /// Matches over the reference's size.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub fmeasure: f64,
}

impl RougeScore {
    /// A score from the matches and both sides' sizes, as rouge-score divides them.
    fn of(matches: usize, candidate_size: usize, reference_size: usize) -> Self {
        let precision = matches as f64 / candidate_size as f64;
        let recall = matches as f64 / reference_size as f64;
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// The four ROUGE types of one item, or their means over a corpus.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RougeScores {
    /// `rouge1`: unigrams.
    pub rouge1: RougeScore,
    /// `rouge2`: bigrams.
    pub rouge2: RougeScore,
    /// `rougeL`: longest common subsequence over the whole text.
    pub rouge_l: RougeScore,
    /// `rougeLsum`: summary-level LCS over the lines.
    pub rouge_lsum: RougeScore,
}

impl RougeScores {
    /// Each ROUGE type as rouge-score names it, with its score.
    pub fn by_name(&self) -> [(&'static str, RougeScore); 4] {
        [
            ("rouge1", self.rouge1),
            ("rouge2", self.rouge2),
            ("rougeL", self.rouge_l),
            ("rougeLsum", self.rouge_lsum),
        ]
    }

    fn fields_mut(&mut self) -> [&mut RougeScore; 4] {
        [
            &mut self.rouge1,
            &mut self.rouge2,
            &mut self.rouge_l,
            &mut self.rouge_lsum,
        ]
    }
}

/// ROUGE of every item and the means over the items.
#[derive(Clone, Debug, PartialEq)]
pub struct RougeReport {
    /// Arithmetic mean of each ROUGE type's P, R and F over the items.
    pub mean: RougeScores,
    /// Each item's scores (`score_multi` against its references), in the items' order.
    pub per_item: Vec<RougeScores>,
}

/// Scores the items as rouge-score's `RougeScorer.score_multi` does, and averages them.
pub fn rouge(
    items: &[GenerationItem<'_>],
    stemming: Stemming,
) -> Result<RougeReport, GenerationInputError> {
    check_items(items)?;
    let per_item: Vec<RougeScores> = items
        .iter()
        .map(|item| score_multi(item.references, item.candidate, stemming))
        .collect();
    let mut mean = RougeScores::default();
    for scores in &per_item {
        for (sum, (_, score)) in mean.fields_mut().into_iter().zip(scores.by_name()) {
            sum.precision += score.precision;
            sum.recall += score.recall;
            sum.fmeasure += score.fmeasure;
        }
    }
    let n = per_item.len() as f64;
    for sum in mean.fields_mut() {
        sum.precision /= n;
        sum.recall /= n;
        sum.fmeasure /= n;
    }
    Ok(RougeReport { mean, per_item })
}

/// A text as the ROUGE types see it: its tokens, and its lines' tokens for ROUGE-Lsum.
struct Tokenized {
    tokens: Vec<String>,
    lines: Vec<Vec<String>>,
}

impl Tokenized {
    fn of(text: &str, stemming: Stemming) -> Self {
        Self {
            tokens: tokenize(text, stemming),
            lines: text
                .split('\n')
                .filter(|line| !line.is_empty())
                .map(|line| tokenize(line, stemming))
                .collect(),
        }
    }
}

/// `RougeScorer.score_multi(targets, prediction)`: per ROUGE type, the score against the
/// reference with the highest F-measure, the first on a tie (`np.argmax`).
fn score_multi(references: &[String], candidate: &str, stemming: Stemming) -> RougeScores {
    let candidate = Tokenized::of(candidate, stemming);
    let mut best: Option<RougeScores> = None;
    for reference in references {
        let scores = score(&Tokenized::of(reference, stemming), &candidate);
        match best.as_mut() {
            None => best = Some(scores),
            Some(best) => {
                for (kept, (_, new)) in best.fields_mut().into_iter().zip(scores.by_name()) {
                    if new.fmeasure > kept.fmeasure {
                        *kept = new;
                    }
                }
            }
        }
    }
    best.unwrap_or_default()
}

/// `RougeScorer.score(target, prediction)` for the four types.
fn score(reference: &Tokenized, candidate: &Tokenized) -> RougeScores {
    RougeScores {
        rouge1: ngram_score(&reference.tokens, &candidate.tokens, 1),
        rouge2: ngram_score(&reference.tokens, &candidate.tokens, 2),
        rouge_l: lcs_score(&reference.tokens, &candidate.tokens),
        rouge_lsum: summary_lcs_score(&reference.lines, &candidate.lines),
    }
}

/// `_score_ngrams` over `_create_ngrams(tokens, n)`.
fn ngram_score(reference: &[String], candidate: &[String], n: usize) -> RougeScore {
    let reference_ngrams = ngram_counts(reference, n);
    let candidate_ngrams = ngram_counts(candidate, n);
    let matches: usize = reference_ngrams
        .iter()
        .map(|(ngram, &count)| count.min(candidate_ngrams.get(ngram).copied().unwrap_or(0)))
        .sum();
    let candidate_size: usize = candidate_ngrams.values().sum();
    let reference_size: usize = reference_ngrams.values().sum();
    RougeScore::of(matches, candidate_size.max(1), reference_size.max(1))
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for ngram in tokens.windows(n) {
        *counts.entry(ngram).or_default() += 1;
    }
    counts
}

/// `_score_lcs`.
fn lcs_score(reference: &[String], candidate: &[String]) -> RougeScore {
    if reference.is_empty() || candidate.is_empty() {
        return RougeScore::default();
    }
    RougeScore::of(
        lcs::lcs_len(reference, candidate),
        candidate.len(),
        reference.len(),
    )
}

/// `_summary_level_lcs`.
fn summary_lcs_score(reference: &[Vec<String>], candidate: &[Vec<String>]) -> RougeScore {
    let reference_size: usize = reference.iter().map(Vec::len).sum();
    let candidate_size: usize = candidate.iter().map(Vec::len).sum();
    if reference_size == 0 || candidate_size == 0 {
        return RougeScore::default();
    }
    RougeScore::of(
        lcs::summary_lcs_hits(reference, candidate),
        candidate_size,
        reference_size,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::reference_fixture::{assert_close, corpora};
    use serde_json::Value;

    fn item<'a>(candidate: &'a str, references: &'a [String]) -> GenerationItem<'a> {
        GenerationItem {
            candidate,
            references,
        }
    }

    #[test]
    fn rouge_scorer_docstring_example() {
        // rouge-score 0.1.2 on its own docstring example: rouge1 P 0.75, R 0.666…,
        // rougeL P 0.625 (8 candidate tokens, 9 reference tokens, 6 unigram matches,
        // LCS "the quick brown jumps the").
        let refs = vec!["The quick brown fox jumps over the lazy dog".to_string()];
        let report = rouge(
            &[item("The quick brown dog jumps on the log.", &refs)],
            Stemming::Off,
        )
        .unwrap();
        let scores = report.per_item[0];
        assert_eq!(scores.rouge1.precision, 6.0 / 8.0);
        assert_eq!(scores.rouge1.recall, 6.0 / 9.0);
        assert_eq!(scores.rouge_l.precision, 5.0 / 8.0);
        assert_eq!(scores.rouge2.fmeasure, 0.26666666666666666);
        assert_eq!(report.mean, scores);
    }

    #[test]
    fn best_reference_is_chosen_per_type_and_empty_texts_score_zero() {
        let refs = vec!["a b c d".to_string(), "d c b a".to_string()];
        let scores = rouge(&[item("d c b a", &refs)], Stemming::Off)
            .unwrap()
            .per_item[0];
        assert_eq!(scores.rouge2.fmeasure, 1.0);
        assert_eq!(scores.rouge_l.fmeasure, 1.0);
        let empty = rouge(&[item("", &refs)], Stemming::Porter)
            .unwrap()
            .per_item[0];
        assert_eq!(empty, RougeScores::default());
        assert_eq!(
            rouge(&[], Stemming::Off),
            Err(GenerationInputError::NoItems)
        );
    }

    fn assert_rouge(got: &RougeScores, want: &Value, what: &str) {
        for (name, score) in got.by_name() {
            let want = &want[name];
            assert_close(score.precision, &want["precision"], 1e-12, what);
            assert_close(score.recall, &want["recall"], 1e-12, what);
            assert_close(score.fmeasure, &want["fmeasure"], 1e-12, what);
        }
    }

    #[test]
    fn corpora_score_as_rouge_score() {
        for corpus in corpora() {
            for (stemming, key) in [
                (Stemming::Off, "rouge"),
                (Stemming::Porter, "rouge_stemmed"),
            ] {
                let report = rouge(&corpus.items(), stemming).unwrap();
                let want = &corpus.expected[key];
                let what = format!("{} {key}", corpus.name);
                assert_rouge(&report.mean, &want["mean"], &what);
                let per_item = want["per_item"].as_array().unwrap();
                assert_eq!(report.per_item.len(), per_item.len());
                for (i, (got, want)) in report.per_item.iter().zip(per_item).enumerate() {
                    assert_rouge(got, want, &format!("{what} item {i}"));
                }
            }
        }
    }
}
