//! The Marquee plugin (ABI 2.2 generator calls) around a loaded Qwen2.5-VL model: chat
//! template, tokenizer, image decoding and preprocessing, one [`Generator`] with its
//! paged cache, the loaded LoRA adapters, and each live sequence's streaming
//! detokenizer.

use crate::chat_template::ChatTemplate;
use crate::generate::{Finish, GenerationRequest, Generator};
use crate::kv_cache::SeqId;
use crate::lora::LoraAdapter;
use crate::model::Qwen2VlModel;
use crate::preprocess::ImagePatches;
use crate::sampling::SamplingParams;
use crate::tokenizer::{IncrementalDecoder, QwenTokenizer};
use crate::{read_to_string, Error};
use marquee_plugin_api::{
    parse_options, AdapterInfo, GeneratedToken, GeneratorState, ModelInfo, Plugin, PluginError,
    PluginKind, SequenceStart, SequenceStarted, Status, StepOutput, Tensor, TensorMut, Tokens,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Options accepted in the plugin's JSON config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Tokens in the KV cache, all sequences together (default 32,768); the cache's
    /// memory is this × layers × 2 × KV width × 4 bytes, allocated at load.
    pub kv_cache_tokens: Option<usize>,
    /// Tokens per cache block (default 16).
    pub kv_block_size: Option<usize>,
    /// Most tokens one sequence may hold, prompt and generated (default and at most
    /// `kv_cache_tokens`).
    pub max_context_tokens: Option<usize>,
    /// Most images per prompt (default 30).
    pub max_images: Option<usize>,
    /// Most pixels an encoded image may declare before it is decoded (default
    /// 40,000,000).
    pub max_image_pixels: Option<u64>,
}

/// The limits a loaded generator runs under.
#[derive(Clone, Copy, Debug)]
struct Limits {
    block_size: usize,
    blocks: usize,
    max_context_tokens: usize,
    max_images: usize,
    max_image_pixels: u64,
}

impl Limits {
    fn new(options: &Options) -> Result<Self, PluginError> {
        let block_size = options.kv_block_size.unwrap_or(16);
        let cache_tokens = options.kv_cache_tokens.unwrap_or(32_768);
        if block_size == 0 || cache_tokens < block_size {
            return Err(PluginError::invalid_argument(
                "plugin config: kv_block_size must be positive and at most kv_cache_tokens",
            ));
        }
        let blocks = cache_tokens / block_size;
        let max_context_tokens = options
            .max_context_tokens
            .unwrap_or(blocks * block_size)
            .min(blocks * block_size);
        Ok(Self {
            block_size,
            blocks,
            max_context_tokens,
            max_images: options.max_images.unwrap_or(30),
            max_image_pixels: options.max_image_pixels.unwrap_or(40_000_000),
        })
    }
}

/// What changes as sequences come and go.
struct State {
    generator: Generator<Arc<Qwen2VlModel>>,
    adapters: HashMap<String, Arc<LoraAdapter>>,
    decoders: HashMap<SeqId, IncrementalDecoder>,
}

/// A Qwen2.5-VL model served as a generator.
pub struct QwenGenerator {
    model: Arc<Qwen2VlModel>,
    tokenizer: QwenTokenizer,
    template: ChatTemplate,
    /// The model's end tokens (`generation_config.json`, else `config.json`).
    end_tokens: Vec<u32>,
    limits: Limits,
    state: Mutex<State>,
}

/// The plugin error of a crate error: the caller's fault, a missing file, a full cache
/// or an internal failure.
fn plugin_error(e: Error) -> PluginError {
    let status = match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Status::NotFound
        }
        Error::CacheFull(_) => Status::ResourceExhausted,
        Error::Kernel(_) => Status::Internal,
        _ => Status::InvalidArgument,
    };
    PluginError::new(status, e.to_string())
}

/// The ids of a JSON `eos_token_id` (a number or a list of numbers).
fn token_ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|t| t as u32).into_iter().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_u64)
            .map(|t| t as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// The model's end tokens, as `generate` takes them: `generation_config.json`'s
/// `eos_token_id`, else `config.json`'s (top level or `text_config`).
fn end_tokens(dir: &Path) -> Result<Vec<u32>, Error> {
    let read = |file: &str| -> Result<Option<Value>, Error> {
        let path = dir.join(file);
        if !path.exists() {
            return Ok(None);
        }
        serde_json::from_str(&read_to_string(&path)?)
            .map(Some)
            .map_err(|e| Error::Config(format!("{file}: {e}")))
    };
    if let Some(generation) = read("generation_config.json")? {
        let ids = token_ids(generation.get("eos_token_id"));
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    let config = read("config.json")?.unwrap_or(Value::Null);
    let text = config.get("text_config").unwrap_or(&Value::Null);
    Ok(token_ids(
        config
            .get("eos_token_id")
            .or_else(|| text.get("eos_token_id")),
    ))
}

/// Checks sampling parameters, naming the first one out of range.
fn check_params(p: &marquee_plugin_api::SamplingParams) -> Result<(), PluginError> {
    let bad = |m: String| Err(PluginError::invalid_argument(m));
    if p.max_new_tokens == 0 {
        return bad("max_new_tokens must be at least 1".into());
    }
    if !p.temperature.is_finite() || p.temperature < 0.0 {
        return bad(format!(
            "temperature must be a finite number ≥ 0, got {}",
            p.temperature
        ));
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return bad(format!("top_p must be in (0, 1], got {}", p.top_p));
    }
    if !p.repetition_penalty.is_finite() || p.repetition_penalty <= 0.0 {
        return bad(format!(
            "repetition_penalty must be a finite number > 0, got {}",
            p.repetition_penalty
        ));
    }
    Ok(())
}

impl QwenGenerator {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decodes and preprocesses the prompt's images.
    fn images(&self, images: &[&[u8]]) -> Result<Vec<ImagePatches>, PluginError> {
        if images.len() > self.limits.max_images {
            return Err(PluginError::invalid_argument(format!(
                "{} images in one prompt, at most {} (option max_images)",
                images.len(),
                self.limits.max_images
            )));
        }
        images
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let rgb = marquee_imaging::decode_rgb(bytes, self.limits.max_image_pixels)
                    .map_err(|e| PluginError::invalid_argument(format!("image {i}: {e}")))?;
                let (w, h) = rgb.dimensions();
                self.model
                    .preprocess(rgb.as_raw(), w as usize, h as usize)
                    .map_err(|e| PluginError::invalid_argument(format!("image {i}: {e}")))
            })
            .collect()
    }
}

impl Plugin for QwenGenerator {
    const NAME: &'static str = "qwen2-vl";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const KIND: PluginKind = PluginKind::Generator;
    const IS_GENERATOR: bool = true;

    fn accepts(model_dir: &Path) -> bool {
        let Ok(text) = std::fs::read_to_string(model_dir.join("config.json")) else {
            return false;
        };
        let model_type = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
            v.get("model_type")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        model_type.as_deref() == Some("qwen2_5_vl") && model_dir.join("tokenizer.json").is_file()
    }

    fn create(model_dir: &Path, config_json: &str) -> Result<Self, PluginError> {
        let options: Options = parse_options(config_json)?;
        let limits = Limits::new(&options)?;
        let model = Arc::new(Qwen2VlModel::load(model_dir).map_err(plugin_error)?);
        let tokenizer = QwenTokenizer::load(model_dir).map_err(plugin_error)?;
        let template = ChatTemplate::load(model_dir).map_err(plugin_error)?;
        let end_tokens = end_tokens(model_dir).map_err(plugin_error)?;
        let generator = Generator::new(Arc::clone(&model), limits.block_size, limits.blocks);
        Ok(Self {
            model,
            tokenizer,
            template,
            end_tokens,
            limits,
            state: Mutex::new(State {
                generator,
                adapters: HashMap::new(),
                decoders: HashMap::new(),
            }),
        })
    }

    fn info(&self) -> ModelInfo {
        let l = self.limits;
        ModelInfo::generator(
            l.max_context_tokens as u32,
            l.block_size as u32,
            l.blocks as u32,
            l.max_images as u32,
        )
    }

    fn tokenize(&self, text: &str, max_tokens: usize) -> Result<Tokens, PluginError> {
        let mut ids = self.tokenizer.encode(text).map_err(plugin_error)?;
        let untruncated_len = ids.len();
        ids.truncate(max_tokens);
        Ok(Tokens {
            ids,
            untruncated_len,
        })
    }

    fn embed(&self, _: &[Tensor<'_>], _: TensorMut<'_>) -> Result<(), PluginError> {
        Err(PluginError::unimplemented(
            "qwen2-vl is a generator: it does not embed",
        ))
    }

    fn apply_chat_template(&self, messages_json: &str) -> Result<String, PluginError> {
        let messages: Value = serde_json::from_str(messages_json)
            .map_err(|e| PluginError::invalid_argument(format!("messages: {e}")))?;
        if !messages.is_array() {
            return Err(PluginError::invalid_argument(
                "messages must be a JSON array",
            ));
        }
        self.template.render(&messages, true).map_err(plugin_error)
    }

    fn start_sequence(&self, start: SequenceStart<'_>) -> Result<SequenceStarted, PluginError> {
        let p = &start.params;
        check_params(p)?;
        let images = self.images(&start.images)?;
        let prompt_ids = self
            .model
            .expand_image_pads(start.token_ids, &images)
            .map_err(plugin_error)?;
        let max_new = p.max_new_tokens as usize;
        let context = self.limits.max_context_tokens;
        if prompt_ids.len() + max_new > context {
            return Err(PluginError::invalid_argument(format!(
                "the prompt of {} tokens and max_new_tokens {max_new} exceed the context of \
                 {context} tokens",
                prompt_ids.len()
            )));
        }
        let image_tokens = prompt_ids
            .iter()
            .filter(|&&t| t == self.model.config.image_token_id)
            .count();
        let mut state = self.state();
        let adapter = start
            .adapter
            .map(|name| {
                state.adapters.get(name).cloned().ok_or_else(|| {
                    PluginError::not_found(format!("no adapter named {name:?} is loaded"))
                })
            })
            .transpose()?;
        let mut stop_tokens = self.end_tokens.clone();
        stop_tokens.extend(&p.stop_token_ids);
        let prompt_tokens = prompt_ids.len();
        let seq = state
            .generator
            .add(GenerationRequest {
                prompt_ids,
                images,
                adapter,
                max_new_tokens: max_new,
                sampling: SamplingParams {
                    temperature: p.temperature,
                    top_k: p.top_k as usize,
                    top_p: p.top_p,
                    repetition_penalty: p.repetition_penalty,
                    seed: p.seed,
                },
                stop_tokens,
                min_new_tokens: p.min_new_tokens as usize,
                top_logprobs: p.top_logprobs as usize,
            })
            .map_err(plugin_error)?;
        state.decoders.insert(seq, IncrementalDecoder::new(true));
        Ok(SequenceStarted {
            id: seq.0,
            prompt_tokens: prompt_tokens as u32,
            image_tokens: image_tokens as u32,
        })
    }

    fn step(&self, ids: &[u64], token_budget: usize) -> Result<Vec<StepOutput>, PluginError> {
        let mut state = self.state();
        let seqs: Vec<SeqId> = ids.iter().map(|&id| SeqId(id)).collect();
        let budget = if token_budget == 0 {
            usize::MAX
        } else {
            token_budget
        };
        let steps = state
            .generator
            .step_sequences(&seqs, budget)
            .map_err(plugin_error)?;
        let mut outputs = Vec::with_capacity(steps.len());
        for step in steps {
            let mut text = String::new();
            if let Some(choice) = &step.token {
                let decoder = state.decoders.entry(step.seq).or_default();
                text = decoder
                    .push(&self.tokenizer, choice.token)
                    .map_err(plugin_error)?;
            }
            if step.finish.is_some() {
                state.generator.remove(step.seq);
                state.decoders.remove(&step.seq);
            }
            outputs.push(StepOutput {
                id: step.seq.0,
                token: step.token.map(|c| GeneratedToken {
                    token_id: c.token,
                    logprob: c.logprob,
                    top_logprobs: c
                        .top_logprobs
                        .into_iter()
                        .map(
                            |(token_id, logprob)| marquee_plugin_api::abi::MqTokenLogprob {
                                token_id,
                                logprob,
                            },
                        )
                        .collect(),
                }),
                finish: step.finish.map(|f| match f {
                    Finish::Length => marquee_plugin_api::Finish::Length,
                    Finish::Eos => marquee_plugin_api::Finish::Eos,
                }),
                text,
            });
        }
        Ok(outputs)
    }

    fn cancel_sequence(&self, id: u64) -> Result<(), PluginError> {
        let mut state = self.state();
        state.decoders.remove(&SeqId(id));
        if state.generator.remove(SeqId(id)) {
            Ok(())
        } else {
            Err(PluginError::not_found(format!("no live sequence {id}")))
        }
    }

    fn load_adapter(&self, name: &str, dir: &Path) -> Result<AdapterInfo, PluginError> {
        if self.state().adapters.contains_key(name) {
            return Err(PluginError::invalid_argument(format!(
                "an adapter named {name:?} is already loaded"
            )));
        }
        let adapter = self.model.load_adapter(dir).map_err(plugin_error)?;
        let info = AdapterInfo {
            rank: adapter.rank as u32,
            alpha: adapter.alpha,
            use_rslora: adapter.use_rslora,
            target_modules: adapter.target_modules.clone(),
        };
        self.state()
            .adapters
            .insert(name.to_string(), Arc::new(adapter));
        Ok(info)
    }

    fn unload_adapter(&self, name: &str) -> Result<(), PluginError> {
        match self.state().adapters.remove(name) {
            Some(_) => Ok(()),
            None => Err(PluginError::not_found(format!(
                "no adapter named {name:?} is loaded"
            ))),
        }
    }

    fn generator_state(&self) -> Result<GeneratorState, PluginError> {
        let state = self.state();
        Ok(GeneratorState {
            kv_blocks: self.limits.blocks as u32,
            kv_blocks_free: state.generator.cache().free_blocks() as u32,
            sequences: state.generator.len() as u32,
        })
    }
}
