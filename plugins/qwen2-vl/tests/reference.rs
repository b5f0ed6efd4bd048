//! Parity with transformers 4.57.6 on the tiny random-weight Qwen2.5-VL fixtures made by
//! `tests/fixtures/make_fixtures.py`: tokenizer, chat template, preprocessing, vision
//! tower, M-RoPE positions, prefill logits (within 1e-4) and greedy tokens (identical)
//! for one sequence and for a batch of prompts of different lengths, with and without
//! images and LoRA adapters.

use marquee_qwen2_vl::chat_template::ChatTemplate;
use marquee_qwen2_vl::generate::{GenerationRequest, Generator};
use marquee_qwen2_vl::lora::LoraAdapter;
use marquee_qwen2_vl::model::Qwen2VlModel;
use marquee_qwen2_vl::preprocess::{smart_resize, ImagePatches};
use marquee_qwen2_vl::sampling::SamplingParams;
use marquee_qwen2_vl::tokenizer::{IncrementalDecoder, QwenTokenizer};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Expected {
    bytes: Vec<u8>,
    meta: Value,
}

impl Expected {
    fn load() -> Self {
        let dir = fixtures();
        Self {
            bytes: std::fs::read(dir.join("expected.safetensors")).unwrap(),
            meta: serde_json::from_str(
                &std::fs::read_to_string(dir.join("expected.json")).unwrap(),
            )
            .unwrap(),
        }
    }

    fn tensor(&self, name: &str) -> (Vec<usize>, Dtype, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        (t.shape().to_vec(), t.dtype(), t.data().to_vec())
    }

    /// Tensor `name`, checked to be of `dtype`, as values of `N` little-endian bytes.
    fn values<T, const N: usize>(
        &self,
        name: &str,
        dtype: Dtype,
        parse: fn([u8; N]) -> T,
    ) -> (Vec<usize>, Vec<T>) {
        let (shape, found, data) = self.tensor(name);
        assert_eq!(found, dtype, "{name}");
        let values = data.chunks_exact(N).map(|b| parse(b.try_into().unwrap()));
        (shape, values.collect())
    }

    fn floats(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        self.values(name, Dtype::F32, f32::from_le_bytes)
    }

    fn ints(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        self.values(name, Dtype::I64, i64::from_le_bytes)
    }

    /// The two fixture images, preprocessed by `model`.
    fn images(&self, model: &Qwen2VlModel) -> Vec<ImagePatches> {
        (0..2)
            .map(|i| {
                let (shape, dtype, rgb) = self.tensor(&format!("image{i}.rgb"));
                assert_eq!(dtype, Dtype::U8);
                model.preprocess(&rgb, shape[1], shape[0]).unwrap()
            })
            .collect()
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Largest absolute difference, after checking the lengths agree.
fn max_diff(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Asserts `ours` is within [`TOLERANCE`] of `theirs`, printing the difference.
fn assert_close(what: &str, ours: &[f32], theirs: &[f32]) {
    let diff = max_diff(ours, theirs);
    eprintln!("{what}: max |difference| {diff:.3e}");
    assert!(diff <= TOLERANCE, "{what} differs by {diff}");
}

fn load(name: &str) -> Qwen2VlModel {
    Qwen2VlModel::load(&fixtures().join(name)).unwrap()
}

#[test]
fn tokenizer_matches_transformers_and_streams_whole_characters() {
    let expected = Expected::load();
    let tok = QwenTokenizer::load(&fixtures().join("tiny-flat")).unwrap();
    for case in expected.meta["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(
            tok.decode(&want, false).unwrap(),
            case["decoded"].as_str().unwrap()
        );
        assert_eq!(
            tok.decode(&want, true).unwrap(),
            case["decoded_skip_special"].as_str().unwrap()
        );
        let mut stream = IncrementalDecoder::new(false);
        let mut pieces = String::new();
        for &id in &want {
            let piece = stream.push(&tok, id).unwrap();
            assert!(
                !piece.contains('\u{FFFD}'),
                "{text:?}: a piece split a character"
            );
            pieces.push_str(&piece);
        }
        assert_eq!(pieces, case["decoded"].as_str().unwrap());
    }
    assert_eq!(
        tok.token_id("<|image_pad|>"),
        Some(
            expected.meta["special_ids"]["image_token_id"]
                .as_u64()
                .unwrap() as u32
        )
    );
}

#[test]
fn chat_template_renders_as_transformers_from_both_file_kinds() {
    let expected = Expected::load();
    for dir in ["tiny-flat", "tiny-nested"] {
        let template = ChatTemplate::load(&fixtures().join(dir)).unwrap();
        for case in expected.meta["chat"].as_array().unwrap() {
            let rendered = template.render(&case["messages"], true).unwrap();
            assert_eq!(rendered, case["rendered"].as_str().unwrap(), "{dir}");
        }
    }
}

#[test]
fn rendered_prompt_tokenizes_and_expands_to_the_processor_ids() {
    let expected = Expected::load();
    let dir = fixtures().join("tiny-flat");
    let model = load("tiny-flat");
    let images = expected.images(&model);
    let template = ChatTemplate::load(&dir).unwrap();
    let tokenizer = QwenTokenizer::load(&dir).unwrap();
    let text = template
        .render(&expected.meta["chat"][0]["messages"], true)
        .unwrap();
    let ids_with_pads = tokenizer.encode(&text).unwrap();
    let prompt = model.expand_image_pads(&ids_with_pads, &images).unwrap();
    assert_eq!(prompt, ids(&expected.meta["flat"]["prompt_ids"]));
    assert!(model
        .expand_image_pads(&ids_with_pads, &images[..1])
        .is_err());
}

#[test]
fn smart_resize_matches_transformers() {
    let expected = Expected::load();
    for case in expected.meta["smart_resize"].as_array().unwrap() {
        let u = |k: &str| case[k].as_u64().unwrap();
        let got = smart_resize(
            u("height") as usize,
            u("width") as usize,
            28,
            u("min_pixels"),
            u("max_pixels"),
        )
        .unwrap();
        let want = ids(&case["resized"]);
        assert_eq!([got.0 as u32, got.1 as u32], [want[0], want[1]], "{case}");
    }
}

#[test]
fn preprocessing_and_vision_tower_match_transformers() {
    let expected = Expected::load();
    for name in ["flat", "nested"] {
        let model = load(&format!("tiny-{name}"));
        let images = expected.images(&model);
        let (_, grids) = expected.ints("image_grid_thw");
        let ours_grids: Vec<i64> = images
            .iter()
            .flat_map(|i| i.grid_thw.map(|g| g as i64))
            .collect();
        assert_eq!(ours_grids, grids);
        let (_, pixels) = expected.floats("pixel_values");
        let ours: Vec<f32> = images
            .iter()
            .flat_map(|i| i.pixels.iter().copied())
            .collect();
        assert_close("pixel_values", &ours, &pixels);
        let refs: Vec<&ImagePatches> = images.iter().collect();
        let out = model.vision.forward(&refs, &Default::default()).unwrap();
        let (shape, want) = expected.floats(&format!("{name}.vision_out"));
        assert_eq!((out.rows, out.cols), (shape[0], shape[1]));
        assert_close(&format!("{name}: vision output"), &out.data, &want);
    }
}

#[test]
fn positions_and_prefill_logits_match_transformers() {
    let expected = Expected::load();
    for name in ["flat", "nested"] {
        let model = load(&format!("tiny-{name}"));
        let images = expected.images(&model);
        let meta = &expected.meta[name];
        let prompt = ids(&meta["prompt_ids"]);
        let (positions, delta) = model.positions(&prompt, &images).unwrap();
        let (_, want) = expected.ints(&format!("{name}.position_ids"));
        let ours: Vec<i64> = (0..3)
            .flat_map(|axis| positions.iter().map(move |p| p[axis]))
            .collect();
        assert_eq!(ours, want, "{name}: position ids");
        assert_eq!(delta, meta["rope_delta"].as_i64().unwrap());
        let logits = model.prompt_logits(&prompt, &images, None).unwrap();
        let (shape, want) = expected.floats(&format!("{name}.prefill_logits"));
        let tail = &logits.data[(logits.rows - shape[0]) * logits.cols..];
        assert_close(&format!("{name}: prefill logits"), tail, &want);
    }
}

/// The images of a fixture prompt.
fn prompt_images(run: &Value, images: &[ImagePatches]) -> Vec<ImagePatches> {
    run["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| images[i.as_u64().unwrap() as usize].clone())
        .collect()
}

fn greedy_request(
    run: &Value,
    images: &[ImagePatches],
    adapter: Option<Arc<LoraAdapter>>,
) -> GenerationRequest {
    GenerationRequest {
        prompt_ids: ids(&run["prompt_ids"]),
        images: prompt_images(run, images),
        adapter,
        max_new_tokens: 32,
        sampling: SamplingParams::default(),
        stop_tokens: Vec::new(),
        min_new_tokens: 0,
        top_logprobs: 0,
    }
}

/// Runs `requests` together, one step for all per token, in a cache of small blocks.
fn generate_batch(model: &Qwen2VlModel, requests: Vec<GenerationRequest>) -> Vec<Vec<u32>> {
    generate_chunked(model, requests, usize::MAX)
}

/// Runs `requests` together with at most `budget` new tokens per step, so prompts are
/// processed a chunk at a time beside the others' decoding.
fn generate_chunked(
    model: &Qwen2VlModel,
    requests: Vec<GenerationRequest>,
    budget: usize,
) -> Vec<Vec<u32>> {
    let mut generator = Generator::new(model, 4, 256);
    let seqs: Vec<_> = requests
        .into_iter()
        .map(|r| generator.add(r).unwrap())
        .collect();
    while generator.has_work() {
        let live: Vec<_> = seqs
            .iter()
            .copied()
            .filter(|&s| generator.is_live(s))
            .collect();
        generator.step_sequences(&live, budget).unwrap();
    }
    let out = seqs
        .iter()
        .map(|&s| generator.generated(s).unwrap().to_vec())
        .collect();
    for s in seqs {
        generator.remove(s);
    }
    assert_eq!(
        generator.cache().free_blocks(),
        256,
        "every block went back"
    );
    out
}

#[test]
fn greedy_tokens_match_transformers_alone_and_batched() {
    let expected = Expected::load();
    for name in ["flat", "nested"] {
        let model = load(&format!("tiny-{name}"));
        let images = expected.images(&model);
        let runs = expected.meta[name]["generations"].as_array().unwrap();
        // One sequence (the two-image prompt).
        let alone = generate_batch(&model, vec![greedy_request(&runs[0], &images, None)]);
        assert_eq!(alone[0], ids(&runs[0]["greedy"]), "{name}: one sequence");
        // All prompts together: different lengths, with and without images.
        let batch = generate_batch(
            &model,
            runs.iter()
                .map(|r| greedy_request(r, &images, None))
                .collect(),
        );
        for (i, (ours, run)) in batch.iter().zip(runs).enumerate() {
            assert_eq!(
                ours,
                &ids(&run["greedy"]),
                "{name}: prompt {i} in the batch"
            );
        }
        // The same with prompts cut into chunks of at most 7 tokens per step (images
        // span chunks), decoding sequences served first.
        let chunked = generate_chunked(
            &model,
            runs.iter()
                .map(|r| greedy_request(r, &images, None))
                .collect(),
            7,
        );
        assert_eq!(chunked, batch, "{name}: chunked prefill");
    }
}

#[test]
fn lora_adapters_match_peft_per_request_in_one_batch() {
    let expected = Expected::load();
    let model = load("tiny-flat");
    let images = expected.images(&model);
    let adapter_a = Arc::new(model.load_adapter(&fixtures().join("lora-a")).unwrap());
    let adapter_b = Arc::new(model.load_adapter(&fixtures().join("lora-b")).unwrap());
    assert_eq!(adapter_b.adapted_layers, 4);
    // Prefill logits with adapter a (which also adapts the vision MLPs).
    let prompt = ids(&expected.meta["flat"]["prompt_ids"]);
    let logits = model
        .prompt_logits(&prompt, &images, Some(&adapter_a))
        .unwrap();
    let (shape, want) = expected.floats("lora_a.prefill_logits");
    assert_close(
        "LoRA prefill logits",
        &logits.data[(logits.rows - shape[0]) * logits.cols..],
        &want,
    );
    // A batch mixing adapter a, none and b (rsLoRA).
    let runs = expected.meta["lora"]["generations"].as_array().unwrap();
    let requests = runs
        .iter()
        .map(|run| {
            let adapter = match run["adapter"].as_str() {
                Some("lora-a") => Some(adapter_a.clone()),
                Some("lora-b") => Some(adapter_b.clone()),
                _ => None,
            };
            greedy_request(run, &images, adapter)
        })
        .collect();
    let batch = generate_batch(&model, requests);
    for (i, (ours, run)) in batch.iter().zip(runs).enumerate() {
        assert_eq!(
            ours,
            &ids(&run["greedy"]),
            "prompt {i} with adapter {}",
            run["adapter"]
        );
    }
}
