//! Gradient clipping and one training step (AdamW), with an optional learning-rate
//! schedule and training-mode dropout.

use crate::bert::Dropout;
use crate::loss::multiple_negatives_ranking_loss;
use crate::model::SentenceEncoder;
use crate::schedule::LrSchedule;
use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (L2): the global norm over every
/// gradient present is returned, and when it exceeds `max_norm` every gradient is scaled
/// by `max_norm / (norm + 1e-6)`. Variables without a gradient are ignored, as torch
/// ignores parameters whose `.grad` is `None`.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sum_sq = 0f64;
    for var in vars {
        if let Some(g) = grads.get(var) {
            let sq: f32 = g.sqr()?.sum_all()?.to_scalar()?;
            sum_sq += sq as f64;
        }
    }
    let total = sum_sq.sqrt();
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    if coef < 1.0 {
        for var in vars {
            if let Some(g) = grads.get(var) {
                let scaled = (g * coef)?;
                grads.insert(var, scaled);
            }
        }
    }
    Ok(total)
}

/// `torch.optim.AdamW`'s defaults (betas (0.9, 0.999), eps 1e-8, weight decay 0.01)
/// with learning rate `lr`. (The Hugging Face / sentence-transformers trainers default to
/// a weight decay of 0, set the field to match them.) candle-nn's `AdamW` applies the
/// decoupled decay `p ← p·(1 − lr·wd)` before the bias-corrected Adam update, as torch
/// does; it only takes `√v̂ + ε` where torch takes `√v / √(1−β₂ᵗ) + ε`, equal up to
/// rounding. The fixture tests check it against torch.
pub fn adamw_params(lr: f64) -> ParamsAdamW {
    ParamsAdamW {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    }
}

/// One padded batch of token ids and attention masks, each `(rows, len)`.
pub struct Texts {
    /// Token ids (u32 or i64).
    pub input_ids: Tensor,
    /// 1 for tokens, 0 for padding.
    pub attention_mask: Tensor,
}

/// The rows `index` (also given as `rows`) of `texts`, cut to the longest of them by
/// `lengths` (token counts of every row; padding is at the end).
fn gathered(texts: &Texts, index: &Tensor, rows: &[u32], lengths: &[f32]) -> Result<Texts> {
    let longest = rows
        .iter()
        .map(|&r| lengths[r as usize] as usize)
        .max()
        .unwrap_or(1)
        .max(1);
    Ok(Texts {
        input_ids: texts
            .input_ids
            .index_select(index, 0)?
            .narrow(1, 0, longest)?,
        attention_mask: texts
            .attention_mask
            .index_select(index, 0)?
            .narrow(1, 0, longest)?,
    })
}

/// A contrastive batch: query `i`'s positive is doc `i`; hard negatives are extra
/// candidates for every query.
pub struct ContrastiveBatch {
    /// The anchors.
    pub queries: Texts,
    /// Their positives.
    pub docs: Texts,
    /// Optional extra negatives.
    pub hard_negatives: Option<Texts>,
}

/// Fine-tunes a [`SentenceEncoder`] with `MultipleNegativesRankingLoss` and AdamW.
pub struct Trainer {
    vars: Vec<Var>,
    optimizer: AdamW,
    /// Similarity scale of the loss.
    pub scale: f64,
    /// Global gradient-norm limit (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// The learning rate per step; `None`: the optimiser's `lr` throughout.
    pub schedule: Option<LrSchedule>,
    /// Training-mode dropout; `None`: the forward pass is the eval-mode one.
    pub dropout: Option<Dropout>,
    /// Texts embedded per forward pass with a graph: `None` embeds each column of the
    /// batch at once; `Some(m)` computes the same loss and gradients in chunks of `m`
    /// (GradCache, as sentence-transformers' `CachedMultipleNegativesRankingLoss`), so
    /// memory holds one chunk's activations instead of the whole batch's, for one more
    /// forward pass.
    pub mini_batch: Option<usize>,
    steps: usize,
}

/// What one step did.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// The loss before the update.
    pub loss: f32,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate of this step.
    pub lr: f64,
}

impl Trainer {
    /// An optimiser over every variable of `encoder`.
    pub fn new(encoder: &SentenceEncoder, params: ParamsAdamW) -> Result<Self> {
        let vars: Vec<Var> = encoder.named_vars().into_iter().map(|(_, v)| v).collect();
        Ok(Self {
            optimizer: AdamW::new(vars.clone(), params)?,
            vars,
            scale: crate::loss::DEFAULT_SCALE,
            max_grad_norm: Some(1.0),
            schedule: None,
            dropout: None,
            steps: 0,
            mini_batch: None,
        })
    }

    /// Optimiser steps taken so far.
    pub fn steps_taken(&self) -> usize {
        self.steps
    }

    /// The learning rate the next step uses.
    pub fn next_lr(&self) -> f64 {
        match &self.schedule {
            Some(s) => s.lr(self.steps),
            None => self.optimizer.learning_rate(),
        }
    }

    /// The loss of `batch` and its gradients (nothing updated).
    /// With [`Trainer::dropout`] set, the forward pass is in training mode and draws
    /// masks (queries, then docs, then hard negatives).
    pub fn loss_and_grads(
        &mut self,
        encoder: &SentenceEncoder,
        batch: &ContrastiveBatch,
    ) -> Result<(Tensor, GradStore)> {
        if let Some(m) = self.mini_batch {
            return self.loss_and_grads_cached(encoder, batch, m.max(1));
        }
        let mut dropout = self.dropout.as_mut();
        let mut embed = |t: &Texts| {
            encoder.forward_with(&t.input_ids, &t.attention_mask, dropout.as_deref_mut())
        };
        let q = embed(&batch.queries)?;
        let d = embed(&batch.docs)?;
        let n = batch.hard_negatives.as_ref().map(&mut embed).transpose()?;
        let loss = multiple_negatives_ranking_loss(&q, &d, n.as_ref(), self.scale)?;
        let grads = loss.backward()?;
        Ok((loss, grads))
    }

    /// [`Trainer::loss_and_grads`] by GradCache: every column embedded chunk by chunk
    /// (its rows longest first, each chunk cut to its own longest text) without a graph; the loss and its gradient with respect to the embeddings; then
    /// each chunk embedded again with the same dropout masks and a graph, and
    /// `Σ embedding · gradient` back-propagated into the weights, chunk by chunk.
    fn loss_and_grads_cached(
        &mut self,
        encoder: &SentenceEncoder,
        batch: &ContrastiveBatch,
        mini_batch: usize,
    ) -> Result<(Tensor, GradStore)> {
        let columns: Vec<&Texts> = [Some(&batch.queries), Some(&batch.docs)]
            .into_iter()
            .chain([batch.hard_negatives.as_ref()])
            .flatten()
            .collect();
        // Pass 1: embeddings without a graph, remembering each chunk's dropout state.
        // Each column's rows go longest first, so a chunk pads to lengths close to its own.
        let mut chunks: Vec<(usize, Tensor, Texts, Option<Dropout>)> = Vec::new();
        let mut embeddings: Vec<Tensor> = Vec::with_capacity(columns.len());
        for (c, texts) in columns.iter().enumerate() {
            let lengths: Vec<f32> = texts
                .attention_mask
                .to_dtype(DType::F32)?
                .sum(1)?
                .to_vec1()?;
            let mut order: Vec<u32> = (0..lengths.len() as u32).collect();
            order.sort_by(|&a, &b| lengths[b as usize].total_cmp(&lengths[a as usize]));
            let mut parts = Vec::new();
            for rows in order.chunks(mini_batch) {
                let index = Tensor::new(rows, texts.input_ids.device())?;
                let chunk = gathered(texts, &index, rows, &lengths)?;
                let state = self.dropout.clone();
                let e = encoder
                    .forward_with(
                        &chunk.input_ids,
                        &chunk.attention_mask,
                        self.dropout.as_mut(),
                    )?
                    .detach();
                parts.push(e);
                chunks.push((c, index, chunk, state));
            }
            // Back to the batch's order.
            let mut inverse = vec![0u32; order.len()];
            for (sorted, &row) in order.iter().enumerate() {
                inverse[row as usize] = sorted as u32;
            }
            let inverse = Tensor::new(inverse.as_slice(), texts.input_ids.device())?;
            embeddings.push(Tensor::cat(&parts, 0)?.index_select(&inverse, 0)?);
        }
        // The loss, and its gradient with respect to each column's embeddings.
        let leaves: Vec<Var> = embeddings
            .iter()
            .map(Var::from_tensor)
            .collect::<candle_core::Result<_>>()?;
        let loss = multiple_negatives_ranking_loss(
            leaves[0].as_tensor(),
            leaves[1].as_tensor(),
            leaves.get(2).map(Var::as_tensor),
            self.scale,
        )?;
        let leaf_grads = loss.backward()?;
        let column_grads: Vec<Tensor> = leaves
            .iter()
            .map(|v| {
                leaf_grads
                    .get(v)
                    .cloned()
                    .map_or_else(|| v.zeros_like(), Ok)
            })
            .collect::<candle_core::Result<_>>()?;
        // Pass 2: each chunk again with a graph, its share of the gradient pushed through.
        let mut total: Option<GradStore> = None;
        for (c, index, chunk, state) in chunks {
            let mut dropout = state;
            let e =
                encoder.forward_with(&chunk.input_ids, &chunk.attention_mask, dropout.as_mut())?;
            let g = column_grads[c].index_select(&index, 0)?;
            let grads = (e * g)?.sum_all()?.backward()?;
            match total.as_mut() {
                None => total = Some(grads),
                Some(total) => {
                    for var in &self.vars {
                        if let Some(part) = grads.get(var) {
                            let sum = match total.get(var) {
                                Some(previous) => (previous + part)?,
                                None => part.clone(),
                            };
                            total.insert(var, sum);
                        }
                    }
                }
            }
        }
        let total = total.ok_or_else(|| anyhow::anyhow!("an empty batch"))?;
        Ok((loss.detach(), total))
    }

    /// Forward, backward, clipping and one AdamW update.
    pub fn step(
        &mut self,
        encoder: &SentenceEncoder,
        batch: &ContrastiveBatch,
    ) -> Result<StepReport> {
        let (loss, grads) = self.loss_and_grads(encoder, batch)?;
        let lr = self.next_lr();
        let grad_norm = self.apply_gradients(grads)?;
        Ok(StepReport {
            loss: loss.to_scalar()?,
            grad_norm,
            lr,
        })
    }

    /// Clips `grads` (when [`Trainer::max_grad_norm`] is set), sets the scheduled
    /// learning rate (when [`Trainer::schedule`] is set) and takes one AdamW step;
    /// returns the global gradient norm before clipping. As with torch's
    /// `scheduler.step()` after `optimizer.step()`, step `k` (0-based) uses
    /// `schedule.lr(k)`.
    pub fn apply_gradients(&mut self, mut grads: GradStore) -> Result<f64> {
        let max = self.max_grad_norm.unwrap_or(f64::INFINITY);
        let grad_norm = clip_grad_norm(&mut grads, &self.vars, max)?;
        if let Some(schedule) = &self.schedule {
            self.optimizer.set_learning_rate(schedule.lr(self.steps));
        }
        self.optimizer.step(&grads)?;
        self.steps += 1;
        Ok(grad_norm)
    }
}
