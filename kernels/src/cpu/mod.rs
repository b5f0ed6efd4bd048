//! The CPU backend: GEMMs through the `gemm` crate (`gemm`), everything else as
//! cache-friendly row loops parallelised with rayon, vectorised where it pays (`simd`).
//! Convolutions are im2col plus GEMM (`conv`); exact top-K search scans the rows
//! (`topk`), a few queries through the f16 copy (`shortlist`). The ops of decoder
//! transformers (RMSNorm, rotary, SwiGLU, attention) live in [`decoder`], choosing
//! tokens from logits in [`sampling`]. Linear layers against weights packed at load run
//! in [`packed`] for any number of rows (a decode step's one row streams each panel
//! once); unpacked weights on a few rows (LoRA adapters) are matrix-vector products in
//! [`matvec`].

mod amx;
mod attention;
mod conv;
pub mod decoder;
mod gemm;
pub mod matvec;
pub mod packed;
pub mod sampling;
pub(crate) mod shortlist;
pub(crate) mod simd;
mod topk;

pub use self::simd::{gelu, gelu_backward, masked_softmax_row, softmax_backward_row};

use self::gemm::{gemm_parallelism, matmul, View};
use self::packed::PackedWeight;
use crate::search::{Hit, TopKOptions};
use crate::shapes;
use crate::{
    Activation, Backend, ImageShape, LayerNorm, Pooling, Precision, Result, SeqOffsets, Window2d,
};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `body` on a worker thread of the current rayon pool (the global one when the
/// caller is in none) and returns its result. A sequence of parallel ops inside it (a
/// decode step's products) then splits each op from a worker, instead of sending every
/// op to the pool and sleeping until it is done. The pool's other workers stay awake
/// until `body` returns, taking each op's share as soon as it is offered: a decode step
/// makes about a hundred small products, and a worker put to sleep between two of them
/// costs a wake-up (a futex and, on a VM, an inter-processor interrupt) every time.
pub fn on_worker<R: Send>(body: impl FnOnce() -> R + Send) -> R {
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(|_| help_until(&done));
        }
        let _finished = SetOnDrop(&done);
        body()
    })
}

/// Runs the pool's pending jobs on this worker, spinning between them, until `done`.
fn help_until(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

/// Sets its flag when dropped, so helpers stop even when the body panics.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A row-major `rows × cols` matrix in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows × cols` values, row after row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Row `r` as a slice.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// Runs every op on the host CPU; its precision chooses how linear layers' weights are
/// stored and multiplied (`Default`: f32).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend {
    precision: Precision,
}

impl CpuBackend {
    /// A CPU backend whose linear layers run at `precision`.
    pub fn new(precision: Precision) -> Self {
        Self { precision }
    }
}

/// Rows handed to one rayon task by row-wise ops: about 16k values, enough to amortise
/// scheduling and small enough to spread over the cores.
pub(crate) fn rows_per_task(cols: usize) -> usize {
    (16_384 / cols.max(1)).max(1)
}

/// `(rows, in, out)` of a linear layer `x·Wᵀ + b`, after checking the shapes agree.
fn linear_dims(
    x: &Matrix,
    weight: &Matrix,
    bias: Option<&Matrix>,
) -> Result<(usize, usize, usize)> {
    shapes::linear(
        x.cols,
        (weight.rows, weight.cols),
        bias.map(|b| b.data.len()),
    )?;
    Ok((x.rows, x.cols, weight.rows))
}

/// A linear layer's `m × n` product `data` as a matrix, with its epilogue applied:
/// `+ bias` on every row, then `activation`.
fn finish_linear(
    m: usize,
    n: usize,
    data: Vec<f32>,
    bias: Option<&Matrix>,
    activation: Activation,
) -> Matrix {
    let mut out = Matrix {
        rows: m,
        cols: n,
        data,
    };
    if bias.is_none() && activation == Activation::Identity {
        return out;
    }
    let width = n.max(1);
    let bias = bias.map(|b| b.data.as_slice());
    out.data
        .par_chunks_mut(width * rows_per_task(width))
        .for_each(|rows| {
            if let Some(b) = bias {
                simd::add_bias_rows(rows, b);
            }
            match activation {
                Activation::Identity => {}
                Activation::Gelu => simd::gelu_in_place(rows),
                Activation::Tanh => simd::tanh_in_place(rows),
            }
        });
    out
}

/// `activation(x·Wᵀ + b)` with an unpacked `out × in` weight, through the `gemm`
/// crate (which packs it on every call): for weights used once or a few times, such as
/// a LoRA adapter's or a prompt's, where packing once at load does not apply.
pub fn linear_unpacked(
    x: &Matrix,
    weight: &Matrix,
    bias: Option<&Matrix>,
    activation: Activation,
) -> Result<Matrix> {
    let (m, k, n) = linear_dims(x, weight, bias)?;
    // gemm overwrites every element (read_dst is false), so the output is not zeroed.
    let mut data: Vec<f32> = Vec::with_capacity(m * n);
    if m > 0 && n > 0 {
        // SAFETY: sizes and strides describe exactly the three buffers; the output
        // is the vector's spare capacity, fully written before `set_len`.
        unsafe {
            matmul(
                m,
                n,
                k,
                data.spare_capacity_mut().as_mut_ptr().cast(),
                n as isize,
                View {
                    ptr: x.data.as_ptr(),
                    row_stride: k as isize,
                    col_stride: 1,
                },
                // weightᵀ: element (i, j) is weight[j][i].
                View {
                    ptr: weight.data.as_ptr(),
                    row_stride: 1,
                    col_stride: k as isize,
                },
                gemm_parallelism(m, n, k),
            );
            data.set_len(m * n);
        }
    } else {
        data.resize(m * n, 0.0);
    }
    Ok(finish_linear(m, n, data, bias, activation))
}

impl Backend for CpuBackend {
    type Tensor = Matrix;
    type Weight = PackedWeight;

    fn device_name(&self) -> String {
        "cpu".to_string()
    }

    fn upload(&self, rows: usize, cols: usize, data: &[f32]) -> Result<Matrix> {
        shapes::upload(data.len(), rows, cols)?;
        Ok(Matrix {
            rows,
            cols,
            data: data.to_vec(),
        })
    }

    fn download(&self, tensor: &Matrix) -> Result<Vec<f32>> {
        Ok(tensor.data.clone())
    }

    fn shape(&self, tensor: &Matrix) -> (usize, usize) {
        (tensor.rows, tensor.cols)
    }

    fn embed_tokens(
        &self,
        word: &Matrix,
        position: &Matrix,
        token_type: &Matrix,
        token_ids: &[u32],
        position_ids: &[u32],
        norm: &LayerNorm<Matrix>,
    ) -> Result<Matrix> {
        shapes::embedding(
            (word.rows, word.cols),
            (position.rows, position.cols),
            token_type.cols,
            token_ids,
            position_ids,
        )?;
        let hidden = word.cols;
        let mut out = Matrix::zeros(token_ids.len(), hidden);
        out.data
            .par_chunks_mut(hidden)
            .zip(token_ids.par_iter().zip(position_ids.par_iter()))
            .for_each(|(row, (&tok, &pos))| {
                let w = word.row(tok as usize);
                let p = position.row(pos as usize);
                let t = token_type.row(0);
                for i in 0..hidden {
                    row[i] = w[i] + p[i] + t[i];
                }
                simd::layer_norm_rows(row, None, &norm.gamma.data, &norm.beta.data, norm.eps);
            });
        Ok(out)
    }

    fn upload_weight(&self, rows: usize, cols: usize, data: &[f32]) -> Result<PackedWeight> {
        shapes::upload(data.len(), rows, cols)?;
        Ok(match self.precision {
            Precision::F32 => PackedWeight::pack(rows, cols, data),
            Precision::Bf16 => PackedWeight::pack_bf16(rows, cols, data),
        })
    }

    fn linear(
        &self,
        x: &Matrix,
        weight: &PackedWeight,
        bias: Option<&Matrix>,
        activation: Activation,
    ) -> Result<Matrix> {
        packed::linear(x, weight, bias, activation)
    }

    fn add_layer_norm(
        &self,
        x: &mut Matrix,
        residual: &Matrix,
        norm: &LayerNorm<Matrix>,
    ) -> Result<()> {
        shapes::residual((x.rows, x.cols), (residual.rows, residual.cols))?;
        let cols = x.cols;
        let chunk = cols * rows_per_task(cols);
        x.data
            .par_chunks_mut(chunk)
            .zip(residual.data.par_chunks(chunk))
            .for_each(|(rows, res)| {
                simd::layer_norm_rows(rows, Some(res), &norm.gamma.data, &norm.beta.data, norm.eps);
            });
        Ok(())
    }

    fn attention(&self, qkv: &Matrix, offsets: &SeqOffsets, heads: usize) -> Result<Matrix> {
        attention::attention(qkv, offsets, heads)
    }

    fn pool(&self, x: &Matrix, offsets: &SeqOffsets, pooling: Pooling) -> Result<Matrix> {
        shapes::pooling(x.rows, offsets)?;
        let n = offsets.len().saturating_sub(1);
        let cols = x.cols;
        let mut out = Matrix::zeros(n, cols);
        out.data
            .par_chunks_mut(cols.max(1))
            .zip(offsets.par_windows(2))
            .for_each(|(dst, w)| {
                let rows = (w[0]..w[1]).map(|r| x.row(r));
                match pooling {
                    Pooling::Cls => dst.copy_from_slice(x.row(w[0])),
                    Pooling::Mean => {
                        for row in rows {
                            dst.iter_mut().zip(row).for_each(|(d, v)| *d += v);
                        }
                        let inv = 1.0 / (w[1] - w[0]) as f32;
                        dst.iter_mut().for_each(|d| *d *= inv);
                    }
                    Pooling::Max => {
                        dst.fill(f32::NEG_INFINITY);
                        for row in rows {
                            dst.iter_mut().zip(row).for_each(|(d, v)| *d = d.max(*v));
                        }
                    }
                }
            });
        Ok(out)
    }

    fn conv2d(
        &self,
        x: &Matrix,
        shape: ImageShape,
        weight: &Matrix,
        bias: Option<&Matrix>,
        window: Window2d,
        residual: Option<&Matrix>,
        relu: bool,
    ) -> Result<Matrix> {
        conv::conv2d(x, shape, weight, bias, window, residual, relu)
    }

    fn max_pool2d(&self, x: &Matrix, shape: ImageShape, window: Window2d) -> Result<Matrix> {
        conv::max_pool2d(x, shape, window)
    }

    fn l2_normalize(&self, x: &mut Matrix) -> Result<()> {
        let cols = x.cols.max(1);
        x.data
            .par_chunks_mut(cols * rows_per_task(cols))
            .for_each(|rows| simd::l2_normalize_rows(rows, cols));
        Ok(())
    }

    fn top_k_dot(
        &self,
        queries: &Matrix,
        corpus: &Matrix,
        k: usize,
        options: &TopKOptions<'_>,
    ) -> Result<Vec<Vec<Hit>>> {
        topk::top_k_dot(queries, corpus, k, options)
    }
}
