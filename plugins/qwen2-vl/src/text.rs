//! The text decoder (Qwen2 as `Qwen2_5_VLTextModel` runs it): token embedding, layers of
//! RMSNorm → GQA attention (q/k/v with bias, o without, M-RoPE on q and k) → RMSNorm →
//! SwiGLU, a final RMSNorm and the LM head (the embedding when tied).
//!
//! One forward call takes a ragged batch: consecutive spans of rows, one per sequence,
//! each any number of new tokens (a whole prompt, or one decode token) appended to what
//! the paged cache holds for that sequence. Every row attends to its own sequence's
//! cached tokens and the new ones up to itself; nothing is computed on padding.

use crate::config::TextConfig;
use crate::kv_cache::{PagedKvCache, SeqId};
use crate::lora::{AdapterRows, Linear, LinearRegistry, LoraAdapter};
use crate::rope::{MRope, Position3};
use crate::weights::Checkpoint;
use crate::{Error, Result};
use marquee_kernels::cpu::decoder::{
    add_in_place, apply_rotary, attend, causal_attention, rms_norm, rms_norm_in_place,
    silu_mul_halves, HeadLayout,
};
use marquee_kernels::cpu::packed::{self, PackedWeight};
use marquee_kernels::{Activation, Matrix};
use rayon::prelude::*;

/// Segments of at least this many new tokens attend through matrix products
/// ([`causal_attention`]); shorter ones (decode steps) one row at a time.
const PRODUCT_ATTENTION_ROWS: usize = 8;

/// One decoder layer.
#[derive(Debug)]
struct DecoderLayer {
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    /// q, k and v stacked: one product per step.
    qkv: Linear,
    o: Linear,
    /// gate and up stacked.
    gate_up: Linear,
    down: Linear,
}

/// The decoder with its LM head.
#[derive(Debug)]
pub struct TextDecoder {
    config: TextConfig,
    embedding: Embedding,
    layers: Vec<DecoderLayer>,
    norm: Vec<f32>,
    rope: MRope,
}

/// The token embedding and the LM head.
#[derive(Debug)]
enum Embedding {
    /// Two weights: the embedding's rows, and the head (which LoRA adapters may target).
    Untied { rows: Matrix, head: Linear },
    /// One weight, packed for the head's products; its output rows are the embedding's.
    Tied(PackedWeight),
}

/// One sequence's span of rows in a forward batch.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// The sequence (its cache entry).
    pub seq: SeqId,
    /// Positions of the span's new tokens, one per row.
    pub positions: &'a [Position3],
    /// The LoRA adapter the sequence uses, if any.
    pub adapter: Option<&'a LoraAdapter>,
}

impl TextDecoder {
    /// Loads `model.language_model.*` and `lm_head.weight` (the embedding when `tied`
    /// and the checkpoint has no head).
    pub fn load(
        checkpoint: &mut Checkpoint,
        registry: &mut LinearRegistry,
        config: &TextConfig,
        tied: bool,
    ) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let kv = config.num_key_value_heads * config.head_dim();
        let p = "model.language_model";
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let n = format!("{p}.layers.{l}");
            let name = |module: &str| format!("{n}.{module}");
            let qkv = Linear::load_stacked(
                checkpoint,
                registry,
                &[
                    (&name("self_attn.q_proj"), h),
                    (&name("self_attn.k_proj"), kv),
                    (&name("self_attn.v_proj"), kv),
                ],
                h,
                true,
            )?;
            let o = Linear::load(
                checkpoint,
                registry,
                &name("self_attn.o_proj"),
                (h, h),
                false,
            )?;
            let gate_up = Linear::load_stacked(
                checkpoint,
                registry,
                &[(&name("mlp.gate_proj"), i), (&name("mlp.up_proj"), i)],
                h,
                false,
            )?;
            let down = Linear::load(checkpoint, registry, &name("mlp.down_proj"), (h, i), false)?;
            layers.push(DecoderLayer {
                input_norm: checkpoint
                    .row(&format!("{n}.input_layernorm.weight"), h)?
                    .data,
                post_norm: checkpoint
                    .row(&format!("{n}.post_attention_layernorm.weight"), h)?
                    .data,
                qkv,
                o,
                gate_up,
                down,
            });
        }
        let norm = checkpoint.row(&format!("{p}.norm.weight"), h)?.data;
        // After the layers, so the head is registered last, as it always was.
        let embed_name = format!("{p}.embed_tokens.weight");
        let embedding = if checkpoint.contains("lm_head.weight") {
            Embedding::Untied {
                rows: checkpoint.matrix(&embed_name, &[config.vocab_size, h])?,
                head: Linear::load(
                    checkpoint,
                    registry,
                    "lm_head",
                    (config.vocab_size, h),
                    false,
                )?,
            }
        } else if tied {
            Embedding::Tied(checkpoint.linear_weight(&embed_name, &[config.vocab_size, h])?)
        } else {
            return Err(Error::Weights("untied model without lm_head.weight".into()));
        };
        Ok(Self {
            rope: MRope::new(config.rope_theta, config.head_dim(), &config.mrope_section),
            config: config.clone(),
            embedding,
            layers,
            norm,
        })
    }

    /// The embedding rows of `ids`.
    pub fn embed(&self, ids: &[u32]) -> Result<Matrix> {
        let h = self.config.hidden_size;
        let mut out = Matrix::zeros(ids.len(), h);
        for (row, &id) in out.data.chunks_exact_mut(h).zip(ids) {
            let id = id as usize;
            if id >= self.config.vocab_size {
                return Err(Error::Request(format!(
                    "token id {id} is outside the vocabulary"
                )));
            }
            match &self.embedding {
                Embedding::Untied { rows, .. } => row.copy_from_slice(rows.row(id)),
                Embedding::Tied(weight) => weight.copy_output_row(id, row),
            }
        }
        Ok(out)
    }

    /// Key/value width of one token: KV heads × head dim.
    pub fn kv_width(&self) -> usize {
        self.config.num_key_value_heads * self.config.head_dim()
    }

    /// Decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs the decoder on `x` (the embeddings of every segment's new tokens, segment
    /// after segment), appending their keys and values to `cache`. Returns the final
    /// normed hidden states of the rows `wanted` (indices into `x`'s rows).
    pub fn forward(
        &self,
        mut x: Matrix,
        segments: &[Segment<'_>],
        cache: &mut PagedKvCache,
        wanted: &[usize],
    ) -> Result<Matrix> {
        let c = &self.config;
        let rows: usize = segments.iter().map(|s| s.positions.len()).sum();
        if rows != x.rows || x.cols != c.hidden_size {
            return Err(Error::Request(format!(
                "{} rows of {} for segments of {rows} tokens",
                x.rows, x.cols
            )));
        }
        for s in segments {
            cache.reserve(s.seq, s.positions.len())?;
        }
        // Per row: its segment, and its position in the sequence's cache.
        let mut row_seq = Vec::with_capacity(rows);
        let mut adapters = AdapterRows::none();
        let mut start = 0;
        for (i, s) in segments.iter().enumerate() {
            let past = cache.len(s.seq);
            row_seq.extend((0..s.positions.len()).map(|j| (i, past + j)));
            adapters.push(start, start + s.positions.len(), s.adapter);
            start += s.positions.len();
        }
        let head_dim = c.head_dim();
        let (mut cos, mut sin) = (
            Vec::with_capacity(rows * head_dim),
            Vec::with_capacity(rows * head_dim),
        );
        for s in segments {
            for &p in s.positions {
                self.rope.push(p, &mut cos, &mut sin);
            }
        }
        let heads = c.num_attention_heads;
        let kv_heads = c.num_key_value_heads;
        let group = heads / kv_heads;
        let scale = (head_dim as f32).powf(-0.5);
        let layout = HeadLayout {
            heads,
            kv_heads,
            head_dim,
        };
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        for (l, layer) in self.layers.iter().enumerate() {
            let normed = rms_norm(&x, &layer.input_norm, c.rms_norm_eps);
            // Each row: its queries, then its keys, then its values.
            let mut qkv = layer
                .qkv
                .forward(&normed, &adapters, Activation::Identity)?;
            apply_rotary(&mut qkv, 0, heads, head_dim, &cos, &sin);
            apply_rotary(&mut qkv, q_width, kv_heads, head_dim, &cos, &sin);
            for (r, &(s, pos)) in row_seq.iter().enumerate() {
                let (keys, values) = qkv.row(r)[q_width..].split_at(kv_width);
                cache.write(l, segments[s].seq, pos, keys, values);
            }
            let views: Vec<_> = segments.iter().map(|s| cache.view(l, s.seq)).collect();
            let mut attended = Matrix::zeros(rows, q_width);
            // A segment of many new tokens (a prompt, or a chunk of one) as products.
            let mut first = 0;
            for (s, view) in segments.iter().zip(&views) {
                let len = s.positions.len();
                if len >= PRODUCT_ATTENTION_ROWS {
                    causal_attention(
                        &qkv,
                        first..first + len,
                        row_seq[first].1,
                        layout,
                        |j| view.key(j),
                        |j| view.value(j),
                        scale,
                        &mut attended,
                    );
                }
                first += len;
            }
            // The others (decode steps) one row at a time: one task per row and KV head,
            // the query heads of its group reading the same keys and values, so a decode
            // step's one row still splits across threads.
            attended
                .data
                .par_chunks_mut(group * head_dim)
                .enumerate()
                .for_each_init(Vec::new, |scores, (task, out)| {
                    let (r, kvh) = (task / kv_heads, task % kv_heads);
                    let (s, pos) = row_seq[r];
                    if segments[s].positions.len() >= PRODUCT_ATTENTION_ROWS {
                        return;
                    }
                    let view = &views[s];
                    for (g, out) in out.chunks_exact_mut(head_dim).enumerate() {
                        let h = kvh * group + g;
                        attend(
                            &qkv.row(r)[h * head_dim..][..head_dim],
                            pos + 1,
                            |j| &view.key(j)[kvh * head_dim..][..head_dim],
                            |j| &view.value(j)[kvh * head_dim..][..head_dim],
                            scale,
                            scores,
                            out,
                        );
                    }
                });
            drop(views);
            add_in_place(
                &mut x,
                &layer
                    .o
                    .forward(&attended, &adapters, Activation::Identity)?,
            );
            let normed = rms_norm(&x, &layer.post_norm, c.rms_norm_eps);
            let gate_up = layer
                .gate_up
                .forward(&normed, &adapters, Activation::Identity)?;
            add_in_place(
                &mut x,
                &layer
                    .down
                    .forward(&silu_mul_halves(&gate_up), &adapters, Activation::Identity)?,
            );
        }
        for s in segments {
            cache.advance(s.seq, s.positions.len());
        }
        let mut out = Matrix::zeros(wanted.len(), c.hidden_size);
        for (dst, &r) in out.data.chunks_exact_mut(c.hidden_size).zip(wanted) {
            dst.copy_from_slice(x.row(r));
        }
        rms_norm_in_place(&mut out, &self.norm, c.rms_norm_eps);
        Ok(out)
    }

    /// Logits of normed hidden rows; `adapters` index those rows.
    pub fn logits(&self, hidden: &Matrix, adapters: &AdapterRows<'_>) -> Result<Matrix> {
        match &self.embedding {
            Embedding::Untied { head, .. } => head.forward(hidden, adapters, Activation::Identity),
            Embedding::Tied(weight) => {
                Ok(packed::linear(hidden, weight, None, Activation::Identity)?)
            }
        }
    }

    /// The layers LoRA adapters may target, for shape checks.
    pub(crate) fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .chain(match &self.embedding {
                Embedding::Untied { head, .. } => Some(head),
                Embedding::Tied(_) => None,
            })
    }
}
