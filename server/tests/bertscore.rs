//! BERTScore end to end through the engine: the real bert-text plugin serving
//! all-MiniLM-L6-v2, per-token states at layers 3 and 6, scored by
//! `engine::bertscore::bertscore_with_model` and compared with bert-score 0.3.13
//! (`tests/fixtures/generation_metrics/make_bertscore_fixtures.py`) to 1e-5.

mod common;

use marquee_server::config::Settings;
use marquee_server::engine::bertscore::{bertscore_with_model, ModelBertScore};
use marquee_server::engine::error::EngineError;
use marquee_server::engine::registry::Registry;
use marquee_server::evaluation::bertscore::Baseline;
use marquee_server::evaluation::generation_input::GenerationItem;
use serde_json::{json, Value};
use std::path::PathBuf;

const TOLERANCE: f64 = 1e-5;

fn fixture_dir() -> PathBuf {
    common::repo_root().join("server/tests/fixtures/generation_metrics")
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("bertscore_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A registry serving all-MiniLM-L6-v2 on the CPU as `minilm512`, with bert-score's token
/// limit (the tokenizer's `model_max_length`, 512), and as `minilm` with the plugin's
/// default (sentence-transformers' 256).
fn registry() -> Registry {
    let settings = Settings::load(None).unwrap();
    let registry = Registry::new(common::plugin_dir(), String::new());
    for (name, options) in [
        ("minilm512", r#"{"max_seq_length": 512, "device": "cpu"}"#),
        ("minilm", r#"{"device": "cpu"}"#),
    ] {
        registry
            .load_model(
                name,
                "bert-text",
                &common::minilm_dir(),
                options,
                settings.batching.clone(),
                settings.generation.clone(),
            )
            .unwrap();
    }
    registry
}

fn texts(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// A corpus's candidates and references, owned.
fn corpus_texts(corpus: &Value) -> Vec<(String, Vec<String>)> {
    corpus["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["candidate"].as_str().unwrap().to_string(),
                texts(&i["references"]),
            )
        })
        .collect()
}

fn items(owned: &[(String, Vec<String>)]) -> Vec<GenerationItem<'_>> {
    owned
        .iter()
        .map(|(candidate, references)| GenerationItem {
            candidate,
            references,
        })
        .collect()
}

fn assert_matches(got: f64, want: &Value, what: &str) {
    match want {
        Value::String(s) if s == "NaN" => assert!(got.is_nan(), "{what}: {got} vs NaN"),
        want => {
            let want = want.as_f64().unwrap();
            assert!((got - want).abs() <= TOLERANCE, "{what}: {got} vs {want}");
        }
    }
}

fn assert_run(got: &ModelBertScore, run: &Value, name: &str) {
    let what = format!(
        "{name} layer {} idf {} baseline {}",
        run["layer"], run["idf"], run["baseline"]
    );
    let per_item = run["per_item"].as_array().unwrap();
    assert_eq!(got.report.per_item.len(), per_item.len(), "{what}");
    for (i, (scored, want)) in got.report.per_item.iter().zip(per_item).enumerate() {
        let s = scored.scores;
        for (k, value) in [s.precision, s.recall, s.f1].into_iter().enumerate() {
            assert_matches(value, &want[k], &format!("{what}, item {i}, [P,R,F][{k}]"));
        }
    }
    let m = got.report.mean;
    for (k, value) in [m.precision, m.recall, m.f1].into_iter().enumerate() {
        assert_matches(
            value,
            &run["mean"][k],
            &format!("{what}, mean [P,R,F][{k}]"),
        );
    }
}

/// The plugin tokenizes every fixture text as bert-score's `sent_encode` does
/// (BertTokenizer, special tokens, cut at the end to 512).
#[test]
fn tokenization_matches_bert_score() {
    let fixture = fixture();
    assert_eq!(fixture["model_max_length"], 512);
    let registry = registry();
    let model = registry.get("minilm512").unwrap();
    for case in fixture["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let tokens = model.instance.tokenize(text, 512).unwrap();
        assert_eq!(
            json!({"ids": tokens.ids, "untruncated_len": tokens.untruncated_len}),
            json!({"ids": case["ids"], "untruncated_len": case["untruncated_len"]}),
            "{text:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_equal_bert_score() {
    let fixture = fixture();
    let registry = registry();
    let csv = std::fs::read_to_string(fixture_dir().join("bertscore_baseline.csv")).unwrap();
    let baseline = Baseline::parse(&csv).unwrap();
    let mut runs = 0;
    for corpus in fixture["corpora"].as_array().unwrap() {
        let name = corpus["name"].as_str().unwrap();
        let owned = corpus_texts(corpus);
        for run in corpus["runs"].as_array().unwrap() {
            let layer = run["layer"].as_u64().unwrap() as u32;
            let idf = run["idf"].as_bool().unwrap();
            let rescale = run["baseline"].as_bool().unwrap().then_some(&baseline);
            let got =
                bertscore_with_model(&registry, "minilm512", layer, &items(&owned), idf, rescale)
                    .await
                    .unwrap();
            assert_run(&got, run, name);
            assert_eq!(
                (got.layer, got.idf, got.rescaled),
                (layer, idf, rescale.is_some())
            );
            assert_eq!(
                (got.token_limit, got.tokenizer_max_length),
                (512, Some(512))
            );
            // The main corpus has one candidate and one reference over 512 tokens.
            let long = if name == "main" { 2 } else { 0 };
            assert_eq!(got.truncated_texts, long, "{name}");
            runs += 1;
        }
    }
    assert_eq!(runs, 7);

    // Served at its sentence-transformers limit the model cuts at 256, and says so.
    let owned = corpus_texts(&fixture["corpora"][0]);
    let got = bertscore_with_model(&registry, "minilm", 6, &items(&owned), false, None)
        .await
        .unwrap();
    assert_eq!(
        (got.token_limit, got.tokenizer_max_length),
        (256, Some(512))
    );
    assert_eq!(got.truncated_texts, 2);
    assert_eq!(got.model, "minilm");
}

/// The error of a call that must fail, as "kind: message".
async fn refusal(
    registry: &Registry,
    model: &str,
    layer: u32,
    items: &[GenerationItem<'_>],
    baseline: Option<&Baseline>,
) -> String {
    match bertscore_with_model(registry, model, layer, items, false, baseline).await {
        Err(EngineError::Invalid(m)) => format!("invalid: {m}"),
        Err(EngineError::NotFound(m)) => format!("not found: {m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_precisely() {
    let registry = registry();
    let owned = [
        ("a candidate".to_string(), vec!["a reference".to_string()]),
        ("a".to_string(), vec![]),
    ];
    let both = items(&owned);
    let one = both[0];
    assert_eq!(
        refusal(&registry, "minilm", 7, &[one], None).await,
        "invalid: layer 7 is beyond model minilm's depth: it has layers 0 to 6 (0 = the \
         embeddings' output)"
    );
    assert_eq!(
        refusal(&registry, "nope", 3, &[one], None).await,
        "not found: model \"nope\" is not loaded (loaded: minilm, minilm512)"
    );
    assert_eq!(
        refusal(&registry, "minilm", 3, &[], None).await,
        "invalid: no items to score"
    );
    assert_eq!(
        refusal(&registry, "minilm", 3, &both, None).await,
        "invalid: item 1 has no reference"
    );
    let baseline = Baseline::parse("LAYER,P,R,F\n0,0.1,0.1,0.1\n").unwrap();
    assert_eq!(
        refusal(&registry, "minilm", 3, &[one], Some(&baseline)).await,
        "invalid: the baseline file has no row for layer 3 (it has 1 rows, layers 0 to 0)"
    );
}
