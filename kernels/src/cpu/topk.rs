//! Exact top-K on the CPU: the f16 shortlist for a few queries, otherwise blocks of
//! corpus rows scored by one GEMM for all queries, then selected per query.

use super::gemm::{gemm_parallelism, matmul, View};
use super::shortlist;
use super::Matrix;
use crate::search::{Hit, TopK, TopKOptions};
use crate::Result;
use rayon::prelude::*;

/// Scores checked together against a selection's threshold before one by one.
const SELECT_CHUNK: usize = 16;

/// Largest of a few scores (NaN-free scores; a NaN never raises the result).
#[inline]
fn chunk_max(scores: &[f32]) -> f32 {
    scores
        .iter()
        .fold(f32::NEG_INFINITY, |m, &s| if s > m { s } else { m })
}

/// Most queries searched through an f16 shortlist ([`TopKOptions::shortlist`]); more
/// queries share one f32 pass, where arithmetic, not reading the corpus, is the bound.
const SHORTLIST_MAX_QUERIES: usize = 8;

/// Corpus rows scored per block in [`top_k_dot`], bounding the score buffer.
const TOPK_BLOCK_ROWS: usize = 4_096;

/// For each query row, the `k` eligible corpus rows with the best score (see
/// [`crate::Backend::top_k_dot`]).
pub(crate) fn top_k_dot(
    queries: &Matrix,
    corpus: &Matrix,
    k: usize,
    options: &TopKOptions<'_>,
) -> Result<Vec<Vec<Hit>>> {
    options.check((queries.rows, queries.cols), (corpus.rows, corpus.cols))?;
    let (nq, dim) = (queries.rows, queries.cols);
    let mut selections: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    if nq == 0 || k == 0 || corpus.rows == 0 {
        return Ok(selections.into_iter().map(TopK::into_sorted).collect());
    }
    if let Some(copy) = options.shortlist.filter(|_| nq <= SHORTLIST_MAX_QUERIES) {
        return Ok(shortlist::top_k_dot(queries, corpus, copy, k, options));
    }
    let mut scores = vec![0.0f32; nq * TOPK_BLOCK_ROWS.min(corpus.rows)];
    for block_start in (0..corpus.rows).step_by(TOPK_BLOCK_ROWS) {
        let block = TOPK_BLOCK_ROWS.min(corpus.rows - block_start);
        // SAFETY: `scores` holds nq × block values; the corpus view covers `block` rows.
        unsafe {
            matmul(
                nq,
                block,
                dim,
                scores.as_mut_ptr(),
                block as isize,
                View {
                    ptr: queries.data.as_ptr(),
                    row_stride: dim as isize,
                    col_stride: 1,
                },
                View {
                    ptr: corpus.data.as_ptr().add(block_start * dim),
                    row_stride: 1,
                    col_stride: dim as isize,
                },
                gemm_parallelism(nq, block, dim),
            );
        }
        selections
            .par_iter_mut()
            .zip(scores.par_chunks(block))
            .enumerate()
            .for_each(|(q, (selection, row_scores))| {
                let excluded = options.excluded.map(|e| e[q].as_slice()).unwrap_or(&[]);
                let mut skip = excluded.partition_point(|&r| (r as usize) < block_start);
                for (c, chunk) in row_scores.chunks(SELECT_CHUNK).enumerate() {
                    // Without a row bias, a chunk whose best score is under the
                    // selection's threshold holds nothing that could enter it.
                    if options.row_bias.is_none() && chunk_max(chunk) < selection.threshold() {
                        continue;
                    }
                    for (j, &s) in chunk.iter().enumerate() {
                        let i = c * SELECT_CHUNK + j;
                        let row = block_start + i;
                        while excluded.get(skip).is_some_and(|&r| (r as usize) < row) {
                            skip += 1;
                        }
                        if excluded.get(skip) == Some(&(row as u32)) {
                            continue;
                        }
                        if options.allowed.is_some_and(|a| !a[row]) {
                            continue;
                        }
                        let score = s + options.row_bias.map_or(0.0, |b| b[row]);
                        let tie = options.tie_rank.map_or(row as u32, |t| t[row]);
                        selection.push(row as u32, score, tie);
                    }
                }
            });
    }
    Ok(selections.into_iter().map(TopK::into_sorted).collect())
}
