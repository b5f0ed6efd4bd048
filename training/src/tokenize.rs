//! Texts to padded batches in the training loop, as sentence-transformers' Transformer
//! module tokenizes: the model directory's `tokenizer.json` (the `tokenizers` crate),
//! special tokens added, truncation at `max_seq_length`, padding to the longest text of
//! the batch with the pad token, attention mask 1 for tokens and 0 for padding.

use crate::optim::{ContrastiveBatch, Texts};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use marquee_bert_config::Pipeline;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// A model directory's tokenizer with its truncation length and pad id.
pub struct BatchTokenizer {
    tokenizer: Tokenizer,
    max_seq_length: usize,
    pad_id: u32,
}

impl BatchTokenizer {
    /// Loads `dir/tokenizer.json`. The length limit is, as sentence-transformers reads
    /// it, `sentence_bert_config.json`'s `max_seq_length` (older directories), else
    /// `tokenizer_config.json`'s `model_max_length` (where sentence-transformers 6
    /// keeps it), else `max_position_embeddings`; never more than
    /// `max_position_embeddings` (the serving plugin's rule). The pad token is
    /// `tokenizer_config.json`'s `pad_token`, else `[PAD]`.
    pub fn load(dir: &Path, max_position_embeddings: usize) -> Result<Self> {
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow!("loading {}: {e}", dir.join("tokenizer.json").display()))?;
        let pipeline = Pipeline::load(dir)?;
        let max_seq_length = pipeline
            .max_seq_length
            .unwrap_or(max_position_embeddings)
            .min(max_position_embeddings);
        if max_seq_length == 0 {
            bail!("max_seq_length is 0");
        }
        let pad_token = pipeline.pad_token.unwrap_or_else(|| "[PAD]".into());
        let pad_id = tokenizer
            .token_to_id(&pad_token)
            .with_context(|| format!("pad token {pad_token:?} not in the vocabulary"))?;
        tokenizer.with_padding(None);
        let mut loaded = Self {
            tokenizer,
            max_seq_length,
            pad_id,
        };
        loaded.set_max_seq_length(max_seq_length)?;
        Ok(loaded)
    }

    /// The truncation length (special tokens included).
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Changes the truncation length (as setting `model.max_seq_length`).
    pub fn set_max_seq_length(&mut self, max_seq_length: usize) -> Result<()> {
        self.tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow!("setting truncation: {e}"))?;
        self.max_seq_length = max_seq_length;
        Ok(())
    }

    /// The ids of each text, special tokens added and truncated, unpadded.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode(*t, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| anyhow!("tokenizing {t:?}: {e}"))
            })
            .collect()
    }

    /// `texts` as one batch padded to its longest: ids and mask `(rows, len)`, u32.
    pub fn batch(&self, texts: &[&str], device: &Device) -> Result<Texts> {
        let encoded = self.encode(texts)?;
        let len = encoded.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for row in &encoded {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.pad_id, len - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, len - row.len()));
        }
        Ok(Texts {
            input_ids: Tensor::from_vec(ids, (texts.len(), len), device)?,
            attention_mask: Tensor::from_vec(mask, (texts.len(), len), device)?,
        })
    }

    /// A [`ContrastiveBatch`]: query `i`'s positive is `positives[i]`; `hard_negatives`
    /// (any number, possibly none) are extra candidates for every query. Each group is
    /// padded on its own, as sentence-transformers tokenizes each column separately.
    pub fn contrastive_batch(
        &self,
        queries: &[&str],
        positives: &[&str],
        hard_negatives: &[&str],
        device: &Device,
    ) -> Result<ContrastiveBatch> {
        if queries.len() != positives.len() || queries.is_empty() {
            bail!(
                "{} queries and {} positives (need the same, nonzero, count)",
                queries.len(),
                positives.len()
            );
        }
        Ok(ContrastiveBatch {
            queries: self.batch(queries, device)?,
            docs: self.batch(positives, device)?,
            hard_negatives: if hard_negatives.is_empty() {
                None
            } else {
                Some(self.batch(hard_negatives, device)?)
            },
        })
    }
}
