//! The model directory's `tokenizer.json` (Hugging Face `tokenizers`), with special and
//! added tokens, and detokenization for streaming that never emits half a UTF-8
//! character.

use crate::{Error, Result};
use std::path::Path;

/// The tokenizer of a model directory.
pub struct QwenTokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for QwenTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QwenTokenizer").finish_non_exhaustive()
    }
}

fn tokenizer_error(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl QwenTokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(tokenizer_error)?;
        Ok(Self { inner })
    }

    /// Ids of `text`, special tokens written in it recognised, nothing added around it
    /// (Qwen adds no BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tokenizer_error)?
            .get_ids()
            .to_vec())
    }

    /// The text of `ids`, special tokens kept or skipped.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(tokenizer_error)
    }

    /// The id of a token written out (e.g. `<|im_end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Turns generated ids into text pieces as they arrive: each piece is the text the new
/// ids add, held back while it would end in an incomplete UTF-8 character (decoded as
/// U+FFFD), so the pieces concatenate to the decoding of all ids.
#[derive(Debug, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    /// Start of the ids decoded for context (so merges across the boundary are seen).
    prefix_start: usize,
    /// Ids already turned into emitted text.
    emitted_until: usize,
    skip_special_tokens: bool,
}

impl IncrementalDecoder {
    /// A decoder with no ids yet.
    pub fn new(skip_special_tokens: bool) -> Self {
        Self {
            ids: Vec::new(),
            prefix_start: 0,
            emitted_until: 0,
            skip_special_tokens,
        }
    }

    /// Adds one id; returns the new text it completes (possibly empty), decoding with
    /// `tokenizer` (always the same one).
    pub fn push(&mut self, tokenizer: &QwenTokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let skip = self.skip_special_tokens;
        let prefix = tokenizer.decode(&self.ids[self.prefix_start..self.emitted_until], skip)?;
        let full = tokenizer.decode(&self.ids[self.prefix_start..], skip)?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let piece = full[prefix.len()..].to_string();
            self.prefix_start = self.emitted_until;
            self.emitted_until = self.ids.len();
            Ok(piece)
        } else {
            Ok(String::new())
        }
    }
}
