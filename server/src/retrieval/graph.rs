//! The HNSW index: built by `hnsw_rs` (with Marquee's own distance, which never asserts
//! on unnormalised vectors), searched through a [`FrozenGraph`] copy refreshed after
//! inserts. `hnsw_rs` has no delete: rows are tombstoned by the caller's filter, and the
//! graph is rebuilt when the collection compacts.

use super::frozen::FrozenGraph;
use hnsw_rs::prelude::{Distance, Hnsw};
use marquee_kernels::HalfCopy;
use marquee_proto::v1::Metric;
use std::sync::{Arc, RwLock};

/// Most links per node `hnsw_rs` accepts (it exits the process above this).
pub const MAX_M: usize = 256;

/// Distance matching a collection's score: lower distance ⇔ higher score.
#[derive(Clone, Copy, Debug)]
pub struct ScoreDistance {
    metric: Metric,
}

impl Distance<f32> for ScoreDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let dot = || marquee_kernels::dot(a, b);
        match self.metric {
            Metric::L2 => marquee_kernels::squared_l2(a, b),
            // `hnsw_rs` asserts distances are >= 0. Raw inner products get a strictly
            // decreasing, positive, non-saturating map of the dot product.
            Metric::InnerProduct => {
                let d = dot();
                if d <= 0.0 {
                    1.0 - d
                } else {
                    1.0 / (1.0 + d)
                }
            }
            // Unit vectors: the cosine distance, clamped against rounding below 0.
            _ => (1.0 - dot()).max(0.0),
        }
    }
}

/// HNSW build and search parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node.
    pub m: usize,
    /// Candidate list while building.
    pub ef_construction: usize,
    /// Candidate list while searching.
    pub ef_search: usize,
}

/// A navigable small-world graph over a collection's rows (data id = row).
pub struct Graph {
    hnsw: Hnsw<'static, f32, ScoreDistance>,
    params: HnswParams,
    metric: Metric,
    /// The searchable copy; `None` after inserts until the next search freezes it again.
    frozen: RwLock<Option<Arc<FrozenGraph>>>,
}

impl Graph {
    /// Builds a graph over `rows` (row number, vector), inserting in parallel.
    pub fn build(
        params: HnswParams,
        metric: Metric,
        rows: &[(usize, &[f32])],
        capacity: usize,
    ) -> Self {
        let layers = 16;
        let hnsw = Hnsw::new(
            params.m.min(MAX_M),
            capacity.max(1024),
            layers,
            params.ef_construction,
            ScoreDistance { metric },
        );
        let graph = Self {
            hnsw,
            params,
            metric,
            frozen: RwLock::new(None),
        };
        graph.insert(rows);
        graph
    }

    /// Adds rows (in parallel when there are several).
    pub fn insert(&self, mut rows: &[(usize, &[f32])]) {
        // `hnsw_rs` links nothing to a point that finds no entry point, and a point
        // inserted alongside the first one can: the pair would stay unreachable. The
        // first point of an empty graph goes in alone.
        if self.hnsw.get_nb_point() == 0 {
            if let Some((&(row, v), rest)) = rows.split_first() {
                self.hnsw.insert_slice((v, row));
                rows = rest;
            }
        }
        match rows {
            [] => {}
            [(row, v)] => self.hnsw.insert_slice((v, *row)),
            _ => {
                let batch: Vec<(&[f32], usize)> = rows.iter().map(|&(row, v)| (v, row)).collect();
                self.hnsw.parallel_insert_slice(&batch);
            }
        }
        *self.frozen.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The searchable copy for a matrix of `rows` rows, frozen now if stale.
    fn frozen(&self, rows: usize) -> Arc<FrozenGraph> {
        if let Some(f) = self
            .frozen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Arc::clone(f);
        }
        let mut slot = self.frozen.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slot.get_or_insert_with(|| Arc::new(FrozenGraph::freeze(&self.hnsw, rows))))
    }

    /// Up to `k` rows accepted by `keep` (all rows when `None`) with their f32 scores
    /// (the dot product, or the negated squared L2 distance), best first, with the
    /// built-in `ef_search`. `vectors` is the collection's row-major matrix.
    pub fn search(
        &self,
        query: &[f32],
        vectors: &[f32],
        half: Option<&HalfCopy>,
        k: usize,
        keep: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<(usize, f32)> {
        self.search_with_ef(query, vectors, half, k, self.params.ef_search, keep)
    }

    /// [`Graph::search`] with an explicit candidate list size (raised to `k`).
    pub fn search_with_ef(
        &self,
        query: &[f32],
        vectors: &[f32],
        half: Option<&HalfCopy>,
        k: usize,
        ef: usize,
        keep: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<(usize, f32)> {
        let dim = query.len().max(1);
        let frozen = self.frozen(vectors.len() / dim);
        let row = |r: usize| &vectors[r * dim..(r + 1) * dim];
        // Any order-preserving distance will do for the walk. Dot-product metrics walk
        // on the f16 rows when there are some (half the bytes per hop), keep up to 2k
        // of the candidates, and rank those by their f32 scores.
        match half.filter(|_| self.metric != Metric::L2) {
            Some(half) => {
                let found = frozen.search(
                    (2 * k).min(ef.max(k)),
                    ef,
                    |r| -half.dot(query, r),
                    |r| prefetch_lines(half.row_bits(r)),
                    keep,
                );
                let mut scored: Vec<(usize, f32)> = found
                    .into_iter()
                    .map(|(r, _)| (r, marquee_kernels::dot(query, row(r))))
                    .collect();
                scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                scored.truncate(k);
                scored
            }
            // The f32 walk's distances are the negated scores.
            None => frozen
                .search(
                    k,
                    ef,
                    |r| match self.metric {
                        Metric::L2 => marquee_kernels::squared_l2(query, row(r)),
                        _ => -marquee_kernels::dot(query, row(r)),
                    },
                    |r| prefetch_lines(row(r)),
                    keep,
                )
                .into_iter()
                .map(|(r, distance)| (r, -distance))
                .collect(),
        }
    }
}

/// Asks the CPU to start loading every cache line of `values` (a no-op elsewhere).
#[inline(always)]
fn prefetch_lines<T>(values: &[T]) {
    let start = values.as_ptr().cast::<u8>();
    for offset in (0..std::mem::size_of_val(values)).step_by(64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint; it never faults, and the address is in `values`.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                start.add(offset).cast(),
                std::arch::x86_64::_MM_HINT_T0,
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (start, offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnormalised_inner_product_vectors_search_without_panicking() {
        let vectors: Vec<Vec<f32>> = (0..500)
            .map(|i| {
                (0..8)
                    .map(|j| ((i * 7 + j * 13) % 17) as f32 * 3.5)
                    .collect()
            })
            .collect();
        let rows: Vec<(usize, &[f32])> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.as_slice()))
            .collect();
        let params = HnswParams {
            m: 8,
            ef_construction: 50,
            ef_search: 32,
        };
        let graph = Graph::build(params, Metric::InnerProduct, &rows, 500);
        let mut matrix: Vec<f32> = vectors.concat();
        let found = graph.search(&vectors[3], &matrix, None, 5, Some(&|row| row % 2 == 1));
        assert_eq!(found.len(), 5);
        assert!(found.iter().all(|(r, _)| r % 2 == 1));
        graph.insert(&[(500, &[1e6; 8])]);
        matrix.extend_from_slice(&[1e6; 8]);
        let best = graph.search(&[1.0; 8], &matrix, None, 1, None);
        assert_eq!(best.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![500]);
    }

    #[test]
    fn rows_inserted_in_parallel_into_an_empty_graph_are_all_reachable() {
        let vectors: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                let mut v = vec![0.01; 8];
                v[i] = 1.0;
                v
            })
            .collect();
        let rows: Vec<(usize, &[f32])> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.as_slice()))
            .collect();
        let matrix = vectors.concat();
        let params = HnswParams {
            m: 4,
            ef_construction: 16,
            ef_search: 16,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(8)
            .build()
            .expect("a thread pool");
        for _ in 0..200 {
            let graph = Graph::build(params, Metric::InnerProduct, &[], 0);
            pool.install(|| graph.insert(&rows));
            for (row, v) in vectors.iter().enumerate() {
                let found = graph.search(v, &matrix, None, 6, None);
                assert_eq!(found.len(), 6);
                assert_eq!(found[0].0, row);
            }
        }
    }
}
