//! One model's share of a request: the inputs checked against the kind of model and
//! laid out for its plugin (texts tokenized, stored items looked up), places taken in
//! its queue, the deadline checked, and the job run alone on an idle model or handed
//! to its batcher.

use super::batcher::{EmbedJob, JobOutput};
use super::deadline::Deadline;
use super::error::{self, EngineError};
use super::inputs::{FusionRows, Inputs};
use super::model::{kind_name, LoadedModel};
use super::queue::QueueSlot;
use super::request::{Input, StoredInput, Truncation};
use super::tokenizer_pool::TokenizerPool;
use crate::config::Limits;
use crate::metrics as m;
use crate::retrieval::store::Store;
use marquee_plugin_api::PluginKind;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What one model (or a pipeline's models together) computed for a request.
#[derive(Debug, Default)]
pub struct Stage {
    /// `n × dim` values in input order.
    pub vectors: Vec<f32>,
    /// Length of each vector.
    pub dim: usize,
    /// Tokens fed to a text model.
    pub input_tokens: u64,
    /// Texts cut at the token limit.
    pub truncated_inputs: u32,
    /// Time queued before the first batch (summed over a pipeline's models).
    pub queue: Duration,
    /// Time tokenizing.
    pub tokenize: Duration,
    /// Time in the batches that carried the inputs (summed over a pipeline's models).
    pub inference: Duration,
}

impl Stage {
    /// The vectors one by one.
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.vectors.chunks_exact(self.dim.max(1))
    }

    /// Adds another stage's usage and times to this one's.
    pub fn add_costs(&mut self, other: &Stage) {
        self.input_tokens += other.input_tokens;
        self.truncated_inputs += other.truncated_inputs;
        self.queue += other.queue;
        self.tokenize += other.tokenize;
        self.inference += other.inference;
    }
}

/// The error for input `i`, of a kind `model` (which is `kind`, taking `takes`) does
/// not take.
pub fn wrong_input(i: usize, input: &Input, model: &str, kind: &str, takes: &str) -> EngineError {
    if *input == Input::Missing {
        return EngineError::Invalid(format!("input {i} has neither text nor image"));
    }
    EngineError::Invalid(format!(
        "input {i} is {}, but model {model} is {kind}, which takes {takes}",
        input.describe()
    ))
}

/// Runs requests' inputs through single models.
pub struct ModelRunner {
    tokenizer: Arc<TokenizerPool>,
    store: Arc<Store>,
    limits: Limits,
}

impl ModelRunner {
    /// A runner tokenizing on `tokenizer`, looking stored fusion inputs up in `store`,
    /// and holding requests to `limits`.
    pub fn new(tokenizer: Arc<TokenizerPool>, store: Arc<Store>, limits: Limits) -> Self {
        Self {
            tokenizer,
            store,
            limits,
        }
    }

    /// The per-request limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks one encoded image against `limits.max_image_bytes`.
    pub fn check_image(&self, what: &str, bytes: &[u8]) -> Result<(), EngineError> {
        if bytes.is_empty() {
            return Err(EngineError::Invalid(format!("{what} is an empty image")));
        }
        if bytes.len() > self.limits.max_image_bytes {
            return Err(EngineError::Exhausted(format!(
                "{what} is an image of {} bytes, over limits.max_image_bytes = {}",
                bytes.len(),
                self.limits.max_image_bytes
            )));
        }
        Ok(())
    }

    /// The texts of a text encoder's inputs.
    fn texts(model: &LoadedModel, inputs: Vec<Input>) -> Result<Vec<String>, EngineError> {
        inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| match input {
                Input::Text(t) if t.is_empty() => Err(EngineError::Invalid(format!(
                    "input {i} is an empty string"
                ))),
                Input::Text(t) => Ok(t),
                other => Err(wrong_input(
                    i,
                    &other,
                    &model.name,
                    "a text encoder",
                    "texts",
                )),
            })
            .collect()
    }

    /// A text encoder's token-id inputs, back to back: each non-empty and within the
    /// model's token limit (ids outside the vocabulary are refused by the plugin, and
    /// only the request that sent them fails).
    fn token_ids(model: &LoadedModel, inputs: Vec<Input>) -> Result<Inputs, EngineError> {
        let limit = model.instance.info().max_input_tokens as usize;
        let (mut ids, mut offsets) = (Vec::new(), vec![0]);
        for (i, input) in inputs.into_iter().enumerate() {
            match input {
                Input::TokenIds(t) if t.is_empty() => {
                    return Err(EngineError::Invalid(format!(
                        "input {i} is an empty token-id array"
                    )))
                }
                Input::TokenIds(t) if limit > 0 && t.len() > limit => {
                    return Err(EngineError::Invalid(format!(
                        "input {i} has {} token ids, over model {}'s limit of {limit}",
                        t.len(),
                        model.name
                    )))
                }
                Input::TokenIds(t) => ids.extend(t),
                other => {
                    return Err(wrong_input(
                        i,
                        &other,
                        &model.name,
                        "a text encoder given token ids",
                        "token-id arrays only, not mixed with other inputs",
                    ))
                }
            }
            offsets.push(ids.len());
        }
        Ok(Inputs::Tokens { ids, offsets })
    }

    /// The encoded images of an image encoder's inputs, back to back.
    fn images(&self, model: &LoadedModel, inputs: Vec<Input>) -> Result<Inputs, EngineError> {
        let mut bytes = Vec::new();
        let mut offsets = vec![0];
        for (i, input) in inputs.into_iter().enumerate() {
            match input {
                Input::Image(image) => {
                    self.check_image(&format!("input {i}"), &image)?;
                    bytes.extend_from_slice(&image);
                    offsets.push(bytes.len());
                }
                other => {
                    return Err(wrong_input(
                        i,
                        &other,
                        &model.name,
                        "an image encoder",
                        "encoded images",
                    ))
                }
            }
        }
        Ok(Inputs::Images { bytes, offsets })
    }

    /// A stored item's vector in `collection`; `None` when the item is not there.
    fn stored_vector(&self, collection: &str, id: &str) -> Result<Option<Vec<f32>>, EngineError> {
        let collection = self.store.get(collection).map_err(error::storage)?;
        Ok(collection.vector_of(id))
    }

    /// The text, poster and thumbnail vectors of a stored fusion input.
    fn stored_row(&self, i: usize, s: &StoredInput) -> Result<[Option<Vec<f32>>; 3], EngineError> {
        if s.text_collection.is_empty() {
            return Err(EngineError::Invalid(format!(
                "input {i}: a stored fusion input needs a text_collection"
            )));
        }
        let text = self
            .stored_vector(&s.text_collection, &s.item_id)?
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "input {i}: item {:?} is not in collection {}",
                    s.item_id, s.text_collection
                ))
            })?;
        let image = |collection: &str| match collection {
            "" => Ok(None),
            c => self.stored_vector(c, &s.item_id),
        };
        Ok([
            Some(text),
            image(&s.poster_collection)?,
            image(&s.thumbnail_collection)?,
        ])
    }

    /// The rows a fusion model's inputs make, checked against its widths (from its plugin's
    /// model info; without them, the first row's widths bind the others).
    fn fusion_rows(
        &self,
        model: &LoadedModel,
        inputs: Vec<Input>,
    ) -> Result<FusionRows, EngineError> {
        let mut rows = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.into_iter().enumerate() {
            let row = match input {
                Input::FusionVectors {
                    text,
                    poster,
                    thumbnail,
                } => {
                    let image = |v: Vec<f32>| (!v.is_empty()).then_some(v);
                    [Some(text), image(poster), image(thumbnail)]
                }
                Input::Stored(s) => self.stored_row(i, &s)?,
                other => {
                    return Err(wrong_input(
                        i,
                        &other,
                        &model.name,
                        "a fusion model",
                        "fusion_vectors or stored items",
                    ))
                }
            };
            rows.push(row);
        }
        let first_image = rows.iter().flat_map(|r| [&r[1], &r[2]]).flatten().next();
        let (text_dim, image_dim) = match model.fusion_dims {
            Some(d) => (d.text, d.image),
            None => (
                rows.first().and_then(|r| r[0].as_ref()).map_or(0, Vec::len),
                first_image.map_or(0, Vec::len),
            ),
        };
        let mut fused = FusionRows::new(text_dim, image_dim);
        for (i, [text, poster, thumbnail]) in rows.iter().enumerate() {
            let text = text.as_deref().unwrap_or_default();
            for (what, v, width) in [
                ("text embedding", Some(text), text_dim),
                ("poster embedding", poster.as_deref(), image_dim),
                ("thumbnail embedding", thumbnail.as_deref(), image_dim),
            ] {
                if let Some(v) = v.filter(|v| v.len() != width) {
                    return Err(EngineError::Invalid(format!(
                        "input {i}: the {what} has {} values, fusion model {} takes {width}",
                        v.len(),
                        model.name
                    )));
                }
            }
            fused.push(text, poster.as_deref(), thumbnail.as_deref());
        }
        Ok(fused)
    }

    /// Embeds inputs with one model, after checking that they are of the kind it takes.
    pub async fn run(
        &self,
        model: &Arc<LoadedModel>,
        inputs: Vec<Input>,
        truncation: Truncation,
        deadline: Option<Deadline>,
    ) -> Result<Stage, EngineError> {
        let ready = match model.kind() {
            PluginKind::TextEncoder if matches!(inputs.first(), Some(Input::TokenIds(_))) => {
                let ready = Self::token_ids(model, inputs)?;
                let input_tokens = ready.cost_from(0) as u64;
                let mut stage = self.run_ready(model, ready, deadline).await?;
                stage.input_tokens = input_tokens;
                return Ok(stage);
            }
            PluginKind::TextEncoder => {
                let texts = Self::texts(model, inputs)?;
                return self.run_texts(model, texts, truncation, deadline).await;
            }
            PluginKind::ImageEncoder => self.images(model, inputs)?,
            PluginKind::Fusion => Inputs::Fusion(self.fusion_rows(model, inputs)?),
            PluginKind::Generator => {
                return Err(EngineError::Invalid(format!(
                    "model {} is {}: it does not embed; call GenerationService",
                    model.name,
                    kind_name(PluginKind::Generator)
                )))
            }
        };
        self.run_ready(model, ready, deadline).await
    }

    /// Admits, tokenizes and embeds texts with a text encoder.
    async fn run_texts(
        &self,
        model: &Arc<LoadedModel>,
        texts: Vec<String>,
        truncation: Truncation,
        deadline: Option<Deadline>,
    ) -> Result<Stage, EngineError> {
        if let Some(d) = deadline.filter(Deadline::passed) {
            return Err(d.exceeded());
        }
        let slot = model.batcher.admit(texts.len())?;
        let tokenize_start = Instant::now();
        let refuse_truncation = truncation == Truncation::Refuse;
        let batch = self
            .tokenizer
            .tokenize(Arc::clone(model), texts, refuse_truncation, deadline)
            .await?;
        let tokenize = tokenize_start.elapsed();
        model.metrics.record_tokenize(tokenize);
        let input_tokens = batch.ids.len() as u64;
        let inputs = Inputs::Tokens {
            ids: batch.ids,
            offsets: batch.offsets,
        };
        let mut stage = self.run_job(model, slot, inputs, deadline).await?;
        stage.tokenize = tokenize;
        stage.input_tokens = input_tokens;
        stage.truncated_inputs = batch.truncated_inputs;
        Ok(stage)
    }

    /// Admits and embeds inputs that need no preparation (images, fusion rows).
    pub async fn run_ready(
        &self,
        model: &Arc<LoadedModel>,
        inputs: Inputs,
        deadline: Option<Deadline>,
    ) -> Result<Stage, EngineError> {
        if let Some(d) = deadline.filter(Deadline::passed) {
            return Err(d.exceeded());
        }
        let slot = model.batcher.admit(inputs.count())?;
        self.run_job(model, slot, inputs, deadline).await
    }

    /// Runs admitted inputs alone on the idle model, or queues them for its batcher and
    /// waits for their vectors; refused first when they could not finish by the deadline.
    async fn run_job(
        &self,
        model: &Arc<LoadedModel>,
        slot: QueueSlot,
        inputs: Inputs,
        deadline: Option<Deadline>,
    ) -> Result<Stage, EngineError> {
        if let Err(error) = model.check_deadline(deadline, inputs.cost_from(0)) {
            m::record_dropped(&model.name, "deadline", inputs.count());
            return Err(error);
        }
        let output: JobOutput = match model.batcher.try_run_alone(&inputs) {
            Some(output) => {
                drop(slot);
                output?
            }
            None => {
                let (reply, result) = oneshot::channel();
                model.batcher.submit(EmbedJob {
                    inputs,
                    enqueued: Instant::now(),
                    deadline,
                    reply,
                    slot,
                })?;
                result.await.map_err(|_| {
                    EngineError::Internal(format!("model {} stopped before answering", model.name))
                })??
            }
        };
        model.metrics.record_job(output.queue, output.inference);
        Ok(Stage {
            vectors: output.vectors,
            dim: model.dimension(),
            queue: output.queue,
            inference: output.inference,
            ..Stage::default()
        })
    }
}
