//! Pipelines: models composed in the configuration (text encoder + image encoder →
//! fusion model), served under their own name beside the models, and the input widths
//! of fusion models that composing them needs.

use crate::config::PipelineConfig;
use serde::Deserialize;
use std::path::Path;

/// The input widths of a fusion model, from its directory's `config.json`
/// (`text_dim`, `image_dim`; see `plugins/README.md`). The host needs them to lay out
/// absent images and to check inputs before they are batched.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct FusionDims {
    /// Width of a text embedding.
    #[serde(rename = "text_dim")]
    pub text: usize,
    /// Width of a poster or thumbnail embedding.
    #[serde(rename = "image_dim")]
    pub image: usize,
}

impl FusionDims {
    /// Reads the widths from `model_dir/config.json`; `None` when it has none.
    pub fn read(model_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(model_dir.join("config.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// A pipeline being served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    /// Serving name.
    pub name: String,
    /// Its models and intermediate collections.
    pub config: PipelineConfig,
    /// Length of its vectors (the fusion model's output).
    pub dimension: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_dims_come_from_config_json() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/fusion/tests/fixtures/with_bias");
        assert_eq!(
            FusionDims::read(&dir),
            Some(FusionDims {
                text: 24,
                image: 40
            })
        );
        assert_eq!(FusionDims::read(Path::new("/nonexistent")), None);
    }
}
