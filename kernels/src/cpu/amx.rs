//! bf16 products on Intel AMX tiles (`tdpbf16ps`: a 16×32 by 32×16 bf16 product into a
//! 16×16 f32 tile in one instruction), for the `bf16` precision: weights stored bf16 in
//! the tiles' pair-interleaved layout at load, inputs rounded to bf16 as they are
//! copied for the tiles, sums in f32. AMX instructions are written with `asm!` (their
//! intrinsics are not stable Rust); [`available`] checks the CPU and asks Linux for the
//! tile state once per process.

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

    /// Bytes the packed values take.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.values.len() * 2
    }
}

/// `dst[m × n] = activation(x[m × k] · Wᵀ + bias)` on AMX tiles.
///
/// # Safety
/// As [`super::packed::matmul_packed`]; [`available`] returned true.
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
    let block_rows = (ROWS_BYTES / (weight.depth * 2) / BLOCK_ROWS).max(1) * BLOCK_ROWS;
    let (x_ptr, x_stride) = (x.ptr as usize, x.row_stride);
    let out = SharedMut(dst.ptr);
    for_each_piece(m, n, k, block_rows, parallel, |rows, panels| {
        INPUTS.with_borrow_mut(|inputs| {
            let padded = rows.len().div_ceil(BLOCK_ROWS) * BLOCK_ROWS;
            inputs.clear();
            inputs.resize(padded * weight.depth, 0);
            for (i, r) in rows.clone().enumerate() {
                // SAFETY: row `r` of `x` holds `k` values (the caller's contract).
                let src = std::slice::from_raw_parts((x_ptr as *const f32).add(r * x_stride), k);
                simd::to_bf16_bits(&mut inputs[i * weight.depth..][..k], src);
            }
            let mut block = Block {
                inputs,
                depth: weight.depth,
                scratch: [[0.0; PANEL]; BLOCK_ROWS],
            };
            configure_tiles();
            for p in panels.clone() {
                let panel = weight.values[weight.start + p * weight.depth * PANEL..].as_ptr();
                let cols = PANEL.min(n - p * PANEL);
                for first in (0..rows.len()).step_by(BLOCK_ROWS) {
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
                        simd::copy_with_bias(row, values, bias.map(|b| &b[p * PANEL..][..cols]));
                    }
                }
            }
            release_tiles();
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
    });
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
