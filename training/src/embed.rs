//! Embedding many texts with the weights being trained (eval mode, no dropout): what
//! validation and hard-negative mining read between epochs.

use crate::model::SentenceEncoder;
use crate::tokenize::BatchTokenizer;
use anyhow::{ensure, Result};
use candle_core::Device;

/// The sentence embeddings of `texts`, in order, as rows of one `texts.len() × dim`
/// vector. Texts are batched longest first, as sentence-transformers' `encode` does, so
/// that each batch pads little.
pub fn embed_texts(
    encoder: &SentenceEncoder,
    tokenizer: &BatchTokenizer,
    texts: &[&str],
    batch_size: usize,
    device: &Device,
) -> Result<(Vec<f32>, usize)> {
    ensure!(batch_size > 0, "batch size must be positive");
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    let mut rows: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    let mut dim = 0;
    for chunk in order.chunks(batch_size) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let tokens = tokenizer.batch(&batch, device)?;
        let out = encoder
            .forward(&tokens.input_ids, &tokens.attention_mask)?
            .detach();
        let values: Vec<Vec<f32>> = out.to_vec2()?;
        for (&i, row) in chunk.iter().zip(values) {
            dim = row.len();
            rows[i] = row;
        }
    }
    Ok((rows.concat(), dim))
}
