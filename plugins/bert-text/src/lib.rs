//! Marquee plugin `bert-text`: a BERT text encoder loaded from a Hugging Face model
//! directory (`config.json`, `model.safetensors`, `tokenizer.json`) with the
//! sentence-transformers modules found there (`modules.json`: pooling, optional
//! `Dense` projections, `Normalize`). Batches are ragged, so padding costs nothing.

pub mod bert;
pub use marquee_bert_config as config;
pub mod tokenize;
pub mod weights;
pub mod wordpiece;

use anyhow::{bail, Context};
use bert::Bert;
use config::{read_json, BertConfig, Pipeline};
use marquee_kernels::device::placement;
use marquee_kernels::{
    Activation, Backend, CpuBackend, CudaBackend, KernelError, Pooling, ResolvedDevice,
};
use marquee_plugin_api::{
    export_plugin, parse_options, ModelInfo, Plugin, PluginError, PluginKind, Tensor, TensorMut,
    Tokens,
};
use serde::Deserialize;
use std::path::Path;
use tokenize::TextTokenizer;
use weights::Weights;

/// Options accepted in the plugin's JSON config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Token limit per input; defaults to `sentence_bert_config.json`'s, else the
    /// model's position limit. Never above the position limit.
    pub max_seq_length: Option<usize>,
    /// Worker threads for CPU inference; defaults to all cores.
    pub threads: Option<usize>,
    /// `auto` (the GPU when CUDA is usable, else the CPU), `cpu` or `cuda:N`.
    pub device: Option<String>,
    /// `fp32` (default) or `bf16` (bf16 weights and linear-layer inputs, f32 sums: on
    /// the GPU's tensor cores, or on the CPU's AMX tiles or AVX512-BF16 where it has them).
    pub precision: Option<String>,
}

/// A projection applied after pooling.
struct Dense<B: Backend> {
    weight: B::Weight,
    bias: Option<B::Tensor>,
    activation: Activation,
}

/// Everything after tokenization, on one backend: BERT, pooling, Dense layers, Normalize.
struct Encoder<B: Backend> {
    bert: Bert<B>,
    pooling: Pooling,
    dense: Vec<Dense<B>>,
    normalize: bool,
}

impl<B: Backend> Encoder<B> {
    /// Loads the weights onto `backend`; returns the encoder and its output width.
    fn load(
        backend: B,
        dir: &Path,
        config: &BertConfig,
        pipeline: &Pipeline,
    ) -> anyhow::Result<(Self, usize)> {
        let weights = Weights::open(&dir.join("model.safetensors"), &["bert."])?;
        let mut width = config.hidden_size;
        let mut dense = Vec::new();
        for (folder, dense_config) in &pipeline.dense {
            if dense_config.in_features != width {
                bail!(
                    "Dense in {} expects {} inputs, the previous layer gives {width}",
                    folder.display(),
                    dense_config.in_features
                );
            }
            let w = Weights::open(&folder.join("model.safetensors"), &[])
                .context("Dense weights must be in model.safetensors")?;
            let (o, i) = (dense_config.out_features, dense_config.in_features);
            dense.push(Dense {
                weight: w.linear_weight(&backend, "linear.weight", [o, i])?,
                bias: if dense_config.bias {
                    Some(w.matrix(&backend, "linear.bias", [1, o])?)
                } else {
                    None
                },
                activation: dense_config.activation()?,
            });
            width = o;
        }
        let bert = Bert::load(backend, config.clone(), &weights)?;
        let encoder = Self {
            bert,
            pooling: pipeline.pooling,
            dense,
            normalize: pipeline.normalize,
        };
        Ok((encoder, width))
    }

    /// Every token's hidden state after `layer` transformer layers, `tokens × hidden`.
    fn token_states(
        &self,
        ids: &[u32],
        offsets: &[usize],
        layer: usize,
    ) -> anyhow::Result<Vec<f32>> {
        let states = self.bert.forward_layers(ids, offsets, layer)?;
        Ok(self.bert.backend().download(&states)?)
    }

    /// Embeds a ragged batch into `n × width` values.
    fn embed(&self, ids: &[u32], offsets: &[usize]) -> anyhow::Result<Vec<f32>> {
        let backend = self.bert.backend();
        let hidden = self.bert.forward(ids, offsets)?;
        if self.dense.is_empty() && self.normalize {
            let pooled = backend.pool_normalized(&hidden, offsets, self.pooling)?;
            return Ok(backend.download(&pooled)?);
        }
        let mut pooled = backend.pool(&hidden, offsets, self.pooling)?;
        for d in &self.dense {
            pooled = backend.linear(&pooled, &d.weight, d.bias.as_ref(), d.activation)?;
        }
        if self.normalize {
            backend.l2_normalize(&mut pooled)?;
        }
        Ok(backend.download(&pooled)?)
    }
}

/// The encoder on the device it was placed on.
enum Engine {
    /// On the host, in the plugin's thread pool.
    Cpu(Box<Encoder<CpuBackend>>, rayon::ThreadPool),
    /// On a CUDA device.
    Cuda(Box<Encoder<CudaBackend>>),
}

/// A loaded BERT sentence encoder.
pub struct BertText {
    tokenizer: TextTokenizer,
    engine: Engine,
    max_seq_length: usize,
    vocab_size: usize,
    output_dim: usize,
    hidden_size: usize,
    num_layers: usize,
}

impl BertText {
    /// Loads a model directory with `options` (as the plugin's JSON config gives them),
    /// for use in-process (the trainer embeds with it between epochs).
    pub fn load(dir: &Path, options: Options) -> anyhow::Result<Self> {
        let (device, precision) =
            placement(options.device.as_deref(), options.precision.as_deref())
                .map_err(anyhow::Error::msg)?;
        let config: BertConfig = read_json(&dir.join("config.json"))?;
        let pipeline = Pipeline::load(dir)?;
        let (engine, output_dim, vocab_size) = match device {
            ResolvedDevice::Cuda { ordinal, .. } => {
                let backend = CudaBackend::new(ordinal, precision)?;
                let (encoder, width) = Encoder::load(backend, dir, &config, &pipeline)?;
                let vocab_size = encoder.bert.vocab_size();
                (Engine::Cuda(Box::new(encoder)), width, vocab_size)
            }
            ResolvedDevice::Cpu { .. } => {
                let (encoder, width) =
                    Encoder::load(CpuBackend::new(precision), dir, &config, &pipeline)?;
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(options.threads.unwrap_or(0))
                    .thread_name(|i| format!("bert-text-{i}"))
                    .build()?;
                let vocab_size = encoder.bert.vocab_size();
                (Engine::Cpu(Box::new(encoder), pool), width, vocab_size)
            }
        };
        let limit = config.max_position_embeddings;
        let max_seq_length = options
            .max_seq_length
            .unwrap_or_else(|| pipeline.max_seq_length.unwrap_or(limit).min(limit));
        if max_seq_length == 0 || max_seq_length > limit {
            bail!("max_seq_length {max_seq_length} outside 1..={limit}");
        }
        Ok(Self {
            tokenizer: TextTokenizer::load(&dir.join("tokenizer.json"))?,
            engine,
            max_seq_length,
            vocab_size,
            output_dim,
            hidden_size: config.hidden_size,
            num_layers: config.num_hidden_layers,
        })
    }

    /// Embeds `texts` (each cut at the token limit): `texts.len() × output_dim` values.
    pub fn embed_texts(&self, texts: &[&str]) -> anyhow::Result<Vec<f32>> {
        let mut ids = Vec::new();
        let mut offsets = vec![0];
        for text in texts {
            ids.extend(self.tokenizer.encode(text, self.max_seq_length)?.0);
            offsets.push(ids.len());
        }
        self.embed_batch(&ids, &offsets)
    }

    /// Width of the embeddings.
    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// Embeds a ragged batch (validated offsets) into `n × output_dim` values.
    pub fn embed_batch(&self, ids: &[u32], offsets: &[usize]) -> anyhow::Result<Vec<f32>> {
        match &self.engine {
            Engine::Cpu(encoder, pool) => pool.install(|| encoder.embed(ids, offsets)),
            Engine::Cuda(encoder) => encoder.embed(ids, offsets),
        }
    }

    /// Every token's hidden state after `layer` (0 = the embeddings' output, the
    /// number of layers = the last) for a ragged batch (validated offsets):
    /// `tokens × hidden_size` values, as transformers' `hidden_states[layer]`.
    pub fn token_states_batch(
        &self,
        ids: &[u32],
        offsets: &[usize],
        layer: usize,
    ) -> anyhow::Result<Vec<f32>> {
        match &self.engine {
            Engine::Cpu(encoder, pool) => {
                pool.install(|| encoder.token_states(ids, offsets, layer))
            }
            Engine::Cuda(encoder) => encoder.token_states(ids, offsets, layer),
        }
    }

    /// The token ids and checked offsets of a ragged batch given as `embed`'s inputs.
    fn ragged_inputs<'a>(
        &self,
        inputs: &[Tensor<'a>],
    ) -> Result<(&'a [u32], Vec<usize>), PluginError> {
        let [ids, offsets] = inputs else {
            return Err(PluginError::invalid_argument(
                "bert-text takes two inputs: token ids and offsets",
            ));
        };
        let ids = ids.as_u32("token ids")?;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(PluginError::invalid_argument(format!(
                "token id {id} is outside the vocabulary of {} tokens",
                self.vocab_size
            )));
        }
        let offsets = ragged_offsets(ids, offsets.as_u32("offsets")?, self.max_seq_length)?;
        Ok((ids, offsets))
    }
}

/// Checks that an output tensor is `[rows, cols]`.
fn output_shape(output: &TensorMut<'_>, rows: usize, cols: usize) -> Result<(), PluginError> {
    if output.shape != [rows as u64, cols as u64] {
        return Err(PluginError::invalid_argument(format!(
            "output shape {:?}, expected [{rows}, {cols}]",
            output.shape
        )));
    }
    Ok(())
}

/// Checks a ragged batch's offsets against its ids and the model's limits.
fn ragged_offsets(ids: &[u32], offsets: &[u32], max_len: usize) -> Result<Vec<usize>, PluginError> {
    let offsets: Vec<usize> = offsets.iter().map(|&o| o as usize).collect();
    if offsets.first() != Some(&0) || offsets.last() != Some(&ids.len()) {
        return Err(PluginError::invalid_argument(
            "offsets must start at 0 and end at the number of tokens",
        ));
    }
    for w in offsets.windows(2) {
        if w[1] <= w[0] {
            return Err(PluginError::invalid_argument(
                "empty or decreasing sequence in offsets",
            ));
        }
        if w[1] - w[0] > max_len {
            return Err(PluginError::invalid_argument(format!(
                "sequence of {} tokens exceeds the limit of {max_len}",
                w[1] - w[0]
            )));
        }
    }
    Ok(offsets)
}

impl Plugin for BertText {
    const NAME: &'static str = "bert-text";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const KIND: PluginKind = PluginKind::TextEncoder;

    fn accepts(model_dir: &Path) -> bool {
        let has = |f: &str| model_dir.join(f).is_file();
        if !(has("config.json") && has("model.safetensors") && has("tokenizer.json")) {
            return false;
        }
        #[derive(Deserialize)]
        struct ModelType {
            model_type: Option<String>,
        }
        read_json::<ModelType>(&model_dir.join("config.json"))
            .map(|c| c.model_type.as_deref() == Some("bert"))
            .unwrap_or(false)
    }

    fn create(model_dir: &Path, config_json: &str) -> Result<Self, PluginError> {
        Self::load(model_dir, parse_options(config_json)?)
            .map_err(|e| PluginError::load_failure(&e))
    }

    fn info(&self) -> ModelInfo {
        ModelInfo::text_encoder(self.output_dim as u32, self.max_seq_length as u32)
            .with_token_states(self.hidden_size as u32, self.num_layers as u32)
    }

    fn tokenize(&self, text: &str, max_tokens: usize) -> Result<Tokens, PluginError> {
        let (ids, untruncated_len) = self
            .tokenizer
            .encode(text, max_tokens.min(self.max_seq_length))
            .map_err(|e| PluginError::invalid_argument(format!("{e:#}")))?;
        Ok(Tokens {
            ids,
            untruncated_len,
        })
    }

    fn embed(&self, inputs: &[Tensor<'_>], output: TensorMut<'_>) -> Result<(), PluginError> {
        let (ids, offsets) = self.ragged_inputs(inputs)?;
        output_shape(&output, offsets.len() - 1, self.output_dim)?;
        let values = self
            .embed_batch(ids, &offsets)
            .map_err(|e| PluginError::inference_failure(&e, KernelError::is_out_of_memory))?;
        output.values.copy_from_slice(&values);
        Ok(())
    }

    const HAS_TOKEN_STATES: bool = true;

    fn token_states(
        &self,
        inputs: &[Tensor<'_>],
        layer: u32,
        output: TensorMut<'_>,
    ) -> Result<(), PluginError> {
        let (ids, offsets) = self.ragged_inputs(inputs)?;
        if layer as usize > self.num_layers {
            return Err(PluginError::invalid_argument(format!(
                "layer {layer} outside 0..={} (0 = the embeddings' output)",
                self.num_layers
            )));
        }
        output_shape(&output, ids.len(), self.hidden_size)?;
        let values = self
            .token_states_batch(ids, &offsets, layer as usize)
            .map_err(|e| PluginError::inference_failure(&e, KernelError::is_out_of_memory))?;
        output.values.copy_from_slice(&values);
        Ok(())
    }
}

export_plugin!(BertText);
