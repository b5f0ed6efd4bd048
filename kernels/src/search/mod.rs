//! Exact vector search: the `k` rows of a corpus with the best `query · row (+ bias)` for
//! each query, on whichever device holds the rows.
//!
//! [`search`] is the one entry point: it takes a [`Corpus`] (rows in host memory with
//! their optional f16 copy, or a copy resident on a GPU) and runs the device's kernels:
//! the CPU's in [`crate::cpu`] (the f16 shortlist for a few queries, blocked GEMM
//! for batches), the GPU's in [`crate::cuda::topk`]. Per-row rules (score bias, tie
//! ranks) travel with the corpus; per-search restrictions in a [`SearchFilter`].

mod select;

pub use crate::cpu::shortlist::HalfCopy;
pub use crate::cuda::topk::DeviceCorpus;
pub use select::{Hit, TopK};

use crate::cuda::topk::MAX_K;
use crate::{Backend, CpuBackend, KernelError, Matrix, Result};

/// Scoring and eligibility rules for [`crate::Backend::top_k_dot`] and [`search`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TopKOptions<'a> {
    /// Added to every query's score of each row (e.g. `-|x|²/2` to rank by L2 distance).
    pub row_bias: Option<&'a [f32]>,
    /// Rows any query may return (`true`); all rows when absent.
    pub allowed: Option<&'a [bool]>,
    /// Per query, rows it must not return, sorted ascending.
    pub excluded: Option<&'a [Vec<u32>]>,
    /// Order among equal scores, lower first (e.g. each row's rank by item id).
    pub tie_rank: Option<&'a [u32]>,
    /// An f16 copy of the corpus: the CPU backend scans it instead of the f32 rows for a
    /// few queries and rescores the rows that can still rank in f32 (same results).
    pub shortlist: Option<&'a HalfCopy>,
}

impl TopKOptions<'_> {
    /// Checks the options against `(rows, cols)` of the queries and of the corpus.
    pub fn check(&self, queries: (usize, usize), corpus: (usize, usize)) -> Result<()> {
        let fail = |what: String| Err(KernelError::Shape(format!("top_k_dot: {what}")));
        if queries.1 != corpus.1 {
            return fail(format!(
                "queries have {} columns, corpus {}",
                queries.1, corpus.1
            ));
        }
        for (what, len) in [
            ("row_bias", self.row_bias.map(<[f32]>::len)),
            ("allowed", self.allowed.map(<[bool]>::len)),
            ("tie_rank", self.tie_rank.map(<[u32]>::len)),
        ] {
            if len.is_some_and(|l| l != corpus.0) {
                return fail(format!("{what} must have one entry per corpus row"));
            }
        }
        if self.excluded.is_some_and(|e| e.len() != queries.0) {
            return fail("excluded must have one list per query".into());
        }
        if self
            .shortlist
            .is_some_and(|c| (c.rows(), c.cols()) != corpus)
        {
            return fail("shortlist must be a copy of the corpus".into());
        }
        Ok(())
    }
}

/// Per-search restrictions: which rows the queries may return.
#[derive(Clone, Copy, Debug, Default)]
pub struct SearchFilter<'a> {
    /// Rows any query may return; all when absent.
    pub allowed: Option<&'a [bool]>,
    /// Per query, rows it must not return, sorted ascending.
    pub excluded: Option<&'a [Vec<u32>]>,
}

/// A corpus in host memory with its per-row rules.
#[derive(Clone, Copy, Debug)]
pub struct HostCorpus<'a> {
    /// The rows.
    pub rows: &'a Matrix,
    /// An f16 copy of the rows, scanned for a few queries ([`TopKOptions::shortlist`]).
    pub half: Option<&'a HalfCopy>,
    /// Added to every query's score of each row (e.g. `-|x|²/2` to rank by L2 distance).
    pub row_bias: Option<&'a [f32]>,
    /// Order among equal scores, lower first; the row index when absent.
    pub tie_rank: Option<&'a [u32]>,
}

impl<'a> HostCorpus<'a> {
    /// The options of one CPU search of this corpus under `filter`.
    fn options(&self, filter: &SearchFilter<'a>) -> TopKOptions<'a> {
        TopKOptions {
            row_bias: self.row_bias,
            allowed: filter.allowed,
            excluded: filter.excluded,
            tie_rank: self.tie_rank,
            shortlist: self.half,
        }
    }
}

/// Where a corpus's rows are searched.
pub enum Corpus<'a> {
    /// On the CPU, over the host rows.
    Cpu(HostCorpus<'a>),
    /// On a GPU, over its resident copy; `host` holds the same rows and rules for a `k`
    /// above the GPU kernels' limit.
    Cuda {
        /// The rows and rules in device memory.
        device: &'a DeviceCorpus,
        /// The same rows and rules in host memory.
        host: HostCorpus<'a>,
    },
}

/// For each row of `queries`, the `k` rows of `corpus` the filter allows with the largest
/// score `query · row + bias[row]`, best first; ties go to the lower tie rank. NaN scores
/// never rank; fewer than `k` eligible rows give fewer hits.
pub fn search(
    corpus: &Corpus<'_>,
    queries: &Matrix,
    k: usize,
    filter: &SearchFilter<'_>,
) -> Result<Vec<Vec<Hit>>> {
    match corpus {
        Corpus::Cuda { device, .. } if k <= MAX_K => device.search(&queries.data, k, filter),
        Corpus::Cpu(host) | Corpus::Cuda { host, .. } => {
            CpuBackend::default().top_k_dot(queries, host.rows, k, &host.options(filter))
        }
    }
}
