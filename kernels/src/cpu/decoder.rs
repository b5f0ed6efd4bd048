//! The ops of decoder-style transformers (Qwen2 / Qwen2.5-VL) beyond the GEMMs:
//! RMSNorm, SwiGLU's gate, rotary embeddings (M-RoPE is rotary with per-row cos/sin),
//! softmax attention of one query over keys, or within segments of rows, causal
//! attention of a prefill's rows as matrix products, and decode attention over a paged
//! KV cache (the reference of the CUDA kernels). All compute in f32, in the order
//! PyTorch does, on row-major matrices.

use super::gemm::SharedMut;
use super::packed::{matmul_packed, PackedWeight, Rows};
use super::{simd, Matrix};
use crate::{Activation, Result};
use rayon::prelude::*;
use std::ops::Range;

/// Query rows of one head whose scores [`causal_attention`] computes and normalises
/// together.
const QUERY_BLOCK: usize = 64;

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
    let chunk = super::rows_per_task(1);
    gate.data
        .par_chunks_mut(chunk)
        .zip(up.data.par_chunks(chunk))
        .for_each(|(g, u)| simd::silu_mul(g, u));
}

/// SwiGLU's gate on stacked projections: row `r` of the result is
/// `silu(gate) · up`, `gate` and `up` the first and second halves of `gate_up`'s row `r`.
///
/// # Panics
/// When `gate_up` has an odd number of columns.
pub fn silu_mul_halves(gate_up: &Matrix) -> Matrix {
    assert!(
        gate_up.cols.is_multiple_of(2),
        "gate and up must be of one width"
    );
    let width = gate_up.cols / 2;
    let mut out = Matrix::zeros(gate_up.rows, width);
    out.data
        .par_chunks_mut(width.max(1))
        .zip(gate_up.data.par_chunks(gate_up.cols.max(1)))
        .for_each(|(out, row)| {
            let (gate, up) = row.split_at(width);
            out.copy_from_slice(gate);
            simd::silu_mul(out, up);
        });
    out
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
    out.fill(0.0);
    if keys == 0 {
        return;
    }
    scores.extend((0..keys).map(|j| simd::dot(query, key(j))));
    simd::softmax_rows(scores, keys, scale);
    for (j, &w) in scores.iter().enumerate() {
        simd::axpy(out, w, value(j));
    }
}

/// Causal attention of one sequence's new tokens: rows `rows` of `qkv` (each row its
/// `heads · head_dim` query values from column 0), at positions `past..past +
/// rows.len()`, against the sequence's first `past + rows.len()` keys and values
/// (`key(j)` / `value(j)`: token `j`'s, every KV head side by side), written to the same
/// rows of `out` (`heads · head_dim` wide). Each KV head's keys and values are packed
/// once; every query head of its group multiplies them [`QUERY_BLOCK`] rows at a time,
/// scores and then probabilities against values as two products, a row's scores past
/// its own position zeroed after its softmax. A prefill's attention then runs at the
/// products' speed instead of one dot product per key.
///
/// # Panics
/// When `rows` is past the end of `qkv` or `out`, or `out` is not `heads · head_dim`
/// wide.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention<'a>(
    qkv: &Matrix,
    rows: Range<usize>,
    past: usize,
    layout: HeadLayout,
    key: impl Fn(usize) -> &'a [f32] + Sync,
    value: impl Fn(usize) -> &'a [f32] + Sync,
    scale: f32,
    out: &mut Matrix,
) {
    let HeadLayout {
        heads,
        kv_heads,
        head_dim,
    } = layout;
    let width = heads * head_dim;
    assert!(rows.end <= qkv.rows && qkv.cols >= width);
    assert!(rows.end <= out.rows && out.cols == width);
    let (group, tokens) = (heads / kv_heads, past + rows.len());
    let packed: Vec<(PackedWeight, PackedWeight)> = (0..kv_heads)
        .into_par_iter()
        .map(|kv| {
            let column = kv * head_dim;
            (
                PackedWeight::from_rows(tokens, head_dim, |j| &key(j)[column..][..head_dim]),
                PackedWeight::from_transposed_rows(head_dim, tokens, |j| {
                    &value(j)[column..][..head_dim]
                }),
            )
        })
        .collect();
    let blocks = rows.len().div_ceil(QUERY_BLOCK);
    let dst = SharedMut(out.data.as_mut_ptr());
    (0..heads * blocks)
        .into_par_iter()
        .for_each_init(Vec::new, |scores, task| {
            let (h, first) = (task / blocks, task % blocks * QUERY_BLOCK);
            let (keys, values) = &packed[h / group];
            let n = QUERY_BLOCK.min(rows.len() - first);
            let row = rows.start + first;
            scores.resize(n * tokens, 0.0);
            // SAFETY: the queries are `n` rows of `head_dim` values inside `qkv` (checked
            // above); `scores` holds `n × tokens`.
            unsafe {
                matmul_packed(
                    n,
                    Rows {
                        ptr: qkv.data[row * qkv.cols + h * head_dim..].as_ptr(),
                        row_stride: qkv.cols,
                    },
                    keys,
                    None,
                    Activation::Identity,
                    Rows {
                        ptr: scores.as_mut_ptr(),
                        row_stride: tokens,
                    },
                    false,
                );
            }
            for (i, scores) in scores.chunks_exact_mut(tokens).enumerate() {
                let visible = past + first + i + 1;
                simd::softmax_rows(&mut scores[..visible], visible, scale);
                scores[visible..].fill(0.0);
            }
            // SAFETY: `scores` is `n × tokens`; each task writes its own head's columns
            // of its own rows of `out` (checked above), which outlives the tasks.
            unsafe {
                matmul_packed(
                    n,
                    Rows {
                        ptr: scores.as_ptr(),
                        row_stride: tokens,
                    },
                    values,
                    None,
                    Activation::Identity,
                    Rows {
                        ptr: dst.get().add(row * width + h * head_dim),
                        row_stride: width,
                    },
                    false,
                );
            }
        });
}

/// Bidirectional multi-head attention within each segment `segments[i]..segments[i+1]`
/// of the rows of `qkv` (query, key and value side by side, `heads · head_dim` each, as
/// the vision tower's fused projection gives them): the encoders' attention, as packed
/// products per segment and head. Returns `rows × heads·head_dim`.
pub fn segment_attention(qkv: &Matrix, segments: &[usize], heads: usize) -> Result<Matrix> {
    super::attention::attention(qkv, segments, heads)
}

/// The attention heads of a decoder layer: `heads` query heads share `kv_heads` key/value
/// heads in groups of `heads / kv_heads` (GQA), each `head_dim` wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLayout {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (a divisor of `heads`).
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

/// Where the cached tokens of a batch of sequences live in a paged KV cache whose
/// layers are `[num_blocks · block_size, kv_heads · head_dim]` matrices: sequence `i`'s
/// token `j` sits in row `tables[i][j / block_size] · block_size + j % block_size`.
#[derive(Clone, Copy, Debug)]
pub struct BlockTables<'a> {
    /// Token slots per block.
    pub block_size: usize,
    /// Each sequence's blocks, in order.
    pub tables: &'a [Vec<u32>],
    /// Each sequence's cached tokens (its context length).
    pub context_lens: &'a [usize],
}

impl BlockTables<'_> {
    /// The cache row of token `pos` of sequence `seq`.
    #[inline]
    pub fn slot(&self, seq: usize, pos: usize) -> usize {
        self.tables[seq][pos / self.block_size] as usize * self.block_size + pos % self.block_size
    }
}

/// `cache.row(slots[r]) ← rows.row(r)` for every row: storing new keys or values in
/// their paged-cache slots.
pub fn scatter_rows(cache: &mut Matrix, rows: &Matrix, slots: &[u32]) {
    let cols = cache.cols;
    for (row, &slot) in rows.data.chunks_exact(cols).zip(slots) {
        cache.data[slot as usize * cols..][..cols].copy_from_slice(row);
    }
}

/// Decode attention over a paged KV cache: row `i` of `q` (`heads · head_dim` wide)
/// is sequence `i`'s one new query, attending to its `context_lens[i]` cached tokens in
/// `keys` / `values` (one layer's cache); query head `h` reads KV head
/// `h / (heads / kv_heads)`. Returns `sequences × heads·head_dim`.
pub fn paged_decode_attention(
    q: &Matrix,
    keys: &Matrix,
    values: &Matrix,
    tables: &BlockTables<'_>,
    layout: HeadLayout,
    scale: f32,
) -> Matrix {
    let HeadLayout {
        heads,
        kv_heads,
        head_dim,
    } = layout;
    let group = heads / kv_heads;
    let mut out = Matrix::zeros(q.rows, heads * head_dim);
    out.data
        .par_chunks_mut(heads * head_dim)
        .enumerate()
        .for_each_init(Vec::new, |scores, (seq, out_row)| {
            for h in 0..heads {
                let kv = (h / group) * head_dim;
                attend(
                    &q.row(seq)[h * head_dim..][..head_dim],
                    tables.context_lens[seq],
                    |j| &keys.row(tables.slot(seq, j))[kv..][..head_dim],
                    |j| &values.row(tables.slot(seq, j))[kv..][..head_dim],
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
        let out = segment_attention(&qkv, &[0, 1], 1).unwrap();
        assert_eq!(out.data, vec![7.0, -3.0]);
    }

    #[test]
    fn paged_attention_reads_each_sequence_through_its_block_table() {
        // 4 blocks of 2 slots, width 2 (one KV head of 2 values); two query heads share it.
        let keys = Matrix {
            rows: 8,
            cols: 2,
            data: (0..16).map(|v| (v % 5) as f32 * 0.3).collect(),
        };
        let values = Matrix {
            rows: 8,
            cols: 2,
            data: (0..16).map(|v| v as f32).collect(),
        };
        let q = Matrix {
            rows: 2,
            cols: 4,
            data: vec![0.5, -1.0, 2.0, 0.25, 1.0, 1.0, -1.0, 0.0],
        };
        let tables = [vec![3, 0], vec![1]];
        let tables = BlockTables {
            block_size: 2,
            tables: &tables,
            context_lens: &[3, 1],
        };
        let layout = HeadLayout {
            heads: 2,
            kv_heads: 1,
            head_dim: 2,
        };
        let out = paged_decode_attention(&q, &keys, &values, &tables, layout, 0.5);
        // Sequence 0 reads slots 6, 7, 0; sequence 1 only slot 2.
        let mut want = vec![0.0; 2];
        let mut scores = Vec::new();
        attend(
            &q.data[2..4],
            3,
            |j| keys.row([6, 7, 0][j]),
            |j| values.row([6, 7, 0][j]),
            0.5,
            &mut scores,
            &mut want,
        );
        assert_eq!(&out.data[2..4], &want[..]);
        assert_eq!(&out.data[4..8], &[4.0, 5.0, 4.0, 5.0]);
    }

    #[test]
    fn causal_attention_matches_one_query_at_a_time() {
        // 70 new rows (two query blocks) after 9 cached tokens; 4 query heads share 2 KV
        // heads of 40 values (a panel and a part); keys and values of the 79 tokens.
        let layout = HeadLayout {
            heads: 4,
            kv_heads: 2,
            head_dim: 40,
        };
        let (past, rows, width, kv_width) = (9, 70, 160, 80);
        let wave =
            |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * f).sin()).collect() };
        let keys = wave((past + rows) * kv_width, 0.37);
        let values = wave((past + rows) * kv_width, 0.11);
        // Two leading rows of another sequence, so the rows start at 2.
        let qkv = Matrix {
            rows: rows + 2,
            cols: width + 2 * kv_width,
            data: wave((rows + 2) * (width + 2 * kv_width), 0.23),
        };
        let key = |j: usize| &keys[j * kv_width..][..kv_width];
        let value = |j: usize| &values[j * kv_width..][..kv_width];
        let mut out = Matrix::zeros(rows + 2, width);
        causal_attention(&qkv, 2..rows + 2, past, layout, key, value, 0.3, &mut out);
        assert!(out.data[..2 * width].iter().all(|&v| v == 0.0));
        let mut scores = Vec::new();
        let mut want = vec![0.0; 40];
        for r in 0..rows {
            for h in 0..4 {
                let kv = h / 2 * 40;
                attend(
                    &qkv.row(r + 2)[h * 40..][..40],
                    past + r + 1,
                    |j| &key(j)[kv..][..40],
                    |j| &value(j)[kv..][..40],
                    0.3,
                    &mut scores,
                    &mut want,
                );
                for (got, want) in out.row(r + 2)[h * 40..][..40].iter().zip(&want) {
                    assert!((got - want).abs() < 1e-5, "row {r} head {h}: {got} {want}");
                }
            }
        }
    }

    #[test]
    fn scatter_rows_fills_the_named_slots_only() {
        let mut cache = Matrix::zeros(4, 2);
        let rows = Matrix {
            rows: 2,
            cols: 2,
            data: vec![1.0, 2.0, 3.0, 4.0],
        };
        scatter_rows(&mut cache, &rows, &[3, 1]);
        assert_eq!(cache.data, vec![0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 1.0, 2.0]);
    }
}
