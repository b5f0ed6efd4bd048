//! Ranking a collection's items with embeddings from the weights being trained, by the
//! collection's metric, with the server's exact search: validation metrics and
//! hard-negative mining.

use super::{LabeledQuery, Metrics};
use crate::evaluation::{mean, query_metrics, Judged};
use marquee_kernels::search::{self, Corpus, HostCorpus, SearchFilter};
use marquee_kernels::Matrix;
use marquee_proto::v1::Metric;
use std::collections::HashSet;

/// Validation cut-offs (`EvaluateRetrieval`'s defaults).
pub(super) const CUTOFFS: [usize; 4] = [1, 5, 10, 25];

/// Item embeddings ready to be searched.
pub(super) struct ItemIndex {
    rows: Matrix,
    bias: Option<Vec<f32>>,
    metric: Metric,
}

/// `v` scaled to unit length (unchanged when zero).
fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

impl ItemIndex {
    /// `vectors`: one row of `dim` per item, in the items' order.
    pub(super) fn new(mut vectors: Vec<f32>, dim: usize, metric: Metric) -> Self {
        if metric == Metric::Cosine {
            vectors.chunks_mut(dim).for_each(normalize);
        }
        let bias = (metric == Metric::L2).then(|| {
            vectors
                .chunks(dim)
                .map(|r| -0.5 * r.iter().map(|x| x * x).sum::<f32>())
                .collect()
        });
        Self {
            rows: Matrix {
                rows: vectors.len() / dim.max(1),
                cols: dim,
                data: vectors,
            },
            bias,
            metric,
        }
    }

    /// The `k` best item rows of each query (rows of `queries`), best first.
    pub(super) fn top(&self, mut queries: Vec<f32>, k: usize) -> anyhow::Result<Vec<Vec<usize>>> {
        let dim = self.rows.cols;
        if self.metric == Metric::Cosine {
            queries.chunks_mut(dim).for_each(normalize);
        }
        let queries = Matrix {
            rows: queries.len() / dim.max(1),
            cols: dim,
            data: queries,
        };
        let corpus = Corpus::Cpu(HostCorpus {
            rows: &self.rows,
            half: None,
            row_bias: self.bias.as_deref(),
            tie_rank: None,
        });
        let hits = search::search(&corpus, &queries, k, &SearchFilter::default())?;
        Ok(hits
            .into_iter()
            .map(|h| h.into_iter().map(|hit| hit.index as usize).collect())
            .collect())
    }

    /// Items in the index.
    pub(super) fn len(&self) -> usize {
        self.rows.rows
    }
}

/// Mean metrics of `queries` (embedded as `query_vectors`) over the full ranking of the
/// items, whose ids are `ids`.
pub(super) fn validate(
    index: &ItemIndex,
    ids: &[String],
    queries: &[LabeledQuery],
    query_vectors: Vec<f32>,
) -> anyhow::Result<Metrics> {
    let rankings = index.top(query_vectors, index.len())?;
    let per_query: Vec<Metrics> = queries
        .iter()
        .zip(rankings)
        .map(|(q, ranking)| {
            let relevant: Vec<&str> = q.relevant.iter().map(String::as_str).collect();
            let judged = Judged::of(ranking.iter().map(|&r| ids[r].as_str()), &relevant);
            query_metrics(&judged, &CUTOFFS)
        })
        .collect();
    Ok(mean(&per_query))
}

/// For each query, the first `k` ranked items that are not relevant to it (item rows).
pub(super) fn mine(
    index: &ItemIndex,
    ids: &[String],
    queries: &[LabeledQuery],
    query_vectors: Vec<f32>,
    k: usize,
) -> anyhow::Result<Vec<Vec<usize>>> {
    let most_relevant = queries.iter().map(|q| q.relevant.len()).max().unwrap_or(0);
    let rankings = index.top(query_vectors, (k + most_relevant).min(index.len()))?;
    Ok(queries
        .iter()
        .zip(rankings)
        .map(|(q, ranking)| {
            let relevant: HashSet<&str> = q.relevant.iter().map(String::as_str).collect();
            ranking
                .into_iter()
                .filter(|&r| !relevant.contains(ids[r].as_str()))
                .take(k)
                .collect()
        })
        .collect())
}
