//! Tokenization with the model's own `tokenizer.json`, truncating exactly as
//! Hugging Face does for single sequences: content tokens are cut, special tokens kept.

use anyhow::{anyhow, Result};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection};

/// A Hugging Face tokenizer with padding and baked-in truncation switched off.
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    special_tokens: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let mut tokenizer =
            Tokenizer::from_file(path).map_err(|e| anyhow!("loading {}: {e}", path.display()))?;
        // Some tokenizer.json files (MiniLM's among them) hard-code padding and truncation.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow!("disabling truncation: {e}"))?;
        let special_tokens = tokenizer
            .get_post_processor()
            .map(|p| tokenizers::PostProcessor::added_tokens(p, false))
            .unwrap_or(0);
        Ok(Self {
            tokenizer,
            special_tokens,
        })
    }

    /// The ids of `text` with special tokens, at most `max_tokens` of them, and the
    /// count before truncation.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Result<(Vec<u32>, usize)> {
        let mut encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        let untruncated = encoding.len() + self.special_tokens;
        let room = max_tokens.saturating_sub(self.special_tokens);
        if encoding.len() > room {
            encoding.truncate(room, 0, TruncationDirection::Right);
        }
        let encoding = self
            .tokenizer
            .post_process(encoding, None, true)
            .map_err(|e| anyhow!("adding special tokens: {e}"))?;
        Ok((encoding.get_ids().to_vec(), untruncated))
    }
}
