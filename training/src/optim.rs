//! Gradient clipping and one training step (AdamW), with an optional learning-rate
//! schedule and training-mode dropout.

use crate::bert::Dropout;
use crate::loss::multiple_negatives_ranking_loss;
use crate::model::SentenceEncoder;
use crate::schedule::LrSchedule;
use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
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
