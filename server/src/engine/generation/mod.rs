//! Generation: the engine's front door for generator models. The path of a Generate
//! request, in order:
//!
//! 1. [`Generation::start`]: the generator by name, the parameters checked, the prompt
//!    built ([`prompt`]) and rendered by the plugin's chat template, then tokenized and
//!    held to the model's context.
//! 2. [`scheduler`]: the model's scheduler thread admits the sequence against free
//!    KV-cache blocks and steps it with every other live sequence (continuous
//!    batching, chunked prefill).
//! 3. [`GenerationStream`]: tokens as they come, text held back while a stop string may
//!    be starting ([`stop`]), then the result with usage and timings. Dropping it
//!    cancels the sequence.

pub mod prompt;
pub mod request;
pub mod scheduler;
pub mod stop;

use self::prompt::build_prompt;
use self::request::{
    FinishReason, GenerationEvent, GenerationInput, GenerationParams, GenerationResult,
    GenerationTimings, GenerationUsage,
};
use self::scheduler::{NewSequence, Scheduler, SequenceEvent};
use self::stop::{StopOutcome, StopStrings};
use super::deadline::Deadline;
use super::error::EngineError;
use super::model::{kind_name, LoadedModel};
use super::registry::Registry;
use crate::config::{GenerationSettings, Limits};
use marquee_plugin_api::abi::MQ_MAX_TOP_LOGPROBS;
use marquee_plugin_api::{AdapterInfo, Finish, GeneratedToken, PluginKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedReceiver;

/// Most stop strings a request may give.
pub const MAX_STOP_STRINGS: usize = 16;

/// A loaded adapter, as the server lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedAdapter {
    /// Its name.
    pub name: String,
    /// The directory it was loaded from.
    pub path: PathBuf,
    /// What the plugin reported.
    pub info: AdapterInfo,
}

/// What a generator model has beside its plugin instance: its scheduler, settings and
/// adapters.
pub struct GeneratorServing {
    /// The scheduler thread's handle.
    pub scheduler: Scheduler,
    /// Its settings.
    pub settings: GenerationSettings,
    adapters: Mutex<BTreeMap<String, LoadedAdapter>>,
}

impl GeneratorServing {
    /// Serving state for a generator with `settings` and scheduler `scheduler`.
    pub fn new(scheduler: Scheduler, settings: GenerationSettings) -> Self {
        Self {
            scheduler,
            settings,
            adapters: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether adapter `name` is loaded.
    pub fn has_adapter(&self, name: &str) -> bool {
        self.adapters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    /// The loaded adapters, by name.
    pub fn adapters(&self) -> Vec<LoadedAdapter> {
        self.adapters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Generates with the registry's generator models.
#[derive(Clone)]
pub struct Generation {
    registry: Arc<Registry>,
    limits: Limits,
}

fn invalid(message: String) -> EngineError {
    EngineError::Invalid(message)
}

/// Checks the parameters the plugin does not see or reports less precisely.
fn check_params(params: &GenerationParams) -> Result<(), EngineError> {
    if params.max_new_tokens == 0 {
        return Err(invalid("max_new_tokens must be at least 1".into()));
    }
    if params.min_new_tokens > params.max_new_tokens {
        return Err(invalid(format!(
            "min_new_tokens {} is more than max_new_tokens {}",
            params.min_new_tokens, params.max_new_tokens
        )));
    }
    if !params.temperature.is_finite() || params.temperature < 0.0 {
        return Err(invalid(format!(
            "temperature must be a finite number ≥ 0 (0 = greedy), got {}",
            params.temperature
        )));
    }
    if !(params.top_p > 0.0 && params.top_p <= 1.0) {
        return Err(invalid(format!(
            "top_p must be in (0, 1], got {}",
            params.top_p
        )));
    }
    if !params.repetition_penalty.is_finite() || params.repetition_penalty <= 0.0 {
        return Err(invalid(format!(
            "repetition_penalty must be a finite number > 0, got {}",
            params.repetition_penalty
        )));
    }
    if params.top_logprobs > MQ_MAX_TOP_LOGPROBS {
        return Err(invalid(format!(
            "top_logprobs is {}, at most {MQ_MAX_TOP_LOGPROBS}",
            params.top_logprobs
        )));
    }
    if params.stop.len() > MAX_STOP_STRINGS {
        return Err(invalid(format!(
            "{} stop strings, at most {MAX_STOP_STRINGS}",
            params.stop.len()
        )));
    }
    Ok(())
}

impl Generation {
    /// Generation over the registry's generators, images held to `limits`.
    pub fn new(registry: Arc<Registry>, limits: Limits) -> Self {
        Self { registry, limits }
    }

    /// The registry it finds generators in.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The generator served as `name`; empty: the default model when it generates,
    /// else the first generator by name.
    pub fn generator(&self, name: &str) -> Result<Arc<LoadedModel>, EngineError> {
        if name.is_empty() {
            let default = self
                .registry
                .default_model_name()
                .and_then(|n| self.registry.get(&n).ok())
                .filter(|m| m.kind() == PluginKind::Generator);
            let mut generators: Vec<_> = self
                .registry
                .models()
                .into_iter()
                .filter(|m| m.kind() == PluginKind::Generator)
                .collect();
            generators.sort_by(|a, b| a.name.cmp(&b.name));
            return default
                .or_else(|| generators.into_iter().next())
                .ok_or_else(|| EngineError::NotFound("no generator model is loaded".into()));
        }
        let model = self.registry.get(name)?;
        if model.kind() != PluginKind::Generator {
            return Err(invalid(format!(
                "model {name} is {}; generation needs a generator",
                kind_name(model.kind())
            )));
        }
        Ok(model)
    }

    /// Starts generating: checks the request, renders and tokenizes its prompt, and
    /// admits it to the generator's scheduler.
    pub async fn start(
        &self,
        model: &str,
        input: GenerationInput,
        mut params: GenerationParams,
        deadline: Option<Deadline>,
    ) -> Result<GenerationStream, EngineError> {
        let arrived = Instant::now();
        let model = self.generator(model)?;
        let serving = model
            .generation
            .as_ref()
            .ok_or_else(|| EngineError::Internal(format!("{} has no scheduler", model.name)))?;
        check_params(&params)?;
        params.logprobs |= params.top_logprobs > 0;
        let prompt = build_prompt(input, &serving.settings.recall_instruction)?;
        let info = model.instance.info();
        let max_images = info.max_images as usize;
        if !prompt.images.is_empty() && max_images == 0 {
            return Err(invalid(format!("model {} takes no images", model.name)));
        }
        if prompt.images.len() > max_images {
            return Err(invalid(format!(
                "{} images in one prompt; model {} takes at most {max_images}",
                prompt.images.len(),
                model.name
            )));
        }
        let max_bytes = self.limits.max_image_bytes;
        if let Some((i, image)) = prompt
            .images
            .iter()
            .enumerate()
            .find(|(_, image)| image.len() > max_bytes)
        {
            return Err(EngineError::Exhausted(format!(
                "image {i} is {} bytes, over the limit of {max_bytes} (limits.max_image_bytes)",
                image.len()
            )));
        }
        let context = info.max_context_tokens as usize;
        let instance = Arc::clone(&model.instance);
        let messages = prompt.messages.to_string();
        let tokens = tokio::task::spawn_blocking(move || {
            let text = instance.apply_chat_template(&messages)?;
            instance.tokenize(&text, context as u32 + 1)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("prompt rendering crashed: {e}")))??;
        let max_new = params.max_new_tokens as usize;
        if tokens.untruncated_len + max_new > context {
            return Err(invalid(format!(
                "the prompt of {} tokens and max_new_tokens {max_new} exceed model {}'s \
                 context of {context} tokens",
                tokens.untruncated_len, model.name
            )));
        }
        let stops = StopStrings::new(params.stop.clone());
        let logprobs = params.logprobs;
        let admitted = serving
            .scheduler
            .start_sequence(NewSequence {
                token_ids: tokens.ids,
                images: prompt.images,
                params,
                deadline,
            })
            .await?;
        Ok(GenerationStream {
            model: model.name.clone(),
            scheduler: serving.scheduler.clone(),
            id: admitted.started.id,
            events: admitted.events,
            stops,
            logprobs,
            arrived,
            scheduled_at: None,
            first_token_at: None,
            last_token_at: None,
            usage: GenerationUsage {
                prompt_tokens: admitted.started.prompt_tokens,
                image_tokens: admitted.started.image_tokens,
                completion_tokens: 0,
            },
            token_ids: Vec::new(),
            tokens: Vec::new(),
            deadline,
            pending: None,
            ended: false,
        })
    }

    /// Generates the whole answer. A deadline that passes first is an error.
    pub async fn generate(
        &self,
        model: &str,
        input: GenerationInput,
        params: GenerationParams,
        deadline: Option<Deadline>,
    ) -> Result<GenerationResult, EngineError> {
        let mut stream = self.start(model, input, params, deadline).await?;
        while let Some(event) = stream.next().await {
            if let GenerationEvent::Done(result) = event? {
                return Ok(result);
            }
        }
        Err(EngineError::Internal(
            "the generation ended without a result".into(),
        ))
    }

    /// Loads a PEFT LoRA adapter directory into generator `model` as `name`.
    pub async fn load_adapter(
        &self,
        model: &str,
        name: &str,
        path: &Path,
    ) -> Result<LoadedAdapter, EngineError> {
        let model = self.generator(model)?;
        if !crate::names::is_plain_name(name) {
            return Err(invalid(format!(
                "adapter name {name:?} must be letters, digits, '-', '_' or '.'"
            )));
        }
        let serving = serving_of(&model)?;
        if serving.has_adapter(name) {
            return Err(EngineError::AlreadyExists(format!(
                "adapter {name} is already loaded into {}",
                model.name
            )));
        }
        if !path.is_dir() {
            return Err(EngineError::NotFound(format!(
                "adapter directory {} does not exist",
                path.display()
            )));
        }
        let (instance, owned_name, owned_path) = (
            Arc::clone(&model.instance),
            name.to_string(),
            path.to_path_buf(),
        );
        let info =
            tokio::task::spawn_blocking(move || instance.load_adapter(&owned_name, &owned_path))
                .await
                .map_err(|e| EngineError::Internal(format!("adapter loading crashed: {e}")))??;
        let loaded = LoadedAdapter {
            name: name.to_string(),
            path: path.to_path_buf(),
            info,
        };
        serving
            .adapters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), loaded.clone());
        tracing::info!(model = %model.name, adapter = name, path = %path.display(), "adapter loaded");
        Ok(loaded)
    }

    /// Unloads adapter `name` from generator `model`.
    pub fn unload_adapter(&self, model: &str, name: &str) -> Result<(), EngineError> {
        let model = self.generator(model)?;
        let serving = serving_of(&model)?;
        let mut adapters = serving.adapters.lock().unwrap_or_else(|p| p.into_inner());
        if adapters.remove(name).is_none() {
            return Err(EngineError::NotFound(format!(
                "adapter {name} is not loaded into {}",
                model.name
            )));
        }
        model.instance.unload_adapter(name)?;
        tracing::info!(model = %model.name, adapter = name, "adapter unloaded");
        Ok(())
    }

    /// The generator and adapter a model name stands for, as OpenAI-style clients name
    /// them: a generator's serving name (no adapter), `MODEL:ADAPTER`, or a loaded
    /// adapter's own name (the first generator, by name, that has it).
    pub fn model_and_adapter(
        &self,
        name: &str,
    ) -> Result<(Arc<LoadedModel>, Option<String>), EngineError> {
        if name.is_empty() || self.registry.get(name).is_ok() {
            return Ok((self.generator(name)?, None));
        }
        if let Some((model, adapter)) = name.rsplit_once(':') {
            if let Ok(model) = self.generator(model) {
                if serving_of(&model)?.has_adapter(adapter) {
                    return Ok((model, Some(adapter.to_string())));
                }
                return Err(EngineError::NotFound(format!(
                    "adapter {adapter} is not loaded into {}",
                    model.name
                )));
            }
        }
        let mut generators: Vec<_> = self
            .registry
            .models()
            .into_iter()
            .filter(|m| m.generation.as_ref().is_some_and(|g| g.has_adapter(name)))
            .collect();
        generators.sort_by(|a, b| a.name.cmp(&b.name));
        match generators.into_iter().next() {
            Some(model) => Ok((model, Some(name.to_string()))),
            None => Err(EngineError::NotFound(format!(
                "model {name} is not loaded (nor is an adapter of that name)"
            ))),
        }
    }

    /// The adapters loaded into generator `model`, by name.
    pub fn adapters(&self, model: &str) -> Result<(String, Vec<LoadedAdapter>), EngineError> {
        let model = self.generator(model)?;
        Ok((model.name.clone(), serving_of(&model)?.adapters()))
    }
}

fn serving_of(model: &LoadedModel) -> Result<&GeneratorServing, EngineError> {
    model
        .generation
        .as_ref()
        .ok_or_else(|| EngineError::Internal(format!("{} has no scheduler", model.name)))
}

/// A running generation: its events as they come; dropping it cancels the sequence.
pub struct GenerationStream {
    model: String,
    scheduler: Scheduler,
    id: u64,
    events: UnboundedReceiver<SequenceEvent>,
    stops: StopStrings,
    logprobs: bool,
    arrived: Instant,
    scheduled_at: Option<Instant>,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
    usage: GenerationUsage,
    token_ids: Vec<u32>,
    tokens: Vec<GeneratedToken>,
    /// The call's deadline.
    deadline: Option<Deadline>,
    /// The end (a result, or the deadline's error), once the last delta has gone out.
    pending: Option<Result<GenerationResult, EngineError>>,
    /// Whether the sequence is over on the scheduler's side.
    ended: bool,
}

impl GenerationStream {
    /// The generator's serving name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The next event: deltas, then the result (or, when the deadline cut the
    /// generation, the held-back text and then `DEADLINE_EXCEEDED`); `None` after that.
    pub async fn next(&mut self) -> Option<Result<GenerationEvent, EngineError>> {
        if let Some(end) = self.pending.take() {
            return Some(end.map(GenerationEvent::Done));
        }
        if self.ended {
            return None;
        }
        loop {
            let Some(event) = self.events.recv().await else {
                self.ended = true;
                return Some(Err(EngineError::ShuttingDown(format!(
                    "generator {} stopped",
                    self.model
                ))));
            };
            match event {
                SequenceEvent::Scheduled(at) => self.scheduled_at = Some(at),
                SequenceEvent::Token {
                    token,
                    text,
                    finish,
                    at,
                } => return Some(Ok(self.token(token, &text, finish, at))),
                SequenceEvent::DeadlinePassed => {
                    self.ended = true;
                    let text = self.stops.flush();
                    self.pending = Some(Err(self.deadline.map_or_else(
                        || EngineError::DeadlineExceeded("the deadline passed".into()),
                        |d| d.exceeded(),
                    )));
                    return Some(Ok(GenerationEvent::Delta {
                        tokens: Vec::new(),
                        text,
                    }));
                }
                SequenceEvent::Failed(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            }
        }
    }

    fn token(
        &mut self,
        token: GeneratedToken,
        text: &str,
        finish: Option<Finish>,
        at: Instant,
    ) -> GenerationEvent {
        self.first_token_at.get_or_insert(at);
        self.last_token_at = Some(at);
        self.usage.completion_tokens += 1;
        self.token_ids.push(token.token_id);
        let token = if self.logprobs {
            self.tokens.push(token.clone());
            token
        } else {
            GeneratedToken {
                token_id: token.token_id,
                ..GeneratedToken::default()
            }
        };
        let (text, reason) = match self.stops.push(text) {
            StopOutcome::Stopped(text) => (text, Some(FinishReason::StopSequence)),
            StopOutcome::Continue(mut text) => {
                let reason = finish.map(|f| match f {
                    Finish::Length => FinishReason::Length,
                    Finish::Eos => FinishReason::EosToken,
                });
                if reason.is_some() {
                    text.push_str(&self.stops.flush());
                }
                (text, reason)
            }
        };
        if let Some(reason) = reason {
            if finish.is_none() {
                self.scheduler.cancel(self.id);
            }
            self.ended = true;
            self.pending = Some(Ok(self.result(reason)));
        }
        GenerationEvent::Delta {
            tokens: vec![token],
            text,
        }
    }

    fn result(&mut self, finish_reason: FinishReason) -> GenerationResult {
        let first = self.first_token_at;
        GenerationResult {
            model: self.model.clone(),
            text: self.stops.text().to_string(),
            token_ids: std::mem::take(&mut self.token_ids),
            finish_reason,
            usage: self.usage,
            timings: GenerationTimings {
                queue: self
                    .scheduled_at
                    .map_or_else(|| self.arrived.elapsed(), |at| at - self.arrived),
                time_to_first_token: first.map_or_else(Default::default, |at| at - self.arrived),
                decode: match (first, self.last_token_at) {
                    (Some(a), Some(b)) => b - a,
                    _ => Default::default(),
                },
            },
            tokens: std::mem::take(&mut self.tokens),
        }
    }
}

impl Drop for GenerationStream {
    fn drop(&mut self) {
        if !self.ended {
            self.scheduler.cancel(self.id);
        }
    }
}
