//! `config.json` of a fusion model, mirroring the file:
//!
//! ```json
//! {"text_dim": 384, "image_dim": 2048, "attention_dim": 256, "output_dim": 256, "qkv_bias": true}
//! ```

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// `config.json`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// Length of a text embedding (input of `W_Q`).
    pub text_dim: usize,
    /// Length of a poster or thumbnail embedding (input of `W_K` and `W_V`).
    pub image_dim: usize,
    /// `d`: length of queries, keys and values; scores are scaled by `1/√d`.
    pub attention_dim: usize,
    /// Length of the fused output `z` (output of `W_p`).
    pub output_dim: usize,
    /// Whether `W_Q`, `W_K`, `W_V` have biases (`nn.Linear`'s default); `W_p` always has.
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
}

fn default_true() -> bool {
    true
}

impl FusionConfig {
    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for (name, value) in [
            ("text_dim", config.text_dim),
            ("image_dim", config.image_dim),
            ("attention_dim", config.attention_dim),
            ("output_dim", config.output_dim),
        ] {
            if value == 0 {
                bail!("{name} must be positive in {}", path.display());
            }
        }
        Ok(config)
    }
}
