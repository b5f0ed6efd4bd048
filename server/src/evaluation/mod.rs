//! Evaluation metrics, each with the definitions of a reference implementation.
//!
//! - [`ranking`]: Recall@K, MRR, NDCG@K over rankings (trec_eval).
//! - [`generation_input`]: the candidate texts and references that generation metrics score,
//!   and their input errors.
//! - [`bleu`]: corpus and sentence BLEU (sacrebleu 2.6.0 defaults, 13a tokenizer).
//! - [`rouge`]: ROUGE-1, ROUGE-2, ROUGE-L, ROUGE-Lsum (rouge-score 0.1.2).

pub mod bleu;
pub mod generation_input;
pub mod ranking;
#[cfg(test)]
mod reference_fixture;
pub mod rouge;

pub use ranking::{mean, query_metrics, Judged};
