//! BLEU exactly as sacrebleu 2.6.0 computes it with its defaults: `corpus_bleu` (13a
//! tokenizer, mixed case, `exp` smoothing, max n-gram order 4, no effective order) and
//! `sentence_bleu` (the same with `effective_order=True`).
//!
//! Per item: n-grams of orders 1–4 of the candidate, each count clipped by its largest count
//! in any one reference; the reference length is the one closest to the candidate length,
//! ties to the shorter. The corpus score sums these statistics over the items before the
//! precisions and the brevity penalty `exp(1 − ref_len / hyp_len)` (when hyp_len < ref_len)
//! are taken, so it is not the mean of the sentence scores. Scores are on sacrebleu's 0–100
//! scale.

mod tokenizer_13a;

pub use tokenizer_13a::tokenize_13a;

use std::collections::HashMap;

use super::generation_input::{check_items, GenerationInputError, GenerationItem};

/// sacrebleu's maximum n-gram order (`MAX_NGRAM_ORDER`).
pub const MAX_NGRAM_ORDER: usize = 4;

/// The sacrebleu version whose behaviour this module reproduces (in the signature).
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// sacrebleu's `my_log(0)`: the logarithm of a zero precision.
const LOG_OF_ZERO: f64 = -9_999_999_999.0;

/// BLEU's sufficient statistics: lengths and n-gram counts of one item, or summed over a
/// corpus (sacrebleu's `[hyp_len, ref_len] + correct + total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BleuStatistics {
    /// Candidate tokens.
    pub hyp_len: usize,
    /// Tokens of the reference closest in length to the candidate.
    pub ref_len: usize,
    /// Candidate n-grams found in a reference (clipped), per order 1–4.
    pub correct: [usize; MAX_NGRAM_ORDER],
    /// Candidate n-grams, per order 1–4.
    pub total: [usize; MAX_NGRAM_ORDER],
}

impl BleuStatistics {
    /// The statistics of one candidate against its references (13a tokens).
    pub fn of(candidate: &str, references: &[String]) -> Self {
        let mut reference_counts: HashMap<Vec<String>, usize> = HashMap::new();
        let mut reference_lens = Vec::with_capacity(references.len());
        for reference in references {
            let tokens = tokenize_13a(reference);
            reference_lens.push(tokens.len());
            for (ngram, count) in ngram_counts(&tokens) {
                let best = reference_counts.entry(ngram.to_vec()).or_default();
                *best = (*best).max(count);
            }
        }
        let tokens = tokenize_13a(candidate);
        let mut stats = Self {
            hyp_len: tokens.len(),
            ref_len: closest_reference_len(tokens.len(), &reference_lens),
            ..Self::default()
        };
        for (ngram, count) in ngram_counts(&tokens) {
            let order = ngram.len() - 1;
            stats.total[order] += count;
            stats.correct[order] += count.min(reference_counts.get(ngram).copied().unwrap_or(0));
        }
        stats
    }

    /// Adds another item's statistics (sacrebleu's `sum_of_lists`).
    pub fn add(&mut self, other: &Self) {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for order in 0..MAX_NGRAM_ORDER {
            self.correct[order] += other.correct[order];
            self.total[order] += other.total[order];
        }
    }

    /// BLEU from these statistics with `exp` smoothing (sacrebleu's `BLEU.compute_bleu`).
    /// `effective_order` averages only the orders that have candidate n-grams, as
    /// `sentence_bleu` does.
    pub fn score(&self, effective_order: bool) -> BleuScore {
        let hyp_len = self.hyp_len as f64;
        let ref_len = self.ref_len as f64;
        let brevity_penalty = if self.hyp_len >= self.ref_len {
            1.0
        } else if self.hyp_len == 0 {
            0.0
        } else {
            (1.0 - ref_len / hyp_len).exp()
        };
        let mut precisions = [0.0; MAX_NGRAM_ORDER];
        let mut score = 0.0;
        if self.correct.iter().any(|&c| c > 0) {
            let mut smoothing = 1.0;
            let mut orders = MAX_NGRAM_ORDER;
            let counts = self.correct.iter().zip(&self.total);
            for (order, (precision, (&correct, &total))) in
                precisions.iter_mut().zip(counts).enumerate()
            {
                if total == 0 {
                    break;
                }
                if effective_order {
                    orders = order + 1;
                }
                *precision = if correct == 0 {
                    smoothing *= 2.0;
                    100.0 / (smoothing * total as f64)
                } else {
                    100.0 * correct as f64 / total as f64
                };
            }
            let log_sum = precisions[..orders]
                .iter()
                .map(|&p| if p == 0.0 { LOG_OF_ZERO } else { p.ln() })
                .fold(0.0, |sum, log| sum + log);
            score = brevity_penalty * (log_sum / orders as f64).exp();
        }
        BleuScore {
            score,
            precisions,
            brevity_penalty,
            ratio: if self.ref_len > 0 {
                hyp_len / ref_len
            } else {
                0.0
            },
            statistics: *self,
        }
    }
}

/// A BLEU score with what sacrebleu's `BLEUScore` reports beside it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BleuScore {
    /// BLEU, 0–100.
    pub score: f64,
    /// n-gram precisions of orders 1–4, 0–100 (smoothed where no n-gram matched; 0 for
    /// the orders past the first without candidate n-grams).
    pub precisions: [f64; MAX_NGRAM_ORDER],
    /// Brevity penalty (`bp`).
    pub brevity_penalty: f64,
    /// `hyp_len / ref_len`, 0 when `ref_len` is 0.
    pub ratio: f64,
    /// The statistics the score comes from (`hyp_len`, `ref_len`, `counts`, `totals`).
    pub statistics: BleuStatistics,
}

/// Corpus BLEU, sentence BLEU per item and the signature, from one pass over the items.
#[derive(Clone, Debug, PartialEq)]
pub struct BleuReport {
    /// sacrebleu `corpus_bleu` over all items.
    pub corpus: BleuScore,
    /// sacrebleu `sentence_bleu` of each item, in the items' order.
    pub per_item: Vec<BleuScore>,
    /// sacrebleu's signature of the corpus score, e.g.
    /// `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0` (`nrefs:var` when the
    /// items have different numbers of references).
    pub signature: String,
}

/// Scores the items as sacrebleu's `corpus_bleu` and `sentence_bleu` do with their defaults.
pub fn bleu(items: &[GenerationItem<'_>]) -> Result<BleuReport, GenerationInputError> {
    check_items(items)?;
    let statistics: Vec<BleuStatistics> = items
        .iter()
        .map(|item| BleuStatistics::of(item.candidate, item.references))
        .collect();
    let mut summed = BleuStatistics::default();
    for item in &statistics {
        summed.add(item);
    }
    Ok(BleuReport {
        corpus: summed.score(false),
        per_item: statistics.iter().map(|s| s.score(true)).collect(),
        signature: signature(items),
    })
}

/// sacrebleu's signature string for `corpus_bleu` with its defaults over these items.
fn signature(items: &[GenerationItem<'_>]) -> String {
    let first = items.first().map_or(0, |item| item.references.len());
    let nrefs = if items.iter().all(|item| item.references.len() == first) {
        first.to_string()
    } else {
        "var".to_string()
    };
    format!("nrefs:{nrefs}|case:mixed|eff:no|tok:13a|smooth:exp|version:{SACREBLEU_VERSION}")
}

/// Counts of the n-grams of orders 1–4 (sacrebleu's `extract_all_word_ngrams`).
fn ngram_counts(tokens: &[String]) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for order in 1..=MAX_NGRAM_ORDER.min(tokens.len()) {
        for ngram in tokens.windows(order) {
            *counts.entry(ngram).or_default() += 1;
        }
    }
    counts
}

/// The reference length closest to the candidate's, ties to the shorter
/// (sacrebleu's `_get_closest_ref_len`).
fn closest_reference_len(hyp_len: usize, reference_lens: &[usize]) -> usize {
    reference_lens
        .iter()
        .copied()
        .min_by_key(|&len| (len.abs_diff(hyp_len), len))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::reference_fixture::{assert_close, corpora};
    use serde_json::Value;

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn closest_reference_length_ties_to_the_shorter() {
        assert_eq!(closest_reference_len(5, &[7, 3, 9]), 3);
        assert_eq!(closest_reference_len(5, &[6, 9]), 6);
        assert_eq!(closest_reference_len(0, &[]), 0);
    }

    #[test]
    fn a_short_candidate_is_penalised_as_sacrebleu_prints_it() {
        // sacrebleu 2.6.0: BLEU = 30.18 100.0/66.7/50.0/50.0 (BP = 0.472 ratio = 0.571
        // hyp_len = 4 ref_len = 7)
        let refs = strings(&["The cat sat on the mat."]);
        let report = bleu(&[GenerationItem {
            candidate: "The cat sat.",
            references: &refs,
        }])
        .unwrap();
        let corpus = report.corpus;
        assert_eq!(format!("{:.2}", corpus.score), "30.18");
        assert_eq!(format!("{:.3}", corpus.brevity_penalty), "0.472");
        assert_eq!(format!("{:.1}", corpus.precisions[1]), "66.7");
        assert_eq!(corpus.statistics.hyp_len, 4);
        assert_eq!(corpus.statistics.ref_len, 7);
        assert_eq!(
            report.signature,
            "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
        );
    }

    #[test]
    fn no_match_at_all_scores_zero_and_no_reference_is_refused() {
        let refs = strings(&["x y z"]);
        let item = GenerationItem {
            candidate: "a b c",
            references: &refs,
        };
        let report = bleu(&[item]).unwrap();
        assert_eq!(report.corpus.score, 0.0);
        assert_eq!(report.corpus.precisions, [0.0; 4]);
        let none = GenerationItem {
            candidate: "a",
            references: &[],
        };
        assert_eq!(
            bleu(&[item, none]),
            Err(GenerationInputError::NoReferences { index: 1 })
        );
    }

    fn assert_bleu(got: &BleuScore, want: &Value, what: &str) {
        assert_close(got.score, &want["score"], 1e-9, what);
        assert_eq!(
            format!("{:.4}", got.score),
            want["score_4dp"].as_str().unwrap(),
            "{what}"
        );
        for order in 0..MAX_NGRAM_ORDER {
            assert_close(
                got.precisions[order],
                &want["precisions"][order],
                1e-9,
                what,
            );
            assert_eq!(
                got.statistics.correct[order] as u64,
                want["counts"][order].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                got.statistics.total[order] as u64,
                want["totals"][order].as_u64().unwrap(),
                "{what}"
            );
        }
        assert_close(got.brevity_penalty, &want["bp"], 1e-9, what);
        assert_close(got.ratio, &want["ratio"], 1e-9, what);
        assert_eq!(
            got.statistics.hyp_len as u64,
            want["hyp_len"].as_u64().unwrap()
        );
        assert_eq!(
            got.statistics.ref_len as u64,
            want["ref_len"].as_u64().unwrap()
        );
    }

    #[test]
    fn corpora_score_as_sacrebleu() {
        let corpora = corpora();
        assert!(corpora.iter().map(|c| c.items().len()).sum::<usize>() > 250);
        for corpus in corpora {
            let report = bleu(&corpus.items()).unwrap();
            let want = &corpus.expected["bleu"];
            assert_bleu(&report.corpus, &want["corpus"], &corpus.name);
            assert_eq!(report.signature, want["signature"].as_str().unwrap());
            let per_item = want["per_item"].as_array().unwrap();
            assert_eq!(report.per_item.len(), per_item.len());
            for (i, (got, want)) in report.per_item.iter().zip(per_item).enumerate() {
                assert_bleu(got, want, &format!("{} item {i}", corpus.name));
            }
        }
    }
}
