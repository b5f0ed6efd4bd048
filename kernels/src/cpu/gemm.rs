//! Matrix products through the `gemm` crate on strided views, and the raw-pointer
//! wrapper that lets rayon tasks write disjoint parts of one output.

use ::gemm::Parallelism;

/// Raw pointer that may be shared across rayon tasks writing disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the field).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// One strided matrix operand for [`matmul`]: element `(i, j)` is at `ptr + i*row_stride + j*col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub(crate) ptr: *const f32,
    pub(crate) row_stride: isize,
    pub(crate) col_stride: isize,
}
// SAFETY: a view only reads; the buffers it points into outlive every task using it.
unsafe impl Send for View {}
unsafe impl Sync for View {}

/// `dst (m×n, row stride dst_rs) = lhs (m×k) · rhs (k×n)`.
///
/// # Safety
/// Every pointer must be valid for the extents its strides and sizes describe, and
/// `dst` must not alias the operands.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: View,
    rhs: View,
    parallelism: Parallelism,
) {
    ::gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs,
        false,
        lhs.ptr,
        lhs.col_stride,
        lhs.row_stride,
        rhs.ptr,
        rhs.col_stride,
        rhs.row_stride,
        0.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// Parallelism for a GEMM of `m × n × k`: threads only when the work pays for them.
pub(crate) fn gemm_parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    if m * n * k >= 64 * 64 * 64 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}
