//! Learning-rate schedules as transformers' `get_constant_schedule_with_warmup`,
//! `get_linear_schedule_with_warmup` and `get_cosine_schedule_with_warmup`
//! (`num_cycles = 0.5`, `min_lr_rate = 0`), the ones the Hugging Face and
//! sentence-transformers trainers build. [`LrSchedule::lr`] of step `k` is the
//! learning rate of the `k`-th optimiser step (0-based): torch's `LambdaLR` starts at
//! `base_lr · λ(0)` and the trainers call `scheduler.step()` after every
//! `optimizer.step()`. The formulas are the same f64 expressions, so the values agree
//! with transformers' to the last bit or within one rounding (checked against
//! `tests/fixtures/step2.json`).

use anyhow::{ensure, Result};

/// The shape after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// Constant after warm-up (`get_constant_schedule_with_warmup`).
    Constant,
    /// Linear decay to 0 at the last step (`get_linear_schedule_with_warmup`, the HF
    /// and sentence-transformers default).
    Linear,
    /// Half a cosine down to 0 (`get_cosine_schedule_with_warmup`, `num_cycles` 0.5).
    Cosine,
}

/// How long the linear warm-up from 0 lasts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Warmup {
    /// A number of optimiser steps.
    Steps(usize),
    /// A fraction of all steps, rounded up as `TrainingArguments.get_warmup_steps`
    /// does (`ceil(total · ratio)`; transformers 5 takes it as `warmup_steps < 1`).
    Ratio(f64),
}

impl Warmup {
    /// Warm-up steps for a run of `total_steps`.
    pub fn steps(self, total_steps: usize) -> Result<usize> {
        match self {
            Warmup::Steps(n) => Ok(n),
            Warmup::Ratio(r) => {
                ensure!((0.0..1.0).contains(&r), "warm-up ratio {r} outside [0, 1)");
                Ok((total_steps as f64 * r).ceil() as usize)
            }
        }
    }
}

/// A learning rate per optimiser step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The schedule's shape.
    pub kind: ScheduleKind,
    /// The peak learning rate (the optimiser's `lr`).
    pub base_lr: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: usize,
    /// All optimiser steps of the run (the decay reaches 0 there).
    pub total_steps: usize,
}

impl LrSchedule {
    /// A schedule over `total_steps` with warm-up `warmup`.
    pub fn new(
        kind: ScheduleKind,
        base_lr: f64,
        warmup: Warmup,
        total_steps: usize,
    ) -> Result<Self> {
        Ok(Self {
            kind,
            base_lr,
            warmup_steps: warmup.steps(total_steps)?,
            total_steps,
        })
    }

    /// The multiplier `λ(step)` of transformers' lambda.
    pub fn factor(&self, step: usize) -> f64 {
        let (warmup, total) = (self.warmup_steps, self.total_steps);
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => {
                // float(total - step) / float(max(1, total - warmup)); Python ints may go
                // negative past the end, where max(0, ·) gives 0.
                let num = total as f64 - step as f64;
                (num / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
            }
            ScheduleKind::Cosine => {
                let progress =
                    (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
                let factor = 0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos());
                factor.max(0.0)
            }
        }
    }

    /// The learning rate of optimiser step `step` (0-based): `base_lr · λ(step)`.
    pub fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.factor(step)
    }
}
