//! Tokenization with the model's own `tokenizer.json`, truncating exactly as
//! Hugging Face does for single sequences: content tokens are cut, special tokens kept.
//!
//! ASCII text on a standard BERT tokenizer (BertNormalizer, BertPreTokenizer, WordPiece,
//! `[CLS] … [SEP]`) takes a fast path: the normalisation and splitting that the
//! `tokenizers` crate does through its alignment-tracking strings (most of its time) are
//! done directly on the bytes, and the crate's own WordPiece model then tokenizes each
//! word. The fast path is enabled only after it reproduces the full pipeline on probe
//! texts at load time, and the tests compare the two on many texts.

use anyhow::{anyhow, Result};
use std::path::Path;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Model, Tokenizer, TruncationDirection};

/// A Hugging Face tokenizer with padding and baked-in truncation switched off.
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    special_tokens: usize,
    /// `[CLS]` and `[SEP]` ids when the ASCII fast path applies.
    fast: Option<(u32, u32)>,
    /// The added tokens' texts (`[MASK]`, ...): a text holding one takes the full pipeline.
    added: Vec<String>,
}

/// Texts the fast path must reproduce exactly before it is used.
const PROBES: &[&str] = &[
    "",
    "a",
    "Hello, World! It's 1999: the year-end (re)mix... #1?",
    "  tabs\tand\nnew lines\r\n and \x07 control \x0b chars \x7f ",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
];

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
        let added = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .map(|token| token.content)
            .collect();
        let mut loaded = Self {
            tokenizer,
            special_tokens,
            fast: None,
            added,
        };
        loaded.fast = loaded.fast_path_ids();
        if let Some(ids) = loaded.fast {
            let agrees = PROBES.iter().all(|text| {
                let slow = loaded.encode_full(text, usize::MAX).ok();
                let fast = loaded.encode_ascii(text, usize::MAX, ids);
                slow.is_some() && slow == fast
            });
            if !agrees {
                loaded.fast = None;
            }
        }
        Ok(loaded)
    }

    /// `[CLS]` and `[SEP]` when the pipeline is the standard lower-casing BERT one.
    fn fast_path_ids(&self) -> Option<(u32, u32)> {
        let t = &self.tokenizer;
        let standard_normalizer = matches!(
            t.get_normalizer(),
            Some(NormalizerWrapper::BertNormalizer(n)) if n.clean_text && n.lowercase
        );
        let standard_split = matches!(
            t.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::BertPreTokenizer(_))
        );
        let wordpiece = matches!(t.get_model(), ModelWrapper::WordPiece(_));
        if !(standard_normalizer && standard_split && wordpiece && self.special_tokens == 2) {
            return None;
        }
        let empty = t.encode("", true).ok()?;
        match empty.get_ids() {
            [cls, sep] => Some((*cls, *sep)),
            _ => None,
        }
    }

    /// Whether `text` may take the fast path: ASCII, and no added token (`[MASK]`, ...)
    /// that the full pipeline would match before normalising.
    fn fast_path_applies(&self, text: &str) -> bool {
        text.is_ascii() && !self.added.iter().any(|token| text.contains(token.as_str()))
    }

    /// The ids of `text` with special tokens, at most `max_tokens` of them, and the
    /// count before truncation.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Result<(Vec<u32>, usize)> {
        if let Some(ids) = self.fast.filter(|_| self.fast_path_applies(text)) {
            if let Some(encoded) = self.encode_ascii(text, max_tokens, ids) {
                return Ok(encoded);
            }
        }
        self.encode_full(text, max_tokens)
    }

    /// The `tokenizers` pipeline end to end.
    fn encode_full(&self, text: &str, max_tokens: usize) -> Result<(Vec<u32>, usize)> {
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

    /// BertNormalizer (clean text, lower-case; nothing else applies to ASCII), then
    /// BertPreTokenizer (split on whitespace, isolate punctuation), then the crate's
    /// WordPiece on each word. `None` if the model fails on a word.
    fn encode_ascii(
        &self,
        text: &str,
        max_tokens: usize,
        (cls, sep): (u32, u32),
    ) -> Option<(Vec<u32>, usize)> {
        let model = self.tokenizer.get_model();
        let mut ids = vec![cls];
        let mut word = String::new();
        let flush = |word: &mut String, ids: &mut Vec<u32>| -> Option<()> {
            if !word.is_empty() {
                ids.extend(model.tokenize(word).ok()?.iter().map(|t| t.id));
                word.clear();
            }
            Some(())
        };
        for byte in text.bytes() {
            match byte {
                b'\t' | b'\n' | b'\r' | b' ' => flush(&mut word, &mut ids)?,
                // Control characters (NUL and DEL included) are removed.
                0..=0x1f | 0x7f => {}
                _ if byte.is_ascii_punctuation() => {
                    flush(&mut word, &mut ids)?;
                    ids.extend(
                        model
                            .tokenize(&(byte as char).to_string())
                            .ok()?
                            .iter()
                            .map(|t| t.id),
                    );
                }
                _ => word.push(byte.to_ascii_lowercase() as char),
            }
        }
        flush(&mut word, &mut ids)?;
        let untruncated = ids.len() + 1;
        ids.truncate(max_tokens.saturating_sub(1).max(1));
        ids.push(sep);
        Some((ids, untruncated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> TextTokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models/all-MiniLM-L6-v2");
        TextTokenizer::load(&dir.join("tokenizer.json")).expect("run scripts/fetch-model.sh")
    }

    /// Random ASCII text: words, digits, punctuation, every kind of whitespace and control
    /// character, long words, and added-token look-alikes.
    fn random_text(seed: &mut u64) -> String {
        const PIECES: &[&str] = &[
            "the", "Movie", "HEIST", "re-edit", "don't", "1999", "3.14", "!!", "...", "(", ")",
            "#tag", "@user", "e-mail@x.org", "a_b", "~", "`", "\t", "\n", "\r\n", "  ", "\x00",
            "\x07", "\x0b", "\x0c", "\x1f", "\x7f", "[MASK]", "[cls]", "[", "]",
            "pneumonoultramicroscopicsilicovolcanoconiosis",
            "xqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqz",
        ];
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let words = next() % 40;
        (0..words)
            .map(|_| {
                let piece = PIECES[(next() % PIECES.len() as u64) as usize];
                if next() % 3 == 0 {
                    format!("{piece} ")
                } else {
                    piece.to_string()
                }
            })
            .collect()
    }

    #[test]
    fn the_ascii_fast_path_equals_the_full_pipeline() {
        let tokenizer = minilm();
        assert!(
            tokenizer.fast.is_some(),
            "MiniLM's tokenizer takes the fast path"
        );
        let mut seed = 0x2545_F491_4F6C_DD1D;
        let mut fast_taken = 0;
        for _ in 0..3000 {
            let text = random_text(&mut seed);
            for max_tokens in [1, 2, 5, 16, 512] {
                let want = tokenizer.encode_full(&text, max_tokens).unwrap();
                let got = tokenizer.encode(&text, max_tokens).unwrap();
                assert_eq!(got, want, "{text:?} at {max_tokens} tokens");
            }
            fast_taken += usize::from(tokenizer.fast_path_applies(&text));
        }
        assert!(
            fast_taken > 1000,
            "only {fast_taken} texts took the fast path"
        );
    }

    #[test]
    fn non_ascii_and_added_tokens_take_the_full_pipeline() {
        let tokenizer = minilm();
        for text in ["Amélie", "東京 story", "a [MASK] b", "[SEP]"] {
            assert!(!tokenizer.fast_path_applies(text), "{text}");
        }
        assert!(tokenizer.fast_path_applies("plain text, with punctuation!"));
    }
}
