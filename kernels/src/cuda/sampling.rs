//! Choosing tokens from logits on the GPU (`kernels/cuda/sampling.cu`), one block per
//! row: argmax, the log-probability of chosen tokens, and sampling with repetition
//! penalty, temperature, top-k and top-p. Semantics: [`crate::cpu::sampling`].

use super::context::driver_error;
use super::{rows_config, Arg, CudaBackend, CudaTensor};
use crate::cpu::sampling::RowSampling;
use crate::shapes::check;
use crate::{KernelError, Result};

/// Threads of a sampling block.
const THREADS: u32 = 512;

// SAFETY: `repr(C)` scalars, laid out as the CUDA struct `RowSampling` of `sampling.cu`.
unsafe impl cudarc::driver::DeviceRepr for RowSampling {}

impl CudaBackend {
    /// Per row of `logits`, the index of its largest value, the first among equals
    /// ([`crate::cpu::sampling::argmax`]).
    pub fn argmax_rows(&self, logits: &CudaTensor) -> Result<Vec<u32>> {
        self.check_logits(logits)?;
        if logits.rows == 0 {
            return Ok(Vec::new());
        }
        let out = self.device_u32s(logits.rows)?;
        self.launch(
            &format!("argmax_{}", self.suffix()),
            rows_config(logits.rows, THREADS, 0),
            &[
                Arg::U32s(&out),
                Arg::Tensor(logits),
                Arg::I32(logits.cols as i32),
            ],
        )?;
        self.gpu.stream.clone_dtoh(&out).map_err(driver_error)
    }

    /// Per row `r` of `logits`, `log_softmax(row)[tokens[r]]` in f32
    /// ([`crate::cpu::sampling::token_logprob`]).
    pub fn token_logprobs(&self, logits: &CudaTensor, tokens: &[u32]) -> Result<Vec<f32>> {
        self.check_logits(logits)?;
        check(tokens.len() == logits.rows, || {
            format!(
                "token_logprobs: {} tokens for {} rows",
                tokens.len(),
                logits.rows
            )
        })?;
        check_tokens(tokens, logits.cols)?;
        if logits.rows == 0 {
            return Ok(Vec::new());
        }
        let tokens = self.upload_u32(tokens)?;
        let fill = if self.poison { f32::NAN } else { 0.0 };
        let out = self
            .gpu
            .stream
            .clone_htod(&vec![fill; logits.rows])
            .map_err(driver_error)?;
        self.launch(
            &format!("token_logprob_{}", self.suffix()),
            rows_config(logits.rows, THREADS, 0),
            &[
                Arg::F32s(&out),
                Arg::Tensor(logits),
                Arg::U32s(&tokens),
                Arg::I32(logits.cols as i32),
            ],
        )?;
        self.gpu.stream.clone_dtoh(&out).map_err(driver_error)
    }

    /// Per row `r` of `logits`, the token `params[r]` picks given the tokens `seen[r]` so
    /// far ([`crate::cpu::sampling::sample`]; the same token unless the uniform falls
    /// within about `vocab · 2⁻⁵²` of a boundary of the CDF).
    pub fn sample_rows(
        &self,
        logits: &CudaTensor,
        params: &[RowSampling],
        seen: &[&[u32]],
    ) -> Result<Vec<u32>> {
        self.check_logits(logits)?;
        check(
            params.len() == logits.rows && seen.len() == logits.rows,
            || {
                format!(
                    "sample_rows: {} parameter sets and {} seen lists for {} rows",
                    params.len(),
                    seen.len(),
                    logits.rows
                )
            },
        )?;
        for (r, p) in params.iter().enumerate() {
            check_params(r, p)?;
        }
        if logits.rows == 0 {
            return Ok(Vec::new());
        }
        let mut offsets = Vec::with_capacity(seen.len() + 1);
        offsets.push(0u32);
        for s in seen {
            offsets.push(offsets[offsets.len() - 1] + s.len() as u32);
        }
        let mut flat: Vec<u32> = seen.concat();
        if flat.is_empty() {
            flat.push(0);
        }
        let s = &self.gpu.stream;
        let offsets = self.upload_u32(&offsets)?;
        let flat = self.upload_u32(&flat)?;
        let params = s.clone_htod(params).map_err(driver_error)?;
        let work = s
            .alloc_zeros::<f32>(logits.rows * logits.cols)
            .map_err(driver_error)?;
        let out = self.device_u32s(logits.rows)?;
        self.launch(
            &format!("sample_{}", self.suffix()),
            rows_config(logits.rows, THREADS, 0),
            &[
                Arg::U32s(&out),
                Arg::F32s(&work),
                Arg::Tensor(logits),
                Arg::Sampling(&params),
                Arg::U32s(&offsets),
                Arg::U32s(&flat),
                Arg::I32(logits.cols as i32),
            ],
        )?;
        s.clone_dtoh(&out).map_err(driver_error)
    }

    /// Logits in the backend's precision, with at least one column that an `i32` counts.
    fn check_logits(&self, logits: &CudaTensor) -> Result<()> {
        self.check_precision(&[logits])?;
        check(logits.cols > 0 && logits.cols <= i32::MAX as usize, || {
            format!("logits rows of {} values", logits.cols)
        })
    }

    /// `n` device `u32`s for a kernel to write (`u32::MAX` with poisoned outputs).
    fn device_u32s(&self, n: usize) -> Result<cudarc::driver::CudaSlice<u32>> {
        let fill = if self.poison { u32::MAX } else { 0 };
        self.upload_u32(&vec![fill; n])
    }
}

fn check_tokens(tokens: &[u32], vocab: usize) -> Result<()> {
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(bad) => Err(KernelError::Shape(format!(
            "token {bad} outside a vocabulary of {vocab}"
        ))),
        None => Ok(()),
    }
}

/// The parameter ranges the sampler is defined on.
fn check_params(row: usize, p: &RowSampling) -> Result<()> {
    check(
        p.temperature >= 0.0
            && p.temperature.is_finite()
            && p.top_p > 0.0
            && p.top_p <= 1.0
            && p.repetition_penalty > 0.0
            && p.repetition_penalty.is_finite()
            && (0.0..1.0).contains(&p.uniform),
        || format!("sampling parameters of row {row} out of range: {p:?}"),
    )
}
