//! sacrebleu's `13a` tokenizer (mteval-v13a), step for step as sacrebleu 2.6.0 runs it on
//! a segment, including the right strip that `BLEU._preprocess_segment` does first.
//!
//! Python's `str.rstrip()` and `str.split()` treat the separators \x1c–\x1f as whitespace,
//! which Rust's `char::is_whitespace` does not: [`is_python_whitespace`] adds them.

/// Whether Python's `str.isspace()` holds for `c` (the set `str.split()` splits on).
pub(super) fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// The tokens sacrebleu's default BLEU counts for one segment (no lowercasing).
pub fn tokenize_13a(segment: &str) -> Vec<String> {
    let mut line = segment
        .trim_end_matches(is_python_whitespace)
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let padded: Vec<char> = format!(" {line} ").chars().collect();
    let spaced = separate_symbols(&padded);
    // `([^0-9])([\.,])` → `\1 \2 `: a period or comma after a non-digit.
    let spaced = substitute_pairs(
        &spaced,
        |a, b| !a.is_ascii_digit() && matches!(b, '.' | ','),
        |a, b| [a, ' ', b, ' '],
    );
    // `([\.,])([^0-9])` → ` \1 \2`: a period or comma before a non-digit.
    let spaced = substitute_pairs(
        &spaced,
        |a, b| matches!(a, '.' | ',') && !b.is_ascii_digit(),
        |a, b| [' ', a, ' ', b],
    );
    // `([0-9])(-)` → `\1 \2 `: a dash after a digit.
    let spaced = substitute_pairs(
        &spaced,
        |a, b| a.is_ascii_digit() && b == '-',
        |a, b| [a, ' ', b, ' '],
    );
    spaced
        .split(|&c| is_python_whitespace(c))
        .filter(|token| !token.is_empty())
        .map(|token| token.iter().collect())
        .collect()
}

/// The first regex, `([\{-\~\[-\` -\&\(-\+\:-\@\/])` → ` \1 `: spaces around ASCII
/// symbols other than `'`, `-`, `.` and `,`.
fn separate_symbols(chars: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() * 2);
    for &c in chars {
        if matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/') {
            out.extend([' ', c, ' ']);
        } else {
            out.push(c);
        }
    }
    out
}

/// Python's `re.sub` with a pattern of two single-character classes: the leftmost match
/// is replaced and the scan goes on after it, so matches never overlap.
fn substitute_pairs(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    replacement: impl Fn(char, char) -> [char; 4],
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        match chars.get(i + 1) {
            Some(&next) if matches(chars[i], next) => {
                out.extend(replacement(chars[i], next));
                i += 2;
            }
            _ => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::reference_fixture;

    fn tokens(text: &str) -> Vec<String> {
        tokenize_13a(text)
    }

    #[test]
    fn numbers_keep_their_separators_and_words_lose_them() {
        assert_eq!(
            tokens("It cost $1,000.50, i.e. a lot."),
            ["It", "cost", "$", "1,000.50", ",", "i", ".", "e", ".", "a", "lot", "."]
        );
        assert_eq!(tokens("1990-1995"), ["1990", "-", "1995"]);
        assert_eq!(tokens("well-known"), ["well-known"]);
    }

    #[test]
    fn whitespace_is_pythons_for_every_code_point() {
        let python: std::collections::HashSet<u32> = reference_fixture::fixture()
            ["python_whitespace"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cp| cp.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(python.len(), 29);
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            assert_eq!(
                is_python_whitespace(c),
                python.contains(&u32::from(c)),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn trap_texts_tokenize_as_sacrebleu() {
        reference_fixture::assert_tokenizes_as_fixture("tokenize_13a", tokenize_13a);
    }

    #[test]
    fn markup_and_line_breaks_follow_mteval() {
        assert_eq!(
            tokens("a <skipped> hyph-\nen &quot;x&quot;\nb"),
            ["a", "hyphen", "\"", "x", "\"", "b"]
        );
        assert_eq!(tokens("a\x1cb\x1f"), ["a", "b"]);
        assert!(tokens(" \t\x1e").is_empty());
    }
}
