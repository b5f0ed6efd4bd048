//! Generation over many sequences at once. Each [`Generator::step`] runs one forward
//! pass over a ragged batch: every sequence not yet prefilled contributes its whole
//! prompt (images through the vision tower), every other one its last token, each with
//! its own positions, cache blocks and LoRA adapter; then one token is chosen per
//! sequence. Admission reserves the cache blocks of prompt + `max_new_tokens` up front
//! (no preemption), so a step never runs out of blocks.

use crate::kv_cache::{PagedKvCache, SeqId};
use crate::lora::{AdapterRows, LoraAdapter};
use crate::model::Qwen2VlModel;
use crate::preprocess::ImagePatches;
use crate::rope::Position3;
use crate::sampling::{Sampler, SamplingParams};
use crate::text::Segment;
use crate::{Error, Result};
use marquee_kernels::Matrix;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerationRequest {
    /// The prompt, `<|image_pad|>` already expanded to each image's token count.
    pub prompt_ids: Vec<u32>,
    /// The prompt's images, in order.
    pub images: Vec<ImagePatches>,
    /// The LoRA adapter to apply, if any.
    pub adapter: Option<Arc<LoraAdapter>>,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
    /// Tokens that end the sequence (included in the output).
    pub stop_tokens: Vec<u32>,
}

/// A token produced by a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepToken {
    /// The sequence.
    pub seq: SeqId,
    /// The token.
    pub token: u32,
    /// Whether the sequence ended with it (stop token or length).
    pub finished: bool,
}

/// A sequence being generated.
#[derive(Debug)]
struct Sequence {
    request: GenerationRequest,
    prompt_positions: Vec<Position3>,
    rope_delta: i64,
    /// Prompt and generated tokens.
    tokens: Vec<u32>,
    generated: usize,
    prefilled: bool,
    finished: bool,
    sampler: Sampler,
}

/// Runs many sequences through one model with one paged cache.
#[derive(Debug)]
pub struct Generator<'m> {
    model: &'m Qwen2VlModel,
    cache: PagedKvCache,
    sequences: BTreeMap<SeqId, Sequence>,
    next_id: u64,
}

impl<'m> Generator<'m> {
    /// A generator whose cache holds `num_blocks` blocks of `block_size` tokens.
    pub fn new(model: &'m Qwen2VlModel, block_size: usize, num_blocks: usize) -> Self {
        Self {
            cache: PagedKvCache::new(
                model.text.num_layers(),
                model.text.kv_width(),
                block_size,
                num_blocks,
            ),
            model,
            sequences: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// The cache (for inspection).
    pub fn cache(&self) -> &PagedKvCache {
        &self.cache
    }

    /// Admits a request, reserving its cache blocks; it is prefilled at the next step.
    pub fn add(&mut self, request: GenerationRequest) -> Result<SeqId> {
        if request.prompt_ids.is_empty() {
            return Err(Error::Request("the prompt is empty".into()));
        }
        if request.max_new_tokens == 0 {
            return Err(Error::Request("max_new_tokens must be positive".into()));
        }
        let (prompt_positions, rope_delta) =
            self.model.positions(&request.prompt_ids, &request.images)?;
        let seq = SeqId(self.next_id);
        // The last generated token is never fed back, so the cache holds at most
        // prompt + max_new_tokens - 1 tokens.
        self.cache
            .reserve(seq, request.prompt_ids.len() + request.max_new_tokens - 1)?;
        self.next_id += 1;
        self.sequences.insert(
            seq,
            Sequence {
                tokens: request.prompt_ids.clone(),
                sampler: Sampler::new(request.sampling.clone()),
                request,
                prompt_positions,
                rope_delta,
                generated: 0,
                prefilled: false,
                finished: false,
            },
        );
        Ok(seq)
    }

    /// Whether any admitted sequence is still generating.
    pub fn has_work(&self) -> bool {
        self.sequences.values().any(|s| !s.finished)
    }

    /// The tokens generated so far for `seq`.
    pub fn generated(&self, seq: SeqId) -> Option<&[u32]> {
        self.sequences
            .get(&seq)
            .map(|s| &s.tokens[s.request.prompt_ids.len()..])
    }

    /// Forgets `seq`, giving its cache blocks back.
    pub fn remove(&mut self, seq: SeqId) {
        self.sequences.remove(&seq);
        self.cache.release(seq);
    }

    /// One forward pass over every unfinished sequence; one new token each.
    pub fn step(&mut self) -> Result<Vec<StepToken>> {
        let active: Vec<SeqId> = self
            .sequences
            .iter()
            .filter(|(_, s)| !s.finished)
            .map(|(&id, _)| id)
            .collect();
        if active.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.model;
        let hidden = model.config.text.hidden_size;
        let mut decode_positions: Vec<[Position3; 1]> = Vec::with_capacity(active.len());
        let mut inputs: Vec<Matrix> = Vec::with_capacity(active.len());
        for id in &active {
            let s = &self.sequences[id];
            if s.prefilled {
                let last = *s.tokens.last().expect("a prefilled sequence has tokens");
                let p = self.cache.len(*id) as i64 + s.rope_delta;
                decode_positions.push([[p; 3]]);
                inputs.push(model.text.embed(&[last])?);
            } else {
                decode_positions.push([[0; 3]]);
                inputs.push(model.embed_prompt(
                    &s.request.prompt_ids,
                    &s.request.images,
                    s.request.adapter.as_deref(),
                )?);
            }
        }
        let rows: usize = inputs.iter().map(|m| m.rows).sum();
        let mut x = Matrix::zeros(rows, hidden);
        let mut at = 0;
        let mut wanted = Vec::with_capacity(active.len());
        for m in &inputs {
            x.data[at * hidden..(at + m.rows) * hidden].copy_from_slice(&m.data);
            at += m.rows;
            wanted.push(at - 1);
        }
        let segments: Vec<Segment<'_>> = active
            .iter()
            .zip(&decode_positions)
            .map(|(id, decode)| {
                let s = &self.sequences[id];
                Segment {
                    seq: *id,
                    positions: if s.prefilled {
                        decode
                    } else {
                        &s.prompt_positions
                    },
                    adapter: s.request.adapter.as_deref(),
                }
            })
            .collect();
        let last_hidden = model.text.forward(x, &segments, &mut self.cache, &wanted)?;
        let mut head_rows = AdapterRows::none();
        for (i, s) in segments.iter().enumerate() {
            head_rows.push(i, i + 1, s.adapter);
        }
        let mut logits = model.text.logits(&last_hidden, &head_rows)?;
        drop(segments);
        let vocab = logits.cols;
        let mut out = Vec::with_capacity(active.len());
        for (i, id) in active.iter().enumerate() {
            let s = self.sequences.get_mut(id).expect("active sequence");
            s.prefilled = true;
            let token = s
                .sampler
                .sample(&mut logits.data[i * vocab..(i + 1) * vocab], &s.tokens);
            s.tokens.push(token);
            s.generated += 1;
            s.finished =
                s.generated >= s.request.max_new_tokens || s.request.stop_tokens.contains(&token);
            out.push(StepToken {
                seq: *id,
                token,
                finished: s.finished,
            });
        }
        Ok(out)
    }
}
