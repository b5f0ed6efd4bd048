//! The JSON files of a sentence-transformers BERT directory, as serde structs.
//! Field names and defaults follow Hugging Face `BertConfig` and sentence-transformers,
//! and the same rules as the serving plugin (`plugins/bert-text/src/config.rs`).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// `config.json` of a Hugging Face BERT model.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    /// Width of every token vector.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation; only `gelu` (exact erf GELU, transformers' "gelu").
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Layer-norm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Rows of the position-embedding table.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Only `absolute` is supported.
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    /// Dropout on the embeddings and the attention / FFN output projections in
    /// training mode (transformers' default 0.1).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on the attention probabilities in training mode (default 0.1).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
}

fn default_dropout() -> f64 {
    0.1
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_position_embedding_type() -> String {
    "absolute".into()
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

/// How token vectors become one vector per text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Average over the attention mask (sentence-transformers' `mean`).
    Mean,
    /// The first token's vector (`cls`).
    Cls,
}

/// `1_Pooling/config.json`: the `pooling_mode` string (sentence-transformers ≥ 6) or
/// the older `pooling_mode_*` booleans; exactly one of mean and cls must be selected.
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
                _ => bail!("unsupported pooling_mode {mode} for training (supported: mean, cls)"),
            };
        }
        if self.pooling_mode_max_tokens
            || self.pooling_mode_mean_sqrt_len_tokens
            || self.pooling_mode_weightedmean_tokens
            || self.pooling_mode_lasttoken
        {
            bail!("unsupported pooling mode for training (supported: mean, cls)");
        }
        match (self.pooling_mode_mean_tokens, self.pooling_mode_cls_token) {
            (true, false) => Ok(Pooling::Mean),
            (false, true) => Ok(Pooling::Cls),
            _ => bail!("the pooling config must enable exactly one of mean, cls"),
        }
    }
}

/// Activation after a Dense projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseActivation {
    /// `torch.nn.modules.linear.Identity`.
    Identity,
    /// `torch.nn.modules.activation.Tanh`.
    Tanh,
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
    /// Python class of the activation. A missing field means Tanh, the
    /// constructor default of sentence-transformers' `Dense` (as the serving side reads it).
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
    pub fn activation(&self) -> Result<DenseActivation> {
        if self.use_residual {
            bail!("Dense modules with use_residual are not supported");
        }
        match self.activation_function.rsplit('.').next() {
            Some("Identity") => Ok(DenseActivation::Identity),
            Some("Tanh") => Ok(DenseActivation::Tanh),
            _ => bail!(
                "unsupported Dense activation {:?} (supported: Identity, Tanh)",
                self.activation_function
            ),
        }
    }
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

/// Reads and parses a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
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
        assert!(pooling(r#"{"pooling_mode": "max"}"#).is_err());
        assert!(pooling(r#"{"pooling_mode_max_tokens": true}"#).is_err());
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
            DenseActivation::Tanh
        );
        assert_eq!(
            dense(&format!(
                r#"{{{base}, "activation_function": "torch.nn.modules.linear.Identity"}}"#
            ))
            .activation()
            .unwrap(),
            DenseActivation::Identity
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
