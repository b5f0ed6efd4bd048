//! `config.json` and `preprocessor_config.json` of a Qwen2.5-VL directory, mirrored as
//! structs. Both config styles are read: flat (the text model's keys at the top level,
//! `vision_config` nested, as the released checkpoints have it) and nested
//! (`text_config` and `vision_config`, as transformers ≥ 4.52 writes it); the rotary
//! settings come from `rope_scaling` (transformers 4) or `rope_parameters` (5).

use crate::{read_to_string, Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The text decoder's settings (`Qwen2_5_VLTextConfig`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TextConfig {
    /// Rows of the embedding and of the LM head.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA).
    pub num_key_value_heads: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f32,
    /// Rotary base θ (read from `rope_theta` or `rope_parameters.rope_theta`).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// M-RoPE sections: rotary frequency slots for the temporal, height and width
    /// positions, summing to half the head dimension.
    #[serde(skip)]
    pub mrope_section: Vec<usize>,
    /// MLP activation; only `silu` is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

impl TextConfig {
    /// Dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// The vision tower's settings (`Qwen2_5_VLVisionConfig`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct VisionConfig {
    /// Vision blocks.
    pub depth: usize,
    /// Width of the vision residual stream.
    pub hidden_size: usize,
    /// Width of the vision SwiGLU MLP.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Input channels.
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    /// Side of a patch in pixels.
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    /// Side of the square of patches merged into one LLM token.
    #[serde(default = "default_merge")]
    pub spatial_merge_size: usize,
    /// Frames per temporal patch.
    #[serde(default = "default_temporal")]
    pub temporal_patch_size: usize,
    /// Side of an attention window in pixels.
    #[serde(default = "default_window")]
    pub window_size: usize,
    /// Width of the merger's output (the text hidden size).
    pub out_hidden_size: usize,
    /// Blocks attending over the whole image instead of windows.
    #[serde(default)]
    pub fullatt_block_indexes: Vec<usize>,
    /// Temporal positions per second of video.
    #[serde(default = "default_tokens_per_second")]
    pub tokens_per_second: usize,
    /// MLP activation; only `silu` is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

impl VisionConfig {
    /// Dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Values in one flattened patch: channels × frames × patch².
    pub fn patch_values(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// The whole model's settings (`Qwen2_5_VLConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The decoder.
    pub text: TextConfig,
    /// The vision tower.
    pub vision: VisionConfig,
    /// `<|image_pad|>`.
    pub image_token_id: u32,
    /// `<|video_pad|>`.
    pub video_token_id: u32,
    /// `<|vision_start|>`.
    pub vision_start_token_id: u32,
    /// `<|vision_end|>`.
    pub vision_end_token_id: u32,
    /// Whether the LM head is the embedding matrix (when the checkpoint has no `lm_head`).
    pub tie_word_embeddings: bool,
}

fn default_rms_eps() -> f32 {
    1e-6
}
fn default_rope_theta() -> f64 {
    1_000_000.0
}
fn default_act() -> String {
    "silu".into()
}
fn default_channels() -> usize {
    3
}
fn default_patch() -> usize {
    14
}
fn default_merge() -> usize {
    2
}
fn default_temporal() -> usize {
    2
}
fn default_window() -> usize {
    112
}
fn default_tokens_per_second() -> usize {
    4
}

fn config_error(e: impl std::fmt::Display) -> Error {
    Error::Config(e.to_string())
}

/// A token id field, at the top level or inside `text_config`, with Qwen's default.
fn token_id(root: &Value, text: &Value, key: &str, default: u32) -> u32 {
    root.get(key)
        .or_else(|| text.get(key))
        .and_then(Value::as_u64)
        .map_or(default, |v| v as u32)
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::parse(&read_to_string(&dir.join("config.json"))?)
    }

    /// Parses the text of a `config.json` in either style.
    pub fn parse(json: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(json).map_err(config_error)?;
        let text_value = root.get("text_config").cloned().unwrap_or(root.clone());
        let mut text: TextConfig =
            serde_json::from_value(text_value.clone()).map_err(config_error)?;
        let rope = text_value
            .get("rope_parameters")
            .or_else(|| text_value.get("rope_scaling"))
            .or_else(|| root.get("rope_parameters"))
            .or_else(|| root.get("rope_scaling"));
        let rope = rope.ok_or_else(|| {
            Error::Config("no rope_scaling / rope_parameters with an mrope_section".into())
        })?;
        let rope_type = rope
            .get("rope_type")
            .or_else(|| rope.get("type"))
            .and_then(Value::as_str);
        if let Some(kind) = rope_type.filter(|k| !matches!(*k, "mrope" | "default")) {
            return Err(Error::Config(format!(
                "rope type {kind} is not supported (mrope only)"
            )));
        }
        if let Some(theta) = rope.get("rope_theta").and_then(Value::as_f64) {
            text.rope_theta = theta;
        }
        text.mrope_section = rope
            .get("mrope_section")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Config("rope settings lack mrope_section".into()))?
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::Config("mrope_section must hold integers".into()))?;
        let vision: VisionConfig = serde_json::from_value(
            root.get("vision_config")
                .cloned()
                .ok_or_else(|| Error::Config("no vision_config".into()))?,
        )
        .map_err(config_error)?;
        let tie_word_embeddings = root
            .get("tie_word_embeddings")
            .or_else(|| text_value.get("tie_word_embeddings"))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let config = ModelConfig {
            image_token_id: token_id(&root, &text_value, "image_token_id", 151_655),
            video_token_id: token_id(&root, &text_value, "video_token_id", 151_656),
            vision_start_token_id: token_id(&root, &text_value, "vision_start_token_id", 151_652),
            vision_end_token_id: token_id(&root, &text_value, "vision_end_token_id", 151_653),
            text,
            vision,
            tie_word_embeddings,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the shapes agree with each other and the activations are supported.
    fn validate(&self) -> Result<()> {
        let (t, v) = (&self.text, &self.vision);
        let fail = |m: String| Err(Error::Config(m));
        if t.num_attention_heads == 0
            || t.hidden_size % t.num_attention_heads != 0
            || t.num_key_value_heads == 0
            || t.num_attention_heads % t.num_key_value_heads != 0
        {
            return fail(
                "text heads must divide the hidden size and the KV heads the heads".into(),
            );
        }
        if t.mrope_section.iter().sum::<usize>() * 2 != t.head_dim() {
            return fail(format!(
                "mrope_section {:?} must sum to half the head dimension {}",
                t.mrope_section,
                t.head_dim()
            ));
        }
        if t.mrope_section.len() != 3 {
            return fail("mrope_section must have three entries".into());
        }
        if v.num_heads == 0 || v.hidden_size % v.num_heads != 0 || v.head_dim() % 4 != 0 {
            return fail("vision heads must divide the hidden size into a multiple of 4".into());
        }
        if v.out_hidden_size != t.hidden_size {
            return fail("vision out_hidden_size must equal the text hidden size".into());
        }
        let merged_window = v.patch_size * v.spatial_merge_size;
        if v.window_size < merged_window || v.window_size % merged_window != 0 {
            return fail(
                "window_size must be a multiple of patch_size × spatial_merge_size".into(),
            );
        }
        for act in [&t.hidden_act, &v.hidden_act] {
            if act != "silu" {
                return fail(format!("activation {act} is not supported (silu only)"));
            }
        }
        Ok(())
    }
}

/// `preprocessor_config.json` of `Qwen2VLImageProcessor`.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessorConfig {
    /// Fewest pixels after `smart_resize`.
    pub min_pixels: u64,
    /// Most pixels after `smart_resize`.
    pub max_pixels: u64,
    /// Side of a patch.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// Side of the merged square of patches.
    pub merge_size: usize,
    /// Per-channel mean subtracted after rescaling.
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub image_std: [f32; 3],
    /// Factor the 8-bit values are multiplied by (Python's `1 / 255`, a double).
    pub rescale_factor: f64,
}

impl Default for PreprocessorConfig {
    /// transformers' defaults for `Qwen2VLImageProcessor` (CLIP's mean and std, written
    /// with transformers' digits).
    #[allow(clippy::excessive_precision)]
    fn default() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
            rescale_factor: 1.0 / 255.0,
        }
    }
}

impl PreprocessorConfig {
    /// Reads `dir/preprocessor_config.json`, transformers' defaults when it is absent.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if !path.exists() {
            return Ok(Self::default());
        }
        Self::parse(&read_to_string(&path)?)
    }

    /// Parses a `preprocessor_config.json`; `min_pixels` / `max_pixels` win over
    /// `size.shortest_edge` / `size.longest_edge`, as in the processor.
    pub fn parse(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json).map_err(config_error)?;
        let mut c = Self::default();
        let uint = |key: &str| v.get(key).and_then(Value::as_u64);
        let size = |key: &str| {
            v.get("size")
                .and_then(|s| s.get(key))
                .and_then(Value::as_u64)
        };
        c.min_pixels = uint("min_pixels")
            .or(size("shortest_edge"))
            .unwrap_or(c.min_pixels);
        c.max_pixels = uint("max_pixels")
            .or(size("longest_edge"))
            .unwrap_or(c.max_pixels);
        c.patch_size = uint("patch_size").map_or(c.patch_size, |x| x as usize);
        c.temporal_patch_size =
            uint("temporal_patch_size").map_or(c.temporal_patch_size, |x| x as usize);
        c.merge_size = uint("merge_size").map_or(c.merge_size, |x| x as usize);
        c.rescale_factor = v
            .get("rescale_factor")
            .and_then(Value::as_f64)
            .unwrap_or(c.rescale_factor);
        for (key, out) in [
            ("image_mean", &mut c.image_mean),
            ("image_std", &mut c.image_std),
        ] {
            if let Some(values) = v.get(key).and_then(Value::as_array) {
                let floats: Vec<f32> = values
                    .iter()
                    .filter_map(Value::as_f64)
                    .map(|x| x as f32)
                    .collect();
                *out = floats
                    .try_into()
                    .map_err(|_| Error::Config(format!("{key} must hold three numbers")))?;
            }
        }
        if let Some(resample) = uint("resample") {
            if resample != 3 {
                return Err(Error::Config(format!(
                    "resample {resample} is not supported (bicubic, 3, only)"
                )));
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VISION: &str = r#""vision_config": {"depth": 2, "hidden_size": 16, "intermediate_size": 32,
        "num_heads": 2, "out_hidden_size": 64, "window_size": 56, "fullatt_block_indexes": [1]}"#;

    #[test]
    fn reads_rope_parameters_in_nested_text_config() {
        let json = format!(
            r#"{{"text_config": {{"vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rope_parameters": {{"rope_type": "default", "rope_theta": 5000.0,
            "mrope_section": [2, 3, 3]}}, "tie_word_embeddings": false}}, {VISION}}}"#
        );
        let c = ModelConfig::parse(&json).unwrap();
        assert_eq!(c.text.rope_theta, 5000.0);
        assert_eq!(c.text.mrope_section, vec![2, 3, 3]);
        assert!(!c.tie_word_embeddings);
        assert_eq!(c.image_token_id, 151_655);
        assert_eq!(c.vision.fullatt_block_indexes, vec![1]);
    }

    #[test]
    fn refuses_sections_that_do_not_cover_half_the_head() {
        let json = format!(
            r#"{{"vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rope_scaling": {{"type": "mrope", "mrope_section": [2, 3, 4]}}, {VISION}}}"#
        );
        let err = ModelConfig::parse(&json).unwrap_err().to_string();
        assert!(err.contains("half the head dimension"), "{err}");
        let yarn = json.replace(r#""type": "mrope""#, r#""type": "yarn""#);
        let err = ModelConfig::parse(&yarn).unwrap_err().to_string();
        assert!(err.contains("rope type yarn"), "{err}");
    }

    #[test]
    fn preprocessor_reads_size_keys_and_explicit_pixels_win() {
        let c = PreprocessorConfig::parse(
            r#"{"size": {"shortest_edge": 100, "longest_edge": 2000}, "max_pixels": 5000}"#,
        )
        .unwrap();
        assert_eq!((c.min_pixels, c.max_pixels), (100, 5000));
        assert!(PreprocessorConfig::parse(r#"{"resample": 2}"#).is_err());
    }
}
