//! The fine-tuning loop: (query, positive[, hard negatives]) text pairs, shuffled each
//! epoch with the seed, tokenized per batch, `MultipleNegativesRankingLoss` with AdamW,
//! a warm-up + decay schedule, gradient clipping, training-mode dropout, a progress
//! callback and a cancellation flag.
//!
//! Against sentence-transformers' trainer: the epoch order is a Fisher–Yates shuffle
//! by [`SplitMix64`] seeded from `(seed, epoch)` (sentence-transformers draws
//! `torch.randperm` seeded with `seed + epoch`), so the same seed gives another order
//! than in Python; the last short batch is kept (`dataloader_drop_last` False); the
//! schedule spans exactly the batches planned, which for the default sampler is the
//! trainer's `epochs · ceil(n / batch_size)`. With [`BatchSampling::NoDuplicates`]
//! short batches can make an epoch longer than that: here the schedule still ends at
//! the last batch, where the Hugging Face trainer (which plans `ceil(n / batch_size)`
//! per epoch) would run past the end of its schedule.

use crate::bert::Dropout;
use crate::model::SentenceEncoder;
use crate::optim::{adamw_params, Trainer};
use crate::rng::SplitMix64;
use crate::schedule::{LrSchedule, ScheduleKind, Warmup};
use crate::tokenize::BatchTokenizer;
use anyhow::{ensure, Context, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// One training example: a query, its positive, and optional hard negatives (extra
/// candidates for every query of the batch, as sentence-transformers' negative columns).
#[derive(Clone, Debug)]
pub struct TrainingPair {
    /// The anchor text.
    pub query: String,
    /// Its relevant text.
    pub positive: String,
    /// Texts that should rank below the positive (any number).
    pub hard_negatives: Vec<String>,
}

impl TrainingPair {
    /// A pair without hard negatives.
    pub fn new(query: impl Into<String>, positive: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            positive: positive.into(),
            hard_negatives: Vec::new(),
        }
    }

    fn texts(&self) -> impl Iterator<Item = &str> {
        [self.query.as_str(), self.positive.as_str()]
            .into_iter()
            .chain(self.hard_negatives.iter().map(String::as_str))
    }
}

/// How examples are grouped into batches each epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSampling {
    /// Consecutive chunks of the shuffled order (sentence-transformers'
    /// `BatchSamplers.BATCH_SAMPLER`, its default). Two examples of a batch with the
    /// same positive (or a positive equal to another's negative) are then false
    /// negatives for each other, as in sentence-transformers.
    Shuffled,
    /// sentence-transformers' `NO_DUPLICATES`: walking the shuffled order, an example
    /// joins the batch only if none of its texts (query, positive, negatives) is already
    /// in it; skipped ones wait for a later batch. A batch that cannot be filled is
    /// emitted short.
    NoDuplicates,
}

/// Settings of [`fine_tune`]. [`Default`] follows the Hugging Face /
/// sentence-transformers trainer defaults where they exist.
#[derive(Clone, Debug)]
pub struct FineTuneConfig {
    /// Passes over the data (default 1).
    pub epochs: usize,
    /// Pairs per batch (default 32). The last batch of an epoch may be short (no
    /// `drop_last`).
    pub batch_size: usize,
    /// Seeds the per-epoch shuffle and the dropout masks (default 42). The same seed,
    /// data and settings give the same weights; the order and masks are not torch's.
    pub seed: u64,
    /// Peak learning rate (default 5e-5).
    pub learning_rate: f64,
    /// AdamW decoupled weight decay (default 0, the HF trainer's).
    pub weight_decay: f64,
    /// Decay after warm-up (default linear).
    pub schedule: ScheduleKind,
    /// Warm-up (default none).
    pub warmup: Warmup,
    /// Global gradient-norm limit (default 1.0).
    pub max_grad_norm: Option<f64>,
    /// Similarity scale of the loss (default 20).
    pub scale: f64,
    /// Batch sampler (default [`BatchSampling::Shuffled`]).
    pub sampling: BatchSampling,
    /// `(hidden, attention)` dropout probabilities; `None` (default) takes
    /// `config.json`'s `hidden_dropout_prob` / `attention_probs_dropout_prob`;
    /// `Some((0.0, 0.0))` trains without dropout.
    pub dropout: Option<(f32, f32)>,
    /// Worker threads: the loop runs inside a rayon pool of this size, which bounds
    /// candle's CPU parallelism (its matmuls split work into `RAYON_NUM_THREADS` or
    /// physical-core-count chunks, run on the current rayon pool). `None` (default):
    /// rayon's global pool.
    pub threads: Option<usize>,
    /// Texts per forward pass with a graph ([`Trainer::mini_batch`]); `None` for the
    /// whole batch at once.
    pub mini_batch: Option<usize>,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 32,
            seed: 42,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            schedule: ScheduleKind::Linear,
            warmup: Warmup::Steps(0),
            max_grad_norm: Some(1.0),
            scale: crate::loss::DEFAULT_SCALE,
            sampling: BatchSampling::Shuffled,
            dropout: None,
            threads: None,
            mini_batch: None,
        }
    }
}

/// What the progress callback gets after each step.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Optimiser steps done (1 after the first).
    pub step: usize,
    /// Steps the run will take if not cancelled.
    pub total_steps: usize,
    /// The epoch of this step (0-based).
    pub epoch: usize,
    /// The loss of this step's batch (before the update).
    pub loss: f32,
    /// The learning rate this step used.
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Pairs in this step's batch.
    pub examples: usize,
    /// Pairs of this batch per second of this step (tokenization included).
    pub examples_per_sec: f64,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct FineTuneSummary {
    /// Optimiser steps taken.
    pub steps: usize,
    /// The steps planned.
    pub total_steps: usize,
    /// Whether the cancellation flag stopped the run early.
    pub cancelled: bool,
    /// The mean batch loss of each epoch that ran (a cancelled epoch's over its steps).
    pub epoch_losses: Vec<f32>,
    /// Whether [`EpochHooks::after_epoch`] ended the run before its last epoch.
    pub stopped_early: bool,
}

/// What the loop does after an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterEpoch {
    /// Run the next epoch, if any.
    Continue,
    /// End the run here (early stopping).
    Stop,
}

/// The caller's work between epochs: refreshing hard negatives with the current
/// weights, validation, early stopping. Both run inside the run's thread pool.
pub trait EpochHooks {
    /// Before epoch `epoch` (0-based): may change the pairs' hard negatives. The epoch's
    /// batches are planned after it returns.
    fn before_epoch(
        &mut self,
        _epoch: usize,
        _encoder: &SentenceEncoder,
        _pairs: &mut [TrainingPair],
    ) -> Result<()> {
        Ok(())
    }

    /// After epoch `epoch` ran to its end, with its mean batch loss.
    fn after_epoch(
        &mut self,
        _epoch: usize,
        _encoder: &SentenceEncoder,
        _mean_loss: f32,
    ) -> Result<AfterEpoch> {
        Ok(AfterEpoch::Continue)
    }
}

/// No work between epochs.
pub struct NoHooks;

impl EpochHooks for NoHooks {}

/// The batches of every epoch, as indices into the pairs.
pub fn plan_batches(
    pairs: &[TrainingPair],
    epochs: usize,
    batch_size: usize,
    seed: u64,
    sampling: BatchSampling,
) -> Vec<Vec<Vec<usize>>> {
    (0..epochs)
        .map(|epoch| plan_epoch(pairs, epoch, batch_size, seed, sampling))
        .collect()
}

/// The batches of epoch `epoch`.
fn plan_epoch(
    pairs: &[TrainingPair],
    epoch: usize,
    batch_size: usize,
    seed: u64,
    sampling: BatchSampling,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    SplitMix64::derive(seed, epoch as u64).shuffle(&mut order);
    match sampling {
        BatchSampling::Shuffled => order.chunks(batch_size).map(<[usize]>::to_vec).collect(),
        BatchSampling::NoDuplicates => no_duplicates(pairs, order, batch_size),
    }
}

/// sentence-transformers' `NoDuplicatesBatchSampler` over a shuffled `order`.
fn no_duplicates(pairs: &[TrainingPair], order: Vec<usize>, batch_size: usize) -> Vec<Vec<usize>> {
    let mut remaining = order;
    let mut batches = Vec::new();
    while !remaining.is_empty() {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut batch = Vec::new();
        for &i in &remaining {
            if pairs[i].texts().any(|t| seen.contains(t)) {
                continue;
            }
            batch.push(i);
            if batch.len() == batch_size {
                break;
            }
            seen.extend(pairs[i].texts());
        }
        remaining.retain(|i| !batch.contains(i));
        batches.push(batch);
    }
    batches
}

/// Fine-tunes `encoder` in place on `pairs` (texts tokenized with `tokenizer`).
/// Before each step the `cancel` flag is read; when set, the run stops there and the
/// summary says so (the weights keep the updates made so far). `progress` is called
/// after every step, `hooks` around every epoch. The schedule spans the batches
/// planned at the start; when hooks change the hard negatives under the
/// [`BatchSampling::NoDuplicates`] sampler, later epochs are planned again and may be
/// a batch or two longer or shorter (the learning rate stays 0 past the end).
pub fn fine_tune(
    encoder: &SentenceEncoder,
    tokenizer: &BatchTokenizer,
    pairs: &mut [TrainingPair],
    config: &FineTuneConfig,
    hooks: &mut (dyn EpochHooks + Send),
    progress: &mut (dyn FnMut(&Progress) + Send),
    cancel: &AtomicBool,
) -> Result<FineTuneSummary> {
    match config.threads {
        Some(n) => {
            ensure!(n > 0, "threads must be positive");
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .context("building the thread pool")?;
            pool.install(|| run(encoder, tokenizer, pairs, config, hooks, progress, cancel))
        }
        None => run(encoder, tokenizer, pairs, config, hooks, progress, cancel),
    }
}

fn run(
    encoder: &SentenceEncoder,
    tokenizer: &BatchTokenizer,
    pairs: &mut [TrainingPair],
    config: &FineTuneConfig,
    hooks: &mut (dyn EpochHooks + Send),
    progress: &mut (dyn FnMut(&Progress) + Send),
    cancel: &AtomicBool,
) -> Result<FineTuneSummary> {
    ensure!(!pairs.is_empty(), "no training pairs");
    ensure!(config.batch_size > 0, "batch size must be positive");
    let plan = plan_batches(
        pairs,
        config.epochs,
        config.batch_size,
        config.seed,
        config.sampling,
    );
    let total_steps: usize = plan.iter().map(Vec::len).sum();
    let mut params = adamw_params(config.learning_rate);
    params.weight_decay = config.weight_decay;
    let mut trainer = Trainer::new(encoder, params)?;
    trainer.scale = config.scale;
    trainer.max_grad_norm = config.max_grad_norm;
    trainer.mini_batch = config.mini_batch;
    trainer.schedule = Some(LrSchedule::new(
        config.schedule,
        config.learning_rate,
        config.warmup,
        total_steps,
    )?);
    let dropout_seed = SplitMix64::derive(config.seed, u64::MAX).next_u64();
    let dropout = match config.dropout {
        Some((hidden, attention)) => Dropout::new(hidden, attention, dropout_seed),
        None => Dropout::from_config(encoder.bert().config(), dropout_seed),
    };
    trainer.dropout = Some(dropout);
    let device = encoder
        .named_vars()
        .first()
        .map(|(_, v)| v.device().clone())
        .context("the encoder has no weights")?;

    let mut summary = FineTuneSummary {
        steps: 0,
        total_steps,
        cancelled: false,
        epoch_losses: Vec::new(),
        stopped_early: false,
    };
    for epoch in 0..config.epochs {
        hooks.before_epoch(epoch, encoder, pairs)?;
        let batches = plan_epoch(
            pairs,
            epoch,
            config.batch_size,
            config.seed,
            config.sampling,
        );
        let mut loss_sum = 0f64;
        let mut loss_count = 0usize;
        for batch in &batches {
            if cancel.load(Ordering::SeqCst) {
                summary.cancelled = true;
                break;
            }
            let start = Instant::now();
            let queries: Vec<&str> = batch.iter().map(|&i| pairs[i].query.as_str()).collect();
            let positives: Vec<&str> = batch.iter().map(|&i| pairs[i].positive.as_str()).collect();
            let negatives: Vec<&str> = batch
                .iter()
                .flat_map(|&i| pairs[i].hard_negatives.iter().map(String::as_str))
                .collect();
            let contrastive =
                tokenizer.contrastive_batch(&queries, &positives, &negatives, &device)?;
            let report = trainer.step(encoder, &contrastive)?;
            summary.steps += 1;
            loss_sum += report.loss as f64;
            loss_count += 1;
            let seconds = start.elapsed().as_secs_f64().max(1e-9);
            progress(&Progress {
                step: summary.steps,
                total_steps,
                epoch,
                loss: report.loss,
                lr: report.lr,
                grad_norm: report.grad_norm,
                examples: batch.len(),
                examples_per_sec: batch.len() as f64 / seconds,
            });
        }
        let mean_loss = (loss_sum / loss_count.max(1) as f64) as f32;
        if loss_count > 0 {
            summary.epoch_losses.push(mean_loss);
        }
        if summary.cancelled {
            break;
        }
        if hooks.after_epoch(epoch, encoder, mean_loss)? == AfterEpoch::Stop {
            summary.stopped_early = epoch + 1 < config.epochs;
            break;
        }
    }
    Ok(summary)
}
