//! Per-token hidden states of a served text encoder, for metrics that match tokens
//! (BERTScore): texts tokenized with their special tokens, then run through the plugin's
//! `token_states` call in batches, outside the model's batcher.
//!
//! Truncation: a text is cut at the end to the served model's `max_input_tokens` (its
//! special tokens kept), the most the plugin accepts. bert-score cuts at the tokenizer's
//! `model_max_length` instead (`tokenizer_config.json`): 512 for all-MiniLM-L6-v2, whose
//! sentence-transformers limit, the bert-text plugin's default, is 256. Texts between
//! the two limits are then cut earlier than bert-score cuts them; to match it, serve the
//! model with its limit at `model_max_length` (bert-text's `max_seq_length` option).
//! [`EncodedTexts`] reports both limits and how many texts were cut.

use super::error::EngineError;
use super::model::{kind_name, LoadedModel};
use super::registry::Registry;
use crate::evaluation::bertscore::{EncodedText, SPECIAL_TOKENS_PER_TEXT};
use marquee_plugin_api::PluginKind;
use std::path::Path;
use std::sync::Arc;

/// Texts as one layer of a text encoder sees them.
#[derive(Clone, Debug)]
pub struct EncodedTexts {
    /// Each text's ids and states, in the order given.
    pub texts: Vec<EncodedText>,
    /// Width of a token state.
    pub dim: usize,
    /// The two special tokens the tokenizer wraps every text in (an empty text's ids).
    pub special_ids: [u32; 2],
    /// Texts were cut to this many tokens, special tokens included (the model's
    /// `max_input_tokens`).
    pub token_limit: u32,
    /// The tokenizer's own `model_max_length` (where bert-score truncates), when the
    /// model directory's `tokenizer_config.json` gives a usable one.
    pub tokenizer_max_length: Option<u32>,
    /// Whether each text was cut at `token_limit`, in the order given.
    pub truncated: Vec<bool>,
}

/// The text encoder `name` (the default model when empty), checked to give per-token
/// states for `layer` (0 = the embeddings' output, `L` = its last layer).
pub fn token_state_model(
    registry: &Registry,
    name: &str,
    layer: u32,
) -> Result<Arc<LoadedModel>, EngineError> {
    let model = registry.get(name)?;
    if model.kind() != PluginKind::TextEncoder {
        return Err(EngineError::Invalid(format!(
            "model {} is {}, not a text encoder: per-token hidden states come from text encoders",
            model.name,
            kind_name(model.kind())
        )));
    }
    let info = model.instance.info();
    if info.token_state_dim == 0 {
        return Err(EngineError::Invalid(format!(
            "model {} gives no per-token hidden states (its plugin {} reports none)",
            model.name,
            model.instance.library().name()
        )));
    }
    if layer > info.token_state_layers {
        return Err(EngineError::Invalid(format!(
            "layer {layer} is beyond model {}'s depth: it has layers 0 to {} (0 = the \
             embeddings' output)",
            model.name, info.token_state_layers
        )));
    }
    Ok(model)
}

/// Tokenizes `texts` and returns their states at `layer` from `name` (checked by
/// [`token_state_model`]), on a blocking thread.
pub async fn encode_texts(
    registry: &Registry,
    name: &str,
    layer: u32,
    texts: Vec<String>,
) -> Result<EncodedTexts, EngineError> {
    let model = token_state_model(registry, name, layer)?;
    tokio::task::spawn_blocking(move || encode_blocking(&model, layer, &texts))
        .await
        .map_err(|e| EngineError::Internal(format!("token states crashed: {e}")))?
}

/// [`encode_texts`] on the calling thread, for a model [`token_state_model`] accepted.
/// Batches hold at most the model's `max_batch_size` texts and `max_batch_tokens`
/// tokens (a longer text runs alone).
pub fn encode_blocking(
    model: &LoadedModel,
    layer: u32,
    texts: &[String],
) -> Result<EncodedTexts, EngineError> {
    let info = model.instance.info();
    let (dim, token_limit) = (info.token_state_dim as usize, info.max_input_tokens);
    let special_ids = special_ids(model)?;
    let mut tokenized = Vec::with_capacity(texts.len());
    let mut truncated = Vec::with_capacity(texts.len());
    for text in texts {
        let tokens = model.instance.tokenize(text, token_limit)?;
        truncated.push(tokens.untruncated_len > tokens.ids.len());
        tokenized.push(tokens.ids);
    }
    let mut encoded = Vec::with_capacity(texts.len());
    let mut start = 0;
    while start < tokenized.len() {
        let end = batch_end(&tokenized, start, &model.batching);
        let mut ids = Vec::new();
        let mut offsets = vec![0u32];
        for text in &tokenized[start..end] {
            ids.extend_from_slice(text);
            offsets.push(ids.len() as u32);
        }
        let states = model.instance.token_states(&ids, &offsets, layer)?;
        for (text, span) in tokenized[start..end].iter().zip(offsets.windows(2)) {
            let rows = span[0] as usize * dim..span[1] as usize * dim;
            encoded.push(EncodedText {
                ids: text.clone(),
                states: states[rows].to_vec(),
            });
        }
        start = end;
    }
    Ok(EncodedTexts {
        texts: encoded,
        dim,
        special_ids,
        token_limit,
        tokenizer_max_length: tokenizer_max_length(&model.path),
        truncated,
    })
}

/// The end of the batch starting at `start`.
fn batch_end(tokenized: &[Vec<u32>], start: usize, batching: &crate::config::Batching) -> usize {
    let mut tokens = tokenized[start].len();
    let mut end = start + 1;
    while end < tokenized.len()
        && end - start < batching.max_batch_size
        && tokens + tokenized[end].len() <= batching.max_batch_tokens
    {
        tokens += tokenized[end].len();
        end += 1;
    }
    end
}

/// The ids the tokenizer wraps an empty text in, which must be two (bert-score's [CLS]
/// and [SEP]).
fn special_ids(model: &LoadedModel) -> Result<[u32; 2], EngineError> {
    let ids = model
        .instance
        .tokenize("", SPECIAL_TOKENS_PER_TEXT as u32 + 1)?
        .ids;
    <[u32; 2]>::try_from(ids.as_slice()).map_err(|_| {
        EngineError::Invalid(format!(
            "model {} tokenizes an empty text as {} tokens; per-token metrics need a \
             tokenizer that wraps each text in {SPECIAL_TOKENS_PER_TEXT} special tokens",
            model.name,
            ids.len()
        ))
    })
}

/// `model_max_length` from `dir/tokenizer_config.json`, when it is a whole number that
/// fits (transformers writes 1e30 for "no limit").
fn tokenizer_max_length(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    config["model_max_length"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_both_limits_and_a_long_text_runs_alone() {
        let batching = crate::config::Batching {
            max_batch_size: 3,
            max_batch_tokens: 10,
            max_queue_delay_us: 0,
            max_queue_inputs: 1,
        };
        let texts: Vec<Vec<u32>> = [2, 2, 2, 2, 12, 4, 5, 1]
            .iter()
            .map(|&n| vec![0; n])
            .collect();
        let mut ends = Vec::new();
        let mut start = 0;
        while start < texts.len() {
            start = batch_end(&texts, start, &batching);
            ends.push(start);
        }
        assert_eq!(ends, [3, 4, 5, 8]);
    }

    #[test]
    fn tokenizer_limits_are_read_when_usable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(tokenizer_max_length(dir.path()), None);
        let write = |json: &str| {
            std::fs::write(dir.path().join("tokenizer_config.json"), json).unwrap();
            tokenizer_max_length(dir.path())
        };
        assert_eq!(write(r#"{"model_max_length": 512}"#), Some(512));
        assert_eq!(write(r#"{"model_max_length": 1e30}"#), None);
        assert_eq!(write(r#"{"do_lower_case": true}"#), None);
    }
}
