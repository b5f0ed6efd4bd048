//! The plugin in-process against sentence-transformers' fixture: token ids, truncation
//! counts, embeddings, per-token hidden states (against transformers), and clear errors
//! for bad model directories.

use marquee_bert_text::BertText;
use marquee_plugin_api::abi::*;
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

/// The fixture's texts embedded by a model made with `options`, and the
/// sentence-transformers embeddings, each `texts × 384`.
fn fixture_embeddings(options: &str) -> (Vec<f32>, Vec<f64>) {
    let model = BertText::create(&minilm_dir(), options).unwrap();
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
    let want = items
        .iter()
        .flat_map(|item| item["embedding"].as_array().unwrap().clone())
        .map(|v| v.as_f64().unwrap())
        .collect();
    (model.embed_batch(&ids, &offsets).unwrap(), want)
}

/// The smallest cosine between matching rows of two `rows × 384` matrices.
fn min_cosine(got: &[f32], want: &[f64]) -> f64 {
    got.chunks(384)
        .zip(want.chunks(384))
        .map(|(g, w)| {
            let dot: f64 = g.iter().zip(w).map(|(a, b)| *a as f64 * b).sum();
            let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
            dot / (norm(&mut g.iter().map(|&x| x as f64)) * norm(&mut w.iter().copied()))
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn embeddings_match_in_process() {
    let (got, want) = fixture_embeddings("{\"threads\": 2}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let diff = (*g as f64 - w).abs();
        assert!(
            diff <= 1e-4,
            "text {} component {}: off by {diff}",
            i / 384,
            i % 384
        );
    }
    let cosine = min_cosine(&got, &want);
    eprintln!("f32: smallest cosine to sentence-transformers {cosine:.7}");
    assert!(cosine >= 0.99999, "f32 cosine {cosine}");
}

#[test]
fn bf16_embeddings_stay_close_to_sentence_transformers() {
    let (got, want) = fixture_embeddings("{\"precision\": \"bf16\", \"device\": \"cpu\"}");
    let cosine = min_cosine(&got, &want);
    eprintln!("bf16: smallest cosine to sentence-transformers {cosine:.7}");
    assert!((0.999..0.99999).contains(&cosine), "bf16 cosine {cosine}");
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

/// Little-endian values of a fixture tensor.
fn fixture_values<T>(
    tensors: &safetensors::SafeTensors<'_>,
    name: &str,
    read: fn([u8; 4]) -> T,
) -> Vec<T> {
    tensors
        .tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| read(b.try_into().unwrap()))
        .collect()
}

/// `token_states` through the ABI table against transformers' `BertModel` hidden states
/// at layers 0, 3 and 6 (tests/fixtures/make_token_states_fixture.py).
#[test]
fn token_states_match_transformers_hidden_states() {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/token_states.safetensors"),
    )
    .unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let texts: Vec<String> =
        serde_json::from_str(&metadata.metadata().as_ref().unwrap()["texts"]).unwrap();
    // I64 tensors: the low halves of little-endian pairs hold these small values.
    let ids: Vec<u32> = fixture_values(&tensors, "input_ids", u32::from_le_bytes)
        .into_iter()
        .step_by(2)
        .collect();
    let offsets: Vec<u32> = fixture_values(&tensors, "offsets", u32::from_le_bytes)
        .into_iter()
        .step_by(2)
        .collect();
    let model = BertText::create(&minilm_dir(), "").unwrap();
    for (i, text) in texts.iter().enumerate() {
        let range = offsets[i] as usize..offsets[i + 1] as usize;
        assert_eq!(model.tokenize(text, 256).unwrap().ids, ids[range], "{text}");
    }

    let api = unsafe {
        &*marquee_bert_text::__marquee_plugin_exports::marquee_plugin_entry(
            MQ_ABI_VERSION_MAJOR,
            MQ_ABI_VERSION_MINOR,
        )
    };
    let token_states = api.token_states.expect("bert-text offers token_states");
    let dir = std::ffi::CString::new(minilm_dir().to_str().unwrap()).unwrap();
    let mut instance = std::ptr::null_mut();
    assert_eq!(
        unsafe { (api.create)(dir.as_ptr(), std::ptr::null(), &mut instance) },
        MQ_STATUS_OK
    );
    let mut info = MqModelInfo::default();
    assert_eq!(
        unsafe { (api.model_info)(instance, &mut info) },
        MQ_STATUS_OK
    );
    assert_eq!((info.token_state_dim, info.token_state_layers), (384, 6));
    let run = |layer: u32| {
        let inputs = [(&ids, ids.len()), (&offsets, offsets.len())].map(|(v, n)| MqTensor {
            data: v.as_ptr().cast(),
            shape: [n as u64, 0, 0, 0],
            ndim: 1,
            dtype: MQ_DTYPE_U32,
        });
        let mut values = vec![0f32; ids.len() * 384];
        let mut output = MqTensorMut {
            data: values.as_mut_ptr().cast(),
            shape: [ids.len() as u64, 384, 0, 0],
            ndim: 2,
            dtype: MQ_DTYPE_F32,
        };
        let status = unsafe { token_states(instance, inputs.as_ptr(), 2, layer, &mut output) };
        let message = unsafe { std::ffi::CStr::from_ptr((api.last_error)()) };
        (status, values, message.to_string_lossy().into_owned())
    };
    for layer in [0, 3, 6] {
        let want = fixture_values(&tensors, &format!("layer_{layer}"), f32::from_le_bytes);
        let (status, got, message) = run(layer);
        assert_eq!(status, MQ_STATUS_OK, "{message}");
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        assert!(worst <= 1e-5, "layer {layer}: off by {worst}");
    }
    let (status, _, message) = run(7);
    assert_eq!(status, MQ_STATUS_INVALID_ARGUMENT);
    assert!(message.contains("layer 7 outside 0..=6"), "{message}");
    unsafe { (api.destroy)(instance) };
}
