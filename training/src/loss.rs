//! Contrastive loss over in-batch negatives, as sentence-transformers'
//! `MultipleNegativesRankingLoss` (InfoNCE).

use crate::model::l2_normalize;
use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};

/// sentence-transformers' default scale (inverse temperature 1/0.05).
pub const DEFAULT_SCALE: f64 = 20.0;

/// `MultipleNegativesRankingLoss`: with `queries` `(n, d)`, `docs` `(n, d)` (doc `i`
/// is query `i`'s positive) and optional `hard_negatives` `(m, d)` appended as extra
/// columns, `scores = scale · cos(query_i, candidate_j)` and the loss is the mean
/// cross-entropy of each row against column `i`.
pub fn multiple_negatives_ranking_loss(
    queries: &Tensor,
    docs: &Tensor,
    hard_negatives: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (n, _) = queries.dims2()?;
    ensure!(
        docs.dims2()?.0 == n,
        "{} docs for {n} queries",
        docs.dims2()?.0
    );
    let candidates = match hard_negatives {
        Some(neg) => Tensor::cat(&[docs, neg], 0)?,
        None => docs.clone(),
    };
    let scores = (l2_normalize(queries)?.matmul(&l2_normalize(&candidates)?.t()?)? * scale)?;
    let labels = Tensor::arange(0u32, n as u32, queries.device())?;
    Ok(candle_nn::loss::cross_entropy(
        &scores.to_dtype(DType::F32)?,
        &labels,
    )?)
}
