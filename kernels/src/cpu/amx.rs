//! bf16 products for the `bf16` precision: weights stored bf16 in a pair-interleaved
//! layout at load, inputs rounded to bf16 as they are copied, sums in f32. On Intel AMX
//! tiles (`tdpbf16ps`: a 16×32 by 32×16 bf16 product into a 16×16 f32 tile in one
//! instruction) where the CPU has them, else with AVX512-BF16 (`vdpbf16ps`: 16 f32 sums
//! of bf16 pair products per instruction, twice the multiply-adds of an f32 FMA; AMD
//! Zen 4 and later, Intel Cooper Lake) in registers. AMX instructions are written with
//! `asm!` (their intrinsics are not stable Rust); [`available`] checks the CPU and asks
//! Linux for the tile state once per process.

use super::gemm::SharedMut;
use super::packed::{apply, for_each_piece, Rows, PANEL};
use super::simd;
use crate::Activation;
use half::bf16;
use std::arch::asm;
use std::sync::OnceLock;

/// Inputs per tile step: one A tile is 16 rows × 32 bf16 (64 bytes).
const DEPTH_STEP: usize = 32;
/// Rows of one output block: two A tiles.
const BLOCK_ROWS: usize = 32;
/// Rows of one AVX512-BF16 register tile: 8 rows × a panel's 32 outputs in 16
/// accumulators.
const REGISTER_ROWS: usize = 8;
/// Bytes of bf16 inputs per row block.
const ROWS_BYTES: usize = 256 << 10;

/// Whether this CPU and OS run AMX-BF16 tiles (checked once).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
            let leaf = std::arch::x86_64::__cpuid_count(7, 0);
            if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain system call asking for the AMX tile state.
            unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                ) == 0
            }
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        false
    })
}

/// Whether this CPU runs bf16 products on AMX tiles or with AVX512-BF16.
pub(crate) fn any_available() -> bool {
    available() || avx512_bf16_available()
}

/// Whether this CPU has AVX512-BF16 (with AVX-512F).
fn avx512_bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A weight in AMX's B-tile layout: per panel of [`PANEL`] outputs, for each pair of
/// inputs, the panel's 32 outputs × the pair (128 bytes), so a B tile is 16 input pairs
/// × 16 outputs at a 128-byte stride. Inputs are padded to [`DEPTH_STEP`] with zeros.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AmxPanels {
    values: Vec<u16>,
    start: usize,
    /// Inputs rounded up to a multiple of [`DEPTH_STEP`].
    depth: usize,
}

impl AmxPanels {
    /// Packs an `out × in` weight given row by row.
    pub(crate) fn pack<'a>(
        out_features: usize,
        in_features: usize,
        row: impl Fn(usize) -> &'a [f32],
    ) -> Self {
        let depth = in_features.div_ceil(DEPTH_STEP) * DEPTH_STEP;
        let panels = out_features.div_ceil(PANEL);
        let len = panels * depth * PANEL;
        let mut values = vec![0u16; len + 32];
        let start = values.as_ptr().align_offset(64).min(32);
        for j in 0..out_features {
            let (p, col) = (j / PANEL, j % PANEL);
            let panel = &mut values[start + p * depth * PANEL..];
            for (i, &v) in row(j)[..in_features].iter().enumerate() {
                panel[((i / 2) * PANEL + col) * 2 + i % 2] = bf16::from_f32(v).to_bits();
            }
        }
        Self {
            values,
            start,
            depth,
        }
    }

    /// Copies output feature `j`'s `out.len()` inputs, widened to f32, into `out`.
    pub(crate) fn copy_output_row(&self, j: usize, out: &mut [f32]) {
        let (p, col) = (j / PANEL, j % PANEL);
        let panel = &self.values[self.start + p * self.depth * PANEL..];
        for (i, o) in out.iter_mut().enumerate() {
            *o = bf16::from_bits(panel[((i / 2) * PANEL + col) * 2 + i % 2]).to_f32();
        }
    }

    /// Bytes the packed values take.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.values.len() * 2
    }
}

/// `dst[m × n] = activation(x[m × k] · Wᵀ + bias)` on AMX tiles, or with AVX512-BF16
/// where AMX is missing.
///
/// # Safety
/// As [`super::packed::matmul_packed`]; [`any_available`] returned true.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    m: usize,
    x: Rows<*const f32>,
    k: usize,
    weight: &AmxPanels,
    n: usize,
    bias: Option<&[f32]>,
    activation: Activation,
    dst: Rows<*mut f32>,
    parallel: bool,
) {
    let tiles = available();
    // AMX products take 32 rows at a time, the AVX512-BF16 ones 8.
    let granule = if tiles { BLOCK_ROWS } else { REGISTER_ROWS };
    let max_block_rows = ROWS_BYTES / (weight.depth * 2);
    let (x_ptr, x_stride) = (x.ptr as usize, x.row_stride);
    let out = SharedMut(dst.ptr);
    for_each_piece(
        m,
        n,
        k,
        (max_block_rows, granule),
        parallel,
        |rows, panels| {
            INPUTS.with_borrow_mut(|inputs| {
                let padded = rows.len().div_ceil(BLOCK_ROWS) * BLOCK_ROWS;
                inputs.clear();
                inputs.resize(padded * weight.depth, 0);
                for (i, r) in rows.clone().enumerate() {
                    // SAFETY: row `r` of `x` holds `k` values (the caller's contract).
                    let src =
                        std::slice::from_raw_parts((x_ptr as *const f32).add(r * x_stride), k);
                    simd::to_bf16_bits(&mut inputs[i * weight.depth..][..k], src);
                }
                let mut block = Block {
                    inputs,
                    depth: weight.depth,
                    scratch: [[0.0; PANEL]; BLOCK_ROWS],
                };
                if tiles {
                    configure_tiles();
                }
                for p in panels.clone() {
                    let panel = weight.values[weight.start + p * weight.depth * PANEL..].as_ptr();
                    let cols = PANEL.min(n - p * PANEL);
                    for first in (0..rows.len()).step_by(BLOCK_ROWS) {
                        if !tiles {
                            #[cfg(target_arch = "x86_64")]
                            block.product_avx512(
                                first,
                                (rows.len() - first).min(BLOCK_ROWS),
                                panel,
                                &Output {
                                    c: out
                                        .get()
                                        .add((rows.start + first) * dst.row_stride + p * PANEL),
                                    ldc: dst.row_stride,
                                    cols,
                                    bias: bias
                                        .map_or(std::ptr::null(), |b| b[p * PANEL..].as_ptr()),
                                },
                            );
                            continue;
                        }
                        block.product(first, panel);
                        for (i, values) in block.scratch.iter().enumerate() {
                            if first + i >= rows.len() {
                                break;
                            }
                            let r = rows.start + first + i;
                            let row = std::slice::from_raw_parts_mut(
                                out.get().add(r * dst.row_stride + p * PANEL),
                                cols,
                            );
                            simd::copy_with_bias(
                                row,
                                values,
                                bias.map(|b| &b[p * PANEL..][..cols]),
                            );
                        }
                    }
                }
                if tiles {
                    release_tiles();
                }
                if activation != Activation::Identity {
                    let (start, end) = (panels.start * PANEL, n.min(panels.end * PANEL));
                    for r in rows {
                        apply(
                            activation,
                            std::slice::from_raw_parts_mut(
                                out.get().add(r * dst.row_stride + start),
                                end - start,
                            ),
                        );
                    }
                }
            });
        },
    );
}

thread_local! {
    /// Each thread's bf16 copy of a row block's inputs.
    static INPUTS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One row block's bf16 inputs and the 32 × 32 f32 result of its latest product.
#[repr(C, align(64))]
struct Block<'a> {
    scratch: [[f32; PANEL]; BLOCK_ROWS],
    inputs: &'a [u16],
    depth: usize,
}

impl Block<'_> {
    /// `scratch = inputs[first..first + 32] · panel`: four C tiles (two row halves × two
    /// column halves) accumulated over the depth, two A and two B tiles per step.
    unsafe fn product(&mut self, first: usize, panel: *const u16) {
        let stride = self.depth * 2;
        let a = self.inputs[first * self.depth..].as_ptr();
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for step in 0..self.depth / DEPTH_STEP {
            let a0 = a.add(step * DEPTH_STEP);
            let a1 = a0.add(16 * self.depth);
            let b0 = panel.add(step * DEPTH_STEP * PANEL);
            let b1 = b0.add(PANEL);
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                b1 = in(reg) b1,
                sa = in(reg) stride,
                sb = in(reg) PANEL * 4,
                options(nostack, readonly)
            );
        }
        let c = self.scratch.as_mut_ptr() as *mut f32;
        asm!(
            "tilestored [{c00} + {s}*1], tmm0",
            "tilestored [{c01} + {s}*1], tmm1",
            "tilestored [{c10} + {s}*1], tmm2",
            "tilestored [{c11} + {s}*1], tmm3",
            c00 = in(reg) c,
            c01 = in(reg) c.add(16),
            c10 = in(reg) c.add(16 * PANEL),
            c11 = in(reg) c.add(16 * PANEL + 16),
            s = in(reg) PANEL * 4,
            options(nostack)
        );
    }
}

/// Where [`Block::product_avx512`] writes: `rows × cols` values at `c` (row stride
/// `ldc`), plus `cols` biases from `bias` unless it is null.
#[cfg(target_arch = "x86_64")]
struct Output {
    c: *mut f32,
    ldc: usize,
    cols: usize,
    bias: *const f32,
}

#[cfg(target_arch = "x86_64")]
impl Block<'_> {
    /// `out[..rows] = inputs[first..first + rows] · panel + bias` with `vdpbf16ps`,
    /// eight rows at a time: per input pair, the panel's two registers of 16 outputs ×
    /// the pair, each row's pair broadcast; stored from the registers with the bias.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; `panel` holds `depth × PANEL` values; `out`
    /// is valid for `rows` rows of `out.cols` values (and biases).
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn product_avx512(&self, first: usize, rows: usize, panel: *const u16, out: &Output) {
        use std::arch::x86_64::*;
        let low: __mmask16 = if out.cols >= 16 {
            0xffff
        } else {
            (1u16 << out.cols) - 1
        };
        let high: __mmask16 = match out.cols {
            c if c >= PANEL => 0xffff,
            c if c > 16 => (1u16 << (c - 16)) - 1,
            _ => 0,
        };
        let (mut bias0, mut bias1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        if !out.bias.is_null() {
            bias0 = _mm512_maskz_loadu_ps(low, out.bias);
            bias1 = _mm512_maskz_loadu_ps(high, out.bias.add(16));
        }
        let pairs = self.depth / 2;
        // Row r's inputs as bf16 pairs, one 32-bit word each (rows padded with zeros).
        let a = self.inputs[first * self.depth..].as_ptr() as *const u32;
        for group in (0..rows).step_by(REGISTER_ROWS) {
            let mut acc = [[_mm512_setzero_ps(); 2]; REGISTER_ROWS];
            for q in 0..pairs {
                let b = panel.add(q * PANEL * 2);
                // SAFETY (transmutes): __m512i and __m512bh are both 64 plain bytes.
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const _));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(32) as *const _));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let pair = a.add((group + r) * pairs + q).read_unaligned() as i32;
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    acc[0] = _mm512_dpbf16_ps(acc[0], x, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], x, b1);
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows - group) {
                let c = out.c.add((group + r) * out.ldc);
                _mm512_mask_storeu_ps(c, low, _mm512_add_ps(acc[0], bias0));
                _mm512_mask_storeu_ps(c.add(16), high, _mm512_add_ps(acc[1], bias1));
            }
        }
    }
}

/// Tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

/// Loads the tile configuration on this thread.
unsafe fn configure_tiles() {
    let mut config = TileConfig([0; 64]);
    config.0[0] = 1;
    for t in 0..8 {
        config.0[16 + 2 * t] = 64;
        config.0[48 + t] = 16;
    }
    asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
}

/// Releases this thread's tile state.
unsafe fn release_tiles() {
    asm!("tilerelease", options(nostack, nomem));
}
