//! Fine-tuning jobs: a served bert-text encoder trained with contrastive loss
//! (`marquee-training`) on a query set whose positives are a stored collection's item
//! texts; the collection is ranked with the weights so far before every epoch (hard
//! negatives) and after it (validation, early stopping); the result is written under
//! `data_dir/finetuned/NAME` ([`finetuned`]) and served under that name. The gRPC edge
//! is `services/training.rs`.

pub mod finetuned;
mod job;
mod ranking;

pub use job::{run, JobEvent, JobInputs, JobOutcome};

use marquee_training::ScheduleKind;
use std::collections::BTreeMap;

/// Validation metric name to value (trec_eval definitions, as `EvaluateRetrieval`).
pub type Metrics = BTreeMap<String, f64>;

/// A query with the ids of the items that answer it.
#[derive(Clone, Debug)]
pub struct LabeledQuery {
    /// The caller's id of the query.
    pub id: String,
    /// Its text.
    pub text: String,
    /// Ids of the collection items it is about.
    pub relevant: Vec<String>,
}

/// What a fine-tuning job trains and how.
#[derive(Clone, Debug)]
pub struct FineTuneSpec {
    /// The collection whose item texts are the positives.
    pub collection: String,
    /// The served model to start from.
    pub base_model: String,
    /// The name the result is served under.
    pub output_model: String,
    /// Training queries.
    pub train: Vec<LabeledQuery>,
    /// Validation queries (may be empty).
    pub validation: Vec<LabeledQuery>,
    /// Passes over the training queries.
    pub epochs: usize,
    /// Pairs per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Decay after the warm-up.
    pub schedule: ScheduleKind,
    /// Share of the steps spent warming up.
    pub warmup_ratio: f64,
    /// Gradient-norm limit, if any.
    pub max_grad_norm: Option<f64>,
    /// Softmax scale of the contrastive loss.
    pub scale: f64,
    /// Hard negatives per query (0 for in-batch negatives only).
    pub hard_negatives: usize,
    /// Width of an added projection, if any.
    pub projection_dim: Option<usize>,
    /// Shuffling, dropout and projection initialisation.
    pub seed: u64,
    /// Epochs without a better validation MRR before stopping; 0 never stops early.
    pub patience: usize,
    /// Worker threads.
    pub threads: usize,
}

/// Why a job did not produce a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// Settings or queries that cannot be trained on.
    #[error("{0}")]
    InvalidArgument(String),
    /// The collection's contents do not allow it (e.g. items without text).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The output name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller went away or cancelled; nothing was served.
    #[error("fine-tuning cancelled")]
    Cancelled,
    /// Loading, training or writing failed.
    #[error("{0}")]
    Failed(String),
}

impl From<anyhow::Error> for TrainingError {
    fn from(e: anyhow::Error) -> Self {
        TrainingError::Failed(format!("{e:#}"))
    }
}
