//! Fused CPU operations for the encoder's hot elementwise steps, each one pass over the
//! data with rows (or chunks) in parallel on the current rayon pool, and a fused
//! backward: the attention softmax with its scale and padding mask, the erf GELU,
//! LayerNorm, and dropout.
//! candle's own versions are chains of single-purpose operations, each a full pass
//! over a fresh buffer, forward and backward (its fused softmax has no backward). The
//! inner loops are `marquee_kernels`' vectorised ones (polynomial `erf` and `exp`).

use crate::rng::SplitMix64;
use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};
use marquee_kernels::cpu::{gelu, gelu_backward, masked_softmax_row, softmax_backward_row};
use rayon::prelude::*;

/// Elements per parallel chunk of the elementwise operations.
const CHUNK: usize = 16 * 1024;

/// `softmax(scores · scale + mask)` over the last dimension. `scores` is
/// `(batch, heads, queries, keys)`, `mask` `(batch, keys)` (added to every row of its
/// batch: 0 for tokens, a large negative number for padding).
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f32) -> Result<Tensor> {
    scores
        .contiguous()?
        .apply_op2(&mask.contiguous()?, MaskedSoftmax { scale })
}

/// `0.5 · x · (1 + erf(x / √2))`, as `torch.nn.functional.gelu`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluErf)
}

/// `torch.nn.LayerNorm` over the last dimension (biased variance): `(x − mean) /
/// √(var + eps) · gamma + beta`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op3(gamma, beta, LayerNorm { eps })
}

/// Inverted dropout: each element zeroed with probability `p` (in `(0, 1)`, rounded to
/// a multiple of 2⁻¹⁶), the rest scaled by `1/(1−p)`. The mask is a function of `seed`
/// and the element's position only (one [`SplitMix64`] stream per chunk, each draw
/// deciding four elements by 16 bits each), so the backward recomputes it instead of
/// keeping it, and the thread count does not change it.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    x.contiguous()?.apply_op1(DropoutMask { p, seed })
}

/// The contiguous f32 data of a CPU tensor's storage.
fn f32_data<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: the input must be contiguous")
    };
    match storage {
        CpuStorage::F32(data) => Ok(&data[start..end]),
        other => bail!("{op}: f32 only, got {:?}", other.dtype()),
    }
}

struct MaskedSoftmax {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        scores: &CpuStorage,
        scores_layout: &Layout,
        mask: &CpuStorage,
        mask_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(scores, scores_layout, self.name())?;
        let mask = f32_data(mask, mask_layout, self.name())?;
        let shape = scores_layout.shape();
        let &[batch, heads, queries, keys] = shape.dims() else {
            bail!("masked-softmax: scores must be 4-d, got {shape:?}")
        };
        if mask_layout.shape().dims() != [batch, keys] {
            bail!(
                "masked-softmax: mask {:?} does not match scores {shape:?}",
                mask_layout.shape()
            )
        }
        let rows_per_batch = heads * queries;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(keys)
            .zip(x.par_chunks(keys))
            .enumerate()
            .for_each(|(row, (out, x))| {
                let b = row / rows_per_batch;
                let mask = &mask[b * keys..(b + 1) * keys];
                masked_softmax_row(out, x, mask, self.scale);
            });
        Ok((CpuStorage::F32(out), shape.clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let scores_grad =
            probs.apply_op2_no_bwd(&grad, &MaskedSoftmaxGrad { scale: self.scale })?;
        Ok((Some(scores_grad), None))
    }
}

/// `scale · p ⊙ (g − Σ g ⊙ p)` per row: the softmax's backward from its output `p`
/// and the output's gradient `g`.
struct MaskedSoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmaxGrad {
    fn name(&self) -> &'static str {
        "masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        probs: &CpuStorage,
        probs_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = f32_data(probs, probs_layout, self.name())?;
        let g = f32_data(grad, grad_layout, self.name())?;
        let shape = probs_layout.shape();
        if grad_layout.shape() != shape {
            bail!(
                "masked-softmax-grad: shapes {shape:?} and {:?}",
                grad_layout.shape()
            )
        }
        let keys = *shape.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; p.len()];
        out.par_chunks_mut(keys.max(1))
            .zip(p.par_chunks(keys.max(1)).zip(g.par_chunks(keys.max(1))))
            .for_each(|(out, (p, g))| softmax_backward_row(out, p, g, self.scale));
        Ok((CpuStorage::F32(out), shape.clone()))
    }
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(out, x)| gelu(out, x));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &GeluErfGrad)?))
    }
}

/// `g · (½(1 + erf(x/√2)) + x·φ(x))`: the erf GELU's backward from its input `x` and
/// the output's gradient `g`.
struct GeluErfGrad;

impl CustomOp2 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(input, input_layout, self.name())?;
        let g = f32_data(grad, grad_layout, self.name())?;
        if input_layout.shape() != grad_layout.shape() {
            bail!(
                "gelu-erf-grad: shapes {:?} and {:?}",
                input_layout.shape(),
                grad_layout.shape()
            )
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(out, (x, g))| gelu_backward(out, x, g));
        Ok((CpuStorage::F32(out), input_layout.shape().clone()))
    }
}

struct DropoutMask {
    p: f32,
    seed: u64,
}

impl CustomOp1 for DropoutMask {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(storage, layout, self.name())?;
        let scale = 1.0 / (1.0 - self.p);
        // An element is dropped when its 16 random bits are below this.
        let threshold = (self.p as f64 * 65_536.0).round() as u64;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(chunk, (out, x))| {
                let mut rng = SplitMix64::derive(self.seed, chunk as u64);
                for (out, x) in out.chunks_mut(4).zip(x.chunks(4)) {
                    let bits = rng.next_u64();
                    for (lane, (o, &x)) in out.iter_mut().zip(x).enumerate() {
                        let dropped = (bits >> (16 * lane)) & 0xFFFF < threshold;
                        *o = if dropped { 0.0 } else { x * scale };
                    }
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    /// The gradient through the same mask.
    fn bwd(&self, _x: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let same = DropoutMask {
            p: self.p,
            seed: self.seed,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&same)?))
    }
}

/// Rows per parallel task of the LayerNorm backward (each task sums its own share of
/// the gamma and beta gradients).
const NORM_ROWS: usize = 64;

struct LayerNorm {
    eps: f32,
}

impl LayerNorm {
    /// A row's mean and 1/√(var + eps).
    fn moments(&self, x: &[f32]) -> (f32, f32) {
        let n = x.len() as f32;
        let mean = x.iter().sum::<f32>() / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        gamma: &CpuStorage,
        gamma_layout: &Layout,
        beta: &CpuStorage,
        beta_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(x, x_layout, self.name())?;
        let gamma = f32_data(gamma, gamma_layout, self.name())?;
        let beta = f32_data(beta, beta_layout, self.name())?;
        let hidden = gamma.len();
        if hidden == 0 || beta.len() != hidden || x_layout.shape().dims().last() != Some(&hidden) {
            bail!(
                "layer-norm: input {:?}, gamma {:?}, beta {:?}",
                x_layout.shape(),
                gamma_layout.shape(),
                beta_layout.shape()
            )
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(hidden)
            .zip(x.par_chunks(hidden))
            .for_each(|(out, x)| {
                let (mean, rstd) = self.moments(x);
                for (((o, &x), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
                    *o = (x - mean) * rstd * g + b;
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let hidden = gamma.elem_count();
        let rows = x.elem_count() / hidden;
        // One packed result: the input's gradient rows, then gamma's, then beta's.
        let packed =
            x.apply_op3_no_bwd(gamma, &grad.contiguous()?, &LayerNormGrad { norm: self })?;
        let x_grad = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let gamma_grad = packed.get(rows)?;
        let beta_grad = packed.get(rows + 1)?;
        Ok((Some(x_grad), Some(gamma_grad), Some(beta_grad)))
    }
}

/// LayerNorm's backward from its input, gamma and the output's gradient `g`, with
/// `x̂ = (x − mean)·rstd`: the input's `rstd · (γg − mean(γg) − x̂ · mean(γg ⊙ x̂))`,
/// gamma's `Σ g ⊙ x̂` and beta's `Σ g` over the rows, packed as `(rows + 2, hidden)`.
struct LayerNormGrad<'a> {
    norm: &'a LayerNorm,
}

impl CustomOp3 for LayerNormGrad<'_> {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        gamma: &CpuStorage,
        gamma_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(x, x_layout, self.name())?;
        let gamma = f32_data(gamma, gamma_layout, self.name())?;
        let g = f32_data(grad, grad_layout, self.name())?;
        let hidden = gamma.len();
        if hidden == 0 || g.len() != x.len() || x.len() % hidden != 0 {
            bail!(
                "layer-norm-grad: input {:?}, gamma {hidden}",
                x_layout.shape()
            )
        }
        let rows = x.len() / hidden;
        let mut out = vec![0f32; x.len() + 2 * hidden];
        let (input_grad, param_grads) = out.split_at_mut(x.len());
        let task = NORM_ROWS * hidden;
        let partials: Vec<Vec<f32>> = input_grad
            .par_chunks_mut(task)
            .zip(x.par_chunks(task).zip(g.par_chunks(task)))
            .map(|(out, (x, g))| {
                // gamma's then beta's partial sums over this task's rows.
                let mut sums = vec![0f32; 2 * hidden];
                let (gamma_sum, beta_sum) = sums.split_at_mut(hidden);
                for (out, (x, g)) in out
                    .chunks_mut(hidden)
                    .zip(x.chunks(hidden).zip(g.chunks(hidden)))
                {
                    let (mean, rstd) = self.norm.moments(x);
                    let (mut mean_gg, mut mean_ggx) = (0f32, 0f32);
                    for i in 0..hidden {
                        let normed = (x[i] - mean) * rstd;
                        let gg = gamma[i] * g[i];
                        mean_gg += gg;
                        mean_ggx += gg * normed;
                        gamma_sum[i] += g[i] * normed;
                        beta_sum[i] += g[i];
                    }
                    mean_gg /= hidden as f32;
                    mean_ggx /= hidden as f32;
                    for i in 0..hidden {
                        let normed = (x[i] - mean) * rstd;
                        out[i] = rstd * (gamma[i] * g[i] - mean_gg - normed * mean_ggx);
                    }
                }
                sums
            })
            .collect();
        for sums in partials {
            param_grads
                .iter_mut()
                .zip(sums)
                .for_each(|(total, part)| *total += part);
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, hidden))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn masked_softmax_and_its_gradient_match_the_composite_operations() {
        let device = Device::Cpu;
        let (batch, heads, len) = (2, 3, 5);
        let values: Vec<f32> = (0..batch * heads * len * len)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
            .collect();
        let scores = Var::from_vec(values, (batch, heads, len, len), &device).unwrap();
        // The second sequence has two padded keys.
        let mask = Tensor::from_vec(
            vec![0f32, 0., 0., 0., 0., 0., 0., 0., f32::MIN, f32::MIN],
            (batch, len),
            &device,
        )
        .unwrap();
        let weights = Tensor::from_vec(
            (0..batch * heads * len * len)
                .map(|i| (i % 7) as f32 - 3.0)
                .collect::<Vec<f32>>(),
            (batch, heads, len, len),
            &device,
        )
        .unwrap();
        let scale = 0.125f32;

        let fused = masked_softmax(scores.as_tensor(), &mask, scale).unwrap();
        let shifted = (scores.as_tensor() * scale as f64)
            .unwrap()
            .broadcast_add(&mask.reshape((batch, 1, 1, len)).unwrap())
            .unwrap();
        let expected = candle_nn::ops::softmax(&shifted, D::Minus1).unwrap();
        assert!(max_abs_diff(&fused, &expected) < 1e-6);
        // Padded keys get exactly zero.
        let last = fused.get(1).unwrap().get(0).unwrap().get(0).unwrap();
        assert_eq!(last.to_vec1::<f32>().unwrap()[3..], [0.0, 0.0]);

        let fused_grad = (fused * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let expected_grad = (expected * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (
            fused_grad.get(&scores).unwrap(),
            expected_grad.get(&scores).unwrap(),
        );
        assert!(max_abs_diff(a, b) < 1e-5, "{}", max_abs_diff(a, b));
        assert!(
            b.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 1.0
        );
    }

    #[test]
    fn layer_norm_and_its_gradients_match_the_composite_operations() {
        let device = Device::Cpu;
        let (rows, hidden) = (150, 24);
        let x = Var::from_vec(
            (0..rows * hidden)
                .map(|i| ((i * 53 % 31) as f32 - 15.0) * 0.3)
                .collect::<Vec<f32>>(),
            (3, rows / 3, hidden),
            &device,
        )
        .unwrap();
        let gamma = Var::from_vec(
            (0..hidden)
                .map(|i| 0.5 + i as f32 * 0.1)
                .collect::<Vec<f32>>(),
            hidden,
            &device,
        )
        .unwrap();
        let beta = Var::from_vec(
            (0..hidden).map(|i| i as f32 * -0.05).collect::<Vec<f32>>(),
            hidden,
            &device,
        )
        .unwrap();
        let eps = 1e-12f32;
        let fused = layer_norm(x.as_tensor(), &gamma, &beta, eps).unwrap();
        let mean = x.as_tensor().mean_keepdim(D::Minus1).unwrap();
        let centered = x.as_tensor().broadcast_sub(&mean).unwrap();
        let var = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let expected = centered
            .broadcast_div(&(var + eps as f64).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&gamma)
            .unwrap()
            .broadcast_add(&beta)
            .unwrap();
        assert!(max_abs_diff(&fused, &expected) < 1e-5);
        let weights = (x.as_tensor().cos().unwrap() * 2.0).unwrap();
        let a = (fused * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let b = (expected * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for var in [&x, &gamma, &beta] {
            let (a, b) = (a.get(var).unwrap(), b.get(var).unwrap());
            assert_eq!(a.dims(), b.dims());
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let scale = scale.to_scalar::<f32>().unwrap();
            assert!(scale > 0.1);
            assert!(
                max_abs_diff(a, b) < 1e-5 * scale,
                "{} of {scale}",
                max_abs_diff(a, b)
            );
        }
    }

    #[test]
    fn dropout_masks_depend_on_the_seed_only_and_the_gradient_uses_the_same_mask() {
        let device = Device::Cpu;
        let x = Var::ones((10, 10_000), candle_core::DType::F32, &device).unwrap();
        let out = dropout(x.as_tensor(), 0.25, 7).unwrap();
        let mask = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / mask.len() as f64;
        assert!((dropped - 0.25).abs() < 0.01, "{dropped}");
        assert!(mask
            .iter()
            .all(|&m| m == 0.0 || (m - 4.0 / 3.0).abs() < 1e-6));
        let grad = out.sum_all().unwrap().backward().unwrap();
        let grad = grad
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(grad, mask);
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let again = one_thread.install(|| dropout(x.as_tensor(), 0.25, 7).unwrap());
        assert_eq!(again.flatten_all().unwrap().to_vec1::<f32>().unwrap(), mask);
        let other = dropout(x.as_tensor(), 0.25, 8).unwrap();
        assert_ne!(other.flatten_all().unwrap().to_vec1::<f32>().unwrap(), mask);
    }

    #[test]
    fn gelu_erf_and_its_gradient_match_candles() {
        let device = Device::Cpu;
        let values: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 3e-4).collect();
        let x = Var::from_vec(values, (200, 200), &device).unwrap();
        let fused = gelu_erf(x.as_tensor()).unwrap();
        let expected = x.as_tensor().gelu_erf().unwrap();
        assert!(max_abs_diff(&fused, &expected) < 1e-6);
        let weights = (x.as_tensor().sin().unwrap() + 0.5).unwrap();
        let a = (fused * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let b = (expected * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (a.get(&x).unwrap(), b.get(&x).unwrap());
        assert!(max_abs_diff(a, b) < 1e-5, "{}", max_abs_diff(a, b));
    }
}
