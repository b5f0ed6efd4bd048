//! Tokenization with the model's own `tokenizer.json`, truncating exactly as
//! Hugging Face does for single sequences: content tokens are cut, special tokens kept.
//!
//! Text on a standard BERT tokenizer (BertNormalizer, BertPreTokenizer, WordPiece,
//! `[CLS] … [SEP]`) takes a fast path when all its characters are ASCII or in the
//! Latin, punctuation and symbol blocks of [`FAST_RANGES`] (accented letters, curly
//! quotes, dashes, ellipses, non-breaking spaces): the normalisation and splitting that
//! the `tokenizers` crate does through its alignment-tracking strings (most of its
//! time) are done character by character (non-ASCII ones through a table the crate's
//! own normalizer and pre-tokenizer fill at load), and WordPiece runs on each word over
//! a compact copy of the vocabulary ([`crate::wordpiece`]). The fast path is enabled
//! only after it reproduces the full pipeline on probe texts at load time, and the
//! tests compare the two on many texts and on the whole movie corpus.

use crate::wordpiece::Vocab;
use anyhow::{anyhow, Result};
use std::path::Path;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{
    NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    Tokenizer, TruncationDirection,
};

/// A Hugging Face tokenizer with padding and baked-in truncation switched off.
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    special_tokens: usize,
    /// The fast path's tables, when it applies to this tokenizer.
    fast: Option<FastPath>,
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
    "Amélie’s café — «naïve» façade… 50\u{a0}€, soft\u{ad}hyphen, ½ İstanbul ÆSIR ß",
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
        loaded.fast = loaded.fast_path();
        if let Some(fast) = &loaded.fast {
            let agrees = PROBES.iter().all(|text| {
                let slow = loaded.encode_full(text, usize::MAX).ok();
                let quick = loaded.encode_fast(text, usize::MAX, fast);
                slow.is_some() && slow == quick
            });
            if !agrees {
                loaded.fast = None;
            }
        }
        Ok(loaded)
    }

    /// The fast path's tables when the pipeline is the standard lower-casing BERT one.
    fn fast_path(&self) -> Option<FastPath> {
        let t = &self.tokenizer;
        let standard_normalizer = matches!(
            t.get_normalizer(),
            Some(NormalizerWrapper::BertNormalizer(n)) if n.clean_text && n.lowercase
        );
        let standard_split = matches!(
            t.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::BertPreTokenizer(_))
        );
        let ModelWrapper::WordPiece(wordpiece) = t.get_model() else {
            return None;
        };
        if !(standard_normalizer && standard_split && self.special_tokens == 2) {
            return None;
        }
        let empty = t.encode("", true).ok()?;
        let [cls, sep] = empty.get_ids() else {
            return None;
        };
        Some(FastPath {
            cls: *cls,
            sep: *sep,
            vocab: Vocab::new(wordpiece)?,
            classes: FastPath::classes(t),
        })
    }

    /// Whether `text` may take the fast path: no added token (`[MASK]`, ...) that the
    /// full pipeline would match before normalising. (Characters the fast path does
    /// not know send it to the full pipeline too, see [`Self::encode`].)
    fn fast_path_applies(&self, text: &str) -> bool {
        !self.added.iter().any(|token| text.contains(token.as_str()))
    }

    /// The ids of `text` with special tokens, at most `max_tokens` of them, and the
    /// count before truncation.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Result<(Vec<u32>, usize)> {
        if let Some(fast) = self.fast.as_ref().filter(|_| self.fast_path_applies(text)) {
            if let Some(encoded) = self.encode_fast(text, max_tokens, fast) {
                return Ok(encoded);
            }
        }
        self.encode_full(text, max_tokens)
    }

    /// The `tokenizers` pipeline end to end.
    pub fn encode_full(&self, text: &str, max_tokens: usize) -> Result<(Vec<u32>, usize)> {
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

    /// BertNormalizer (clean text, lower-case; for the non-ASCII characters of
    /// [`FAST_RANGES`], what the crate's normalizer makes of each), then
    /// BertPreTokenizer (split on whitespace, isolate punctuation), then WordPiece on
    /// each word. `None` when a character is outside the fast path's table.
    fn encode_fast(
        &self,
        text: &str,
        max_tokens: usize,
        fast: &FastPath,
    ) -> Option<(Vec<u32>, usize)> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        ids.push(fast.cls);
        let mut word = String::with_capacity(32);
        let flush = |word: &mut String, ids: &mut Vec<u32>| {
            if !word.is_empty() {
                fast.vocab.tokenize(word, ids);
                word.clear();
            }
        };
        let mut piece = [0u8; 4];
        for c in text.chars() {
            if c.is_ascii() {
                let byte = c as u8;
                match byte {
                    b'\t' | b'\n' | b'\r' | b' ' => flush(&mut word, &mut ids),
                    // Control characters (NUL and DEL included) are removed.
                    0..=0x1f | 0x7f => {}
                    _ if byte.is_ascii_punctuation() => {
                        flush(&mut word, &mut ids);
                        fast.vocab.tokenize(c.encode_utf8(&mut piece), &mut ids);
                    }
                    _ => word.push(byte.to_ascii_lowercase() as char),
                }
                continue;
            }
            match fast.class_of(c)? {
                CharClass::Removed => {}
                CharClass::Space => flush(&mut word, &mut ids),
                CharClass::Word(normalized) => word.push_str(normalized),
                CharClass::Isolated(normalized) => {
                    flush(&mut word, &mut ids);
                    fast.vocab.tokenize(normalized, &mut ids);
                }
            }
        }
        flush(&mut word, &mut ids);
        let untruncated = ids.len() + 1;
        ids.truncate(max_tokens.saturating_sub(1).max(1));
        ids.push(fast.sep);
        Some((ids, untruncated))
    }
}

/// The non-ASCII characters the fast path knows: Latin-1 Supplement, Latin Extended-A
/// and -B, IPA extensions and spacing modifier letters; general punctuation,
/// super- and subscripts and currency signs; letter-like symbols and number forms.
/// None of them is a combining character (canonical combining class 0, and their
/// canonical decompositions start with one), so NFD and accent stripping work on each
/// alone and the crate's normalizer, applied to each alone, gives what it gives in any
/// text. A text with any other non-ASCII character takes the full pipeline.
const FAST_RANGES: &[(char, char)] = &[
    ('\u{80}', '\u{2ff}'),
    ('\u{2000}', '\u{20cf}'),
    ('\u{2100}', '\u{218f}'),
];

/// What the normalizer and pre-tokenizer make of one character.
#[derive(Clone, Debug, PartialEq)]
enum CharClass {
    /// Dropped (control and format characters).
    Removed,
    /// A word boundary (whitespace).
    Space,
    /// These characters, part of the word around them.
    Word(String),
    /// A word of its own (punctuation).
    Isolated(String),
}

/// The fast path's tables.
struct FastPath {
    cls: u32,
    sep: u32,
    vocab: Vocab,
    /// One entry per character of [`FAST_RANGES`], in order; `None`: not known.
    classes: Vec<Option<CharClass>>,
}

impl FastPath {
    fn class_of(&self, c: char) -> Option<&CharClass> {
        let mut base = 0;
        for &(lo, hi) in FAST_RANGES {
            if (lo..=hi).contains(&c) {
                return self.classes[base + (c as usize - lo as usize)].as_ref();
            }
            base += hi as usize - lo as usize + 1;
        }
        None
    }

    /// Each character of [`FAST_RANGES`] through the crate's normalizer, then between
    /// two letters through its pre-tokenizer, to see which class it falls in.
    fn classes(tokenizer: &Tokenizer) -> Vec<Option<CharClass>> {
        let (Some(normalizer), Some(pre_tokenizer)) =
            (tokenizer.get_normalizer(), tokenizer.get_pre_tokenizer())
        else {
            return Vec::new();
        };
        let classify = |c: char| -> Option<CharClass> {
            let mut normalized = NormalizedString::from(c.to_string());
            normalizer.normalize(&mut normalized).ok()?;
            let out = normalized.get().to_string();
            let mut around = PreTokenizedString::from(format!("a{out}a"));
            pre_tokenizer.pre_tokenize(&mut around).ok()?;
            let splits: Vec<&str> = around
                .get_splits(OffsetReferential::Normalized, OffsetType::Byte)
                .into_iter()
                .map(|(s, _, _)| s)
                .collect();
            let joined = format!("a{out}a");
            match splits.as_slice() {
                [one] if *one == "aa" && out.is_empty() => Some(CharClass::Removed),
                [one] if *one == joined => Some(CharClass::Word(out)),
                ["a", "a"] if !out.is_empty() && out.chars().all(char::is_whitespace) => {
                    Some(CharClass::Space)
                }
                ["a", middle, "a"] if *middle == out => Some(CharClass::Isolated(out)),
                _ => None,
            }
        };
        FAST_RANGES
            .iter()
            .flat_map(|&(lo, hi)| lo..=hi)
            .map(classify)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    fn minilm() -> TextTokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models/all-MiniLM-L6-v2");
        TextTokenizer::load(&dir.join("tokenizer.json")).expect("run scripts/fetch-model.sh")
    }

    /// Whether `text` takes the fast path.
    fn fast_taken(tokenizer: &TextTokenizer, text: &str) -> bool {
        let fast = tokenizer.fast.as_ref().expect("the fast path is on");
        tokenizer.fast_path_applies(text) && tokenizer.encode_fast(text, 512, fast).is_some()
    }

    /// Checks `encode` against the full pipeline at several limits.
    fn assert_same(tokenizer: &TextTokenizer, text: &str) {
        for max_tokens in [1, 2, 5, 16, 512] {
            let want = tokenizer.encode_full(text, max_tokens).unwrap();
            let got = tokenizer.encode(text, max_tokens).unwrap();
            assert_eq!(got, want, "{text:?} at {max_tokens} tokens");
        }
    }

    /// Random text: words, digits, punctuation, every kind of whitespace and control
    /// character, long words, added-token look-alikes, accented letters, typographic
    /// punctuation and characters outside the fast path's table.
    fn random_text(seed: &mut u64) -> String {
        const PIECES: &[&str] = &[
            "the", "Movie", "HEIST", "re-edit", "don't", "1999", "3.14", "!!", "...", "(", ")",
            "#tag", "@user", "e-mail@x.org", "a_b", "~", "`", "\t", "\n", "\r\n", "  ", "\x00",
            "\x07", "\x0b", "\x0c", "\x1f", "\x7f", "[MASK]", "[cls]", "[", "]",
            "pneumonoultramicroscopicsilicovolcanoconiosis",
            "xqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqzxqz",
            "Amélie", "CAFÉ", "naïve", "’s", "‘", "“quoted”", "–", "—", "…", "\u{a0}", "\u{ad}",
            "\u{200b}", "\u{2028}", "½", "£5", "€", "™", "®", "İstanbul", "Straße", "Æ", "ø",
            "ǅ", "ʼ", "˚", "Ω", "K", "e\u{301}", "東京", "Привет", "😀",
            "éééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
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
    fn the_fast_path_equals_the_full_pipeline_on_random_text() {
        let tokenizer = minilm();
        assert!(
            tokenizer.fast.is_some(),
            "MiniLM's tokenizer takes the fast path"
        );
        let mut seed = 0x2545_F491_4F6C_DD1D;
        let (mut taken, mut non_ascii_taken) = (0, 0);
        for _ in 0..4000 {
            let text = random_text(&mut seed);
            assert_same(&tokenizer, &text);
            if fast_taken(&tokenizer, &text) {
                taken += 1;
                non_ascii_taken += usize::from(!text.is_ascii());
            }
        }
        assert!(taken > 1000, "only {taken} texts took the fast path");
        assert!(
            non_ascii_taken > 300,
            "only {non_ascii_taken} non-ASCII texts took the fast path"
        );
    }

    #[test]
    fn every_known_character_is_handled_as_the_full_pipeline_does() {
        let tokenizer = minilm();
        let fast = tokenizer.fast.as_ref().unwrap();
        let mut known = 0;
        for c in FAST_RANGES.iter().flat_map(|&(lo, hi)| lo..=hi) {
            known += usize::from(fast.class_of(c).is_some());
            for text in [
                format!("{c}"),
                format!("x{c}y"),
                format!("Ab {c}{c}cd, {c}."),
                format!("caf{c}s{c}"),
            ] {
                assert_same(&tokenizer, &text);
            }
        }
        assert!(known > 900, "only {known} characters in the table");
    }

    #[test]
    fn unknown_characters_and_added_tokens_take_the_full_pipeline() {
        let tokenizer = minilm();
        for text in ["東京 story", "e\u{301}", "Привет", "a [MASK] b", "[SEP]"] {
            assert!(!fast_taken(&tokenizer, text), "{text}");
            assert_same(&tokenizer, text);
        }
        for text in ["plain text, with punctuation!", "Amélie’s café — «naïve»…"] {
            assert!(fast_taken(&tokenizer, text), "{text}");
        }
    }

    /// The shared movie corpus (`MARQUEE_SHARED_DATA`, default `../shared/data` beside
    /// the repository), every document as the load tester and ingest build it.
    #[test]
    fn the_fast_path_equals_the_full_pipeline_on_the_movie_corpus() {
        let dir = std::env::var_os("MARQUEE_SHARED_DATA")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
        let Ok(file) = std::fs::File::open(dir.join("movies.jsonl.gz")) else {
            eprintln!("SKIPPED: no shared data (set MARQUEE_SHARED_DATA to the folder holding movies.jsonl.gz)");
            return;
        };
        let tokenizer = minilm();
        let (mut docs, mut taken) = (0, 0);
        for line in BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
            let movie: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            let body = ["overview", "plot"]
                .iter()
                .filter_map(|k| movie[k].as_str())
                .find(|s| !s.is_empty())
                .unwrap_or("");
            let text = format!(
                "{} ({}). {body}",
                movie["title"].as_str().unwrap_or(""),
                movie["year"]
            );
            assert_eq!(
                tokenizer.encode(&text, 256).unwrap(),
                tokenizer.encode_full(&text, 256).unwrap(),
                "{text:?}"
            );
            docs += 1;
            taken += usize::from(fast_taken(&tokenizer, &text));
        }
        assert!(docs > 7000, "{docs} documents");
        assert!(
            taken * 1000 >= docs * 995,
            "{taken} of {docs} documents took the fast path"
        );
    }
}
