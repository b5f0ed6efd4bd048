//! A read-only, flat copy of an HNSW graph built by `hnsw_rs`, searched with a tight
//! loop: adjacency in contiguous arrays, a reusable visited-epoch array instead of a
//! hash set, and SIMD distances straight on the collection's vector matrix. `hnsw_rs`
//! keeps doing construction; this does the hot path of queries.

use hnsw_rs::prelude::{Distance, Hnsw};
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Neighbour lists of one layer, by row.
struct Layer {
    /// `neighbours[offsets[r]..offsets[r + 1]]` are row `r`'s links (empty when absent).
    offsets: Vec<u32>,
    neighbours: Vec<u32>,
}

impl Layer {
    fn links(&self, row: usize) -> &[u32] {
        match (self.offsets.get(row), self.offsets.get(row + 1)) {
            (Some(&a), Some(&b)) => &self.neighbours[a as usize..b as usize],
            _ => &[],
        }
    }
}

/// The bottom layer in fixed-width rows: `[count, link, link, ...]` per row, so a
/// node's links are one contiguous read.
struct Bottom {
    width: usize,
    rows: Vec<u32>,
}

impl Bottom {
    fn links(&self, row: usize) -> &[u32] {
        let start = row * self.width;
        match self.rows.get(start) {
            Some(&count) => &self.rows[start + 1..start + 1 + count as usize],
            None => &[],
        }
    }
}

/// The frozen graph.
pub struct FrozenGraph {
    bottom: Bottom,
    /// Layers 1 and up.
    upper: Vec<Layer>,
    entry: Option<u32>,
    rows: usize,
}

/// A candidate ordered by distance (max-heap on distance).
#[derive(Clone, Copy, PartialEq)]
struct Far(f32, u32);
impl Eq for Far {}
impl PartialOrd for Far {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Far {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Per-thread search state, reused from query to query.
#[derive(Default)]
struct Scratch {
    /// Epoch of the current search.
    epoch: u32,
    /// Row → epoch of the search that last visited it.
    marks: Vec<u32>,
    /// Candidates to expand, nearest first.
    candidates: BinaryHeap<std::cmp::Reverse<Far>>,
    /// Best rows so far, worst first.
    results: BinaryHeap<Far>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl FrozenGraph {
    /// Copies the graph's links (data id = row) out of `hnsw_rs`.
    pub fn freeze<D: Distance<f32> + Send + Sync>(
        hnsw: &Hnsw<'static, f32, D>,
        rows: usize,
    ) -> Self {
        let indexation = hnsw.get_point_indexation();
        let top = indexation.get_max_level_observed() as usize;
        let mut lists: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); rows]; top + 1];
        let mut entry = None;
        for point in indexation {
            let row = point.get_origin_id();
            if row >= rows {
                continue;
            }
            for (layer, neighbours) in point
                .get_neighborhood_id()
                .into_iter()
                .enumerate()
                .take(top + 1)
            {
                lists[layer][row] = neighbours
                    .iter()
                    .map(|n| n.d_id as u32)
                    .filter(|&r| (r as usize) < rows)
                    .collect();
            }
            if point.get_point_id().0 as usize == top && entry.is_none() {
                entry = Some(row as u32);
            }
        }
        let mut lists = lists.into_iter();
        let bottom_lists = lists.next().unwrap_or_default();
        let width = 1 + bottom_lists.iter().map(Vec::len).max().unwrap_or(0);
        let mut bottom = Bottom {
            width,
            rows: vec![0; rows * width],
        };
        for (row, links) in bottom_lists.into_iter().enumerate() {
            let start = row * width;
            bottom.rows[start] = links.len() as u32;
            bottom.rows[start + 1..start + 1 + links.len()].copy_from_slice(&links);
        }
        let upper = lists
            .map(|by_row| {
                let mut offsets = Vec::with_capacity(rows + 1);
                let mut neighbours = Vec::new();
                offsets.push(0);
                for links in by_row {
                    neighbours.extend(links);
                    offsets.push(neighbours.len() as u32);
                }
                Layer {
                    offsets,
                    neighbours,
                }
            })
            .collect();
        Self {
            bottom,
            upper,
            entry,
            rows,
        }
    }

    /// The `k` nearest rows accepted by `keep` (all when `None`) with their distances,
    /// nearest first, after exploring `ef` candidates on the bottom layer. `distance(row)` is the query's
    /// distance to a row (lower is nearer); `prefetch(row)` hints that a row's vector is
    /// about to be read.
    pub fn search(
        &self,
        k: usize,
        ef: usize,
        distance: impl Fn(usize) -> f32,
        prefetch: impl Fn(usize),
        keep: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<(usize, f32)> {
        let Some(mut current) = self.entry.map(|e| e as usize) else {
            return Vec::new();
        };
        let rows = self.rows;
        let mut current_distance = distance(current);
        // Greedy descent through the upper layers.
        for layer in self.upper.iter().rev() {
            let mut improved = true;
            while improved {
                improved = false;
                for &n in layer.links(current) {
                    let d = distance(n as usize);
                    if d < current_distance {
                        current_distance = d;
                        current = n as usize;
                        improved = true;
                    }
                }
            }
        }
        let ef = ef.max(k);
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch {
                epoch,
                marks,
                candidates,
                results,
            } = &mut *scratch;
            if marks.len() < rows {
                marks.resize(rows, 0);
            }
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                marks.iter_mut().for_each(|m| *m = 0);
                *epoch = 1;
            }
            let epoch = *epoch;
            candidates.clear();
            results.clear();
            marks[current] = epoch;
            candidates.push(std::cmp::Reverse(Far(current_distance, current as u32)));
            if keep.is_none_or(|keep| keep(current)) {
                results.push(Far(current_distance, current as u32));
            }
            while let Some(std::cmp::Reverse(Far(d, row))) = candidates.pop() {
                if results.len() >= ef && results.peek().is_some_and(|w| d > w.0) {
                    break;
                }
                let links = self.bottom.links(row as usize);
                if let Some(&first) = links.first() {
                    prefetch(first as usize);
                }
                for (j, &n) in links.iter().enumerate() {
                    // Load the next neighbour's vector while this one is scored.
                    if let Some(&next) = links.get(j + 1) {
                        prefetch(next as usize);
                    }
                    let n = n as usize;
                    if marks[n] == epoch {
                        continue;
                    }
                    marks[n] = epoch;
                    let dn = distance(n);
                    if results.len() < ef || results.peek().is_some_and(|w| dn < w.0) {
                        candidates.push(std::cmp::Reverse(Far(dn, n as u32)));
                        if keep.is_none_or(|keep| keep(n)) {
                            results.push(Far(dn, n as u32));
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
            let mut found: Vec<Far> = results.drain().collect();
            found.sort();
            found
                .into_iter()
                .take(k)
                .map(|f| (f.1 as usize, f.0))
                .collect()
        })
    }
}
