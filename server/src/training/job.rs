//! One fine-tuning job, run on its own thread pool: pairs from the queries and the
//! collection's item texts, validation of the base model, the training loop with
//! hard negatives refreshed and the collection ranked after every epoch, the best
//! epoch's weights staged and published.

use super::ranking::{mine, validate, ItemIndex};
use super::{finetuned, FineTuneSpec, LabeledQuery, Metrics, TrainingError};
use marquee_plugin_api::host::{PluginInstance, PluginLibrary};
use marquee_proto::v1::Metric;
use marquee_training::{
    fine_tune, AfterEpoch, BatchSampling, BatchTokenizer, Device, EpochHooks, FineTuneConfig,
    Progress, SentenceEncoder, TrainingPair, Warmup,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Texts embedded per forward pass when ranking the collection.
const EMBED_BATCH: usize = 32;

/// Texts per forward pass with a graph in a training step (GradCache): the activations
/// of 8 texts of 256 tokens instead of a whole batch's (a batch of 32 queries and 32
/// documents of 256 tokens holds over 20 GB otherwise), for one more forward pass.
const MINI_BATCH: usize = 8;

/// What a job reads from the server: the base model's directory and the collection.
pub struct JobInputs {
    /// The base model's directory.
    pub base_dir: PathBuf,
    /// The plugin serving the base model: it embeds with snapshots of the weights.
    pub plugin: Arc<PluginLibrary>,
    /// The data directory (the result goes under its `finetuned/`).
    pub data_dir: PathBuf,
    /// Ids of the collection's items that have a stored text, and those texts.
    pub ids: Vec<String>,
    /// The texts, in the order of `ids`.
    pub texts: Vec<String>,
    /// The collection's metric.
    pub metric: Metric,
    /// The items' stored vectors (rows in the order of `ids`) when they are the base
    /// model's embeddings (the collection is bound to it): the first ranking reads
    /// them instead of embedding the texts again.
    pub base_vectors: Option<(Vec<f32>, usize)>,
}

/// Progress of a job.
#[derive(Clone, Debug)]
pub enum JobEvent {
    /// After an optimiser step.
    Step(Progress),
    /// After an epoch (`epoch` 1-based), or the base model's validation (`epoch` 0).
    Epoch {
        /// 1-based; 0 before training.
        epoch: usize,
        /// Mean batch loss (0 before training).
        mean_loss: f32,
        /// Validation metrics, when there are validation queries.
        validation: Option<Metrics>,
        /// Seconds since the previous report.
        seconds: f64,
    },
}

/// A finished job.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    /// The published directory.
    pub path: PathBuf,
    /// Embedding width of the result.
    pub dimension: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// The epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Validation metrics of the base model and of the kept epoch (empty without
    /// validation queries).
    pub before: Metrics,
    /// See `before`.
    pub after: Metrics,
    /// Whether patience ended the run early.
    pub stopped_early: bool,
    /// Wall time of the job.
    pub seconds: f64,
    /// Training pairs per second of training steps.
    pub examples_per_second: f64,
}

/// Training pairs: one per (query, relevant item).
fn pairs(
    queries: &[LabeledQuery],
    text_of: &HashMap<&str, usize>,
    texts: &[String],
) -> Vec<TrainingPair> {
    queries
        .iter()
        .flat_map(|q| {
            q.relevant
                .iter()
                .map(|id| TrainingPair::new(q.text.clone(), texts[text_of[id.as_str()]].clone()))
        })
        .collect()
}

/// Refuses queries without text or relevant items, and relevant ids that are not
/// items with a stored text.
fn check_queries(
    what: &str,
    queries: &[LabeledQuery],
    text_of: &HashMap<&str, usize>,
) -> Result<(), TrainingError> {
    for q in queries {
        if q.text.trim().is_empty() || q.relevant.is_empty() {
            return Err(TrainingError::InvalidArgument(format!(
                "{what} query {:?} needs a text and at least one relevant item",
                q.id
            )));
        }
        if let Some(id) = q
            .relevant
            .iter()
            .find(|id| !text_of.contains_key(id.as_str()))
        {
            return Err(TrainingError::FailedPrecondition(format!(
                "{what} query {:?} names item {id:?}, which the collection does not hold as text",
                q.id
            )));
        }
    }
    Ok(())
}

/// The hooks of the training loop: ranking the collection with the weights so far.
struct Ranking<'a> {
    spec: &'a FineTuneSpec,
    inputs: &'a JobInputs,
    /// Item embeddings of the current weights, if computed since the last step.
    items: Option<ItemIndex>,
    /// Per pair, its query's index in `spec.train`.
    pair_query: Vec<usize>,
    events: &'a (dyn Fn(JobEvent) + Sync),
    epoch_start: Instant,
    best: Option<(usize, f64, Metrics)>,
    since_best: usize,
    staged: PathBuf,
    /// The weights so far, written to `scratch` and loaded by the serving plugin (its
    /// CPU path, many times faster than the training graph) to embed many texts;
    /// dropped whenever training changes the weights.
    snapshot: Option<PluginInstance>,
    scratch: PathBuf,
}

impl Ranking<'_> {
    /// Embeds `texts` with the current weights: rows of the returned width.
    fn embed(
        &mut self,
        encoder: &SentenceEncoder,
        texts: &[&str],
    ) -> anyhow::Result<(Vec<f32>, usize)> {
        if self.snapshot.is_none() {
            stage(encoder, &self.scratch)?;
            let options = serde_json::json!({"threads": self.spec.threads, "device": "cpu"});
            self.snapshot = Some(
                self.inputs
                    .plugin
                    .create(&self.scratch, &options.to_string())?,
            );
        }
        let model = self.snapshot.as_ref().expect("just loaded");
        let (dim, limit) = (
            model.info().output_dim as usize,
            model.info().max_input_tokens,
        );
        let mut rows = Vec::with_capacity(texts.len() * dim);
        for chunk in texts.chunks(EMBED_BATCH) {
            let mut ids = Vec::new();
            let mut offsets = vec![0u32];
            for text in chunk {
                ids.extend(model.tokenize(text, limit)?.ids);
                offsets.push(ids.len() as u32);
            }
            rows.extend(model.embed_tokens(&ids, &offsets)?);
        }
        Ok((rows, dim))
    }

    /// The collection ranked by the current weights (embedding the items if needed).
    fn items(&mut self, encoder: &SentenceEncoder, first: bool) -> anyhow::Result<&ItemIndex> {
        if self.items.is_none() {
            let (vectors, dim) = match (&self.inputs.base_vectors, first) {
                (Some((vectors, dim)), true) => (vectors.clone(), *dim),
                _ => {
                    let texts: Vec<&str> = self.inputs.texts.iter().map(String::as_str).collect();
                    self.embed(encoder, &texts)?
                }
            };
            self.items = Some(ItemIndex::new(vectors, dim, self.inputs.metric));
        }
        Ok(self.items.as_ref().expect("just set"))
    }

    /// Validation metrics of the current weights.
    fn validation(&mut self, encoder: &SentenceEncoder, first: bool) -> anyhow::Result<Metrics> {
        let texts: Vec<&str> = self
            .spec
            .validation
            .iter()
            .map(|q| q.text.as_str())
            .collect();
        let (queries, _) = self.embed(encoder, &texts)?;
        let (spec, inputs) = (self.spec, self.inputs);
        let index = self.items(encoder, first)?;
        validate(index, &inputs.ids, &spec.validation, queries)
    }
}

impl EpochHooks for Ranking<'_> {
    fn before_epoch(
        &mut self,
        epoch: usize,
        encoder: &SentenceEncoder,
        pairs: &mut [TrainingPair],
    ) -> anyhow::Result<()> {
        let k = self.spec.hard_negatives;
        if k > 0 {
            let texts: Vec<&str> = self.spec.train.iter().map(|q| q.text.as_str()).collect();
            let (queries, _) = self.embed(encoder, &texts)?;
            let (spec, inputs) = (self.spec, self.inputs);
            let index = self.items(encoder, epoch == 0)?;
            let negatives = mine(index, &inputs.ids, &spec.train, queries, k)?;
            for (pair, &q) in pairs.iter_mut().zip(&self.pair_query) {
                pair.hard_negatives = negatives[q]
                    .iter()
                    .map(|&row| self.inputs.texts[row].clone())
                    .collect();
            }
        }
        // The epoch changes the weights.
        self.items = None;
        self.snapshot = None;
        Ok(())
    }

    fn after_epoch(
        &mut self,
        epoch: usize,
        encoder: &SentenceEncoder,
        mean_loss: f32,
    ) -> anyhow::Result<AfterEpoch> {
        let validation = if self.spec.validation.is_empty() {
            None
        } else {
            Some(self.validation(encoder, false)?)
        };
        let mut decision = AfterEpoch::Continue;
        if let Some(metrics) = &validation {
            let mrr = metrics.get("mrr").copied().unwrap_or(0.0);
            if self.best.as_ref().is_none_or(|(_, best, _)| mrr > *best) {
                self.best = Some((epoch + 1, mrr, metrics.clone()));
                self.since_best = 0;
                if epoch + 1 < self.spec.epochs {
                    // Keep this epoch's weights in case later ones do worse.
                    stage(encoder, &self.staged)?;
                }
            } else {
                self.since_best += 1;
                if self.spec.patience > 0 && self.since_best >= self.spec.patience {
                    decision = AfterEpoch::Stop;
                }
            }
        }
        (self.events)(JobEvent::Epoch {
            epoch: epoch + 1,
            mean_loss,
            validation,
            seconds: self.epoch_start.elapsed().as_secs_f64(),
        });
        self.epoch_start = Instant::now();
        Ok(decision)
    }
}

/// Writes the weights to `dir`, replacing what is there.
fn stage(encoder: &SentenceEncoder, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    encoder.save(dir)
}

/// Runs a job to its end on `spec.threads` threads (blocking): returns the published
/// model, or why there is none. `events` gets the progress; `cancel` is read before
/// every step.
pub fn run(
    spec: &FineTuneSpec,
    inputs: &JobInputs,
    events: &(dyn Fn(JobEvent) + Sync),
    cancel: &AtomicBool,
) -> Result<JobOutcome, TrainingError> {
    let started = Instant::now();
    if spec.train.is_empty() {
        return Err(TrainingError::InvalidArgument("no training queries".into()));
    }
    if spec.epochs == 0 || spec.batch_size == 0 {
        return Err(TrainingError::InvalidArgument(
            "epochs and batch_size must be positive".into(),
        ));
    }
    if spec.patience > 0 && spec.validation.is_empty() {
        return Err(TrainingError::InvalidArgument(
            "patience (early stopping) needs validation queries".into(),
        ));
    }
    let text_of: HashMap<&str, usize> = inputs
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    check_queries("training", &spec.train, &text_of)?;
    check_queries("validation", &spec.validation, &text_of)?;
    if spec.hard_negatives >= inputs.ids.len() {
        return Err(TrainingError::InvalidArgument(format!(
            "{} hard negatives per query, but the collection has {} items with text",
            spec.hard_negatives,
            inputs.ids.len()
        )));
    }
    if finetuned::model_dir(&inputs.data_dir, &spec.output_model).exists() {
        return Err(TrainingError::AlreadyExists(format!(
            "a fine-tuned model {} already exists under {}",
            spec.output_model,
            finetuned::model_dir(&inputs.data_dir, &spec.output_model).display()
        )));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(spec.threads.max(1))
        .thread_name(|i| format!("finetune-{i}"))
        .build()
        .map_err(|e| TrainingError::Failed(format!("starting the training threads: {e}")))?;
    let staged = finetuned::staging_dir(&inputs.data_dir, &spec.output_model);
    let result = pool.install(|| train(spec, inputs, &text_of, &staged, events, cancel));
    drop(pool);
    // The job's tensors are freed: give their memory back rather than keep it.
    crate::heap::release_free_memory();
    let _ = std::fs::remove_dir_all(finetuned::scratch_dir(&inputs.data_dir, &spec.output_model));
    let trained = match result {
        Ok(trained) => trained,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
    };
    let record = serde_json::json!({
        "base_model": spec.base_model,
        "collection": spec.collection,
        "train_queries": spec.train.len(),
        "validation_queries": spec.validation.len(),
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "weight_decay": spec.weight_decay,
        "schedule": format!("{:?}", spec.schedule).to_lowercase(),
        "warmup_ratio": spec.warmup_ratio,
        "max_grad_norm": spec.max_grad_norm,
        "scale": spec.scale,
        "hard_negatives": spec.hard_negatives,
        "projection_dim": spec.projection_dim,
        "seed": spec.seed,
        "patience": spec.patience,
        "steps": trained.steps,
        "best_epoch": trained.best_epoch,
        "validation_before": trained.before,
        "validation_after": trained.after,
        "stopped_early": trained.stopped_early,
    });
    let written = serde_json::to_string_pretty(&record)
        .map_err(anyhow::Error::from)
        .and_then(|json| Ok(std::fs::write(staged.join(finetuned::RECORD), json)?))
        .and_then(|()| Ok(finetuned::publish(&inputs.data_dir, &spec.output_model)?));
    let path = match written {
        Ok(path) => path,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(TrainingError::Failed(format!("writing the model: {e:#}")));
        }
    };
    Ok(JobOutcome {
        path,
        dimension: trained.dimension,
        steps: trained.steps,
        best_epoch: trained.best_epoch,
        before: trained.before,
        after: trained.after,
        stopped_early: trained.stopped_early,
        seconds: started.elapsed().as_secs_f64(),
        examples_per_second: trained.pairs as f64 / trained.step_seconds.max(1e-9),
    })
}

/// What [`train`] hands back.
struct Trained {
    steps: usize,
    best_epoch: usize,
    /// Validation metrics of the base model and of the kept epoch.
    before: Metrics,
    after: Metrics,
    stopped_early: bool,
    /// Seconds spent in training steps, and the pairs they trained on.
    step_seconds: f64,
    pairs: usize,
    /// Width of the embeddings the kept weights give.
    dimension: usize,
}

/// Loads, validates the base, trains, and stages the kept weights in `staged`.
fn train(
    spec: &FineTuneSpec,
    inputs: &JobInputs,
    text_of: &HashMap<&str, usize>,
    staged: &Path,
    events: &(dyn Fn(JobEvent) + Sync),
    cancel: &AtomicBool,
) -> Result<Trained, TrainingError> {
    let mut encoder = SentenceEncoder::load(&inputs.base_dir, &Device::Cpu)?;
    let tokenizer = BatchTokenizer::load(
        &inputs.base_dir,
        encoder.bert().config().max_position_embeddings,
    )?;
    if let Some(dim) = spec.projection_dim {
        encoder.add_projection(dim, spec.seed)?;
    }
    let mut pairs = pairs(&spec.train, text_of, &inputs.texts);
    let pair_query: Vec<usize> = spec
        .train
        .iter()
        .enumerate()
        .flat_map(|(q, query)| std::iter::repeat_n(q, query.relevant.len()))
        .collect();
    let base_vectors_fit = inputs
        .base_vectors
        .as_ref()
        .is_some_and(|(_, dim)| *dim == encoder.output_dim());
    let mut hooks = Ranking {
        spec,
        inputs,
        items: None,
        pair_query,
        events,
        epoch_start: Instant::now(),
        best: None,
        since_best: 0,
        staged: staged.to_path_buf(),
        snapshot: None,
        scratch: finetuned::scratch_dir(&inputs.data_dir, &spec.output_model),
    };
    let before = if spec.validation.is_empty() {
        Metrics::new()
    } else {
        let metrics = hooks.validation(&encoder, base_vectors_fit)?;
        (hooks.events)(JobEvent::Epoch {
            epoch: 0,
            mean_loss: 0.0,
            validation: Some(metrics.clone()),
            seconds: hooks.epoch_start.elapsed().as_secs_f64(),
        });
        hooks.epoch_start = Instant::now();
        metrics
    };
    let config = FineTuneConfig {
        epochs: spec.epochs,
        batch_size: spec.batch_size,
        seed: spec.seed,
        learning_rate: spec.learning_rate,
        weight_decay: spec.weight_decay,
        schedule: spec.schedule,
        warmup: Warmup::Ratio(spec.warmup_ratio),
        max_grad_norm: spec.max_grad_norm,
        scale: spec.scale,
        sampling: BatchSampling::Shuffled,
        dropout: None,
        threads: None,
        mini_batch: Some(MINI_BATCH),
    };
    let mut step_seconds = 0f64;
    let mut trained_pairs = 0usize;
    let summary = {
        let mut progress = |p: &Progress| {
            step_seconds += p.examples as f64 / p.examples_per_sec.max(1e-9);
            trained_pairs += p.examples;
            events(JobEvent::Step(Progress {
                examples_per_sec: trained_pairs as f64 / step_seconds.max(1e-9),
                ..*p
            }));
        };
        fine_tune(
            &encoder,
            &tokenizer,
            &mut pairs,
            &config,
            &mut hooks,
            &mut progress,
            cancel,
        )?
    };
    if summary.cancelled {
        return Err(TrainingError::Cancelled);
    }
    let best = match hooks.best.take() {
        // The last epoch was the best: it is not staged yet.
        Some((epoch, _, metrics)) => {
            if epoch == summary.epoch_losses.len() {
                stage(&encoder, staged)?;
            }
            (epoch, metrics)
        }
        None => {
            stage(&encoder, staged)?;
            (summary.epoch_losses.len(), Metrics::new())
        }
    };
    let (best_epoch, after) = best;
    Ok(Trained {
        steps: summary.steps,
        best_epoch,
        before,
        after,
        stopped_early: summary.stopped_early,
        step_seconds,
        pairs: trained_pairs,
        dimension: encoder.output_dim(),
    })
}
