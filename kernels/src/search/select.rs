//! Partial selection of the best-scoring items, shared by every backend's host side.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One ranked item: its row index and score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Row index in the corpus.
    pub index: u32,
    /// Score (higher is better).
    pub score: f32,
    /// Order among equal scores (lower first).
    pub tie: u32,
}

impl Hit {
    /// The ranking order: higher score first, then lower tie rank.
    pub fn rank_cmp(&self, other: &Hit) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.tie.cmp(&other.tie))
    }
}

/// Heap entry ordered so that the heap's top is the *worst* kept hit.
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.rank_cmp(&other.0)
    }
}

/// Keeps the best `k` hits seen so far.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
    /// Score of the worst kept hit once `k` are kept (−∞ before): anything below it is
    /// rejected with one comparison.
    threshold: f32,
}

impl TopK {
    /// An empty selection of at most `k` hits.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
            threshold: f32::NEG_INFINITY,
        }
    }

    /// Offers one hit; NaN scores are ignored.
    #[inline]
    pub fn push(&mut self, index: u32, score: f32, tie: u32) {
        // NaN compares as neither less nor greater-or-equal: it never ranks.
        if self.k == 0 || score.is_nan() || score < self.threshold {
            return;
        }
        let hit = Hit { index, score, tie };
        if self.heap.len() < self.k {
            self.heap.push(Worst(hit));
        } else if let Some(worst) = self.heap.peek() {
            if hit.rank_cmp(&worst.0) != Ordering::Less {
                return;
            }
            self.heap.pop();
            self.heap.push(Worst(hit));
        }
        if self.heap.len() == self.k {
            self.threshold = self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
        }
    }

    /// The lowest score that can still enter (−∞ until `k` hits are kept).
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The kept hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self.heap.into_iter().map(|w| w.0).collect();
        hits.sort_by(Hit::rank_cmp);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_with_index_tiebreak_and_skips_nan() {
        let mut top = TopK::new(3);
        for (i, s) in [0.5, f32::NAN, 0.9, 0.5, 0.9, 0.1].into_iter().enumerate() {
            top.push(i as u32, s, i as u32);
        }
        let got: Vec<(u32, f32)> = top
            .into_sorted()
            .iter()
            .map(|h| (h.index, h.score))
            .collect();
        assert_eq!(got, vec![(2, 0.9), (4, 0.9), (0, 0.5)]);
    }

    #[test]
    fn k_zero_and_k_above_n() {
        let mut none = TopK::new(0);
        none.push(0, 1.0, 0);
        assert!(none.into_sorted().is_empty());
        let mut all = TopK::new(10);
        all.push(1, 0.2, 1);
        all.push(0, 0.3, 0);
        assert_eq!(all.into_sorted().len(), 2);
    }
}
