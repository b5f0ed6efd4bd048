//! Configuration files of a Hugging Face BERT directory with sentence-transformers
//! modules, as serde structs mirroring the JSON files: read by the bert-text plugin and
//! by the trainer (a crate of its own, so the trainer and the server never link the
//! plugin, whose library exports the plugin entry point).

use anyhow::{bail, Context, Result};
use marquee_kernels::{Activation, Pooling};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `config.json` of a BERT model (the fields the forward pass and the trainer need).
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Width of every token vector.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation; only `gelu` (exact erf) is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Positions the position-embedding table covers.
    pub max_position_embeddings: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f32,
    /// Only `absolute` is supported.
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    /// Rows of the token-type table.
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// Dropout after embeddings, attention output and feed-forward (training only).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on the attention probabilities (training only).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
}

impl BertConfig {
    /// Checks the fields this encoder supports.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_act != "gelu" {
            bail!(
                "unsupported hidden_act {:?} (supported: gelu)",
                self.hidden_act
            );
        }
        if self.position_embedding_type != "absolute" {
            bail!(
                "unsupported position_embedding_type {:?} (supported: absolute)",
                self.position_embedding_type
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            bail!("hidden_size is not a multiple of num_attention_heads");
        }
        Ok(())
    }
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_dropout() -> f64 {
    0.1
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_layer_norm_eps() -> f32 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

/// One entry of `modules.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct ModuleEntry {
    /// Sub-folder holding the module's files ("" for the transformer).
    #[serde(default)]
    pub path: String,
    /// Python class, e.g. `sentence_transformers.models.Pooling`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `1_Pooling/config.json`: either the `pooling_mode` string (sentence-transformers ≥ 6)
/// or the older `pooling_mode_*` booleans; exactly one mode must be selected.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PoolingConfig {
    #[serde(default)]
    pooling_mode: Option<serde_json::Value>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl PoolingConfig {
    /// The single pooling mode the file selects.
    pub fn mode(&self) -> Result<Pooling> {
        if let Some(mode) = &self.pooling_mode {
            let single = match mode {
                serde_json::Value::String(s) => Some(s.as_str()),
                serde_json::Value::Array(list) if list.len() == 1 => list[0].as_str(),
                _ => None,
            };
            return match single {
                Some("mean") => Ok(Pooling::Mean),
                Some("cls") => Ok(Pooling::Cls),
                Some("max") => Ok(Pooling::Max),
                _ => bail!("unsupported pooling_mode {mode} (supported: mean, cls, max)"),
            };
        }
        if self.pooling_mode_mean_sqrt_len_tokens
            || self.pooling_mode_weightedmean_tokens
            || self.pooling_mode_lasttoken
        {
            bail!("unsupported pooling mode (supported: mean, cls, max)");
        }
        match (
            self.pooling_mode_mean_tokens,
            self.pooling_mode_cls_token,
            self.pooling_mode_max_tokens,
        ) {
            (true, false, false) => Ok(Pooling::Mean),
            (false, true, false) => Ok(Pooling::Cls),
            (false, false, true) => Ok(Pooling::Max),
            _ => bail!("the pooling config must enable exactly one of mean, cls, max"),
        }
    }
}

/// `2_Dense/config.json`: a linear projection after pooling.
#[derive(Clone, Debug, Deserialize)]
pub struct DenseConfig {
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
    /// Whether the layer has a bias.
    #[serde(default = "default_true")]
    pub bias: bool,
    /// Python class of the activation. A missing field means Tanh, the constructor
    /// default of sentence-transformers' `Dense`.
    #[serde(default = "default_dense_activation")]
    pub activation_function: String,
    /// sentence-transformers ≥ 5.7's residual connection; not supported.
    #[serde(default)]
    pub use_residual: bool,
}

fn default_true() -> bool {
    true
}
fn default_dense_activation() -> String {
    "torch.nn.modules.activation.Tanh".into()
}

impl DenseConfig {
    /// The activation the file names.
    pub fn activation(&self) -> Result<Activation> {
        if self.use_residual {
            bail!("Dense modules with use_residual are not supported");
        }
        match self.activation_function.rsplit('.').next() {
            Some("Identity") => Ok(Activation::Identity),
            Some("Tanh") => Ok(Activation::Tanh),
            Some("GELU") => Ok(Activation::Gelu),
            _ => bail!(
                "unsupported Dense activation {:?} (supported: Identity, Tanh, GELU)",
                self.activation_function
            ),
        }
    }
}

/// `tokenizer_config.json` (the length limit and the pad token).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TokenizerConfig {
    /// Token limit of the tokenizer; huge sentinel values mean "none".
    pub model_max_length: Option<f64>,
    /// The padding token (`[PAD]` when absent).
    pub pad_token: Option<String>,
}

/// `sentence_bert_config.json`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SentenceBertConfig {
    /// Token limit used by sentence-transformers.
    pub max_seq_length: Option<usize>,
}

/// The sentence-transformers pipeline after the transformer, in order.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// How token vectors become one vector.
    pub pooling: Pooling,
    /// Optional projection (its folder and config).
    pub dense: Vec<(PathBuf, DenseConfig)>,
    /// Whether the output is L2-normalised.
    pub normalize: bool,
    /// Token limit: `sentence_bert_config.json`'s, else `tokenizer_config.json`'s
    /// `model_max_length` (what sentence-transformers falls back to), if any.
    pub max_seq_length: Option<usize>,
    /// `tokenizer_config.json`'s pad token, if it names one.
    pub pad_token: Option<String>,
}

/// Reads and parses a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

impl Pipeline {
    /// Reads `modules.json` and the module configs; a plain HF directory without
    /// `modules.json` gets mean pooling and no normalisation, as sentence-transformers does.
    pub fn load(dir: &Path) -> Result<Self> {
        let sbert: SentenceBertConfig = if dir.join("sentence_bert_config.json").is_file() {
            read_json(&dir.join("sentence_bert_config.json"))?
        } else {
            SentenceBertConfig::default()
        };
        let tokenizer_config: TokenizerConfig = if dir.join("tokenizer_config.json").is_file() {
            read_json(&dir.join("tokenizer_config.json"))?
        } else {
            TokenizerConfig::default()
        };
        let tokenizer_limit = tokenizer_config
            .model_max_length
            .filter(|n| (1.0..1e9).contains(n))
            .map(|n| n as usize);
        let mut pipeline = Pipeline {
            pooling: Pooling::Mean,
            dense: Vec::new(),
            normalize: false,
            max_seq_length: sbert.max_seq_length.or(tokenizer_limit),
            pad_token: tokenizer_config.pad_token,
        };
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(pipeline);
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        for module in modules {
            let folder = dir.join(&module.path);
            match module.kind.rsplit('.').next().unwrap_or_default() {
                "Transformer" => {}
                "Pooling" => {
                    let config: PoolingConfig = read_json(&folder.join("config.json"))?;
                    pipeline.pooling = config.mode()?;
                }
                "Dense" => {
                    let config: DenseConfig = read_json(&folder.join("config.json"))?;
                    pipeline.dense.push((folder, config));
                }
                "Normalize" => pipeline.normalize = true,
                other => bail!("unsupported sentence-transformers module {other:?}"),
            }
        }
        Ok(pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooling(json: &str) -> Result<Pooling> {
        serde_json::from_str::<PoolingConfig>(json).unwrap().mode()
    }

    #[test]
    fn pooling_modes_new_and_old_style() {
        assert_eq!(
            pooling(r#"{"pooling_mode": "mean"}"#).unwrap(),
            Pooling::Mean
        );
        assert_eq!(
            pooling(r#"{"pooling_mode": ["cls"]}"#).unwrap(),
            Pooling::Cls
        );
        assert_eq!(
            pooling(r#"{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}"#)
                .unwrap(),
            Pooling::Mean
        );
        assert_eq!(
            pooling(r#"{"pooling_mode_cls_token": true}"#).unwrap(),
            Pooling::Cls
        );
        assert_eq!(pooling(r#"{"pooling_mode": "max"}"#).unwrap(), Pooling::Max);
        assert!(pooling(r#"{"pooling_mode": "weightedmean"}"#).is_err());
        assert!(pooling(r#"{"pooling_mode_lasttoken": true}"#).is_err());
        assert!(
            pooling(r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#)
                .is_err()
        );
        assert!(pooling("{}").is_err());
    }

    #[test]
    fn dense_activation_defaults_to_tanh_and_rejects_residuals() {
        let dense = |json: &str| serde_json::from_str::<DenseConfig>(json).unwrap();
        let base = r#""in_features": 4, "out_features": 2"#;
        assert_eq!(
            dense(&format!("{{{base}}}")).activation().unwrap(),
            Activation::Tanh
        );
        assert_eq!(
            dense(&format!(
                r#"{{{base}, "activation_function": "torch.nn.modules.linear.Identity"}}"#
            ))
            .activation()
            .unwrap(),
            Activation::Identity
        );
        assert!(dense(&format!(
            r#"{{{base}, "activation_function": "torch.nn.modules.activation.ReLU"}}"#
        ))
        .activation()
        .is_err());
        assert!(dense(&format!(r#"{{{base}, "use_residual": true}}"#))
            .activation()
            .is_err());
    }

    #[test]
    fn bert_config_checks() {
        let json = r#"{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 64, "vocab_size": 100}"#;
        let config: BertConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.hidden_act, "gelu");
        assert_eq!(config.layer_norm_eps, 1e-12);
        assert_eq!(config.type_vocab_size, 2);
        config.validate().unwrap();
        let mut bad = config.clone();
        bad.hidden_act = "gelu_new".into();
        assert!(bad.validate().is_err());
        let mut bad = config.clone();
        bad.num_attention_heads = 5;
        assert!(bad.validate().is_err());
    }
}
