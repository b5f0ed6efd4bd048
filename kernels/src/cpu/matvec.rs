//! Linear layers on a few rows (a decode step's tokens, a short prompt): `x·Wᵀ + b` as
//! matrix-vector products that stream each weight row once, with SIMD, splitting the
//! output features across the rayon pool. A GEMM packs the whole weight for reuse that a
//! few rows cannot repay (from 2 to 32 rows the `gemm` crate spends most of its time
//! packing); such a layer is bound by reading the weights, which this path does once,
//! in order. [`linear`] picks it for up to [`FEW_ROWS`] rows and the GEMM
//! ([`linear_unpacked`]) above.

use super::{finish_linear, linear_dims, linear_unpacked, simd, Matrix};
use crate::{Activation, Result};
use rayon::prelude::*;

/// Most rows [`linear`] sends to the matrix-vector path.
pub const FEW_ROWS: usize = 32;

/// Weight values one rayon task reads (256 KiB of f32: enough to amortise scheduling,
/// small enough to balance the cores).
const VALUES_PER_TASK: usize = 65_536;

/// `activation(x·Wᵀ + b)` (`weight` is `out × in`, as [`Backend::linear`]): the
/// matrix-vector path for at most [`FEW_ROWS`] rows, the GEMM otherwise.
pub fn linear(
    x: &Matrix,
    weight: &Matrix,
    bias: Option<&Matrix>,
    activation: Activation,
) -> Result<Matrix> {
    if x.rows > FEW_ROWS {
        return linear_unpacked(x, weight, bias, activation);
    }
    linear_few_rows(x, weight, bias, activation)
}

/// `activation(x·Wᵀ + b)` by matrix-vector products, whatever the rows (meant for few).
pub fn linear_few_rows(
    x: &Matrix,
    weight: &Matrix,
    bias: Option<&Matrix>,
    activation: Activation,
) -> Result<Matrix> {
    let (m, k, n) = linear_dims(x, weight, bias)?;
    if m == 0 || k == 0 || n == 0 {
        return linear_unpacked(x, weight, bias, activation);
    }
    let per_task = (VALUES_PER_TASK / k).max(4) / 4 * 4;
    // Output features × rows: each task writes its features' block contiguously.
    let mut transposed = vec![0f32; n * m];
    transposed
        .par_chunks_mut(per_task * m)
        .zip(weight.data.par_chunks(per_task * k))
        .for_each(|(out, w)| simd::dot_block(w, &x.data, k, out));
    let data = if m == 1 {
        transposed
    } else {
        let mut data = vec![0f32; m * n];
        for (i, features) in transposed.chunks_exact(m).enumerate() {
            for (r, &v) in features.iter().enumerate() {
                data[r * n + i] = v;
            }
        }
        data
    };
    Ok(finish_linear(m, n, data, bias, activation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: f32) -> Matrix {
        Matrix {
            rows,
            cols,
            data: (0..rows * cols)
                .map(|i| (i as f32 * 0.731 + seed).sin() * 1.7)
                .collect(),
        }
    }

    /// `x·Wᵀ + b` in f64, row by row.
    fn reference(x: &Matrix, w: &Matrix, b: Option<&Matrix>) -> Vec<f64> {
        let mut out = Vec::new();
        for r in 0..x.rows {
            for i in 0..w.rows {
                let d: f64 = (0..x.cols)
                    .map(|j| x.row(r)[j] as f64 * w.row(i)[j] as f64)
                    .sum();
                out.push(d + b.map_or(0.0, |b| b.data[i] as f64));
            }
        }
        out
    }

    #[test]
    fn few_rows_match_a_float64_product_for_odd_shapes() {
        // Output features not a multiple of 4 or of a task, inputs not a multiple of
        // the vector width, 1 to 8 rows (quads, pairs and a single row of the input).
        for (m, k, n) in [
            (1, 37, 5),
            (3, 896, 131),
            (8, 19, 1030),
            (2, 4864, 7),
            (7, 37, 9),
            (6, 70, 13),
            (5, 16, 8),
        ] {
            let (x, w, b) = (matrix(m, k, 0.3), matrix(n, k, 1.1), matrix(1, n, 2.0));
            let ours = linear(&x, &w, Some(&b), Activation::Identity).unwrap();
            assert_eq!((ours.rows, ours.cols), (m, n));
            let want = reference(&x, &w, Some(&b));
            let worst = ours
                .data
                .iter()
                .zip(&want)
                .map(|(o, w)| (*o as f64 - w).abs() / (1.0 + w.abs()))
                .fold(0.0, f64::max);
            assert!(worst < 1e-5, "{m}x{k}x{n}: relative error {worst}");
        }
    }

    #[test]
    fn few_rows_agree_with_the_gemm_and_apply_the_activation() {
        let (x, w, b) = (
            matrix(4, 200, 0.5),
            matrix(70, 200, 0.9),
            matrix(1, 70, 0.1),
        );
        let ours = linear_few_rows(&x, &w, Some(&b), Activation::Gelu).unwrap();
        let gemm = linear_unpacked(&x, &w, Some(&b), Activation::Gelu).unwrap();
        for (o, g) in ours.data.iter().zip(&gemm.data) {
            assert!((o - g).abs() < 1e-4, "{o} vs {g}");
        }
        // More rows than FEW_ROWS go to the GEMM: the same figures.
        let many = matrix(FEW_ROWS + 1, 200, 0.5);
        let routed = linear(&many, &w, None, Activation::Identity).unwrap();
        assert_eq!(
            routed,
            linear_unpacked(&many, &w, None, Activation::Identity).unwrap()
        );
    }

    #[test]
    fn shape_errors_are_reported() {
        let err = linear(
            &matrix(1, 3, 0.0),
            &matrix(2, 4, 0.0),
            None,
            Activation::Identity,
        );
        assert!(err.is_err());
    }
}
