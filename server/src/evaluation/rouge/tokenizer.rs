//! rouge-score 0.1.2's default tokenizer: Python's `str.lower()`, every run of characters
//! outside `[a-z0-9]` becomes a separator, empty tokens are dropped. Letters outside ASCII
//! vanish, except the few whose lowercase is ASCII (`İ` → `i`, the Kelvin sign → `k`). With
//! stemming, tokens longer than 3 characters are replaced by their Porter stem.

use super::porter;
use super::Stemming;

/// The tokens rouge-score's `DefaultTokenizer(use_stemmer)` makes of `text`.
pub fn tokenize(text: &str, stemming: Stemming) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .map(|token| match stemming {
            Stemming::Porter if token.len() > 3 => porter::stem(token),
            _ => token.to_string(),
        })
        .filter(|token| !token.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::reference_fixture;

    #[test]
    fn lowercases_and_splits_on_anything_but_ascii_letters_and_digits() {
        assert_eq!(
            tokenize("The Café's 1,000-year\tOLD\nstory!", Stemming::Off),
            ["the", "caf", "s", "1", "000", "year", "old", "story"]
        );
        assert_eq!(
            tokenize("\u{212a}elvin İz", Stemming::Off),
            ["kelvin", "i", "z"]
        );
        assert!(tokenize("日本語 — ...", Stemming::Off).is_empty());
    }

    #[test]
    fn lowercase_keeps_the_ascii_python_keeps_for_every_code_point() {
        let python: std::collections::HashMap<u32, String> = reference_fixture::fixture()
            ["lowercase_ascii"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                let code = pair[0].as_u64().unwrap() as u32;
                (code, pair[1].as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(python.len(), 64);
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let kept: String = tokenize(&c.to_string(), Stemming::Off).concat();
            let expected = python.get(&u32::from(c)).map_or("", String::as_str);
            assert_eq!(kept, expected, "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn trap_texts_tokenize_as_rouge_score() {
        reference_fixture::assert_tokenizes_as_fixture("tokenize_rouge", |text| {
            tokenize(text, Stemming::Off)
        });
        reference_fixture::assert_tokenizes_as_fixture("tokenize_rouge_stemmed", |text| {
            tokenize(text, Stemming::Porter)
        });
    }
}
