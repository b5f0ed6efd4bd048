//! Matrix products against weights packed once, at load: a linear layer's `out × in`
//! weight is stored as panels of [`PANEL`] output features, each panel `in × PANEL`
//! values k-major, so the inner loop reads one contiguous stream of weights and never
//! repacks them (the `gemm` crate repacks its right-hand side on every call, which for a
//! single document's ~100 rows costs as much as the product). The product is tiled in
//! registers (up to [`TILE_ROWS`] rows × one panel with AVX-512; 3 rows × one panel
//! with AVX2), blocked over the inputs ([`DEPTH_BLOCK`]) and rows
//! ([`ROWS_BYTES`]) to stay in cache, with the bias added in the tile's store and the
//! activation applied while the block is still in cache. Rayon tasks take disjoint (row
//! block, panel range) pieces. Panels may hold a checkpoint's bf16 or f16 values as they
//! are, widened exactly in registers as products read them (in a buffer first on CPUs
//! without AVX2). A single row (a decode step) takes the whole depth in one pass, two
//! panels at a time, from weights on transparent huge pages where Linux gives them; a
//! few rows (a batched decode step) take each panel in one pass too, chunk by chunk
//! through L1, every row against each chunk before the next (prefetched meanwhile).

use super::amx::{self, AmxPanels};
use super::gemm::SharedMut;
use super::{simd, Matrix};
use crate::{shapes, Activation, Result};
use rayon::prelude::*;
use std::ops::Range;

/// Output features per packed panel (two AVX-512 registers of f32).
pub const PANEL: usize = 32;
/// Most rows of one register tile.
const TILE_ROWS: usize = 12;
/// Row blocks of an f32 product are multiples of this many rows (but the last), so few
/// tiles are short.
const ROW_GRANULE: usize = 4;
/// Most rows an AVX2 product takes in one pass over each panel, a tile of up to
/// [`TILE_ROWS`] at a time (the panel re-read from L2 for the second): a few decode
/// steps' rows read each weight from memory once, as one stream.
const AVX2_ONE_PASS_ROWS: usize = 2 * TILE_ROWS;
/// Most bytes of a panel an AVX2 one-pass product takes per depth range: half of a
/// small L2 cache, so a second tile's re-read hits it.
const AVX2_ONE_PASS_PANEL_BYTES: usize = 256 << 10;
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
    /// A 16-bit checkpoint's values as stored, in the layout of `F32`'s panels: products
    /// widen a group of panels at a time (exactly: every bf16 and f16 value is an f32),
    /// so they equal those of the f32 panels while reading half the bytes.
    Half {
        panels: Vec<u16>,
        format: HalfFormat,
    },
}

/// A 16-bit floating-point format weights can be stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfFormat {
    /// bfloat16: f32's exponent, 7 mantissa bits.
    Bf16,
    /// IEEE 754 binary16.
    F16,
}

impl HalfFormat {
    /// The f32 value of one bit pattern of this format.
    pub fn to_f32(self, bits: u16) -> f32 {
        match self {
            HalfFormat::Bf16 => half::bf16::from_bits(bits).to_f32(),
            HalfFormat::F16 => half::f16::from_bits(bits).to_f32(),
        }
    }

    /// Widens `values` (bit patterns of this format) into `out`, which is as long.
    pub fn widen(self, values: &[u16], out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        // SAFETY (both casts): bf16 and f16 are `repr(transparent)` over u16.
        match self {
            HalfFormat::Bf16 => {
                let values: &[half::bf16] = unsafe { std::mem::transmute(values) };
                values.convert_to_f32_slice(out);
            }
            HalfFormat::F16 => {
                let values: &[half::f16] = unsafe { std::mem::transmute(values) };
                values.convert_to_f32_slice(out);
            }
        }
    }
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

    /// Packs a row-major `out × in` weight of 16-bit values (`format`'s bit patterns) and
    /// keeps them 16-bit: products equal those of [`PackedWeight::pack`] on the widened
    /// values, with half the memory (and half the bytes read by a decode step).
    ///
    /// # Panics
    /// When `weight.len() != out * in`.
    pub fn pack_half(
        out_features: usize,
        in_features: usize,
        weight: &[u16],
        format: HalfFormat,
    ) -> Self {
        assert_eq!(weight.len(), out_features * in_features);
        let mut panels = vec![0u16; out_features.div_ceil(PANEL) * in_features * PANEL];
        fill_panels(&mut panels, in_features, |p, panel| {
            copy_rows_into_panel(p, panel, out_features, in_features, |j| {
                &weight[j * in_features..][..in_features]
            })
        });
        Self {
            out_features,
            in_features,
            values: Values::Half { panels, format },
        }
    }

    /// Packs an `out × in` weight given row by row (`row(j)`: `in` values).
    pub(crate) fn from_rows<'a>(
        out_features: usize,
        in_features: usize,
        row: impl Fn(usize) -> &'a [f32] + Sync,
    ) -> Self {
        Self::build(out_features, in_features, |p, panel| {
            let cols = PANEL.min(out_features - p * PANEL);
            for first in (0..cols).step_by(16) {
                let group = first..cols.min(first + 16);
                let mut rows = [std::ptr::null(); 16];
                for (ptr, j) in rows.iter_mut().zip(group.clone()) {
                    *ptr = row(p * PANEL + j)[..in_features].as_ptr();
                }
                // SAFETY: each row holds `in_features` values (sliced above) and the
                // panel `in_features × PANEL`.
                unsafe {
                    transpose_rows(
                        &rows[..group.len()],
                        in_features,
                        panel[first..].as_mut_ptr(),
                        PANEL,
                    );
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
        fill_panels(&mut packed[start..start + len], in_features, fill);
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

    /// Copies the weights of output feature `j` (row `j` of the `out × in` weight,
    /// widened to f32) into `out`: a tied LM head's panels serve its embedding's rows.
    ///
    /// # Panics
    /// When `j` is not below [`PackedWeight::out_features`] or `out` is not
    /// [`PackedWeight::in_features`] long.
    pub fn copy_output_row(&self, j: usize, out: &mut [f32]) {
        assert!(j < self.out_features && out.len() == self.in_features);
        let (p, col, k) = (j / PANEL, j % PANEL, self.in_features);
        let at = |i: usize| (p * k + i) * PANEL + col;
        match &self.values {
            Values::F32 { panels, start, .. } => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = panels[start + at(i)];
                }
            }
            Values::Half { panels, format } => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = format.to_f32(panels[at(i)]);
                }
            }
            Values::Amx(panels) => panels.copy_output_row(j, out),
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
            Values::Half { panels, .. } => panels.len() * 2,
        }
    }
}

/// Splits `values` into panels of `in_features × PANEL` and fills each with
/// `fill(p, panel)`, in parallel for large weights.
fn fill_panels<T: Send>(
    values: &mut [T],
    in_features: usize,
    fill: impl Fn(usize, &mut [T]) + Sync,
) {
    let panel_len = (in_features * PANEL).max(1);
    advise_huge_pages(values, true);
    if values.len() >= PARALLEL_WORK {
        values
            .par_chunks_mut(panel_len)
            .enumerate()
            .for_each(|(p, panel)| fill(p, panel));
    } else {
        values
            .chunks_mut(panel_len)
            .enumerate()
            .for_each(|(p, panel)| fill(p, panel));
    }
    advise_huge_pages(values, false);
}

/// Where Linux offers transparent huge pages, has the 2 MiB pages that fit inside
/// `values` backed by them (`before_fill`: advice for the pages not yet touched;
/// after: a collapse of those an earlier use of the memory had already mapped as
/// 4 KiB pages). A decode step streams every weight once, and on 4 KiB pages that
/// stream stalls at every page (measured here: 2 threads read 38–42 GB/s from 4 KiB
/// pages, 60–62 GB/s from huge ones). Only advice: errors and other systems change
/// nothing.
fn advise_huge_pages<T>(values: &mut [T], before_fill: bool) {
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        let start = values.as_ptr() as usize;
        let end = start + std::mem::size_of_val(values);
        let (first, last) = (
            start.next_multiple_of(HUGE_PAGE),
            end / HUGE_PAGE * HUGE_PAGE,
        );
        if first < last {
            let advice = if before_fill {
                libc::MADV_HUGEPAGE
            } else {
                MADV_COLLAPSE
            };
            // SAFETY: advice on whole pages inside the slice's own allocation; it
            // changes no values.
            unsafe {
                libc::madvise(first as *mut libc::c_void, last - first, advice);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (values, before_fill);
}

/// Linux's `MADV_COLLAPSE` (since 6.1; older kernels refuse it, which changes nothing).
#[cfg(target_os = "linux")]
const MADV_COLLAPSE: libc::c_int = 25;

/// Fills panel `p` from the weight's rows (`row(j)`: output feature `j`'s `in_features`
/// values), input-major: `panel[i * PANEL + j]`.
fn copy_rows_into_panel<'a, T: Copy + 'a>(
    p: usize,
    panel: &mut [T],
    out_features: usize,
    in_features: usize,
    row: impl Fn(usize) -> &'a [T],
) {
    for j in 0..PANEL.min(out_features - p * PANEL) {
        for (i, &v) in row(p * PANEL + j)[..in_features].iter().enumerate() {
            panel[i * PANEL + j] = v;
        }
    }
}

/// `v` rounded to the nearest bf16 (ties to even), as f32.
fn round_bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

/// `activation(x·Wᵀ + b)` against a packed weight ([`crate::Backend::linear`] on the
/// CPU), for any number of rows: a decode step's single row streams each panel once.
pub fn linear(
    x: &Matrix,
    weight: &PackedWeight,
    bias: Option<&Matrix>,
    activation: Activation,
) -> Result<Matrix> {
    shapes::linear(
        x.cols,
        (weight.out_features(), weight.in_features()),
        bias.map(|b| b.data.len()),
    )?;
    let (m, n) = (x.rows, weight.out_features());
    let mut data: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the shapes were checked; the product writes every one of the `m × n`
    // values of the spare capacity before `set_len`.
    unsafe {
        matmul_packed(
            m,
            Rows {
                ptr: x.data.as_ptr(),
                row_stride: x.cols,
            },
            weight,
            bias.map(|b| b.data.as_slice()),
            activation,
            Rows {
                ptr: data.as_mut_ptr(),
                row_stride: n,
            },
            true,
        );
        data.set_len(m * n);
    }
    Ok(Matrix {
        rows: m,
        cols: n,
        data,
    })
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
    let (panels, round_inputs) = match &weight.values {
        Values::F32 {
            panels,
            start,
            round_inputs,
        } => (Panels::F32(&panels[*start..]), *round_inputs),
        Values::Half { panels, format } => (Panels::Half(panels, *format), false),
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
        panels,
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

/// A weight's panels as a product reads them, from the first on.
#[derive(Clone, Copy)]
enum Panels<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// 16-bit values, widened a group of panels at a time.
    Half(&'a [u16], HalfFormat),
}

impl Panels<'_> {
    /// Bytes per stored value.
    #[cfg(target_arch = "x86_64")]
    fn value_bytes(&self) -> usize {
        match self {
            Panels::F32(_) => 4,
            Panels::Half(..) => 2,
        }
    }
}

/// One product's operands, shared by its tasks.
struct Job<'a> {
    x: Rows<usize>,
    dst: SharedMut,
    dst_stride: usize,
    panels: Panels<'a>,
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
        let kernel = tile_kernel();
        // One tile's rows keep no outputs worth keeping in cache over a depth block: each
        // panel is then read once, start to end, as one stream. The one-pass tiles sum
        // such a pass in the depth blocks' order, so a row's values do not depend on how
        // many rows it came with. Nothing is then kept in cache from panel to panel
        // either, so the panels are one group (a single row takes them in pairs).
        let (one_pass, depth_block) = match kernel {
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx512 if rows.len() <= TILE_ROWS => (true, self.k),
            // A few rows take each panel in one pass a tile at a time (a second tile
            // re-reads it from L2): in depth ranges (whole depth blocks) whose slice of
            // a panel fits half of it.
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx2 if rows.len() == 1 => (true, self.k),
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx2 if rows.len() <= AVX2_ONE_PASS_ROWS => {
                let step_bytes = PANEL * self.panels.value_bytes();
                let blocks = (AVX2_ONE_PASS_PANEL_BYTES / (DEPTH_BLOCK * step_bytes)).max(1);
                (true, blocks * DEPTH_BLOCK)
            }
            _ => (false, DEPTH_BLOCK),
        };
        let group = if one_pass {
            panels.len()
        } else {
            (PANELS_BYTES / (self.k * PANEL * 4)).max(1)
        };
        PACKED_ROWS.with_borrow_mut(|packed| {
            self.pack_rows(rows.clone(), depth_block, packed);
            WIDENED.with_borrow_mut(|widened| {
                for first in panels.clone().step_by(group) {
                    let group = first..panels.end.min(first + group);
                    let span = first * self.k * PANEL..group.end * self.k * PANEL;
                    let weights = match self.panels {
                        Panels::F32(all) => Panels::F32(&all[span]),
                        Panels::Half(all, format) if kernel.reads_half() => {
                            Panels::Half(&all[span], format)
                        }
                        Panels::Half(all, format) => {
                            widened.resize(span.len(), 0.0);
                            format.widen(&all[span], widened);
                            Panels::F32(widened)
                        }
                    };
                    for depth in (0..self.k).step_by(depth_block) {
                        let depth_len = depth_block.min(self.k - depth);
                        let block = &packed[depth * rows.len()..];
                        let b = |p: usize| {
                            let at = ((p - first) * self.k + depth) * PANEL;
                            match weights {
                                Panels::F32(w) => PanelPtr::F32(w[at..].as_ptr()),
                                Panels::Half(w, format) => PanelPtr::Half(w[at..].as_ptr(), format),
                            }
                        };
                        let mut p = group.start;
                        while p < group.end {
                            #[cfg(target_arch = "x86_64")]
                            if one_pass && rows.len() == 1 {
                                let pair = p + 1 < group.end;
                                let depth = (depth, depth_len);
                                let r = rows.start;
                                let tile = |p: usize| self.tile(p, b(p), depth, r, 1, block);
                                // SAFETY: as for `panel`'s tiles; tiles of one row, one
                                // input block and one panel format, run by the kernel
                                // this CPU has.
                                match kernel {
                                    TileKernel::Avx512 if pair => unsafe {
                                        avx512::one_row_pair(tile(p), tile(p + 1));
                                    },
                                    TileKernel::Avx2 if pair => unsafe {
                                        avx2::one_row([&tile(p), &tile(p + 1)]);
                                    },
                                    TileKernel::Avx2 => unsafe { avx2::one_row([&tile(p)]) },
                                    _ => {
                                        let rows = rows.clone();
                                        self.panel(kernel, true, p, b(p), depth, rows, block);
                                        p += 1;
                                        continue;
                                    }
                                }
                                p += if pair { 2 } else { 1 };
                                continue;
                            }
                            self.panel(
                                kernel,
                                one_pass,
                                p,
                                b(p),
                                (depth, depth_len),
                                rows.clone(),
                                block,
                            );
                            p += 1;
                        }
                    }
                }
            });
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

    /// Panel `p` over one depth block (the whole depth when `one_pass`), for every tile
    /// of `rows` (`b`: the panel's weights from the block's first input on; `block`: the
    /// rows' packed inputs of this depth block).
    #[allow(clippy::too_many_arguments)]
    fn panel(
        &self,
        kernel: TileKernel,
        one_pass: bool,
        p: usize,
        b: PanelPtr,
        (depth, depth_len): (usize, usize),
        rows: Range<usize>,
        block: &[f32],
    ) {
        let tiles = (rows.start..rows.end).step_by(TILE_ROWS).map(|r| {
            let tile_rows = TILE_ROWS.min(rows.end - r);
            let a = &block[(r - rows.start) * depth_len..];
            self.tile(p, b, (depth, depth_len), r, tile_rows, a)
        });
        // SAFETY (both): every tile lies inside the packed rows, the panel and this
        // task's block of `dst` (the caller's contract).
        match kernel {
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx512 => tiles.for_each(|t| unsafe { avx512::tile(t) }),
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx2 if one_pass => {
                tiles.for_each(|t| unsafe { avx2::tile_in_one_pass(&t) })
            }
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx2 => tiles.for_each(|t| unsafe { avx2::tile(&t) }),
            TileKernel::Plain => tiles.for_each(|t| unsafe { plain::tile(t) }),
        }
    }

    /// The tile of rows `r..r + rows` (inputs `a`, packed) against panel `p` over one
    /// depth block.
    fn tile(
        &self,
        p: usize,
        b: PanelPtr,
        (depth, depth_len): (usize, usize),
        r: usize,
        rows: usize,
        a: &[f32],
    ) -> Tile {
        Tile {
            rows,
            a: a.as_ptr(),
            b,
            depth: depth_len,
            // Row `r` of this task's block of `dst`, in bounds by the caller's contract.
            c: self.dst.get().wrapping_add(r * self.dst_stride + p * PANEL),
            ldc: self.dst_stride,
            cols: PANEL.min(self.n - p * PANEL),
            accumulate: depth > 0,
            bias: match (depth, self.bias) {
                (0, Some(bias)) => bias[p * PANEL..].as_ptr(),
                _ => std::ptr::null(),
            },
        }
    }

    /// Copies the inputs of `rows` into `packed`: depth block after depth block, within
    /// one tile after tile, each tile's values input-major (`a[p * tile_rows + r]`) so
    /// a tile reads one stream.
    fn pack_rows(&self, rows: Range<usize>, depth_block: usize, packed: &mut Vec<f32>) {
        packed.resize(rows.len() * self.k, 0.0);
        for depth in (0..self.k).step_by(depth_block) {
            let len = depth_block.min(self.k - depth);
            let block = &mut packed[depth * rows.len()..][..len * rows.len()];
            let mut r = rows.start;
            while r < rows.end {
                let tile_rows = TILE_ROWS.min(rows.end - r);
                let out = &mut block[(r - rows.start) * len..][..tile_rows * len];
                let x = self.x.ptr as *const f32;
                let first = r * self.x.row_stride + depth;
                r += tile_rows;
                if !self.round_inputs {
                    // SAFETY: rows `r..r + tile_rows` of `x` hold `depth + len` values
                    // and `out` holds `tile_rows × len`.
                    unsafe {
                        let rows: [*const f32; TILE_ROWS] =
                            std::array::from_fn(|i| x.add(first + i * self.x.row_stride));
                        transpose_rows(&rows[..tile_rows], len, out.as_mut_ptr(), tile_rows);
                    }
                    continue;
                }
                for (p, out) in out.chunks_exact_mut(tile_rows).enumerate() {
                    for (i, o) in out.iter_mut().enumerate() {
                        // SAFETY: rows `r..r + tile_rows` of `x` hold `depth + len` values.
                        let v = unsafe { *x.add(first + i * self.x.row_stride + p) };
                        *o = if self.round_inputs { round_bf16(v) } else { v };
                    }
                }
            }
        }
    }
}

/// Copies `len` values of each of up to 16 `rows` into `out` input-major: value `p` of
/// row `r` at `out[p * out_stride + r]` (through registers where the CPU has AVX-512
/// or AVX2).
///
/// # Safety
/// Each row holds `len` values; `out` holds `len` strides of at least `rows.len()`.
unsafe fn transpose_rows(rows: &[*const f32], len: usize, out: *mut f32, out_stride: usize) {
    debug_assert!(rows.len() <= 16 && rows.len() <= out_stride);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return avx512::transpose_rows(rows, len, out, out_stride);
        }
        if std::arch::is_x86_feature_detected!("avx") {
            for (group, first) in rows.chunks(8).zip((0..).step_by(8)) {
                avx2::transpose_rows(group, len, out.add(first), out_stride);
            }
            return;
        }
    }
    for p in 0..len {
        for (r, row) in rows.iter().enumerate() {
            *out.add(p * out_stride + r) = *row.add(p);
        }
    }
}

thread_local! {
    /// Each thread's buffer for [`Job::pack_rows`].
    static PACKED_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's f32 copy of a group of 16-bit panels.
    static WIDENED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where a tile reads a panel's weights: f32 values, or 16-bit ones (only the tile
/// kernel [`tile_kernel`] says reads them).
#[derive(Clone, Copy)]
enum PanelPtr {
    F32(*const f32),
    Half(*const u16, HalfFormat),
}

impl PanelPtr {
    /// The f32 values, or null; the 16-bit values, or null.
    fn parts(self) -> (*const f32, *const u16) {
        match self {
            PanelPtr::F32(b) => (b, std::ptr::null()),
            PanelPtr::Half(b, _) => (std::ptr::null(), b),
        }
    }

    /// The f32 values; a 16-bit panel here is a bug of the caller.
    fn f32(self) -> *const f32 {
        match self {
            PanelPtr::F32(b) => b,
            PanelPtr::Half(..) => unreachable!("this tile kernel reads f32 panels only"),
        }
    }
}

/// One register tile: `c[rows × cols] (+)= a[rows × depth] · b[depth × PANEL]`, plus
/// `bias[..cols]` when `bias` is not null; `c` is added to when `accumulate`. `a` is
/// packed input-major: element `(r, p)` at `a[p * rows + r]`.
#[derive(Clone, Copy)]
struct Tile {
    rows: usize,
    a: *const f32,
    b: PanelPtr,
    depth: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
    bias: *const f32,
}

/// Panel weights stored as f32, as the tile kernels' const parameter.
#[cfg(target_arch = "x86_64")]
const F32: u8 = 0;
/// Panel weights stored as bf16.
#[cfg(target_arch = "x86_64")]
const BF16: u8 = 1;
/// Panel weights stored as f16.
#[cfg(target_arch = "x86_64")]
const F16: u8 = 2;

/// The register tiles a CPU runs products on.
#[derive(Clone, Copy)]
enum TileKernel {
    /// AVX-512: takes a depth longer than [`DEPTH_BLOCK`] in one pass for up to
    /// [`TILE_ROWS`] rows.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 + FMA + F16C: takes the depth in one pass (in ranges of at most
    /// [`AVX2_ONE_PASS_PANEL_BYTES`] of a panel, the whole depth for one row) for up to
    /// [`AVX2_ONE_PASS_ROWS`] rows.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain loops, for any CPU.
    Plain,
}

impl TileKernel {
    /// Whether the kernel reads 16-bit panels as they are (else they are widened to
    /// f32 first, a group of panels at a time).
    fn reads_half(self) -> bool {
        !matches!(self, TileKernel::Plain)
    }
}

/// The widest tile kernel this CPU runs.
fn tile_kernel() -> TileKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return TileKernel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return TileKernel::Avx2;
        }
    }
    TileKernel::Plain
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{HalfFormat, PanelPtr, Tile, BF16, DEPTH_BLOCK, F16, F32, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// `out[p * out_stride + r] = rows[r][p]` for up to 16 `rows` of `len` inputs: the
    /// copy of [`super::Job::pack_rows`] and of packing weights' panels, 16 inputs of
    /// every row at a time through a register transpose (four butterfly stages, each
    /// swapping one bit of the row index with one of the input index), the last
    /// `len % 16` one by one.
    ///
    /// # Safety
    /// The CPU has AVX-512F; each of `rows` points to `len` values; `out` holds
    /// `(len - 1) * out_stride + rows.len()` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_rows(
        rows: &[*const f32],
        len: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let n = rows.len();
        debug_assert!((1..=16).contains(&n));
        /// Lane indices of one butterfly stage swapping bit `BIT` (of 16 lanes): the
        /// first output of a pair, then the second.
        const fn stage(bit: usize) -> [[i32; 16]; 2] {
            let mut idx = [[0i32; 16]; 2];
            let mut e = 0;
            while e < 16 {
                let (lo, hi) = if e & bit == 0 {
                    (e, e + bit)
                } else {
                    (16 + e - bit, 16 + e)
                };
                idx[0][e] = lo as i32;
                idx[1][e] = hi as i32;
                e += 1;
            }
            idx
        }
        const STAGES: [[[i32; 16]; 2]; 4] = [stage(8), stage(4), stage(2), stage(1)];
        let idx: [[__m512i; 2]; 4] = std::array::from_fn(|s| {
            std::array::from_fn(|h| _mm512_loadu_si512(STAGES[s][h].as_ptr().cast()))
        });
        let mask: __mmask16 = ((1u32 << n) - 1) as __mmask16;
        let full = len / 16 * 16;
        for p in (0..full).step_by(16) {
            let mut v: [__m512; 16] = std::array::from_fn(|r| {
                if r < n {
                    _mm512_loadu_ps(rows[r].add(p))
                } else {
                    _mm512_setzero_ps()
                }
            });
            for (s, bit) in [8, 4, 2, 1].into_iter().enumerate() {
                for a in 0..16 {
                    if a & bit == 0 {
                        let b = a | bit;
                        let lo = _mm512_permutex2var_ps(v[a], idx[s][0], v[b]);
                        let hi = _mm512_permutex2var_ps(v[a], idx[s][1], v[b]);
                        v[a] = lo;
                        v[b] = hi;
                    }
                }
            }
            for (j, column) in v.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add((p + j) * out_stride), mask, *column);
            }
        }
        for p in full..len {
            for (r, row) in rows.iter().enumerate() {
                *out.add(p * out_stride + r) = *row.add(p);
            }
        }
    }

    /// [`Tile`] with AVX-512: `rows × 2` accumulators, the panel's two registers loaded
    /// once per input, each row's input broadcast.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the tile's pointers are valid for its extents.
    pub(super) unsafe fn tile(t: Tile) {
        macro_rules! rows {
            ($format:ident, $($r:literal)*) => {
                match t.rows {
                    $($r => tile_rows::<$r, $format, 1>([&t]),)*
                    _ => unreachable!("tile of {} rows", t.rows),
                }
            };
        }
        const _: () = assert!(TILE_ROWS <= 14 && PANEL == 32);
        match t.b {
            PanelPtr::F32(_) => rows!(F32, 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
            PanelPtr::Half(_, HalfFormat::Bf16) => rows!(BF16, 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
            PanelPtr::Half(_, HalfFormat::F16) => rows!(F16, 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
        }
    }

    /// Input `p`'s row of the panel (its 32 outputs) as two registers of f32: read
    /// from `f32s` when `FORMAT` is [`F32`], else widened from the bf16 or f16 `halves`.
    #[inline(always)]
    unsafe fn panel_row<const FORMAT: u8>(
        f32s: *const f32,
        halves: *const u16,
        p: usize,
    ) -> (__m512, __m512) {
        if FORMAT == F32 {
            return (
                _mm512_loadu_ps(f32s.add(p * PANEL)),
                _mm512_loadu_ps(f32s.add(p * PANEL + 16)),
            );
        }
        let low = _mm256_loadu_si256(halves.add(p * PANEL) as *const __m256i);
        let high = _mm256_loadu_si256(halves.add(p * PANEL + 16) as *const __m256i);
        if FORMAT == BF16 {
            let widen = |v| _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
            (widen(low), widen(high))
        } else {
            (_mm512_cvtph_ps(low), _mm512_cvtph_ps(high))
        }
    }

    /// A decode step's one row against two whole panels at once: [`tile`]'s sums, in
    /// its order, with twice the loads and FMA chains in flight.
    ///
    /// # Safety
    /// As [`tile`]; both tiles have one row, the same inputs and depth, and panels of
    /// one format.
    pub(super) unsafe fn one_row_pair(first: Tile, second: Tile) {
        match first.b {
            PanelPtr::F32(_) => tile_rows::<1, F32, 2>([&first, &second]),
            PanelPtr::Half(_, HalfFormat::Bf16) => tile_rows::<1, BF16, 2>([&first, &second]),
            PanelPtr::Half(_, HalfFormat::F16) => tile_rows::<1, F16, 2>([&first, &second]),
        }
    }

    /// `R` rows against `N` panels (each a [`Tile`] of the same inputs and depth).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_rows<const R: usize, const FORMAT: u8, const N: usize>(tiles: [&Tile; N]) {
        let t = tiles[0];
        let mut f32s = [std::ptr::null(); N];
        let mut halves = [std::ptr::null(); N];
        let mut masks = [(0, 0); N];
        let mut start_sums = [[_mm512_setzero_ps(); 2]; N];
        for (n, tile) in tiles.iter().enumerate() {
            match tile.b {
                PanelPtr::F32(b) => f32s[n] = b,
                PanelPtr::Half(b, _) => halves[n] = b,
            }
            let low: __mmask16 = if tile.cols >= 16 {
                0xffff
            } else {
                (1u16 << tile.cols) - 1
            };
            let high: __mmask16 = if tile.cols >= PANEL {
                0xffff
            } else if tile.cols > 16 {
                (1u16 << (tile.cols - 16)) - 1
            } else {
                0
            };
            masks[n] = (low, high);
            if !tile.bias.is_null() {
                start_sums[n] = [
                    _mm512_maskz_loadu_ps(low, tile.bias),
                    _mm512_maskz_loadu_ps(high, tile.bias.add(16)),
                ];
            }
        }
        // Sums over DEPTH_BLOCK inputs at a time, each added to the sum so far (the first
        // to the bias): the order of the depth-blocked products, so a tile that takes
        // the whole depth in one pass gives the same values.
        let mut total = [[[_mm512_setzero_ps(); 2]; N]; R];
        for start in (0..t.depth).step_by(DEPTH_BLOCK) {
            let mut acc = [[[_mm512_setzero_ps(); 2]; N]; R];
            for p in start..t.depth.min(start + DEPTH_BLOCK) {
                for n in 0..N {
                    let (b0, b1) = panel_row::<FORMAT>(f32s[n], halves[n], p);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = _mm512_set1_ps(*t.a.add(p * R + r));
                        acc[n][0] = _mm512_fmadd_ps(a, b0, acc[n][0]);
                        acc[n][1] = _mm512_fmadd_ps(a, b1, acc[n][1]);
                    }
                }
            }
            for (total, acc) in total.iter_mut().zip(&acc) {
                for n in 0..N {
                    let base = if start == 0 { start_sums[n] } else { total[n] };
                    total[n] = [
                        _mm512_add_ps(acc[n][0], base[0]),
                        _mm512_add_ps(acc[n][1], base[1]),
                    ];
                }
            }
        }
        for (r, total) in total.iter().enumerate() {
            for (n, tile) in tiles.iter().enumerate() {
                let (low, high) = masks[n];
                let c = tile.c.add(r * tile.ldc);
                let (mut v0, mut v1) = (total[n][0], total[n][1]);
                if tile.accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(low, c));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(high, c.add(16)));
                }
                _mm512_mask_storeu_ps(c, low, v0);
                _mm512_mask_storeu_ps(c.add(16), high, v1);
            }
        }
    }
}

/// Tiles as plain loops, for CPUs without AVX2.
mod plain {
    use super::{Tile, PANEL};

    /// Rows accumulated at once (4 × 32 accumulators).
    const ROWS: usize = 4;

    /// [`Tile`] as plain loops over f32 panels.
    ///
    /// # Safety
    /// The tile's pointers are valid for its extents.
    pub(super) unsafe fn tile(t: Tile) {
        let mut r = 0;
        while r < t.rows {
            let rows = ROWS.min(t.rows - r);
            let mut acc = [[0f32; PANEL]; ROWS];
            for p in 0..t.depth {
                let b = std::slice::from_raw_parts(t.b.f32().add(p * PANEL), PANEL);
                for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                    let a = *t.a.add(p * t.rows + r + i);
                    for j in 0..PANEL {
                        acc[j] = a.mul_add(b[j], acc[j]);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate().take(rows) {
                let c = t.c.add((r + i) * t.ldc);
                for (j, &v) in acc[..t.cols].iter().enumerate() {
                    let mut v = v;
                    if !t.bias.is_null() {
                        v += *t.bias.add(j);
                    }
                    if t.accumulate {
                        v += *c.add(j);
                    }
                    *c.add(j) = v;
                }
            }
            r += rows;
        }
    }
}

/// Tiles with AVX2, FMA and F16C (16-bit panels widened in registers).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{HalfFormat, PanelPtr, Tile, BF16, DEPTH_BLOCK, F16, F32, PANEL};
    use std::arch::x86_64::*;

    /// Depth steps of one chunk of [`rows_in_chunks`] (8 KiB of an f32 panel, in L1).
    const CHUNK: usize = 64;

    /// Copies `len` values of each of up to 8 `rows` into `out` input-major (value `p`
    /// of row `r` at `out[p * out_stride + r]`), 8 inputs at a time through an 8 × 8
    /// register transpose.
    ///
    /// # Safety
    /// The CPU has AVX; each row holds `len` values; `out` holds `len` strides of at
    /// least `rows.len()`.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose_rows(
        rows: &[*const f32],
        len: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let n = rows.len();
        debug_assert!((1..=8).contains(&n));
        let full = len / 8 * 8;
        for p in (0..full).step_by(8) {
            let v: [__m256; 8] = std::array::from_fn(|r| {
                if r < n {
                    _mm256_loadu_ps(rows[r].add(p))
                } else {
                    _mm256_setzero_ps()
                }
            });
            let t: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (v[i / 2 * 2], v[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm256_unpacklo_ps(a, b)
                } else {
                    _mm256_unpackhi_ps(a, b)
                }
            });
            // u[4g + j]: rows 4g..4g + 4 of inputs j and j + 4 (one per 128-bit lane).
            let u: [__m256; 8] = std::array::from_fn(|i| {
                let (g, j) = (i / 4, i % 4);
                let (a, b) = (t[4 * g + j / 2], t[4 * g + 2 + j / 2]);
                if j % 2 == 0 {
                    _mm256_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm256_shuffle_ps::<0xEE>(a, b)
                }
            });
            for j in 0..8 {
                let column = if j < 4 {
                    _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j])
                } else {
                    _mm256_permute2f128_ps::<0x31>(u[j - 4], u[j])
                };
                let at = out.add((p + j) * out_stride);
                match n {
                    8 => _mm256_storeu_ps(at, column),
                    4 => _mm_storeu_ps(at, _mm256_castps256_ps128(column)),
                    _ => {
                        // (AMD's masked stores are microcoded: slower than this copy.)
                        let mut lanes = [0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), column);
                        std::ptr::copy_nonoverlapping(lanes.as_ptr(), at, n);
                    }
                }
            }
        }
        for p in full..len {
            for (r, row) in rows.iter().enumerate() {
                *out.add(p * out_stride + r) = *row.add(p);
            }
        }
    }

    /// Eight consecutive panel values from `at` on, as f32: read from `f32s` when
    /// `FORMAT` is [`F32`], else widened (exactly) from the bf16 or f16 `halves`.
    #[inline(always)]
    unsafe fn load8<const FORMAT: u8>(f32s: *const f32, halves: *const u16, at: usize) -> __m256 {
        if FORMAT == F32 {
            return _mm256_loadu_ps(f32s.add(at));
        }
        let v = _mm_loadu_si128(halves.add(at) as *const __m128i);
        if FORMAT == BF16 {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16))
        } else {
            _mm256_cvtph_ps(v)
        }
    }

    /// Stores `values` as row `r`'s columns `col..col + 8` of the tile (fewer past its
    /// `cols`), added to what `c` held when accumulating.
    #[inline(always)]
    unsafe fn store8(t: &Tile, r: usize, col: usize, values: __m256) {
        let c = t.c.add(r * t.ldc + col);
        let cols = t.cols.saturating_sub(col).min(8);
        if cols == 8 {
            let v = if t.accumulate {
                _mm256_add_ps(values, _mm256_loadu_ps(c))
            } else {
                values
            };
            _mm256_storeu_ps(c, v);
            return;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), values);
        for (j, &v) in lanes[..cols].iter().enumerate() {
            *c.add(j) = if t.accumulate { v + *c.add(j) } else { v };
        }
    }

    /// Row `r`'s columns `col..col + 8` of the tile as `c` holds them (zeros past its
    /// `cols`).
    #[inline(always)]
    unsafe fn load_c8(t: &Tile, r: usize, col: usize) -> __m256 {
        let c = t.c.add(r * t.ldc + col);
        let cols = t.cols.saturating_sub(col).min(8);
        if cols == 8 {
            return _mm256_loadu_ps(c);
        }
        let mut lanes = [0f32; 8];
        lanes[..cols].copy_from_slice(std::slice::from_raw_parts(c, cols));
        _mm256_loadu_ps(lanes.as_ptr())
    }

    /// Eight bias values from column `col` on (zeros past the tile's `cols`).
    #[inline(always)]
    unsafe fn bias8(t: &Tile, col: usize) -> __m256 {
        let cols = t.cols.saturating_sub(col).min(8);
        if cols == 8 {
            return _mm256_loadu_ps(t.bias.add(col));
        }
        let mut lanes = [0f32; 8];
        lanes[..cols].copy_from_slice(std::slice::from_raw_parts(t.bias.add(col), cols));
        _mm256_loadu_ps(lanes.as_ptr())
    }

    /// A tile's rows against its panel over one depth block, 3 rows × the panel's 32
    /// columns at a time: 12 sums, the 3 rows' broadcast inputs and one panel register
    /// fill the 16 registers, and the panel is read as one contiguous stream per 3 rows.
    /// (BLIS's 6 × 16 block, each half of the panel in turn, ran 7–30% slower on Zen 3.)
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; the tile's pointers are valid for its extents.
    pub(super) unsafe fn tile(t: &Tile) {
        macro_rules! rows {
            ($format:ident) => {{
                let mut r = 0;
                while r < t.rows {
                    match t.rows - r {
                        1 => block::<1, $format>(t, r),
                        2 => block::<2, $format>(t, r),
                        _ => block::<3, $format>(t, r),
                    }
                    r += 3;
                }
            }};
        }
        match t.b {
            PanelPtr::F32(_) => rows!(F32),
            PanelPtr::Half(_, HalfFormat::Bf16) => rows!(BF16),
            PanelPtr::Half(_, HalfFormat::F16) => rows!(F16),
        }
    }

    /// Rows `r0..r0 + R` (at most 3) of a tile against its whole panel.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const R: usize, const FORMAT: u8>(t: &Tile, r0: usize) {
        let (f32s, halves) = t.b.parts();
        let a = t.a.add(r0);
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        for p in 0..t.depth {
            let x: [__m256; R] =
                std::array::from_fn(|r| _mm256_broadcast_ss(&*a.add(p * t.rows + r)));
            for i in 0..4 {
                let b = load8::<FORMAT>(f32s, halves, p * PANEL + 8 * i);
                for (acc, &x) in acc.iter_mut().zip(&x) {
                    acc[i] = _mm256_fmadd_ps(x, b, acc[i]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (i, &sum) in acc.iter().enumerate() {
                let v = if t.bias.is_null() {
                    sum
                } else {
                    _mm256_add_ps(sum, bias8(t, 8 * i))
                };
                store8(t, r0 + r, 8 * i, v);
            }
        }
    }

    /// A decode step's one row against `N` whole panels at once (a pair: eight FMA
    /// chains in flight), the whole depth in one pass (see [`pass`]).
    ///
    /// # Safety
    /// As [`tile`]; every tile has one row, the same inputs and depth, and panels of
    /// one format.
    pub(super) unsafe fn one_row<const N: usize>(tiles: [&Tile; N]) {
        match tiles[0].b {
            PanelPtr::F32(_) => pass::<N, F32>(tiles),
            PanelPtr::Half(_, HalfFormat::Bf16) => pass::<N, BF16>(tiles),
            PanelPtr::Half(_, HalfFormat::F16) => pass::<N, F16>(tiles),
        }
    }

    /// A tile's rows (up to [`super::TILE_ROWS`]) against its panel, summed in the depth
    /// blocks' order as [`pass`] sums one row (see [`rows_in_chunks`]).
    ///
    /// # Safety
    /// As [`tile`].
    pub(super) unsafe fn tile_in_one_pass(t: &Tile) {
        macro_rules! rows {
            ($format:ident) => {
                match t.rows {
                    1 => rows_in_chunks::<1, $format>(t),
                    2 => rows_in_chunks::<2, $format>(t),
                    3 => rows_in_chunks::<3, $format>(t),
                    4 => rows_in_chunks::<4, $format>(t),
                    5 => rows_in_chunks::<5, $format>(t),
                    6 => rows_in_chunks::<6, $format>(t),
                    7 => rows_in_chunks::<7, $format>(t),
                    8 => rows_in_chunks::<8, $format>(t),
                    9 => rows_in_chunks::<9, $format>(t),
                    10 => rows_in_chunks::<10, $format>(t),
                    11 => rows_in_chunks::<11, $format>(t),
                    _ => rows_in_chunks::<12, $format>(t),
                }
            };
        }
        match t.b {
            PanelPtr::F32(_) => rows!(F32),
            PanelPtr::Half(_, HalfFormat::Bf16) => rows!(BF16),
            PanelPtr::Half(_, HalfFormat::F16) => rows!(F16),
        }
    }

    /// All `R` rows of a tile against its panel while the panel streams through L1 once:
    /// [`CHUNK`] depth steps at a time, each chunk's slice of the panel taken 8 columns
    /// at a time against every row (`R` sums, a panel register and a broadcast input in
    /// the 16 registers), the sums parked in L1 between the four column groups, and the
    /// next chunk prefetched meanwhile, a little at every step. Each [`DEPTH_BLOCK`]'s
    /// sum is added to the bias (or to what `c` held), then to the sum so far, as
    /// [`pass`] adds a single row's.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_in_chunks<const R: usize, const FORMAT: u8>(t: &Tile) {
        const { assert!(DEPTH_BLOCK.is_multiple_of(CHUNK)) };
        let (f32s, halves) = t.b.parts();
        let mut total = [[_mm256_setzero_ps(); 4]; R];
        for (r, total) in total.iter_mut().enumerate() {
            if t.accumulate {
                *total = std::array::from_fn(|i| load_c8(t, r, 8 * i));
            } else if !t.bias.is_null() {
                *total = std::array::from_fn(|i| bias8(t, 8 * i));
            }
        }
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        for start in (0..t.depth).step_by(CHUNK) {
            let end = t.depth.min(start + CHUNK);
            for i in 0..4 {
                let mut sums: [__m256; R] = std::array::from_fn(|r| acc[r][i]);
                for p in start..end {
                    // The next chunk's values, a quarter of them per column group.
                    let ahead = (start + CHUNK) * PANEL + (i * CHUNK + p - start) * PANEL / 4;
                    prefetch::<FORMAT>(f32s, halves, ahead);
                    let b = load8::<FORMAT>(f32s, halves, p * PANEL + 8 * i);
                    let x = t.a.add(p * t.rows);
                    for (r, sum) in sums.iter_mut().enumerate() {
                        *sum = _mm256_fmadd_ps(_mm256_broadcast_ss(&*x.add(r)), b, *sum);
                    }
                }
                for (acc, sum) in acc.iter_mut().zip(sums) {
                    acc[i] = sum;
                }
            }
            if end.is_multiple_of(DEPTH_BLOCK) || end == t.depth {
                for (total, acc) in total.iter_mut().zip(&mut acc) {
                    for (total, acc) in total.iter_mut().zip(acc) {
                        *total = _mm256_add_ps(*acc, *total);
                        *acc = _mm256_setzero_ps();
                    }
                }
            }
        }
        let replace = Tile {
            accumulate: false,
            ..*t
        };
        for (r, total) in total.iter().enumerate() {
            for (i, &v) in total.iter().enumerate() {
                store8(&replace, r, 8 * i, v);
            }
        }
    }

    /// Prefetches the panel's value `at` (its cache line) into L1.
    #[inline(always)]
    unsafe fn prefetch<const FORMAT: u8>(f32s: *const f32, halves: *const u16, at: usize) {
        let line = if FORMAT == F32 {
            f32s.wrapping_add(at) as *const i8
        } else {
            halves.wrapping_add(at) as *const i8
        };
        _mm_prefetch::<_MM_HINT_T0>(line);
    }

    /// One row of `N` tiles (the same inputs and depth) against their whole panels, the
    /// whole depth in one pass: each [`DEPTH_BLOCK`]'s sum added to the bias, then to
    /// the sum so far, as [`rows_in_chunks`] sums each of its rows, so a row's values do
    /// not depend on how many rows it came with.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pass<const N: usize, const FORMAT: u8>(tiles: [&Tile; N]) {
        let t = tiles[0];
        let parts = tiles.map(|tile| tile.b.parts());
        let mut total = [[_mm256_setzero_ps(); 4]; N];
        for (total, tile) in total.iter_mut().zip(&tiles) {
            if !tile.bias.is_null() {
                *total = std::array::from_fn(|i| bias8(tile, 8 * i));
            }
        }
        for start in (0..t.depth).step_by(DEPTH_BLOCK) {
            let mut acc = [[_mm256_setzero_ps(); 4]; N];
            for p in start..t.depth.min(start + DEPTH_BLOCK) {
                let x = _mm256_broadcast_ss(&*t.a.add(p));
                for (acc, &(f32s, halves)) in acc.iter_mut().zip(&parts) {
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let b = load8::<FORMAT>(f32s, halves, p * PANEL + 8 * i);
                        *acc = _mm256_fmadd_ps(x, b, *acc);
                    }
                }
            }
            for (total, acc) in total.iter_mut().zip(&acc) {
                for (total, &acc) in total.iter_mut().zip(acc) {
                    *total = _mm256_add_ps(acc, *total);
                }
            }
        }
        for (tile, total) in tiles.iter().zip(&total) {
            for (i, &v) in total.iter().enumerate() {
                store8(tile, 0, 8 * i, v);
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

    #[test]
    fn register_transpose_copies_rows_input_major() {
        let stride = 300;
        let x = values(16 * stride, 0.3);
        for rows in 1..=16 {
            for len in [0, 5, 8, 16, 37, 256] {
                let mut got = vec![f32::NAN; rows * len];
                // SAFETY: `x` holds 16 rows of `stride ≥ len` values and `got` holds
                // `rows × len`.
                unsafe {
                    let ptrs: Vec<_> = (0..rows).map(|r| x[r * stride..].as_ptr()).collect();
                    transpose_rows(&ptrs, len, got.as_mut_ptr(), rows);
                }
                let want: Vec<f32> = (0..len)
                    .flat_map(|p| (0..rows).map(move |r| (r, p)))
                    .map(|(r, p)| x[r * stride + p])
                    .collect();
                assert_eq!(got, want, "{rows} rows of {len}");
            }
        }
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

    #[test]
    fn half_weights_give_the_products_of_their_widened_values() {
        // Bit for bit what the f32 panels of the same (exactly widened) values give: one
        // row (a decode step), a few, and many, serial and parallel.
        for (m, k, n) in [(1, 896, 200), (3, 37, 33), (40, 300, 70), (1, 1536, 5000)] {
            let (x, w, b) = (values(m * k, 0.9), values(n * k, 4.1), values(n, 0.3));
            for format in [HalfFormat::Bf16, HalfFormat::F16] {
                let bits: Vec<u16> = w
                    .iter()
                    .map(|&v| match format {
                        HalfFormat::Bf16 => half::bf16::from_f32(v).to_bits(),
                        HalfFormat::F16 => half::f16::from_f32(v).to_bits(),
                    })
                    .collect();
                let mut widened = vec![0f32; bits.len()];
                format.widen(&bits, &mut widened);
                let half = PackedWeight::pack_half(n, k, &bits, format);
                assert_eq!(half.memory_bytes(), n.div_ceil(PANEL) * PANEL * k * 2);
                let full = PackedWeight::pack(n, k, &widened);
                let x = Matrix {
                    rows: m,
                    cols: k,
                    data: x.clone(),
                };
                let bias = Matrix {
                    rows: 1,
                    cols: n,
                    data: b.clone(),
                };
                let got = linear(&x, &half, Some(&bias), Activation::Gelu).unwrap();
                let want = linear(&x, &full, Some(&bias), Activation::Gelu).unwrap();
                assert_eq!(got, want, "{m}x{k}x{n} {format:?}");
                let reference = reference(m, k, n, &x.data, &widened, &b);
                let plain = linear(&x, &half, Some(&bias), Activation::Identity).unwrap();
                let worst = plain
                    .data
                    .iter()
                    .zip(&reference)
                    .map(|(g, w)| (*g as f64 - w).abs() / (1.0 + w.abs()))
                    .fold(0.0, f64::max);
                assert!(worst < 1e-5, "{m}x{k}x{n} {format:?}: {worst}");
            }
        }
    }

    #[test]
    fn output_rows_come_back_from_every_layout() {
        let (n, k) = (70, 45);
        let w = values(n * k, 1.1);
        let bits: Vec<u16> = w
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect();
        let rounded: Vec<f32> = w.iter().map(|&v| round_bf16(v)).collect();
        for (packed, want) in [
            (PackedWeight::pack(n, k, &w), &w),
            (
                PackedWeight::pack_half(n, k, &bits, HalfFormat::Bf16),
                &rounded,
            ),
            (PackedWeight::pack_bf16(n, k, &w), &rounded),
        ] {
            let mut row = vec![0f32; k];
            for j in [0, 31, 32, 69] {
                packed.copy_output_row(j, &mut row);
                assert_eq!(row, want[j * k..][..k], "row {j}");
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_values_alone_and_in_a_batch() {
        // One row takes the whole depth in one pass (panels two at a time), up to 24
        // rows with AVX2 take it in chunks (a tile of up to 12 rows against each 8
        // columns; 2,600 f32 inputs in two depth ranges, the second ending in a partial
        // chunk) and 40 go depth block by depth block: the sums are added in the same
        // order, so the values are equal. 70 outputs: a pair of whole panels and a
        // partial one; 40: a whole and a partial panel as a pair.
        for (m, k, n) in [
            (20, 896, 70),
            (40, 300, 40),
            (20, 300, 40),
            (8, 2600, 40),
            (5, 70, 70),
        ] {
            let (x, w, b) = (values(m * k, 0.6), values(n * k, 2.9), values(n, 1.2));
            let bits: Vec<u16> = w
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_bits())
                .collect();
            let bias = Matrix {
                rows: 1,
                cols: n,
                data: b,
            };
            for weight in [
                PackedWeight::pack(n, k, &w),
                PackedWeight::pack_half(n, k, &bits, HalfFormat::Bf16),
            ] {
                let batch = Matrix {
                    rows: m,
                    cols: k,
                    data: x.clone(),
                };
                let all = linear(&batch, &weight, Some(&bias), Activation::Identity).unwrap();
                for r in [0, 4, 7, 19].into_iter().filter(|&r| r < m) {
                    let one = Matrix {
                        rows: 1,
                        cols: k,
                        data: x[r * k..][..k].to_vec(),
                    };
                    let alone = linear(&one, &weight, Some(&bias), Activation::Identity).unwrap();
                    assert_eq!(alone.data, all.row(r), "{n} outputs, row {r}");
                }
            }
        }
    }
}
