//! Marquee plugin `qwen2-vl`: the Qwen2.5-VL architecture as transformers implements it,
//! for generation (the "recall generator").
//!
//! One module per part of the model: [`config`] (`config.json` in both styles),
//! [`weights`] (safetensors, sharded or not, both weight layouts), [`preprocess`]
//! (`Qwen2VLImageProcessor`), [`vision`] (the vision tower), [`rope`] (M-RoPE and
//! `get_rope_index`), [`text`] (the Qwen2 decoder), [`kv_cache`] (paged), [`lora`]
//! (PEFT adapters applied unmerged), [`tokenizer`] and [`chat_template`], [`sampling`]
//! and [`generate`] (prefill and batched decode over sequences of different lengths);
//! [`plugin`] serves it through the plugin ABI's generator calls.
//! The decoder ops (RMSNorm, rotary, SwiGLU, attention) come from
//! `marquee_kernels::cpu::decoder`.

pub mod chat_template;
pub mod config;
pub mod generate;
pub mod kv_cache;
pub mod lora;
pub mod model;
pub mod plugin;
pub mod preprocess;
pub mod rope;
pub mod sampling;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod weights;

marquee_plugin_api::export_plugin!(plugin::QwenGenerator);

/// Errors of the Qwen2.5-VL plugin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the model directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A configuration file is malformed or describes an unsupported model.
    #[error("config: {0}")]
    Config(String),
    /// The checkpoint lacks a tensor or holds one of the wrong shape or type.
    #[error("weights: {0}")]
    Weights(String),
    /// An image cannot be preprocessed.
    #[error("image: {0}")]
    Image(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to load or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A LoRA adapter cannot be used.
    #[error("adapter: {0}")]
    Adapter(String),
    /// The request is inconsistent (e.g. image placeholders and images disagree).
    #[error("request: {0}")]
    Request(String),
    /// The KV cache has no free block left.
    #[error("KV cache full: {0}")]
    CacheFull(String),
    /// A kernel failed.
    #[error(transparent)]
    Kernel(#[from] marquee_kernels::KernelError),
}

/// Result of this crate's operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Reads a file of the model directory to a string.
pub(crate) fn read_to_string(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}
