//! The ops of decoder-style transformers (Qwen2 / Qwen2.5-VL) beyond the GEMMs:
//! RMSNorm, SwiGLU's gate, rotary embeddings (M-RoPE is rotary with per-row cos/sin),
//! and softmax attention of one query over keys, or within segments of rows. All
//! compute in f32, in the order PyTorch does, on row-major matrices.

use super::Matrix;
use rayon::prelude::*;

/// `Qwen2RMSNorm`: each row `x · rsqrt(mean(x²) + eps) · weight`, into a new matrix.
pub fn rms_norm(x: &Matrix, weight: &[f32], eps: f32) -> Matrix {
    let mut out = x.clone();
    rms_norm_in_place(&mut out, weight, eps);
    out
}

/// [`rms_norm`] in place.
pub fn rms_norm_in_place(x: &mut Matrix, weight: &[f32], eps: f32) {
    let cols = x.cols;
    x.data.par_chunks_mut(cols).for_each(|row| {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = w * (*v * inv);
        }
    });
}

/// `silu(gate) · up` element-wise, into `gate`.
pub fn silu_mul(gate: &mut Matrix, up: &Matrix) {
    gate.data
        .par_iter_mut()
        .zip(up.data.par_iter())
        .for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u);
}

/// `x += y` element-wise.
pub fn add_in_place(x: &mut Matrix, y: &Matrix) {
    x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
}

/// Applies a rotary embedding in place to the `heads` heads of `head_dim` values that
/// start at column `offset` of every row: `x·cos + rotate_half(x)·sin`, with row `r`'s
/// `cos`/`sin` the `head_dim` values at `r·head_dim` of `cos` / `sin`.
pub fn apply_rotary(
    x: &mut Matrix,
    offset: usize,
    heads: usize,
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
) {
    let half = head_dim / 2;
    let cols = x.cols;
    x.data
        .par_chunks_mut(cols)
        .enumerate()
        .for_each(|(r, row)| {
            let (c, s) = (
                &cos[r * head_dim..][..head_dim],
                &sin[r * head_dim..][..head_dim],
            );
            for h in 0..heads {
                let v = &mut row[offset + h * head_dim..][..head_dim];
                for i in 0..half {
                    let (a, b) = (v[i], v[i + half]);
                    v[i] = a * c[i] + -b * s[i];
                    v[i + half] = b * c[i + half] + a * s[i + half];
                }
            }
        });
}

/// Softmax attention of one query against `keys` keys, writing `head_dim` values to
/// `out`: `key(j)` / `value(j)` give key and value `j`, scores are `q·k · scale`.
#[inline]
pub fn attend<'a>(
    query: &[f32],
    keys: usize,
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    for j in 0..keys {
        let s = super::simd::dot(query, key(j)) * scale;
        max = max.max(s);
        scores.push(s);
    }
    let mut total = 0.0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    out.fill(0.0);
    for (j, s) in scores.iter().enumerate() {
        let w = s / total;
        for (o, v) in out.iter_mut().zip(value(j)) {
            *o += w * v;
        }
    }
}

/// Bidirectional multi-head attention within each segment `segments[i]..segments[i+1]`
/// of the rows of `qkv` (query, key and value side by side, `heads · head_dim` each, as
/// the vision tower's fused projection gives them). Returns `rows × heads·head_dim`.
pub fn segment_attention(
    qkv: &Matrix,
    segments: &[usize],
    heads: usize,
    head_dim: usize,
) -> Matrix {
    let width = heads * head_dim;
    let mut out = Matrix::zeros(qkv.rows, width);
    let scale = (head_dim as f32).powf(-0.5);
    let row_segment: Vec<(usize, usize)> = segments
        .windows(2)
        .flat_map(|w| (w[0]..w[1]).map(move |_| (w[0], w[1])))
        .collect();
    out.data
        .par_chunks_mut(width)
        .enumerate()
        .for_each_init(Vec::new, |scores, (r, out_row)| {
            let (start, end) = row_segment[r];
            for h in 0..heads {
                let q = &qkv.row(r)[h * head_dim..][..head_dim];
                attend(
                    q,
                    end - start,
                    |j| &qkv.row(start + j)[width + h * head_dim..][..head_dim],
                    |j| &qkv.row(start + j)[2 * width + h * head_dim..][..head_dim],
                    scale,
                    scores,
                    &mut out_row[h * head_dim..][..head_dim],
                );
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_scales_rows_to_unit_rms() {
        let x = Matrix {
            rows: 1,
            cols: 2,
            data: vec![3.0, 4.0],
        };
        let y = rms_norm(&x, &[1.0, 2.0], 0.0);
        let rms = (12.5f32).sqrt();
        assert!((y.data[0] - 3.0 / rms).abs() < 1e-6);
        assert!((y.data[1] - 8.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn attention_of_one_key_returns_its_value() {
        let qkv = Matrix {
            rows: 1,
            cols: 6,
            data: vec![1.0, 0.0, 0.5, 0.5, 7.0, -3.0],
        };
        let out = segment_attention(&qkv, &[0, 1], 1, 2);
        assert_eq!(out.data, vec![7.0, -3.0]);
    }
}
