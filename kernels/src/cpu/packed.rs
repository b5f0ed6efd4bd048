//! Matrix products against weights packed once, at load: a linear layer's `out × in`
//! weight is stored as panels of [`PANEL`] output features, each panel `in × PANEL`
//! values k-major, so the inner loop reads one contiguous stream of weights and never
//! repacks them (the `gemm` crate repacks its right-hand side on every call, which for a
//! single document's ~100 rows costs as much as the product). The product is tiled in
//! registers (up to [`TILE_ROWS`] rows × one panel, AVX-512 when the CPU has it),
//! blocked over the inputs ([`DEPTH_BLOCK`]) and rows ([`ROWS_BYTES`]) to stay in cache,
//! with the bias added in the tile's store and the activation applied while the block
//! is still in cache. Rayon tasks take disjoint (row block, panel range) pieces.

use super::amx::{self, AmxPanels};
use super::gemm::SharedMut;
use super::simd;
use crate::Activation;
use rayon::prelude::*;
use std::ops::Range;

/// Output features per packed panel (two AVX-512 registers of f32).
pub const PANEL: usize = 32;
/// Most rows of one register tile.
const TILE_ROWS: usize = 12;
/// Row blocks of an f32 product are multiples of this many rows (but the last), so few
/// tiles are short.
const ROW_GRANULE: usize = 4;
/// Inputs accumulated per pass over a panel (a 48 KiB slice of it, kept in L1/L2).
const DEPTH_BLOCK: usize = 256;
/// Bytes of packed inputs per row block (a quarter of an L2 cache).
const ROWS_BYTES: usize = 384 << 10;
/// Bytes of packed weights one piece of a product works through (half an L2 cache).
const PANELS_BYTES: usize = 512 << 10;
/// f32 values in a 64-byte cache line.
const CACHE_LINE_FLOATS: usize = 16;
/// Pieces per thread when a product has fewer row blocks than threads.
const SPLITS_PER_THREAD: usize = 1;
/// Products below this many multiply-adds run on the calling thread.
const PARALLEL_WORK: usize = 1 << 18;

/// A linear layer's weight (`out × in`, PyTorch's layout) packed for [`matmul_packed`].
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWeight {
    out_features: usize,
    in_features: usize,
    values: Values,
}

/// How a [`PackedWeight`] stores its values.
#[derive(Clone, Debug, PartialEq)]
enum Values {
    /// `ceil(out / PANEL)` f32 panels of `in × PANEL` values from `start` on (a 64-byte
    /// boundary, so no load splits a cache line); features past `out` are zero. With
    /// `round_inputs`, the values are bf16-rounded and so are the inputs they meet
    /// (the bf16 precision where AMX is missing: the same products, in f32 registers).
    F32 {
        panels: Vec<f32>,
        start: usize,
        round_inputs: bool,
    },
    /// bf16 in AMX tile layout (also read by the AVX512-BF16 products).
    Amx(AmxPanels),
}

impl PackedWeight {
    /// Packs a row-major `out × in` weight.
    ///
    /// # Panics
    /// When `weight.len() != out * in`.
    pub fn pack(out_features: usize, in_features: usize, weight: &[f32]) -> Self {
        assert_eq!(weight.len(), out_features * in_features);
        Self::from_rows(out_features, in_features, |j| {
            &weight[j * in_features..][..in_features]
        })
    }

    /// Packs a row-major `out × in` weight as bf16, for products with bf16 inputs and
    /// f32 sums: on AMX tiles or with AVX512-BF16 where the CPU has them, else on
    /// bf16-rounded f32 panels.
    pub fn pack_bf16(out_features: usize, in_features: usize, weight: &[f32]) -> Self {
        assert_eq!(weight.len(), out_features * in_features);
        let row = |j: usize| &weight[j * in_features..][..in_features];
        if amx::any_available() {
            return Self {
                out_features,
                in_features,
                values: Values::Amx(AmxPanels::pack(out_features, in_features, row)),
            };
        }
        let rounded: Vec<f32> = weight.iter().map(|&v| round_bf16(v)).collect();
        let mut packed = Self::pack(out_features, in_features, &rounded);
        if let Values::F32 { round_inputs, .. } = &mut packed.values {
            *round_inputs = true;
        }
        packed
    }

    /// Packs an `out × in` weight given row by row (`row(j)`: `in` values).
    pub(crate) fn from_rows<'a>(
        out_features: usize,
        in_features: usize,
        row: impl Fn(usize) -> &'a [f32] + Sync,
    ) -> Self {
        Self::build(out_features, in_features, |p, panel| {
            for j in 0..PANEL.min(out_features - p * PANEL) {
                for (i, &v) in row(p * PANEL + j)[..in_features].iter().enumerate() {
                    panel[i * PANEL + j] = v;
                }
            }
        })
    }

    /// Packs the transpose of an `in × out` matrix given row by row (`row(i)`: `out`
    /// values): the weight of `x · M`, e.g. attention's values.
    pub(crate) fn from_transposed_rows<'a>(
        out_features: usize,
        in_features: usize,
        row: impl Fn(usize) -> &'a [f32] + Sync,
    ) -> Self {
        Self::build(out_features, in_features, |p, panel| {
            let cols = PANEL.min(out_features - p * PANEL);
            for i in 0..in_features {
                panel[i * PANEL..][..cols].copy_from_slice(&row(i)[p * PANEL..][..cols]);
            }
        })
    }

    /// Allocates the aligned panels and fills each with `fill(p, panel)` (in parallel
    /// for large weights).
    fn build(
        out_features: usize,
        in_features: usize,
        fill: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Self {
        let panels = out_features.div_ceil(PANEL);
        let len = panels * in_features * PANEL;
        let mut packed = vec![0f32; len + CACHE_LINE_FLOATS];
        let start = packed.as_ptr().align_offset(64).min(CACHE_LINE_FLOATS);
        let chunks = packed[start..start + len].chunks_mut((in_features * PANEL).max(1));
        if len >= PARALLEL_WORK {
            chunks
                .collect::<Vec<_>>()
                .into_par_iter()
                .enumerate()
                .for_each(|(p, panel)| fill(p, panel));
        } else {
            chunks.enumerate().for_each(|(p, panel)| fill(p, panel));
        }
        Self {
            out_features,
            in_features,
            values: Values::F32 {
                panels: packed,
                start,
                round_inputs: false,
            },
        }
    }

    /// Output features (the weight's rows).
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Input features (the weight's columns).
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Bytes the packed values take.
    pub fn memory_bytes(&self) -> usize {
        match &self.values {
            Values::F32 { panels, .. } => panels.len() * std::mem::size_of::<f32>(),
            Values::Amx(panels) => panels.memory_bytes(),
        }
    }
}

/// `v` rounded to the nearest bf16 (ties to even), as f32.
fn round_bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

/// A row-major operand in memory: row `r` starts at `ptr + r * row_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<P> {
    pub(crate) ptr: P,
    pub(crate) row_stride: usize,
}

/// `dst[m × out] = activation(x[m × in] · Wᵀ + bias)`.
///
/// # Safety
/// `x` must be valid for `m` rows of `weight.in_features()` values and `dst` for `m`
/// rows of `weight.out_features()`, not overlapping `x`; `bias`, when given, holds
/// `out_features` values.
pub(crate) unsafe fn matmul_packed(
    m: usize,
    x: Rows<*const f32>,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    activation: Activation,
    dst: Rows<*mut f32>,
    parallel: bool,
) {
    let (k, n) = (weight.in_features, weight.out_features);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: the bias alone.
        for r in 0..m {
            let row = std::slice::from_raw_parts_mut(dst.ptr.add(r * dst.row_stride), n);
            match bias {
                Some(bias) => row.copy_from_slice(bias),
                None => row.fill(0.0),
            }
            apply(activation, row);
        }
        return;
    }
    let (panels, start, round_inputs) = match &weight.values {
        Values::F32 {
            panels,
            start,
            round_inputs,
        } => (panels, *start, *round_inputs),
        Values::Amx(panels) => {
            return amx::matmul(m, x, k, panels, n, bias, activation, dst, parallel);
        }
    };
    // Rows per block: as many whole tiles as keep the block's packed inputs within
    // ROWS_BYTES.
    let max_block_rows = ROWS_BYTES / (k * 4);
    let job = Job {
        x: Rows {
            ptr: x.ptr as usize,
            row_stride: x.row_stride,
        },
        dst: SharedMut(dst.ptr),
        dst_stride: dst.row_stride,
        panels: &panels[start..],
        round_inputs,
        bias,
        activation,
        k,
        n,
    };
    for_each_piece(
        m,
        n,
        k,
        (max_block_rows, ROW_GRANULE),
        parallel,
        |rows, panels| job.run(rows, panels),
    );
}

/// Splits an `m × n × k` product into pieces of at most `max_block_rows` rows × a range
/// of panels and runs `piece` on each; on the rayon pool when `parallel` and the work
/// pays. The row blocks are of equal size (a multiple of `granule` rows, but the last)
/// and as many as a multiple of the threads, so no thread waits on another's extra
/// block; with fewer rows than that, each row block is split by panels.
pub(crate) fn for_each_piece(
    m: usize,
    n: usize,
    k: usize,
    (max_block_rows, granule): (usize, usize),
    parallel: bool,
    piece: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    let panels = n.div_ceil(PANEL);
    let threads = if parallel && m * n * k >= PARALLEL_WORK {
        rayon::current_num_threads()
    } else {
        1
    };
    let block_rows = balanced_block_rows(m, max_block_rows, granule, threads);
    let row_blocks = m.div_ceil(block_rows);
    let splits = (SPLITS_PER_THREAD * threads)
        .div_ceil(row_blocks)
        .clamp(1, panels);
    let per_split = panels.div_ceil(splits);
    let run = |t: usize| {
        let (rb, g) = (t / splits, t % splits);
        let rows = rb * block_rows..m.min((rb + 1) * block_rows);
        let panel_range = g * per_split..panels.min((g + 1) * per_split);
        if !panel_range.is_empty() {
            piece(rows, panel_range);
        }
    };
    if threads == 1 {
        (0..row_blocks * splits).for_each(run);
    } else {
        (0..row_blocks * splits).into_par_iter().for_each(run);
    }
}

/// Rows per block for [`for_each_piece`]: at most `max_block_rows` (rounded down to a
/// multiple of `granule`, at least one granule), in as few blocks as that allows, their
/// count rounded up to a multiple of `threads` when there are several, the rows shared
/// evenly among them.
fn balanced_block_rows(m: usize, max_block_rows: usize, granule: usize, threads: usize) -> usize {
    let max_block_rows = (max_block_rows / granule).max(1) * granule;
    let mut blocks = m.div_ceil(max_block_rows).max(1);
    if blocks > 1 {
        blocks = blocks.next_multiple_of(threads);
    }
    m.div_ceil(blocks)
        .next_multiple_of(granule)
        .min(max_block_rows)
}

/// Applies an activation in place.
pub(crate) fn apply(activation: Activation, values: &mut [f32]) {
    match activation {
        Activation::Identity => {}
        Activation::Gelu => simd::gelu_in_place(values),
        Activation::Tanh => simd::tanh_in_place(values),
    }
}

/// One product's operands, shared by its tasks.
struct Job<'a> {
    x: Rows<usize>,
    dst: SharedMut,
    dst_stride: usize,
    /// The f32 panels, from the first on.
    panels: &'a [f32],
    round_inputs: bool,
    bias: Option<&'a [f32]>,
    activation: Activation,
    k: usize,
    n: usize,
}

// SAFETY: tasks only read `x` and write disjoint blocks of `dst`.
unsafe impl Sync for Job<'_> {}

impl Job<'_> {
    /// Computes `rows × panels` of the output, bias and activation included: the rows'
    /// inputs packed once, then the panels in groups whose weights stay in L2, each
    /// group's outputs accumulated over the depth blocks while they stay in cache.
    fn run(&self, rows: Range<usize>, panels: Range<usize>) {
        let tile = tile_kernel();
        let group = (PANELS_BYTES / (self.k * PANEL * 4)).max(1);
        PACKED_ROWS.with_borrow_mut(|packed| {
            self.pack_rows(rows.clone(), packed);
            for first in panels.clone().step_by(group) {
                let group = first..panels.end.min(first + group);
                for depth in (0..self.k).step_by(DEPTH_BLOCK) {
                    let depth_len = DEPTH_BLOCK.min(self.k - depth);
                    let block = &packed[depth * rows.len()..];
                    for p in group.clone() {
                        self.panel(tile, p, depth, depth_len, rows.clone(), block);
                    }
                }
            }
        });
        if self.activation == Activation::Identity {
            return;
        }
        let (start, end) = (panels.start * PANEL, self.n.min(panels.end * PANEL));
        for r in rows {
            // SAFETY: this task's block of `dst`, finished above.
            apply(self.activation, unsafe {
                std::slice::from_raw_parts_mut(
                    self.dst.get().add(r * self.dst_stride + start),
                    end - start,
                )
            });
        }
    }

    /// Panel `p` over one depth block, for every tile of `rows` (`block`: the rows'
    /// packed inputs of this depth block).
    fn panel(
        &self,
        tile: unsafe fn(Tile),
        p: usize,
        depth: usize,
        depth_len: usize,
        rows: Range<usize>,
        block: &[f32],
    ) {
        let b = self.panels[(p * self.k + depth) * PANEL..].as_ptr();
        let cols = PANEL.min(self.n - p * PANEL);
        let bias = match (depth, self.bias) {
            (0, Some(bias)) => bias[p * PANEL..].as_ptr(),
            _ => std::ptr::null(),
        };
        let mut r = rows.start;
        while r < rows.end {
            let tile_rows = TILE_ROWS.min(rows.end - r);
            // SAFETY: the tile lies inside the packed rows, the panel and this task's
            // block of `dst` (the caller's contract).
            unsafe {
                tile(Tile {
                    rows: tile_rows,
                    a: block[(r - rows.start) * depth_len..].as_ptr(),
                    b,
                    depth: depth_len,
                    c: self.dst.get().add(r * self.dst_stride + p * PANEL),
                    ldc: self.dst_stride,
                    cols,
                    accumulate: depth > 0,
                    bias,
                });
            }
            r += tile_rows;
        }
    }

    /// Copies the inputs of `rows` into `packed`: depth block after depth block, within
    /// one tile after tile, each tile's values input-major (`a[p * tile_rows + r]`) so
    /// a tile reads one stream.
    fn pack_rows(&self, rows: Range<usize>, packed: &mut Vec<f32>) {
        packed.resize(rows.len() * self.k, 0.0);
        for depth in (0..self.k).step_by(DEPTH_BLOCK) {
            let len = DEPTH_BLOCK.min(self.k - depth);
            let block = &mut packed[depth * rows.len()..][..len * rows.len()];
            let mut r = rows.start;
            while r < rows.end {
                let tile_rows = TILE_ROWS.min(rows.end - r);
                let out = &mut block[(r - rows.start) * len..][..tile_rows * len];
                let x = self.x.ptr as *const f32;
                let first = r * self.x.row_stride + depth;
                for (p, out) in out.chunks_exact_mut(tile_rows).enumerate() {
                    for (i, o) in out.iter_mut().enumerate() {
                        // SAFETY: rows `r..r + tile_rows` of `x` hold `depth + len` values.
                        let v = unsafe { *x.add(first + i * self.x.row_stride + p) };
                        *o = if self.round_inputs { round_bf16(v) } else { v };
                    }
                }
                r += tile_rows;
            }
        }
    }
}

thread_local! {
    /// Each thread's buffer for [`Job::pack_rows`].
    static PACKED_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One register tile: `c[rows × cols] (+)= a[rows × depth] · b[depth × PANEL]`, plus
/// `bias[..cols]` when `bias` is not null; `c` is added to when `accumulate`. `a` is
/// packed input-major: element `(r, p)` at `a[p * rows + r]`.
struct Tile {
    rows: usize,
    a: *const f32,
    b: *const f32,
    depth: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
    bias: *const f32,
}

/// The widest tile kernel this CPU runs.
fn tile_kernel() -> unsafe fn(Tile) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return avx512::tile;
    }
    portable::tile
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// [`Tile`] with AVX-512: `rows × 2` accumulators, the panel's two registers loaded
    /// once per input, each row's input broadcast.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the tile's pointers are valid for its extents.
    pub(super) unsafe fn tile(t: Tile) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match t.rows {
                    $($r => tile_rows::<$r>(&t),)*
                    _ => unreachable!("tile of {} rows", t.rows),
                }
            };
        }
        const _: () = assert!(TILE_ROWS <= 14 && PANEL == 32);
        rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile_rows<const R: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..t.depth {
            let b0 = _mm512_loadu_ps(t.b.add(p * PANEL));
            let b1 = _mm512_loadu_ps(t.b.add(p * PANEL + 16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*t.a.add(p * R + r));
                acc[0] = _mm512_fmadd_ps(a, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(a, b1, acc[1]);
            }
        }
        let low: __mmask16 = if t.cols >= 16 {
            0xffff
        } else {
            (1u16 << t.cols) - 1
        };
        let high: __mmask16 = if t.cols >= PANEL {
            0xffff
        } else if t.cols > 16 {
            (1u16 << (t.cols - 16)) - 1
        } else {
            0
        };
        let (mut add0, mut add1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        if !t.bias.is_null() {
            add0 = _mm512_maskz_loadu_ps(low, t.bias);
            add1 = _mm512_maskz_loadu_ps(high, t.bias.add(16));
        }
        for (r, acc) in acc.iter().enumerate() {
            let c = t.c.add(r * t.ldc);
            let (mut v0, mut v1) = (_mm512_add_ps(acc[0], add0), _mm512_add_ps(acc[1], add1));
            if t.accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(low, c));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(high, c.add(16)));
            }
            _mm512_mask_storeu_ps(c, low, v0);
            _mm512_mask_storeu_ps(c.add(16), high, v1);
        }
    }
}

mod portable {
    use super::{Tile, PANEL};

    /// Rows per register tile without AVX-512 (4 × 32 accumulators).
    const ROWS: usize = 4;

    /// [`Tile`] with AVX2+FMA when the CPU has them, else as plain loops.
    ///
    /// # Safety
    /// The tile's pointers are valid for its extents.
    pub(super) unsafe fn tile(t: Tile) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return avx2::tile(&t);
        }
        tile_any(t)
    }

    unsafe fn tile_any(t: Tile) {
        let mut r = 0;
        while r < t.rows {
            let rows = ROWS.min(t.rows - r);
            let mut acc = [[0f32; PANEL]; ROWS];
            for p in 0..t.depth {
                let b = std::slice::from_raw_parts(t.b.add(p * PANEL), PANEL);
                for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                    let a = *t.a.add(p * t.rows + r + i);
                    for j in 0..PANEL {
                        acc[j] = a.mul_add(b[j], acc[j]);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate().take(rows) {
                store(&t, r + i, 0, &acc[..t.cols]);
            }
            r += rows;
        }
    }

    /// Writes row `r`'s values for columns `col..col + values.len()` of the tile, with
    /// the bias and what `c` held when accumulating.
    unsafe fn store(t: &Tile, r: usize, col: usize, values: &[f32]) {
        let c = t.c.add(r * t.ldc + col);
        for (j, &v) in values.iter().enumerate() {
            let mut v = v;
            if !t.bias.is_null() {
                v += *t.bias.add(col + j);
            }
            if t.accumulate {
                v += *c.add(j);
            }
            *c.add(j) = v;
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::{store, Tile, PANEL};
        use std::arch::x86_64::*;

        /// Rows per register tile: 6 rows × 16 columns in 12 accumulators, two panel
        /// registers and a broadcast input (15 of the 16 AVX2 registers).
        const ROWS: usize = 6;

        /// [`Tile`] as 6 × 16 blocks: each half of the panel in turn, row block by
        /// row block.
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA; the tile's pointers are valid for its extents.
        pub(in super::super) unsafe fn tile(t: &Tile) {
            let halves = t.cols.div_ceil(16);
            let mut r = 0;
            while r < t.rows {
                let rows = ROWS.min(t.rows - r);
                for half in 0..halves {
                    match rows {
                        1 => block::<1>(t, r, half),
                        2 => block::<2>(t, r, half),
                        3 => block::<3>(t, r, half),
                        4 => block::<4>(t, r, half),
                        5 => block::<5>(t, r, half),
                        _ => block::<6>(t, r, half),
                    }
                }
                r += rows;
            }
        }

        #[target_feature(enable = "avx2,fma")]
        unsafe fn block<const R: usize>(t: &Tile, r0: usize, half: usize) {
            let col = half * 16;
            let b = t.b.add(col);
            let a = t.a.add(r0);
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for p in 0..t.depth {
                let b0 = _mm256_loadu_ps(b.add(p * PANEL));
                let b1 = _mm256_loadu_ps(b.add(p * PANEL + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*a.add(p * t.rows + r));
                    acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
                }
            }
            let cols = (t.cols - col).min(16);
            for (r, acc) in acc.iter().enumerate() {
                if cols < 16 {
                    let mut values = [0f32; 16];
                    _mm256_storeu_ps(values.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(values.as_mut_ptr().add(8), acc[1]);
                    store(t, r0 + r, col, &values[..cols]);
                    continue;
                }
                let c = t.c.add((r0 + r) * t.ldc + col);
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if !t.bias.is_null() {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(t.bias.add(col)));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(t.bias.add(col + 8)));
                }
                if t.accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c.add(8)));
                }
                _mm256_storeu_ps(c, v0);
                _mm256_storeu_ps(c.add(8), v1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.731 + seed).sin() * 1.3)
            .collect()
    }

    /// `x·Wᵀ + b` in f64.
    fn reference(m: usize, k: usize, n: usize, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
        let mut out = Vec::with_capacity(m * n);
        for r in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[j * k + i] as f64)
                    .sum();
                out.push(dot + b[j] as f64);
            }
        }
        out
    }

    /// The largest relative error of `x · Wᵀ + b` through [`matmul_packed`] against `want`.
    fn worst_error(
        m: usize,
        x: &[f32],
        packed: &PackedWeight,
        b: &[f32],
        want: &[f64],
        parallel: bool,
    ) -> f64 {
        let (k, n) = (packed.in_features(), packed.out_features());
        let mut got = vec![f32::NAN; m * n];
        unsafe {
            matmul_packed(
                m,
                Rows {
                    ptr: x.as_ptr(),
                    row_stride: k,
                },
                packed,
                Some(b),
                Activation::Identity,
                Rows {
                    ptr: got.as_mut_ptr(),
                    row_stride: n,
                },
                parallel,
            );
        }
        got.iter()
            .zip(want)
            .map(|(g, w)| (*g as f64 - w).abs() / (1.0 + w.abs()))
            .fold(0.0, f64::max)
    }

    #[test]
    fn bf16_products_are_the_products_of_bf16_rounded_operands() {
        // Whichever path this CPU takes (AMX tiles, AVX512-BF16 or f32 registers), the result is
        // the f32-summed product of the bf16-rounded inputs and weights.
        for (m, k, n) in [
            (1, 5, 3),
            (45, 70, 33),
            (70, 384, 100),
            (13, 1536, 40),
            (700, 384, 40),
        ] {
            let (x, w, b) = (values(m * k, 0.4), values(n * k, 2.3), values(n, 0.7));
            let packed = PackedWeight::pack_bf16(n, k, &w);
            let rx: Vec<f32> = x.iter().map(|&v| round_bf16(v)).collect();
            let rw: Vec<f32> = w.iter().map(|&v| round_bf16(v)).collect();
            let want = reference(m, k, n, &rx, &rw, &b);
            let worst = worst_error(m, &x, &packed, &b, &want, true);
            assert!(worst < 1e-5, "{m}x{k}x{n}: relative error {worst}");
        }
    }

    #[test]
    fn packed_products_match_float64_for_ragged_shapes() {
        // Rows not a multiple of the tile or the row block, outputs not a multiple of the
        // panel, inputs past one depth block; serial and parallel.
        for (m, k, n) in [
            (1, 5, 3),
            (13, 37, 33),
            (25, 384, 64),
            (200, 800, 70),
            (7, 1536, 384),
            (523, 384, 40),
        ] {
            let (x, w, b) = (values(m * k, 0.2), values(n * k, 1.7), values(n, 3.1));
            let packed = PackedWeight::pack(n, k, &w);
            let want = reference(m, k, n, &x, &w, &b);
            for parallel in [false, true] {
                let worst = worst_error(m, &x, &packed, &b, &want, parallel);
                assert!(worst < 1e-5, "{m}x{k}x{n}: relative error {worst}");
            }
        }
    }

    #[test]
    fn row_blocks_are_even_and_a_multiple_of_the_threads() {
        // One block when the rows fit; else equal blocks, as many as a multiple of the
        // threads, rounded to the granule, never past the most rows per block.
        assert_eq!(balanced_block_rows(91, 252, 4, 2), 92);
        assert_eq!(balanced_block_rows(256, 252, 4, 2), 128);
        assert_eq!(balanced_block_rows(256, 60, 4, 2), 44);
        assert_eq!(balanced_block_rows(3200, 256, 4, 2), 232);
        assert_eq!(balanced_block_rows(100, 30, 32, 2), 32);
        assert_eq!(balanced_block_rows(1, 100, 8, 1), 8);
    }
}
