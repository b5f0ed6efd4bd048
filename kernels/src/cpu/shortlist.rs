//! Exact top-K for a few queries with half the memory traffic.
//!
//! A search of one query is bound by reading the corpus, so the corpus is also kept in
//! f16 ([`HalfCopy`]) with, per row, a bound on how far any f16 score of that row can be
//! from its f32 score (Cauchy–Schwarz on the conversion error, plus f32 rounding of both
//! dot products). The scan of the f16 copy keeps every row whose score's upper bound
//! reaches the k-th best lower bound: no row of the exact top K can be left out. Only
//! those few rows are rescored in f32, so the hits, scores and order are those of an
//! exact f32 search.

use super::{simd, Matrix};
use crate::search::{Hit, TopK, TopKOptions};
use half::f16;
use rayon::prelude::*;

/// An f16 copy of a corpus with a per-row error bound.
#[derive(Clone, Debug)]
pub struct HalfCopy {
    cols: usize,
    /// Row-major f16 bit patterns.
    bits: Vec<u16>,
    /// Per row: `|f16 score − f32 score| ≤ |q|₂ · bound` for any query `q`.
    bound: Vec<f32>,
}

/// Unit roundoff of f32.
const F32_UNIT: f64 = 1.0 / (1u64 << 24) as f64;

impl HalfCopy {
    /// An empty copy of rows of `cols` values.
    pub fn new(cols: usize) -> Self {
        Self {
            cols,
            bits: Vec::new(),
            bound: Vec::new(),
        }
    }

    /// The copy of every row of `matrix`; `None` when a value is beyond f16's range.
    pub fn of(matrix: &Matrix) -> Option<Self> {
        let mut copy = Self::new(matrix.cols);
        copy.try_extend(&matrix.data).then_some(copy)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.bound.len()
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `query · row` over the row's f16 values: within `|query|₂ · bound` of the f32
    /// dot product (what graph searches steer by, reading half the bytes).
    pub fn dot(&self, query: &[f32], row: usize) -> f32 {
        let mut out = [0f32];
        dot_rows_f16(
            query,
            &self.bits[row * self.cols..(row + 1) * self.cols],
            &mut out,
        );
        out[0]
    }

    /// A row's f16 values as raw bits (for prefetching).
    pub fn row_bits(&self, row: usize) -> &[u16] {
        &self.bits[row * self.cols..(row + 1) * self.cols]
    }

    /// Appends rows (a whole number of them). Returns `false`, appending nothing, when a
    /// value is not finite in f16; the caller then searches in f32 only.
    pub fn try_extend(&mut self, rows: &[f32]) -> bool {
        let cols = self.cols.max(1);
        assert_eq!(rows.len() % cols, 0, "try_extend takes whole rows");
        if rows.iter().any(|v| !f16::from_f32(*v).is_finite()) {
            return false;
        }
        // γ_n of the f32 rounding of an n-term dot product, in any summation order.
        let n = (self.cols + 2) as f64;
        let gamma = n * F32_UNIT / (1.0 - n * F32_UNIT);
        for row in rows.chunks_exact(cols) {
            let (mut error, mut norm, mut half_norm) = (0f64, 0f64, 0f64);
            for &v in row {
                let h = f16::from_f32(v);
                let (v, hv) = (v as f64, h.to_f64());
                error += (v - hv) * (v - hv);
                norm += v * v;
                half_norm += hv * hv;
                self.bits.push(h.to_bits());
            }
            let (norm, half_norm) = (norm.sqrt(), half_norm.sqrt());
            // Conversion error, then the f32 rounding of the f16 dot product and of the f32
            // one (γ_n · |q| · |x| each, and a few roundings of the bounds themselves).
            let bound = error.sqrt() + (gamma + 4.0 * F32_UNIT) * (norm + half_norm);
            self.bound
                .push((bound * (1.0 + 1.0 / 1024.0)) as f32 + f32::MIN_POSITIVE);
        }
        true
    }
}

/// Rows scored per rayon task: the task's f16 rows and scores stay in the L2 cache.
const TASK_ROWS: usize = 4096;
/// Rows scored for all queries before moving on, so the rows are read from memory once.
const TILE_ROWS: usize = 256;
/// Rows whose bounds are checked together against the selection's threshold.
const CHUNK: usize = 16;

/// One query's state while the copy is scanned: the k best lower bounds, and every row
/// whose upper bound reached the k-th best lower bound at the time it was seen.
struct Shortlist {
    k: usize,
    lower: TopK,
    candidates: Vec<u32>,
    upper: Vec<f32>,
}

impl Shortlist {
    fn new(k: usize) -> Self {
        Self {
            k,
            lower: TopK::new(k),
            candidates: Vec::new(),
            upper: Vec::new(),
        }
    }

    /// Drops candidates that can no longer reach the threshold.
    fn prune(&mut self) {
        let threshold = self.lower.threshold();
        let mut kept = 0;
        for i in 0..self.candidates.len() {
            if self.upper[i] >= threshold {
                self.candidates[kept] = self.candidates[i];
                self.upper[kept] = self.upper[i];
                kept += 1;
            }
        }
        self.candidates.truncate(kept);
        self.upper.truncate(kept);
    }

    fn merge(mut self, other: Shortlist) -> Shortlist {
        for hit in other.lower.into_sorted() {
            self.lower.push(hit.index, hit.score, hit.tie);
        }
        self.candidates.extend(other.candidates);
        self.upper.extend(other.upper);
        self
    }
}

/// The exact `k` best rows of `corpus` for each query, ranked by `q · x` (+ row bias),
/// found through the f16 `copy` of the corpus. Shapes and options are checked by the caller.
pub(crate) fn top_k_dot(
    queries: &Matrix,
    corpus: &Matrix,
    copy: &HalfCopy,
    k: usize,
    options: &TopKOptions<'_>,
) -> Vec<Vec<Hit>> {
    let (nq, cols) = (queries.rows, queries.cols);
    // Upper bounds of each query's norm (f64 sum, rounded up).
    let norms: Vec<f32> = (0..nq)
        .map(|q| {
            let sum: f64 = queries.row(q).iter().map(|&v| v as f64 * v as f64).sum();
            (sum.sqrt() * (1.0 + 1.0 / 1024.0)) as f32
        })
        .collect();
    let tasks = corpus.rows.div_ceil(TASK_ROWS);
    let shortlists = (0..tasks)
        .into_par_iter()
        .fold(
            || {
                (
                    (0..nq).map(|_| Shortlist::new(k)).collect::<Vec<_>>(),
                    vec![0f32; nq * TASK_ROWS],
                )
            },
            |(mut lists, mut scores), task| {
                let start = task * TASK_ROWS;
                let end = (start + TASK_ROWS).min(corpus.rows);
                let rows = end - start;
                for tile in (0..rows).step_by(TILE_ROWS) {
                    let tile_end = (tile + TILE_ROWS).min(rows);
                    let bits = &copy.bits[(start + tile) * cols..(start + tile_end) * cols];
                    for q in 0..nq {
                        let out = &mut scores[q * TASK_ROWS + tile..q * TASK_ROWS + tile_end];
                        dot_rows_f16(queries.row(q), bits, out);
                    }
                }
                for (q, list) in lists.iter_mut().enumerate() {
                    let scores = &scores[q * TASK_ROWS..q * TASK_ROWS + rows];
                    select(list, q, start, scores, norms[q], copy, options);
                }
                (lists, scores)
            },
        )
        .map(|(lists, _)| lists)
        .reduce(
            || (0..nq).map(|_| Shortlist::new(k)).collect(),
            |a, b| a.into_iter().zip(b).map(|(a, b)| a.merge(b)).collect(),
        );
    shortlists
        .into_iter()
        .enumerate()
        .map(|(q, mut list)| {
            list.prune();
            let query = queries.row(q);
            let mut exact = TopK::new(k);
            for &row in &list.candidates {
                let row = row as usize;
                let score =
                    simd::dot(query, corpus.row(row)) + options.row_bias.map_or(0.0, |b| b[row]);
                let tie = options.tie_rank.map_or(row as u32, |t| t[row]);
                exact.push(row as u32, score, tie);
            }
            exact.into_sorted()
        })
        .collect()
}

/// Offers rows `start..start + scores.len()` (their f16 scores) to query `q`'s shortlist.
fn select(
    list: &mut Shortlist,
    q: usize,
    start: usize,
    scores: &[f32],
    query_norm: f32,
    copy: &HalfCopy,
    options: &TopKOptions<'_>,
) {
    let excluded = options.excluded.map(|e| e[q].as_slice()).unwrap_or(&[]);
    let mut skip = excluded.partition_point(|&r| (r as usize) < start);
    let mut margin = [0f32; CHUNK];
    let mut biased = [0f32; CHUNK];
    for (c, chunk) in scores.chunks(CHUNK).enumerate() {
        let first = start + c * CHUNK;
        let n = chunk.len();
        let bounds = &copy.bound[first..first + n];
        let mut best = f32::NEG_INFINITY;
        for j in 0..n {
            let bias = options.row_bias.map_or(0.0, |b| b[first + j]);
            // The bias is added in f32 on both sides: its rounding is covered too.
            margin[j] = query_norm * bounds[j] + bias.abs() * (4.0 * F32_UNIT as f32);
            biased[j] = chunk[j] + bias;
            best = best.max(biased[j] + margin[j]);
        }
        if best < list.lower.threshold() {
            continue;
        }
        for j in 0..n {
            let row = first + j;
            while excluded.get(skip).is_some_and(|&r| (r as usize) < row) {
                skip += 1;
            }
            if excluded.get(skip) == Some(&(row as u32)) || options.allowed.is_some_and(|a| !a[row])
            {
                continue;
            }
            let upper = biased[j] + margin[j];
            if upper < list.lower.threshold() {
                continue;
            }
            list.lower
                .push(row as u32, biased[j] - margin[j], row as u32);
            list.candidates.push(row as u32);
            list.upper.push(upper);
        }
        if list.candidates.len() > 4 * list.k + 1024 {
            list.prune();
        }
    }
}

/// `out[r] = query · row r of bits` (f16 rows of `query.len()` values), with the widest
/// vector instructions the CPU has.
fn dot_rows_f16(query: &[f32], bits: &[u16], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (which includes the f16 conversion).
            return unsafe { x86::dot_rows_avx512(query, bits, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the CPU has AVX2, FMA and F16C.
            return unsafe { x86::dot_rows_avx2(query, bits, out) };
        }
    }
    let cols = query.len();
    for (o, row) in out.iter_mut().zip(bits.chunks_exact(cols.max(1))) {
        *o = query
            .iter()
            .zip(row)
            .map(|(q, &h)| q * f16::from_bits(h).to_f32())
            .sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// Scalar tail of a row past its last whole vector.
    #[inline(always)]
    fn tail(query: &[f32], row: &[u16], from: usize) -> f32 {
        query[from..]
            .iter()
            .zip(&row[from..])
            .map(|(q, &h)| q * f16::from_bits(h).to_f32())
            .sum()
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_rows_avx512(query: &[f32], bits: &[u16], out: &mut [f32]) {
        let cols = query.len();
        let body = cols / 16 * 16;
        let q = query.as_ptr();
        for (r, o) in out.iter_mut().enumerate() {
            let row = &bits[r * cols..(r + 1) * cols];
            let x = row.as_ptr();
            let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut c = 0;
            // SAFETY: every load reads 16 values at `c + 16 <= body <= cols`.
            unsafe {
                while c + 32 <= body {
                    let x0 = _mm512_cvtph_ps(_mm256_loadu_si256(x.add(c).cast()));
                    let x1 = _mm512_cvtph_ps(_mm256_loadu_si256(x.add(c + 16).cast()));
                    a0 = _mm512_fmadd_ps(x0, _mm512_loadu_ps(q.add(c)), a0);
                    a1 = _mm512_fmadd_ps(x1, _mm512_loadu_ps(q.add(c + 16)), a1);
                    c += 32;
                }
                if c < body {
                    let x0 = _mm512_cvtph_ps(_mm256_loadu_si256(x.add(c).cast()));
                    a0 = _mm512_fmadd_ps(x0, _mm512_loadu_ps(q.add(c)), a0);
                }
            }
            *o = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + tail(query, row, body);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows_avx2(query: &[f32], bits: &[u16], out: &mut [f32]) {
        let cols = query.len();
        let body = cols / 8 * 8;
        let q = query.as_ptr();
        for (r, o) in out.iter_mut().enumerate() {
            let row = &bits[r * cols..(r + 1) * cols];
            let x = row.as_ptr();
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut c = 0;
            // SAFETY: every load reads 8 values at `c + 8 <= body <= cols`.
            unsafe {
                while c + 16 <= body {
                    let x0 = _mm256_cvtph_ps(_mm_loadu_si128(x.add(c).cast()));
                    let x1 = _mm256_cvtph_ps(_mm_loadu_si128(x.add(c + 8).cast()));
                    a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q.add(c)), a0);
                    a1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(q.add(c + 8)), a1);
                    c += 16;
                }
                if c < body {
                    let x0 = _mm256_cvtph_ps(_mm_loadu_si128(x.add(c).cast()));
                    a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q.add(c)), a0);
                }
            }
            let sum = _mm256_add_ps(a0, a1);
            let halves = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
            let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
            let one = _mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1));
            *o = _mm_cvtss_f32(one) + tail(query, row, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel variant the CPU can run gives the f64 dot product of the f16 rows.
    #[test]
    fn f16_row_kernels_agree_with_f64_sums() {
        for cols in [1, 7, 8, 16, 31, 48, 384, 391] {
            let query: Vec<f32> = (0..cols)
                .map(|i| ((i * 37 % 19) as f32 - 9.0) / 7.0)
                .collect();
            let rows: Vec<f32> = (0..5 * cols)
                .map(|i| ((i * 53 % 23) as f32 - 11.0) / 13.0)
                .collect();
            let bits: Vec<u16> = rows.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
            let want: Vec<f64> = bits
                .chunks_exact(cols)
                .map(|row| {
                    row.iter()
                        .zip(&query)
                        .map(|(&h, &q)| f16::from_bits(h).to_f64() * q as f64)
                        .sum()
                })
                .collect();
            let mut outputs = vec![vec![0f32; 5]];
            dot_rows_f16(&query, &bits, &mut outputs[0]);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
                {
                    let mut out = vec![0f32; 5];
                    // SAFETY: the features were just detected.
                    unsafe { x86::dot_rows_avx2(&query, &bits, &mut out) };
                    outputs.push(out);
                }
            }
            for out in outputs {
                for (g, w) in out.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{cols}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
