//! Search dispatch: HNSW walks where the collection has a graph (falling back to exact
//! scoring for selective filters or short results), exact top-k on the collection's GPU
//! or the CPU otherwise, with payload filters, candidate sets and exclusions applied.

use super::config::Config;
use super::state::State;
use super::Collection;
use crate::retrieval::error::StorageError;
use crate::retrieval::graph::Graph;
use crate::retrieval::payload::{CompiledFilter, Payload};
use marquee_kernels::search::{self, Corpus, DeviceCorpus, HostCorpus, SearchFilter};
use marquee_kernels::{CudaBackend, KernelError, Matrix};
use marquee_proto::v1::Metric;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

/// One ranked result.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredRow {
    /// Item id.
    pub id: String,
    /// Score (higher is better).
    pub score: f32,
    /// Payload, when asked for.
    pub payload: Option<Payload>,
}

/// A search over the collection.
pub struct Query<'a> {
    /// The query vector, already prepared with [`Collection::prepare_vector`].
    pub vector: &'a [f32],
    /// How many results.
    pub k: usize,
    /// Payload filter.
    pub filter: Option<&'a CompiledFilter>,
    /// Item ids that must not be returned.
    pub exclude: &'a [String],
    /// When given, only these item ids may be returned (e.g. an evaluation's catalog).
    pub only: Option<&'a HashSet<String>>,
    /// Whether results carry payloads.
    pub with_payload: bool,
}

impl State {
    /// Each row's rank by id (ties broken by row), computed once per change of the rows.
    fn tie_rank(&self) -> Arc<Vec<u32>> {
        let mut cached = self.tie_rank.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .get_or_insert_with(|| {
                let mut order: Vec<u32> = (0..self.ids.len() as u32).collect();
                order.sort_by(|&a, &b| {
                    self.ids[a as usize]
                        .cmp(&self.ids[b as usize])
                        .then(a.cmp(&b))
                });
                let mut rank = vec![0u32; order.len()];
                for (r, &row) in order.iter().enumerate() {
                    rank[row as usize] = r as u32;
                }
                Arc::new(rank)
            })
            .clone()
    }

    /// The rows in host memory with their rules: the L2 bias, ties by id.
    fn host_corpus<'a>(&'a self, config: &Config, tie_rank: &'a [u32]) -> HostCorpus<'a> {
        HostCorpus {
            rows: &self.vectors,
            half: self.half.as_ref(),
            row_bias: (config.metric == Metric::L2).then_some(self.l2_bias.as_slice()),
            tie_rank: Some(tie_rank),
        }
    }

    /// The rows (`host`) on `gpu`, uploaded on first use after a change.
    fn device_copy(
        &self,
        gpu: &CudaBackend,
        host: &HostCorpus<'_>,
    ) -> Result<Arc<DeviceCorpus>, KernelError> {
        let mut cached = self.device_copy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(copy) = cached.as_ref() {
            return Ok(copy.clone());
        }
        let copy = Arc::new(DeviceCorpus::upload(gpu, host)?);
        *cached = Some(copy.clone());
        Ok(copy)
    }
}

impl Collection {
    /// Runs several searches; each result is best first, ties by id.
    pub fn search_batch(&self, queries: &[Query<'_>]) -> Result<Vec<Vec<ScoredRow>>, StorageError> {
        let state = self.state();
        let dim = self.config.dimension;
        let tie_rank = state.tie_rank();
        let mut results = Vec::with_capacity(queries.len());
        let mut exact: Vec<usize> = Vec::new();
        for (qi, q) in queries.iter().enumerate() {
            let hits = match &state.graph {
                Some(graph) => self.graph_search(&state, graph, q, &tie_rank),
                None => None,
            };
            if hits.is_none() {
                exact.push(qi);
            }
            results.push(hits.unwrap_or_default());
        }
        if !exact.is_empty() {
            let k = exact.iter().map(|&qi| queries[qi].k).max().unwrap_or(0);
            let mut query_matrix = Vec::with_capacity(exact.len() * dim);
            let mut excluded = Vec::with_capacity(exact.len());
            for &qi in &exact {
                query_matrix.extend_from_slice(queries[qi].vector);
                let mut rows: Vec<u32> = queries[qi]
                    .exclude
                    .iter()
                    .filter_map(|id| state.rows.get(id).copied())
                    .collect();
                rows.sort_unstable();
                rows.dedup();
                excluded.push(rows);
            }
            // One filter and candidate set for the whole batch: a batch shares them.
            let (filter, only) = (queries[exact[0]].filter, queries[exact[0]].only);
            // Tombstones alone: the live mask is the allowed mask, no copy needed.
            let allowed: Option<Cow<'_, [bool]>> = if filter.is_some() || only.is_some() {
                Some(Cow::Owned(
                    (0..state.row_count())
                        .map(|r| {
                            state.live[r]
                                && filter.is_none_or(|f| f.matches(&state.payloads[r]))
                                && only.is_none_or(|o| o.contains(&state.ids[r]))
                        })
                        .collect(),
                ))
            } else {
                (state.dead > 0).then_some(Cow::Borrowed(state.live.as_slice()))
            };
            let host = state.host_corpus(&self.config, &tie_rank);
            let device_copy;
            let corpus = match &self.gpu {
                Some(gpu) => {
                    device_copy = state.device_copy(gpu, &host).map_err(StorageError::Gpu)?;
                    Corpus::Cuda {
                        device: &device_copy,
                        host,
                    }
                }
                None => Corpus::Cpu(host),
            };
            let query_matrix = Matrix {
                rows: exact.len(),
                cols: dim,
                data: query_matrix,
            };
            let filter = SearchFilter {
                allowed: allowed.as_deref(),
                excluded: Some(&excluded),
            };
            let hits =
                search::search(&corpus, &query_matrix, k, &filter).map_err(|e| match self.gpu {
                    Some(_) => StorageError::Gpu(e),
                    None => StorageError::CpuSearch(e),
                })?;
            for (&qi, hits) in exact.iter().zip(hits) {
                let q = &queries[qi];
                let q_norm2: f32 = q.vector.iter().map(|v| v * v).sum();
                results[qi] = hits
                    .into_iter()
                    .take(q.k)
                    .map(|h| {
                        let row = h.index as usize;
                        let score = match self.config.metric {
                            Metric::L2 => 2.0 * h.score - q_norm2,
                            _ => h.score,
                        };
                        self.scored(&state, row, score, q.with_payload)
                    })
                    .collect();
            }
        }
        Ok(results)
    }

    fn scored(&self, state: &State, row: usize, score: f32, with_payload: bool) -> ScoredRow {
        ScoredRow {
            id: state.ids[row].clone(),
            score,
            payload: with_payload.then(|| state.payloads[row].clone()),
        }
    }

    /// HNSW search; `None` asks for the exact path (selective filters, or fewer than k
    /// results where more eligible items exist).
    fn graph_search(
        &self,
        state: &State,
        graph: &Graph,
        q: &Query<'_>,
        tie_rank: &[u32],
    ) -> Option<Vec<ScoredRow>> {
        let excluded: HashSet<u32> = q
            .exclude
            .iter()
            .filter_map(|id| state.rows.get(id).copied())
            .collect();
        let keep = |row: usize| {
            state.live[row]
                && !excluded.contains(&(row as u32))
                && q.filter.is_none_or(|f| f.matches(&state.payloads[row]))
                && q.only.is_none_or(|o| o.contains(&state.ids[row]))
        };
        let restricted = q.filter.is_some() || q.only.is_some();
        let eligible = if restricted {
            (0..state.row_count()).filter(|&r| keep(r)).count()
        } else {
            state.rows.len().saturating_sub(excluded.len())
        };
        // A selective filter walks most of the graph for little: score directly.
        if restricted && eligible * 10 < state.rows.len() {
            return None;
        }
        let unfiltered = !restricted && excluded.is_empty() && state.dead == 0;
        let mut scored = graph.search(
            q.vector,
            &state.vectors.data,
            state.half.as_ref(),
            q.k,
            if unfiltered { None } else { Some(&keep) },
        );
        if scored.len() < q.k.min(eligible) {
            return None;
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(tie_rank[a.0].cmp(&tie_rank[b.0])));
        Some(
            scored
                .into_iter()
                .map(|(row, score)| self.scored(state, row, score, q.with_payload))
                .collect(),
        )
    }
}
