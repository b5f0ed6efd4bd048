//! The generator's own rules on the tiny fixture model: seeded sampling, stop tokens,
//! admission against the cache's free blocks, and blocks returned on removal.

use marquee_qwen2_vl::generate::{GenerationRequest, Generator};
use marquee_qwen2_vl::model::Qwen2VlModel;
use marquee_qwen2_vl::sampling::SamplingParams;
use std::path::Path;

fn model() -> Qwen2VlModel {
    Qwen2VlModel::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-flat"))
        .unwrap()
}

fn request(
    sampling: SamplingParams,
    max_new_tokens: usize,
    stop_tokens: Vec<u32>,
) -> GenerationRequest {
    GenerationRequest {
        prompt_ids: vec![5, 17, 42, 99, 7],
        images: Vec::new(),
        adapter: None,
        max_new_tokens,
        sampling,
        stop_tokens,
        min_new_tokens: 0,
        top_logprobs: 0,
    }
}

fn run(model: &Qwen2VlModel, requests: Vec<GenerationRequest>) -> Vec<Vec<u32>> {
    let mut generator = Generator::new(model, 4, 64);
    let seqs: Vec<_> = requests
        .into_iter()
        .map(|r| generator.add(r).unwrap())
        .collect();
    while generator.has_work() {
        generator.step().unwrap();
    }
    seqs.iter()
        .map(|&s| generator.generated(s).unwrap().to_vec())
        .collect()
}

#[test]
fn sampling_is_reproducible_per_seed_and_independent_of_the_batch() {
    let model = model();
    let sampled = |seed| SamplingParams {
        temperature: 1.5,
        top_k: 50,
        top_p: 0.95,
        repetition_penalty: 1.1,
        seed,
    };
    let alone = run(&model, vec![request(sampled(1), 16, vec![])]);
    let together = run(
        &model,
        vec![
            request(sampled(2), 16, vec![]),
            request(sampled(1), 16, vec![]),
        ],
    );
    assert_eq!(
        alone[0], together[1],
        "a request's samples do not depend on its neighbours"
    );
    assert_ne!(together[0], together[1], "different seeds draw differently");
    let greedy = run(&model, vec![request(SamplingParams::default(), 16, vec![])]);
    assert_ne!(alone[0], greedy[0]);
}

#[test]
fn a_stop_token_ends_the_sequence_and_is_kept() {
    let model = model();
    let free = run(&model, vec![request(SamplingParams::default(), 8, vec![])]);
    let stop = free[0][2];
    let first = free[0].iter().position(|&t| t == stop).unwrap();
    let stopped = run(
        &model,
        vec![request(SamplingParams::default(), 8, vec![stop])],
    );
    assert_eq!(stopped[0], free[0][..=first]);
}

#[test]
fn admission_reserves_prompt_and_new_tokens_and_removal_frees_them() {
    let model = model();
    let mut generator = Generator::new(&model, 4, 5);
    // 5 prompt + 12 new - 1 fed back = 16 tokens = 4 blocks.
    let seq = generator
        .add(request(SamplingParams::default(), 12, vec![]))
        .unwrap();
    assert_eq!(generator.cache().free_blocks(), 1);
    let refused = generator.add(request(SamplingParams::default(), 12, vec![]));
    assert!(refused.unwrap_err().to_string().contains("KV cache full"));
    while generator.has_work() {
        generator.step().unwrap();
    }
    assert_eq!(generator.generated(seq).unwrap().len(), 12);
    generator.remove(seq);
    assert_eq!(generator.cache().free_blocks(), 5);
}
