//! Marquee plugin `bert-text`: a BERT text encoder loaded from a Hugging Face model
//! directory (`config.json`, `model.safetensors`, `tokenizer.json`) with the
//! sentence-transformers modules found there (`modules.json`: pooling, optional
//! `Dense` projections, `Normalize`). Batches are ragged, so padding costs nothing.

pub mod bert;
pub mod config;
pub mod tokenize;
pub mod weights;

use anyhow::{bail, Context};
use bert::Bert;
use config::{read_json, BertConfig, Pipeline};
use marquee_kernels::{Activation, Backend, CpuBackend, Matrix, Pooling};
use marquee_plugin_api::{
    export_plugin, ModelInfo, Plugin, PluginError, PluginKind, Tensor, TensorMut, Tokens,
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
    /// Worker threads for inference; defaults to all cores.
    pub threads: Option<usize>,
    /// `auto` or `cpu` (the CUDA backend is not built yet).
    pub device: Option<String>,
}

/// A projection applied after pooling.
struct Dense {
    weight: Matrix,
    bias: Option<Matrix>,
    activation: Activation,
}

/// A loaded BERT sentence encoder.
pub struct BertText {
    tokenizer: TextTokenizer,
    encoder: Bert<CpuBackend>,
    pooling: Pooling,
    dense: Vec<Dense>,
    normalize: bool,
    max_seq_length: usize,
    output_dim: usize,
    pool: rayon::ThreadPool,
}

fn load_error(e: anyhow::Error) -> PluginError {
    let not_found = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    });
    let message = format!("{e:#}");
    if not_found {
        PluginError::not_found(message)
    } else {
        PluginError::invalid_argument(message)
    }
}

impl BertText {
    fn load(dir: &Path, options: Options) -> anyhow::Result<Self> {
        match options.device.as_deref() {
            None | Some("auto") | Some("cpu") => {}
            Some(other) => bail!("device {other:?} is not available (this build runs on: cpu)"),
        }
        let config: BertConfig = read_json(&dir.join("config.json"))?;
        let pipeline = Pipeline::load(dir)?;
        let weights = Weights::open(&dir.join("model.safetensors"), &["bert."])?;
        let backend = CpuBackend;
        let encoder = Bert::load(backend, config.clone(), &weights)?;
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
                weight: w.matrix(&backend, "linear.weight", [o, i])?,
                bias: if dense_config.bias {
                    Some(w.matrix(&backend, "linear.bias", [1, o])?)
                } else {
                    None
                },
                activation: dense_config.activation()?,
            });
            width = o;
        }
        let limit = config.max_position_embeddings;
        let max_seq_length = options
            .max_seq_length
            .unwrap_or_else(|| pipeline.max_seq_length.unwrap_or(limit).min(limit));
        if max_seq_length == 0 || max_seq_length > limit {
            bail!("max_seq_length {max_seq_length} outside 1..={limit}");
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads.unwrap_or(0))
            .thread_name(|i| format!("bert-text-{i}"))
            .build()?;
        Ok(Self {
            tokenizer: TextTokenizer::load(&dir.join("tokenizer.json"))?,
            encoder,
            pooling: pipeline.pooling,
            dense,
            normalize: pipeline.normalize,
            max_seq_length,
            output_dim: width,
            pool,
        })
    }

    /// Embeds a ragged batch (validated offsets) into `n × output_dim` values.
    pub fn embed_batch(&self, ids: &[u32], offsets: &[usize]) -> anyhow::Result<Vec<f32>> {
        self.pool.install(|| {
            let backend = self.encoder.backend();
            let hidden = self.encoder.forward(ids, offsets)?;
            let mut pooled = backend.pool(&hidden, offsets, self.pooling)?;
            for d in &self.dense {
                pooled = backend.linear(&pooled, &d.weight, d.bias.as_ref(), d.activation)?;
            }
            if self.normalize {
                backend.l2_normalize(&mut pooled)?;
            }
            Ok(backend.download(&pooled)?)
        })
    }
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
        let options: Options = if config_json.trim().is_empty() {
            Options::default()
        } else {
            serde_json::from_str(config_json)
                .map_err(|e| PluginError::invalid_argument(format!("plugin config: {e}")))?
        };
        Self::load(model_dir, options).map_err(load_error)
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            output_dim: self.output_dim as u32,
            max_input_tokens: self.max_seq_length as u32,
        }
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
        let [ids, offsets] = inputs else {
            return Err(PluginError::invalid_argument(
                "bert-text takes two inputs: token ids and offsets",
            ));
        };
        let ids = ids.as_u32("token ids")?;
        let offsets = ragged_offsets(ids, offsets.as_u32("offsets")?, self.max_seq_length)?;
        let n = offsets.len() - 1;
        if output.shape != [n as u64, self.output_dim as u64] {
            return Err(PluginError::invalid_argument(format!(
                "output shape {:?}, expected [{n}, {}]",
                output.shape, self.output_dim
            )));
        }
        let values = self
            .embed_batch(ids, &offsets)
            .map_err(|e| PluginError::internal(format!("{e:#}")))?;
        output.values.copy_from_slice(&values);
        Ok(())
    }
}

export_plugin!(BertText);
