//! Encoder self-attention over a ragged batch. Each (sequence, head) is one task: its
//! keys and values packed once as the weights of two products (scores = queries ·
//! keysᵀ, context = probabilities · values), the queries taken in blocks of
//! [`QUERY_BLOCK`] so the block's scores stay in cache however long the sequence, and
//! the context written straight into the head's columns of the output.

use super::gemm::SharedMut;
use super::packed::{matmul_packed, PackedWeight, Rows};
use super::{simd, Matrix};
use crate::{shapes, Activation, Result, SeqOffsets};
use rayon::prelude::*;

/// Queries whose scores are computed and normalised together.
const QUERY_BLOCK: usize = 96;

/// Multi-head self-attention of [`crate::Backend::attention`] on the CPU.
pub(crate) fn attention(qkv: &Matrix, offsets: &SeqOffsets, heads: usize) -> Result<Matrix> {
    let (hidden, head_dim) = shapes::attention((qkv.rows, qkv.cols), offsets, heads)?;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = Matrix::zeros(qkv.rows, hidden);
    let out_ptr = SharedMut(out.data.as_mut_ptr());
    let tasks: Vec<(usize, usize, usize)> = offsets
        .windows(2)
        .filter(|w| w[1] > w[0])
        .flat_map(|w| (0..heads).map(move |h| (w[0], w[1] - w[0], h)))
        .collect();
    tasks
        .into_par_iter()
        .for_each_init(Vec::new, |scores, (start, len, h)| {
            let token = |t: usize| &qkv.data[(start + t) * qkv.cols..][..qkv.cols];
            let column = h * head_dim;
            let keys = PackedWeight::from_rows(len, head_dim, |t| {
                &token(t)[hidden + column..][..head_dim]
            });
            let values = PackedWeight::from_transposed_rows(head_dim, len, |t| {
                &token(t)[2 * hidden + column..][..head_dim]
            });
            for first in (0..len).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(len - first);
                scores.resize(rows * len, 0.0);
                // SAFETY: the queries are `rows` rows of `head_dim` values inside
                // `qkv`; `scores` holds `rows × len`; each task writes its own
                // (sequence, head) block of `out`.
                unsafe {
                    matmul_packed(
                        rows,
                        Rows {
                            ptr: token(first)[column..].as_ptr(),
                            row_stride: qkv.cols,
                        },
                        &keys,
                        None,
                        Activation::Identity,
                        Rows {
                            ptr: scores.as_mut_ptr(),
                            row_stride: len,
                        },
                        false,
                    );
                    simd::softmax_rows(scores, len, scale);
                    matmul_packed(
                        rows,
                        Rows {
                            ptr: scores.as_ptr(),
                            row_stride: len,
                        },
                        &values,
                        None,
                        Activation::Identity,
                        Rows {
                            ptr: out_ptr.get().add((start + first) * hidden + column),
                            row_stride: hidden,
                        },
                        false,
                    );
                }
            }
        });
    Ok(out)
}
