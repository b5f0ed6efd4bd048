//! The plugin in-process against sentence-transformers' fixture: token ids, truncation
//! counts, embeddings, and clear errors for bad model directories.

use marquee_bert_text::BertText;
use marquee_plugin_api::{Plugin, Status};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("MARQUEE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model: run scripts/fetch-model.sh",
        dir.display()
    );
    dir
}

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn token_ids_and_lengths_match_the_hugging_face_tokenizer() {
    let model = BertText::create(&minilm_dir(), "").unwrap();
    assert_eq!(model.info().max_input_tokens, 256);
    for item in fixture()["items"].as_array().unwrap() {
        let text = item["text"].as_str().unwrap();
        let tokens = model.tokenize(text, 256).unwrap();
        let want: Vec<u32> = item["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokens.ids, want, "{text:?}");
        assert_eq!(
            tokens.untruncated_len as u64,
            item["tokens_untruncated"].as_u64().unwrap(),
            "{text:?}"
        );
    }
}

#[test]
fn embeddings_match_in_process() {
    let model = BertText::create(&minilm_dir(), "{\"threads\": 2}").unwrap();
    let items = fixture()["items"].as_array().unwrap().clone();
    let mut ids = Vec::new();
    let mut offsets = vec![0usize];
    for item in &items {
        ids.extend(
            model
                .tokenize(item["text"].as_str().unwrap(), 256)
                .unwrap()
                .ids,
        );
        offsets.push(ids.len());
    }
    let got = model.embed_batch(&ids, &offsets).unwrap();
    for (i, item) in items.iter().enumerate() {
        for (j, want) in item["embedding"].as_array().unwrap().iter().enumerate() {
            let diff = (got[i * 384 + j] as f64 - want.as_f64().unwrap()).abs();
            assert!(diff <= 1e-4, "text {i} component {j}: off by {diff}");
        }
    }
}

#[test]
fn max_seq_length_option_truncates_and_is_bounded() {
    let model = BertText::create(&minilm_dir(), "{\"max_seq_length\": 16}").unwrap();
    assert_eq!(model.info().max_input_tokens, 16);
    let tokens = model.tokenize(&"word ".repeat(100), 16).unwrap();
    assert_eq!((tokens.ids.len(), tokens.untruncated_len), (16, 102));
    assert_eq!(tokens.ids[0], 101, "[CLS] kept");
    assert_eq!(tokens.ids[15], 102, "[SEP] kept");
    for bad in [
        "{\"max_seq_length\": 513}",
        "{\"max_seq_length\": 0}",
        "{\"unknown\": 1}",
        "[1]",
        "{\"device\": \"cuda:0\"}",
    ] {
        let err = BertText::create(&minilm_dir(), bad)
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(
            err.status,
            Status::InvalidArgument,
            "{bad}: {}",
            err.message
        );
    }
}

#[test]
fn broken_model_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!BertText::accepts(dir.path()));
    let err = BertText::create(dir.path(), "").err().unwrap();
    assert_eq!(err.status, Status::NotFound);
    assert!(err.message.contains("config.json"), "{}", err.message);

    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(minilm_dir().join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    assert!(BertText::accepts(dir.path()));
    let err = BertText::create(dir.path(), "").err().unwrap();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(err.message.contains("model.safetensors"), "{}", err.message);
}

/// Copies `from` into `to` recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Sentence-transformers 6.2 pipelines on MiniLM's transformer: mean pooling + Dense to
/// 512 + Normalize (the fine-tuned retrieval layout), CLS + Dense(Tanh) to 128, and max
/// pooling (fixtures by tests/fixtures/pipelines/make_pipeline_fixtures.py).
#[test]
fn sentence_transformers_pipelines_match() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelines");
    for (name, dim) in [
        ("dense512", 512),
        ("cls_dense_tanh", 128),
        ("max_pool", 384),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::os::unix::fs::symlink(minilm_dir().join(file), dir.path().join(file)).unwrap();
        }
        copy_tree(&fixtures.join(name), dir.path());
        let reference: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("reference.json")).unwrap(),
        )
        .unwrap();
        let options = format!("{{\"max_seq_length\": {}}}", reference["max_seq_length"]);
        let model =
            BertText::create(dir.path(), &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.info().output_dim, dim, "{name}");
        let mut ids = Vec::new();
        let mut offsets = vec![0usize];
        for text in reference["texts"].as_array().unwrap() {
            ids.extend(model.tokenize(text.as_str().unwrap(), 256).unwrap().ids);
            offsets.push(ids.len());
        }
        let got = model.embed_batch(&ids, &offsets).unwrap();
        for (i, want) in reference["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            for (j, w) in want.as_array().unwrap().iter().enumerate() {
                let diff = (got[i * dim as usize + j] as f64 - w.as_f64().unwrap()).abs();
                assert!(diff <= 1e-4, "{name}: text {i} component {j} off by {diff}");
            }
        }
    }
}
