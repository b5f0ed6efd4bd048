//! Test support: the golden BLEU and ROUGE figures made by sacrebleu 2.6.0 and rouge-score
//! 0.1.2 (`tests/fixtures/generation_metrics/make_fixtures.py`).

use std::sync::OnceLock;

use serde_json::Value;

use super::generation_input::GenerationItem;

/// The whole fixture, parsed once.
pub(super) fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/generation_metrics/generation_metrics_reference.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

/// One scored corpus of the fixture: its items and the expected figures.
pub(super) struct Corpus {
    /// What the corpus tests.
    pub name: String,
    candidates: Vec<String>,
    references: Vec<Vec<String>>,
    /// The fixture's corpus object (`bleu`, `rouge`).
    pub expected: &'static Value,
}

impl Corpus {
    /// The corpus as generation items.
    pub fn items(&self) -> Vec<GenerationItem<'_>> {
        self.candidates
            .iter()
            .zip(&self.references)
            .map(|(candidate, references)| GenerationItem {
                candidate,
                references,
            })
            .collect()
    }
}

/// Every corpus of the fixture.
pub(super) fn corpora() -> Vec<Corpus> {
    let text = |v: &Value| v.as_str().unwrap().to_string();
    fixture()["corpora"]
        .as_array()
        .unwrap()
        .iter()
        .map(|corpus| {
            let items = corpus["items"].as_array().unwrap();
            Corpus {
                name: text(&corpus["name"]),
                candidates: items.iter().map(|i| text(&i["candidate"])).collect(),
                references: items
                    .iter()
                    .map(|i| {
                        i["references"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(text)
                            .collect()
                    })
                    .collect(),
                expected: corpus,
            }
        })
        .collect()
}

/// Asserts that `tokenize` gives the tokens of every case of a tokenizer section of the
/// fixture (`tokenize_13a`, `tokenize_rouge`).
pub(super) fn assert_tokenizes_as_fixture(section: &str, tokenize: impl Fn(&str) -> Vec<String>) {
    let cases = fixture()[section].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<&str> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokenize(text), expected, "{text:?}");
    }
}

/// Asserts `got` is within `relative` of `want` (exactly 0 when `want` is 0).
pub(super) fn assert_close(got: f64, want: &Value, relative: f64, what: &str) {
    let want = want.as_f64().unwrap();
    assert!(
        (got - want).abs() <= relative * want.abs(),
        "{what}: {got} vs {want}"
    );
}
