//! Fine-tuning a served BERT text encoder with contrastive loss (issue 18, first step).
//!
//! What exists: [`SentenceEncoder`] loads a sentence-transformers BERT directory
//! (`config.json`, `model.safetensors`, `1_Pooling/`, optional `2_Dense/`, optional
//! Normalize) into a candle [`candle_nn::VarMap`] with every weight trainable, runs the
//! forward pass with an attention mask (mean or CLS pooling), and saves the weights back
//! as a directory sentence-transformers loads unchanged. [`loss`] is
//! `MultipleNegativesRankingLoss`; [`optim`] has `clip_grad_norm_` and torch-equivalent
//! AdamW. The tests check all of it against torch on a tiny fixture model.
//!
//! Not yet: dropout (the forward pass is the eval-mode one; sentence-transformers trains
//! with BERT's dropout 0.1), a tokenizer in the loop, data loading, schedules, an RPC
//! or CLI. Everything runs on the CPU in f32.

pub mod bert;
pub mod config;
pub mod finetune;
pub mod loss;
pub mod model;
pub mod optim;
pub mod rng;
pub mod schedule;
pub mod tokenize;

pub use bert::Dropout;
pub use config::{BertConfig, Pooling};
pub use finetune::{
    fine_tune, BatchSampling, FineTuneConfig, FineTuneSummary, Progress, TrainingPair,
};
pub use loss::multiple_negatives_ranking_loss;
pub use model::SentenceEncoder;
pub use optim::{clip_grad_norm, ContrastiveBatch, StepReport, Texts, Trainer};
pub use schedule::{LrSchedule, ScheduleKind, Warmup};
pub use tokenize::BatchTokenizer;
