//! Convolution and max pooling on the CPU over NHWC batches. A convolution is im2col +
//! GEMM (the `gemm` crate) with bias, residual and ReLU fused into one pass over each
//! block of output rows while it is still in cache; 1×1 stride-1 convolutions skip
//! im2col and multiply the input rows directly.

use super::gemm::{gemm_parallelism, matmul, SharedMut, View};
use super::{rows_per_task, simd, Matrix};
use crate::shapes;
use crate::{ImageShape, Result, Window2d};
use gemm::Parallelism;
use rayon::prelude::*;

/// Output rows per block when blocks run in parallel, or `None` when there are too few
/// rows to split and one GEMM should use the threads itself. Blocks hold about 1 MB of
/// im2col values (`rows × kernel·channels` floats, so they stay in L2) and come in a
/// multiple of the thread count, equally sized, so no thread idles at the end.
fn block_rows(m: usize, k: usize, threads: usize) -> Option<usize> {
    let threads = threads.max(1);
    if m < 64 * threads {
        return None;
    }
    let cache_rows = (256 * 1024 / k.max(1)).clamp(128, 1024);
    let blocks = m.div_ceil(cache_rows).div_ceil(threads) * threads;
    Some(m.div_ceil(blocks))
}

/// Writes the im2col rows of output pixels `start..start + rows` into `buf`
/// (`rows × kernel_height·kernel_width·channels`), zeros where the window leaves the
/// input. In NHWC a window row's pixels are adjacent, so each kernel row is one copy.
fn im2col(
    x: &Matrix,
    input: ImageShape,
    output: ImageShape,
    window: Window2d,
    start: usize,
    rows: usize,
    buf: &mut Vec<f32>,
) {
    let c = x.cols;
    let (kh, kw) = (window.kernel_height, window.kernel_width);
    let k = kh * kw * c;
    // Every value is written below, so stale contents need no clearing.
    buf.resize(rows * k, 0.0);
    let per_image = output.height * output.width;
    let (height, width) = (input.height as isize, input.width as isize);
    for (r, dst) in buf.chunks_exact_mut(k).enumerate() {
        let p = start + r;
        let (b, rest) = (p / per_image, p % per_image);
        let (oy, ox) = (rest / output.width, rest % output.width);
        let y0 = (oy * window.stride) as isize - window.padding as isize;
        let x0 = (ox * window.stride) as isize - window.padding as isize;
        // Kernel columns whose pixels lie inside the input.
        let lo = (-x0).clamp(0, kw as isize) as usize;
        let hi = (width - x0).clamp(lo as isize, kw as isize) as usize;
        for (ky, seg) in dst.chunks_exact_mut(kw * c).enumerate() {
            let iy = y0 + ky as isize;
            if iy < 0 || iy >= height || lo == hi {
                seg.fill(0.0);
                continue;
            }
            seg[..lo * c].fill(0.0);
            seg[hi * c..].fill(0.0);
            let pixel = (b * input.height + iy as usize) * input.width;
            let src = (pixel as isize + x0 + lo as isize) as usize * c;
            seg[lo * c..hi * c].copy_from_slice(&x.data[src..src + (hi - lo) * c]);
        }
    }
}

/// See [`crate::Backend::conv2d`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d(
    x: &Matrix,
    shape: ImageShape,
    weight: &Matrix,
    bias: Option<&Matrix>,
    window: Window2d,
    residual: Option<&Matrix>,
    relu: bool,
) -> Result<Matrix> {
    let output = shapes::conv2d(
        (x.rows, x.cols),
        shape,
        (weight.rows, weight.cols),
        bias.map(|b| b.data.len()),
        window,
        residual.map(|r| (r.rows, r.cols)),
    )?;
    let c = x.cols;
    let k = window.kernel_height * window.kernel_width * c;
    let (m, n) = (output.pixels(), weight.cols);
    let mut data: Vec<f32> = Vec::with_capacity(m * n);
    if m == 0 || n == 0 {
        data.resize(m * n, 0.0);
        return Ok(Matrix {
            rows: m,
            cols: n,
            data,
        });
    }
    let direct = window.kernel_height == 1
        && window.kernel_width == 1
        && window.stride == 1
        && window.padding == 0;
    let bias = bias.map(|b| b.data.as_slice());
    let out = SharedMut(data.spare_capacity_mut().as_mut_ptr().cast());
    let rhs = View {
        ptr: weight.data.as_ptr(),
        row_stride: n as isize,
        col_stride: 1,
    };
    // Computes output rows `start..start + rows`; `epilogue_parallel` spreads the fused
    // epilogue over the pool (when this block is the whole output).
    let block = |start: usize, rows: usize, buf: &mut Vec<f32>, parallelism: Parallelism| {
        let lhs = if direct {
            x.data[start * c..].as_ptr()
        } else {
            im2col(x, shape, output, window, start, rows, buf);
            buf.as_ptr()
        };
        // SAFETY: `lhs` covers `rows × k` values (input rows or the im2col block), the
        // weight `n × k`, and the destination rows `start..start + rows` of the output,
        // which no other block writes.
        let dst = unsafe {
            let dst = out.get().add(start * n);
            matmul(
                rows,
                n,
                k,
                dst,
                n as isize,
                View {
                    ptr: lhs,
                    row_stride: k as isize,
                    col_stride: 1,
                },
                rhs,
                parallelism,
            );
            std::slice::from_raw_parts_mut(dst, rows * n)
        };
        let residual = residual.map(|r| &r.data[start * n..(start + rows) * n]);
        if bias.is_some() || residual.is_some() || relu {
            if matches!(parallelism, Parallelism::None) {
                simd::bias_residual_relu(dst, n, bias, residual, relu);
            } else {
                let chunk = n * rows_per_task(n);
                dst.par_chunks_mut(chunk).enumerate().for_each(|(i, d)| {
                    let res = residual.map(|r| &r[i * chunk..i * chunk + d.len()]);
                    simd::bias_residual_relu(d, n, bias, res, relu);
                });
            }
        }
    };
    match block_rows(m, k, rayon::current_num_threads()) {
        Some(rows) => (0..m.div_ceil(rows))
            .into_par_iter()
            .for_each_init(Vec::new, |buf, b| {
                let start = b * rows;
                block(start, rows.min(m - start), buf, Parallelism::None);
            }),
        None => block(0, m, &mut Vec::new(), gemm_parallelism(m, n, k)),
    }
    // SAFETY: the blocks wrote all `m × n` values.
    unsafe { data.set_len(m * n) };
    Ok(Matrix {
        rows: m,
        cols: n,
        data,
    })
}

/// See [`crate::Backend::max_pool2d`].
pub(crate) fn max_pool2d(x: &Matrix, shape: ImageShape, window: Window2d) -> Result<Matrix> {
    let output = shapes::max_pool2d(x.rows, shape, window)?;
    let c = x.cols;
    let mut out = Matrix::zeros(output.pixels(), c);
    let per_image = output.height * output.width;
    out.data
        .par_chunks_mut((c * rows_per_task(c)).max(1))
        .enumerate()
        .for_each(|(task, rows)| {
            for (r, dst) in rows.chunks_exact_mut(c.max(1)).enumerate() {
                let p = task * rows_per_task(c) + r;
                let (b, rest) = (p / per_image, p % per_image);
                let (oy, ox) = (rest / output.width, rest % output.width);
                let y0 = (oy * window.stride) as isize - window.padding as isize;
                let x0 = (ox * window.stride) as isize - window.padding as isize;
                dst.fill(f32::NEG_INFINITY);
                for iy in y0.max(0)..(y0 + window.kernel_height as isize).min(shape.height as isize)
                {
                    for ix in
                        x0.max(0)..(x0 + window.kernel_width as isize).min(shape.width as isize)
                    {
                        let src =
                            ((b * shape.height + iy as usize) * shape.width + ix as usize) * c;
                        simd::max_in_place(dst, &x.data[src..src + c]);
                    }
                }
            }
        });
    Ok(out)
}
