//! Generation over many sequences at once. Each [`Generator::step_sequences`] runs one
//! forward pass over a ragged batch within a token budget: every decoding sequence
//! contributes its last token, then prompts contribute chunks (images go through the
//! vision tower once, at a prompt's first chunk), each with its own positions, cache
//! blocks and LoRA adapter; then one token is chosen per sequence whose prompt is done.
//! Admission reserves the cache blocks of prompt + `max_new_tokens` up front (no
//! preemption), so a step never runs out of blocks; a finished sequence gives its
//! blocks back at once.

use crate::kv_cache::{PagedKvCache, SeqId};
use crate::lora::{AdapterRows, LoraAdapter};
use crate::model::Qwen2VlModel;
use crate::preprocess::ImagePatches;
use crate::rope::Position3;
use crate::sampling::{Sampler, SamplingParams};
use crate::text::Segment;
use crate::{Error, Result};
use marquee_kernels::cpu::on_worker;
use marquee_kernels::cpu::sampling::log_sum_exp;
use marquee_kernels::Matrix;
use std::collections::BTreeMap;
use std::ops::Deref;
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
    /// The stop tokens are suppressed until this many tokens are generated.
    pub min_new_tokens: usize,
    /// Alternatives to report with each token.
    pub top_logprobs: usize,
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// `max_new_tokens` were generated.
    Length,
    /// A stop token was generated.
    Eos,
}

/// A chosen token with its log-probability under the processed distribution (after
/// the repetition penalty and temperature) and the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenChoice {
    /// The token.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// `(token, logprob)` of the most likely tokens, most likely first.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// One sequence's outcome of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceStep {
    /// The sequence.
    pub seq: SeqId,
    /// The token chosen, `None` while its prompt is still being processed (or when the
    /// step's budget left it out).
    pub token: Option<TokenChoice>,
    /// Set when the sequence ended with this token; its blocks are then free.
    pub finish: Option<Finish>,
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
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// The prompt's decoder input while it is being prefilled.
    embedded: Option<Matrix>,
    finished: bool,
    sampler: Sampler,
}

impl Sequence {
    fn prompt_len(&self) -> usize {
        self.request.prompt_ids.len()
    }

    fn decoding(&self) -> bool {
        self.prefilled == self.prompt_len()
    }
}

/// This step's share of one sequence: `rows` new tokens.
struct Share {
    seq: SeqId,
    rows: usize,
    /// Whether the last row gives a token (a decode, or a prompt's last chunk).
    samples: bool,
}

/// Runs many sequences through one model (`M` is `&Qwen2VlModel`, `Arc<Qwen2VlModel>`,
/// ...) with one paged cache.
#[derive(Debug)]
pub struct Generator<M> {
    model: M,
    cache: PagedKvCache,
    sequences: BTreeMap<SeqId, Sequence>,
    next_id: u64,
}

impl<M: Deref<Target = Qwen2VlModel>> Generator<M> {
    /// A generator whose cache holds `num_blocks` blocks of `block_size` tokens.
    pub fn new(model: M, block_size: usize, num_blocks: usize) -> Self {
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

    /// Admits a request, reserving its cache blocks; its prompt is processed by the
    /// following steps.
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
                prefilled: 0,
                embedded: None,
                finished: false,
            },
        );
        Ok(seq)
    }

    /// Whether any admitted sequence is still generating.
    pub fn has_work(&self) -> bool {
        self.sequences.values().any(|s| !s.finished)
    }

    /// Whether `seq` is admitted and still generating.
    pub fn is_live(&self, seq: SeqId) -> bool {
        self.sequences.get(&seq).is_some_and(|s| !s.finished)
    }

    /// Sequences admitted and not removed.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    /// Whether no sequence is admitted.
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// The tokens generated so far for `seq`.
    pub fn generated(&self, seq: SeqId) -> Option<&[u32]> {
        self.sequences
            .get(&seq)
            .map(|s| &s.tokens[s.request.prompt_ids.len()..])
    }

    /// Forgets `seq`, giving its cache blocks back; `false` when it is unknown.
    pub fn remove(&mut self, seq: SeqId) -> bool {
        self.cache.release(seq);
        self.sequences.remove(&seq).is_some()
    }

    /// One forward pass over every unfinished sequence, prompts whole.
    pub fn step(&mut self) -> Result<Vec<SequenceStep>> {
        let active: Vec<SeqId> = self
            .sequences
            .iter()
            .filter(|(_, s)| !s.finished)
            .map(|(&id, _)| id)
            .collect();
        self.step_sequences(&active, usize::MAX)
    }

    /// How many new tokens each of `ids` processes this step within `budget`: decoding
    /// sequences one each first, then prompts in order, as much as the budget leaves.
    fn shares(&self, ids: &[SeqId], budget: usize) -> Result<Vec<Share>> {
        let mut left = budget;
        let mut shares: Vec<Share> = Vec::with_capacity(ids.len());
        for decoding in [true, false] {
            for &id in ids {
                let s = self
                    .sequences
                    .get(&id)
                    .filter(|s| !s.finished)
                    .ok_or_else(|| Error::Request(format!("no live sequence {}", id.0)))?;
                if s.decoding() != decoding {
                    continue;
                }
                let want = if decoding {
                    1
                } else {
                    s.prompt_len() - s.prefilled
                };
                let rows = want.min(left);
                left -= rows;
                shares.push(Share {
                    seq: id,
                    rows,
                    samples: rows == want,
                });
            }
        }
        // Back to the caller's order.
        shares.sort_by_key(|share| ids.iter().position(|&id| id == share.seq));
        Ok(shares)
    }

    /// The decoder input of `share`'s rows, embedding a prompt (images included) at
    /// its first chunk.
    fn input_rows(&mut self, share: &Share) -> Result<Matrix> {
        let model = &*self.model;
        let s = self.sequences.get_mut(&share.seq).expect("listed sequence");
        if s.decoding() {
            let last = *s.tokens.last().expect("a decoding sequence has tokens");
            return model.text.embed(&[last]);
        }
        if s.embedded.is_none() {
            s.embedded = Some(model.embed_prompt(
                &s.request.prompt_ids,
                &s.request.images,
                s.request.adapter.as_deref(),
            )?);
        }
        let embedded = s.embedded.as_ref().expect("embedded above");
        let h = embedded.cols;
        Ok(Matrix {
            rows: share.rows,
            cols: h,
            data: embedded.data[s.prefilled * h..(s.prefilled + share.rows) * h].to_vec(),
        })
    }

    /// One forward pass over the live sequences `ids`, processing at most `budget` new
    /// tokens; one outcome per listed sequence, in order.
    pub fn step_sequences(&mut self, ids: &[SeqId], budget: usize) -> Result<Vec<SequenceStep>> {
        let shares = self.shares(ids, budget)?;
        let running: Vec<&Share> = shares.iter().filter(|s| s.rows > 0).collect();
        let hidden = self.model.config.text.hidden_size;
        let rows: usize = running.iter().map(|s| s.rows).sum();
        let mut x = Matrix::zeros(rows, hidden);
        let mut wanted = Vec::new();
        let mut at = 0;
        for share in &running {
            let input = self.input_rows(share)?;
            x.data[at * hidden..(at + share.rows) * hidden].copy_from_slice(&input.data);
            at += share.rows;
            if share.samples {
                wanted.push(at - 1);
            }
        }
        let mut last_hidden = Matrix::zeros(0, 0);
        if rows > 0 {
            let decode_positions: Vec<[Position3; 1]> = running
                .iter()
                .map(|share| {
                    let s = &self.sequences[&share.seq];
                    [[self.cache.len(share.seq) as i64 + s.rope_delta; 3]]
                })
                .collect();
            let segments: Vec<Segment<'_>> = running
                .iter()
                .zip(&decode_positions)
                .map(|(share, decode)| {
                    let s = &self.sequences[&share.seq];
                    Segment {
                        seq: share.seq,
                        positions: if s.decoding() {
                            decode
                        } else {
                            &s.prompt_positions[s.prefilled..s.prefilled + share.rows]
                        },
                        adapter: s.request.adapter.as_deref(),
                    }
                })
                .collect();
            let mut head_rows = AdapterRows::none();
            for (i, share) in running.iter().filter(|s| s.samples).enumerate() {
                let adapter = self.sequences[&share.seq].request.adapter.as_deref();
                head_rows.push(i, i + 1, adapter);
            }
            let (model, cache) = (&*self.model, &mut self.cache);
            last_hidden = on_worker(|| {
                let normed = model.text.forward(x, &segments, cache, &wanted)?;
                model.text.logits(&normed, &head_rows)
            })?;
        }
        let mut logits = last_hidden;
        let vocab = logits.cols;
        let mut sampled = 0;
        let mut out = Vec::with_capacity(shares.len());
        for share in &shares {
            let s = self.sequences.get_mut(&share.seq).expect("listed sequence");
            let mut step = SequenceStep {
                seq: share.seq,
                token: None,
                finish: None,
            };
            if share.rows > 0 && !s.decoding() {
                s.prefilled += share.rows;
                if s.decoding() {
                    s.embedded = None;
                }
            }
            if share.rows > 0 && share.samples {
                let row = &mut logits.data[sampled * vocab..(sampled + 1) * vocab];
                sampled += 1;
                let choice = choose(s, row);
                s.tokens.push(choice.token);
                s.generated += 1;
                let finish = if s.request.stop_tokens.contains(&choice.token) {
                    Some(Finish::Eos)
                } else if s.generated >= s.request.max_new_tokens {
                    Some(Finish::Length)
                } else {
                    None
                };
                if finish.is_some() {
                    s.finished = true;
                    self.cache.release(share.seq);
                }
                step.token = Some(choice);
                step.finish = finish;
            }
            out.push(step);
        }
        Ok(out)
    }
}

/// Picks the next token of `s` from its logits `row` (changed in place): the stop
/// tokens suppressed before `min_new_tokens`, then the sequence's sampler; the
/// log-probabilities are those of the processed logits the sampler leaves in `row`.
fn choose(s: &mut Sequence, row: &mut [f32]) -> TokenChoice {
    if s.generated < s.request.min_new_tokens {
        for &t in &s.request.stop_tokens {
            if let Some(l) = row.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    let token = s.sampler.sample(row, &s.tokens);
    let log_total = log_sum_exp(row);
    let logprob = |t: u32| row[t as usize] - log_total;
    let top_logprobs = top_tokens(row, s.request.top_logprobs)
        .into_iter()
        .map(|t| (t, logprob(t)))
        .collect();
    TokenChoice {
        token,
        logprob: logprob(token),
        top_logprobs,
    }
}

/// The `n` largest entries' indices, largest first (ties by the lower index).
fn top_tokens(x: &[f32], n: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    let order = |a: &u32, b: &u32| x[*b as usize].total_cmp(&x[*a as usize]).then(a.cmp(b));
    let mut ids: Vec<u32> = (0..x.len() as u32).collect();
    let n = n.min(ids.len());
    if n < ids.len() {
        ids.select_nth_unstable_by(n - 1, order);
        ids.truncate(n);
    }
    ids.sort_by(order);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_and_top_tokens() {
        let x = [1.0f32, 3.0, 3.0, -1.0];
        let expected = (1f64.exp() + 2.0 * 3f64.exp() + (-1f64).exp()).ln() as f32;
        assert!((log_sum_exp(&x) - expected).abs() < 1e-6);
        assert_eq!(top_tokens(&x, 3), vec![1, 2, 0]);
        assert_eq!(top_tokens(&x, 9), vec![1, 2, 0, 3]);
        assert!(top_tokens(&x, 0).is_empty());
    }
}
