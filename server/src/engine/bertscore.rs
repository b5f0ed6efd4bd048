//! BERTScore with a served text encoder: the items' distinct texts are encoded once at
//! the chosen layer ([`super::token_states`]), then scored as bert-score 0.3.13 does
//! ([`crate::evaluation::bertscore`]), all on a blocking thread.

use super::error::EngineError;
use super::registry::Registry;
use super::token_states::{encode_blocking, token_state_model};
use crate::evaluation::bertscore::{
    bertscore, Baseline, BertScoreError, BertScoreReport, BertScoreSettings, EncodedItem,
};
use crate::evaluation::generation_input::{check_items, GenerationItem};
use std::collections::HashMap;

/// BERTScore of a set of items through one model and layer, with what it was computed
/// with.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelBertScore {
    /// Per-item scores and their means.
    pub report: BertScoreReport,
    /// The model's serving name.
    pub model: String,
    /// The layer whose states were matched (bert-score's `num_layers`).
    pub layer: u32,
    /// Whether IDF weights were used.
    pub idf: bool,
    /// Whether the scores were rescaled with a baseline.
    pub rescaled: bool,
    /// Texts were cut to this many tokens (the model's `max_input_tokens`).
    pub token_limit: u32,
    /// Where bert-score would cut them (the tokenizer's `model_max_length`), if known;
    /// when above `token_limit`, texts between the two are cut earlier than bert-score
    /// cuts them.
    pub tokenizer_max_length: Option<u32>,
    /// Candidates and references cut at `token_limit`, each occurrence counted.
    pub truncated_texts: usize,
}

/// Scores `items` as `bert_score.score(candidates, references, num_layers=layer,
/// idf=idf)` with the text encoder served as `model`, rescaled with `baseline`'s row for
/// `layer` when given. Errors: `NotFound` for a model not loaded; `Invalid` for no
/// items, an item without references, a model that is no text encoder or gives no
/// per-token states, a layer beyond its depth, or a baseline without that layer.
pub async fn bertscore_with_model(
    registry: &Registry,
    model: &str,
    layer: u32,
    items: &[GenerationItem<'_>],
    idf: bool,
    baseline: Option<&Baseline>,
) -> Result<ModelBertScore, EngineError> {
    check_items(items).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let baseline = baseline
        .map(|b| b.row(layer))
        .transpose()
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let model = token_state_model(registry, model, layer)?;
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut texts: Vec<String> = Vec::new();
    let mut layout: Vec<(usize, Vec<usize>)> = Vec::with_capacity(items.len());
    for item in items {
        let mut slots = std::iter::once(item.candidate)
            .chain(item.references.iter().map(String::as_str))
            .map(|text| {
                *index.entry(text).or_insert_with(|| {
                    texts.push(text.to_string());
                    texts.len() - 1
                })
            });
        let candidate = slots.next().unwrap_or_default();
        layout.push((candidate, slots.collect()));
    }
    tokio::task::spawn_blocking(move || {
        let encoded = encode_blocking(&model, layer, &texts)?;
        let items: Vec<EncodedItem<'_>> = layout
            .iter()
            .map(|(candidate, references)| EncodedItem {
                candidate: &encoded.texts[*candidate],
                references: references.iter().map(|&r| &encoded.texts[r]).collect(),
            })
            .collect();
        let settings = BertScoreSettings {
            dim: encoded.dim,
            special_ids: encoded.special_ids,
            idf,
            baseline,
        };
        let report = bertscore(&items, &settings).map_err(|e| match e {
            BertScoreError::StateShape { .. } | BertScoreError::MissingSpecialTokens { .. } => {
                EngineError::Internal(format!("model {}: {e}", model.name))
            }
            e => EngineError::Invalid(e.to_string()),
        })?;
        let truncated_texts = layout
            .iter()
            .flat_map(|(candidate, references)| std::iter::once(candidate).chain(references))
            .filter(|&&text| encoded.truncated[text])
            .count();
        Ok(ModelBertScore {
            report,
            model: model.name.clone(),
            layer,
            idf,
            rescaled: baseline.is_some(),
            token_limit: encoded.token_limit,
            tokenizer_max_length: encoded.tokenizer_max_length,
            truncated_texts,
        })
    })
    .await
    .map_err(|e| EngineError::Internal(format!("BERTScore crashed: {e}")))?
}
