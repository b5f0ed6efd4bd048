//! Fine-tuning a served BERT text encoder with contrastive loss; the server's
//! `TrainingService` drives it.
//!
//! What exists: [`SentenceEncoder`] loads a sentence-transformers BERT directory
//! (`config.json`, `model.safetensors`, `1_Pooling/`, optional `2_Dense/`, optional
//! Normalize) into a candle [`candle_nn::VarMap`] with every weight trainable, runs the
//! forward pass with an attention mask (mean or CLS pooling) in eval mode or, with a
//! seeded [`Dropout`], in training mode, and saves the weights back as a directory
//! sentence-transformers loads unchanged. [`loss`] is `MultipleNegativesRankingLoss`;
//! [`optim`] has `clip_grad_norm_`, torch-equivalent AdamW and the [`Trainer`] step;
//! [`schedule`] has transformers' constant / linear / cosine schedules with warm-up;
//! [`tokenize`] turns texts into padded batches with the directory's `tokenizer.json`;
//! [`finetune`] is the loop over (query, positive, hard negatives) pairs with hooks
//! between epochs (validation, early stopping, hard-negative mining, which the server
//! implements); [`embed`] embeds many texts with the weights being trained. The tests
//! check them against torch, transformers and tokenizers on a tiny fixture model.
//! Everything runs on the CPU in f32.

pub mod bert;
pub mod embed;
pub mod finetune;
pub mod loss;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod schedule;
pub mod tokenize;

pub use bert::Dropout;
pub use candle_core::Device;
pub use embed::embed_texts;
pub use finetune::{
    fine_tune, AfterEpoch, BatchSampling, EpochHooks, FineTuneConfig, FineTuneSummary, NoHooks,
    Progress, TrainingPair,
};
pub use loss::multiple_negatives_ranking_loss;
pub use marquee_bert_config::BertConfig;
pub use marquee_kernels::Pooling;
pub use model::SentenceEncoder;
pub use optim::{clip_grad_norm, ContrastiveBatch, StepReport, Texts, Trainer};
pub use schedule::{LrSchedule, ScheduleKind, Warmup};
pub use tokenize::BatchTokenizer;
