//! WordPiece on one pre-tokenized word, as the `tokenizers` crate's `WordPiece` model
//! does it (greedy longest match first, `[UNK]` for a word with an unmatched part or
//! over `max_input_chars_per_word` characters), without its per-piece `String`s and
//! with a vocabulary laid out for few cache misses: the request path meets it cold,
//! after a batch's inference has gone through the caches.
//!
//! Each table keeps pieces of up to 15 bytes (most of a BERT vocabulary) packed with
//! their length into one `u128` key of a `hashbrown` map, so a lookup hashes and
//! compares two machine words instead of a string; longer pieces go to a map of their
//! own. Word-initial pieces and continuation pieces (`##` stripped) have tables of
//! their own, so no prefixed string is built.

use hashbrown::HashMap;
use tokenizers::models::wordpiece::WordPiece as CrateWordPiece;
use tokenizers::Model;

/// Longest piece packed inline in a `u128` key (the last byte holds the length).
const INLINE: usize = 15;

/// A piece → id map.
#[derive(Default)]
struct Table {
    short: HashMap<u128, u32>,
    long: HashMap<Box<[u8]>, u32>,
}

/// A piece of at most [`INLINE`] bytes with its length, as one key.
fn packed(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    bytes[..key.len()].copy_from_slice(key);
    bytes[15] = key.len() as u8;
    u128::from_le_bytes(bytes)
}

impl Table {
    fn new<'a>(entries: impl Iterator<Item = (&'a [u8], u32)>) -> Self {
        let mut table = Table::default();
        for (key, id) in entries {
            if key.len() <= INLINE {
                table.short.insert(packed(key), id);
            } else {
                table.long.insert(key.into(), id);
            }
        }
        table
    }

    fn get(&self, key: &[u8]) -> Option<u32> {
        if key.len() <= INLINE {
            self.short.get(&packed(key)).copied()
        } else {
            self.long.get(key).copied()
        }
    }
}

/// A WordPiece vocabulary ready for [`Vocab::tokenize`].
pub struct Vocab {
    initial: Table,
    continuing: Table,
    unk: u32,
    max_chars: usize,
}

impl Vocab {
    /// The crate model's vocabulary and settings; `None` when the model has no unknown
    /// token in its vocabulary.
    pub fn new(model: &CrateWordPiece) -> Option<Self> {
        let vocab = model.get_vocab();
        let unk = *vocab.get(&model.unk_token)?;
        let prefix = model.continuing_subword_prefix.as_str();
        let initial = Table::new(vocab.iter().map(|(k, &id)| (k.as_bytes(), id)));
        let continuing = Table::new(
            vocab
                .iter()
                .filter_map(|(k, &id)| Some((k.strip_prefix(prefix)?.as_bytes(), id))),
        );
        Some(Self {
            initial,
            continuing,
            unk,
            max_chars: model.max_input_chars_per_word,
        })
    }

    /// Appends the ids of `word` (normalized, non-empty) to `ids`.
    pub fn tokenize(&self, word: &str, ids: &mut Vec<u32>) {
        if word.len() > self.max_chars && word.chars().count() > self.max_chars {
            ids.push(self.unk);
            return;
        }
        let before = ids.len();
        let bytes = word.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            let table = if start == 0 {
                &self.initial
            } else {
                &self.continuing
            };
            let mut end = bytes.len();
            let found = loop {
                if let Some(id) = table.get(&bytes[start..end]) {
                    break Some(id);
                }
                // Back off by one character.
                end -= 1;
                while end > start && !word.is_char_boundary(end) {
                    end -= 1;
                }
                if end == start {
                    break None;
                }
            };
            match found {
                Some(id) => ids.push(id),
                None => {
                    ids.truncate(before);
                    ids.push(self.unk);
                    return;
                }
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_find_every_key_and_nothing_else() {
        let keys: Vec<String> = (0..5000)
            .map(|i| format!("k{i}{}", "x".repeat(i % 20)))
            .collect();
        let table = Table::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.as_bytes(), i as u32)),
        );
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(table.get(k.as_bytes()), Some(i as u32), "{k}");
        }
        for missing in [
            "",
            "k",
            "k5000",
            "xk1",
            "k1\0",
            "k1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ] {
            assert_eq!(table.get(missing.as_bytes()), None, "{missing}");
        }
    }
}
