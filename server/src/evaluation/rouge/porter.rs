//! NLTK's Porter stemmer in its default mode (`PorterStemmer.NLTK_EXTENSIONS`, NLTK 3.10.4),
//! the stemmer rouge-score 0.1.2 uses with `use_stemmer=True`. It is Porter (1980) with
//! Martin Porter's later changes and NLTK's own (irregular forms, `-ies`/`-ied` on four
//! letters, `y → i` only after a consonant, `-alli`, `-fulli`, `-logi`, two-letter `*o`).
//!
//! Words here are rouge-score tokens: lowercase ASCII letters and digits (digits are
//! consonants), so byte positions are character positions.

/// Words NLTK maps to a fixed stem before the steps.
const IRREGULAR_FORMS: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// The stem of a lowercase ASCII word (`PorterStemmer().stem(word)`).
pub(super) fn stem(word: &str) -> String {
    if let Some((_, stem)) = IRREGULAR_FORMS.iter().find(|(form, _)| *form == word) {
        return stem.to_string();
    }
    if word.len() <= 2 {
        return word.to_string();
    }
    let word = step1a(word);
    let word = step1b(&word);
    let word = step1c(&word);
    let word = step2(&word);
    let word = step3(&word);
    let word = step4(&word);
    let word = step5a(&word);
    step5b(&word)
}

/// Whether each letter is a consonant: not a vowel, and `y` only where it does not follow
/// a consonant.
fn consonants(word: &str) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(word.len());
    for (i, c) in word.bytes().enumerate() {
        let consonant = match c {
            b'a' | b'e' | b'i' | b'o' | b'u' => false,
            b'y' => i == 0 || !flags[i - 1],
            _ => true,
        };
        flags.push(consonant);
    }
    flags
}

fn is_consonant(word: &str, i: usize) -> bool {
    consonants(word)[i]
}

/// Porter's m: the number of vowel-consonant boundaries.
fn measure(stem: &str) -> usize {
    consonants(stem)
        .windows(2)
        .filter(|pair| !pair[0] && pair[1])
        .count()
}

fn contains_vowel(stem: &str) -> bool {
    consonants(stem).iter().any(|&consonant| !consonant)
}

/// Porter's `*d`: ends with a doubled consonant.
fn ends_double_consonant(word: &str) -> bool {
    let bytes = word.as_bytes();
    let n = bytes.len();
    n >= 2 && bytes[n - 1] == bytes[n - 2] && is_consonant(word, n - 1)
}

/// Porter's `*o` (consonant-vowel-consonant, the last not w, x or y), and NLTK's two-letter
/// vowel-consonant.
fn ends_cvc(word: &str) -> bool {
    let n = word.len();
    let flags = consonants(word);
    (n >= 3
        && flags[n - 3]
        && !flags[n - 2]
        && flags[n - 1]
        && !matches!(word.as_bytes()[n - 1], b'w' | b'x' | b'y'))
        || (n == 2 && !flags[0] && flags[1])
}

/// What a rule's suffix is: a fixed text, or Porter's `*d` (any doubled consonant).
#[derive(Clone, Copy)]
enum Suffix {
    Text(&'static str),
    DoubleConsonant,
}

/// A suffix rule: the suffix, its replacement, and the condition on the stem left.
type Rule<'a> = (Suffix, &'a str, &'a dyn Fn(&str) -> bool);

/// Applies the first rule whose suffix the word has; if its condition fails the word stays
/// (NLTK's `_apply_rule_list`).
fn apply_rules(word: &str, rules: &[Rule<'_>]) -> String {
    for &(suffix, replacement, condition) in rules {
        let stem = match suffix {
            Suffix::DoubleConsonant if ends_double_consonant(word) => &word[..word.len() - 2],
            Suffix::Text(text) if word.ends_with(text) => &word[..word.len() - text.len()],
            _ => continue,
        };
        return if condition(stem) {
            format!("{stem}{replacement}")
        } else {
            word.to_string()
        };
    }
    word.to_string()
}

fn always(_: &str) -> bool {
    true
}

fn positive_measure(stem: &str) -> bool {
    measure(stem) > 0
}

fn measure_above_one(stem: &str) -> bool {
    measure(stem) > 1
}

/// Rules that all share one condition.
fn rules<'a>(
    pairs: &[(&'static str, &'a str)],
    condition: &'a dyn Fn(&str) -> bool,
) -> Vec<Rule<'a>> {
    pairs
        .iter()
        .map(|&(suffix, replacement)| (Suffix::Text(suffix), replacement, condition))
        .collect()
}

fn step1a(word: &str) -> String {
    if word.len() == 4 && word.ends_with("ies") {
        return format!("{}ie", &word[..1]);
    }
    apply_rules(
        word,
        &rules(
            &[("sses", "ss"), ("ies", "i"), ("ss", "ss"), ("s", "")],
            &always,
        ),
    )
}

fn step1b(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ied") {
        return format!("{stem}{}", if word.len() == 4 { "ie" } else { "i" });
    }
    if let Some(stem) = word.strip_suffix("eed") {
        return if measure(stem) > 0 {
            format!("{stem}ee")
        } else {
            word.to_string()
        };
    }
    let Some(stem) = ["ed", "ing"]
        .iter()
        .filter_map(|suffix| word.strip_suffix(suffix))
        .find(|stem| contains_vowel(stem))
    else {
        return word.to_string();
    };
    let last = &stem[stem.len() - 1..];
    let undoubles = |_: &str| !matches!(last, "l" | "s" | "z");
    let adds_e = |s: &str| measure(s) == 1 && ends_cvc(s);
    apply_rules(
        stem,
        &[
            (Suffix::Text("at"), "ate", &always),
            (Suffix::Text("bl"), "ble", &always),
            (Suffix::Text("iz"), "ize", &always),
            (Suffix::DoubleConsonant, last, &undoubles),
            (Suffix::Text(""), "e", &adds_e),
        ],
    )
}

fn step1c(word: &str) -> String {
    let after_consonant = |stem: &str| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(word, &[(Suffix::Text("y"), "i", &after_consonant)])
}

fn step2(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("alli") {
        if positive_measure(stem) {
            return step2(&format!("{stem}al"));
        }
    }
    let mut list = rules(
        &[
            ("ational", "ate"),
            ("tional", "tion"),
            ("enci", "ence"),
            ("anci", "ance"),
            ("izer", "ize"),
            ("bli", "ble"),
            ("alli", "al"),
            ("entli", "ent"),
            ("eli", "e"),
            ("ousli", "ous"),
            ("ization", "ize"),
            ("ation", "ate"),
            ("ator", "ate"),
            ("alism", "al"),
            ("iveness", "ive"),
            ("fulness", "ful"),
            ("ousness", "ous"),
            ("aliti", "al"),
            ("iviti", "ive"),
            ("biliti", "ble"),
            ("fulli", "ful"),
        ],
        &positive_measure,
    );
    // NLTK tests the word without its last three letters ("...l"), not the stem.
    let logi = |_: &str| positive_measure(&word[..word.len() - 3]);
    list.push((Suffix::Text("logi"), "log", &logi));
    apply_rules(word, &list)
}

fn step3(word: &str) -> String {
    apply_rules(
        word,
        &rules(
            &[
                ("icate", "ic"),
                ("ative", ""),
                ("alize", "al"),
                ("iciti", "ic"),
                ("ical", "ic"),
                ("ful", ""),
                ("ness", ""),
            ],
            &positive_measure,
        ),
    )
}

fn step4(word: &str) -> String {
    let suffixes = [
        "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent",
    ];
    let mut list: Vec<Rule<'_>> = suffixes
        .iter()
        .map(|&suffix| -> Rule<'_> { (Suffix::Text(suffix), "", &measure_above_one) })
        .collect();
    let ion = |stem: &str| measure(stem) > 1 && matches!(stem.as_bytes().last(), Some(b's' | b't'));
    list.push((Suffix::Text("ion"), "", &ion));
    for suffix in ["ou", "ism", "ate", "iti", "ous", "ive", "ize"] {
        list.push((Suffix::Text(suffix), "", &measure_above_one));
    }
    apply_rules(word, &list)
}

fn step5a(word: &str) -> String {
    if let Some(stem) = word.strip_suffix('e') {
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_string();
        }
    }
    word.to_string()
}

fn step5b(word: &str) -> String {
    let long_enough = |_: &str| measure(&word[..word.len() - 1]) > 1;
    apply_rules(word, &[(Suffix::Text("ll"), "l", &long_enough)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::reference_fixture::fixture;

    #[test]
    fn examples_of_the_porter_paper_and_nltk() {
        for (word, want) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("enjoy", "enjoy"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("controll", "control"),
            ("skies", "sky"),
            ("dying", "die"),
        ] {
            assert_eq!(stem(word), want, "{word}");
        }
    }

    #[test]
    fn stems_as_nltk_does() {
        let pairs = fixture()["stems"].as_array().unwrap();
        assert!(pairs.len() > 2000);
        for pair in pairs {
            let (word, want) = pair.as_str().unwrap().split_once(' ').unwrap();
            assert_eq!(stem(word), want, "{word}");
        }
    }
}
