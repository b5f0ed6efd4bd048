//! rouge-score 0.1.2's default tokenizer without stemming: Python's `str.lower()`, every run
//! of characters outside `[a-z0-9]` becomes a separator, empty tokens are dropped. Letters
//! outside ASCII vanish, except the few whose lowercase is ASCII (`İ` → `i`, the Kelvin
//! sign → `k`).

/// The tokens rouge-score's `DefaultTokenizer(use_stemmer=False)` makes of `text`.
pub fn tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|token| !token.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_splits_on_anything_but_ascii_letters_and_digits() {
        assert_eq!(
            tokenize("The Café's 1,000-year\tOLD\nstory!"),
            ["the", "caf", "s", "1", "000", "year", "old", "story"]
        );
        assert_eq!(tokenize("\u{212a}elvin İz"), ["kelvin", "i", "z"]);
        assert!(tokenize("日本語 — ...").is_empty());
    }
}
