//! The op-set Marquee's models run on, and exact vector search.
//!
//! Models are written once against the [`Backend`] trait; each backend implements every
//! op for its own tensor type. Tensors are row-major 2-D `f32` matrices; ragged batches
//! of sequences are rows of one matrix split by offsets, so no arithmetic is ever spent on
//! padding.
//!
//! Image batches are NHWC: a batch of `n` images of `h × w` pixels and `c` channels is an
//! `(n·h·w) × c` matrix, one row per pixel, its [`ImageShape`] passed beside it. NHWC
//! makes a convolution's im2col a copy of whole `c`-wide rows and its GEMM output the
//! next layer's input as it stands, which is why it was chosen over NCHW.
//!
//! Layout:
//! - [`cpu`]: the CPU backend ([`CpuBackend`], [`Matrix`]): `gemm` (strided GEMMs),
//!   `conv` (im2col convolutions, max pooling), `simd` (vectorised row kernels),
//!   `topk` and `shortlist` (exact top-K: blocked GEMM, and the f16 scan for a few
//!   queries).
//! - [`cuda`]: the CUDA backend ([`CudaBackend`]): `compile` (NVRTC), `context` (one
//!   device's stream, cuBLAS and kernels), `topk` (top-K over a device-resident corpus),
//!   `decoder` and `sampling` (the generator's ops; their references are
//!   `cpu::decoder` and `cpu::sampling`).
//! - [`search`]: exact vector search as one entry point, [`search::search`], over a
//!   [`search::Corpus`] on either device; its options, hits and top-K selection.
//! - [`device`]: where a model or collection runs (`auto`, `cpu`, `cuda:N`).

pub mod cpu;
pub mod cuda;
pub mod device;
pub mod search;
mod shapes;

pub use cpu::simd::{dot, squared_l2};
pub use cpu::{CpuBackend, Matrix};
pub use cuda::{CudaBackend, CudaTensor, Precision};
pub use device::{DeviceRequest, ResolvedDevice};
pub use search::{HalfCopy, Hit, TopK, TopKOptions};

/// Errors raised by a backend.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Operand shapes do not agree.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The device ran out of memory.
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    /// Anything else the device reported.
    #[error("device error: {0}")]
    Device(String),
}

impl KernelError {
    /// Whether `e` is a device's out-of-memory error (for mapping error chains).
    pub fn is_out_of_memory(e: &(dyn std::error::Error + 'static)) -> bool {
        matches!(e.downcast_ref(), Some(KernelError::OutOfMemory(_)))
    }
}

/// Result of a backend op.
pub type Result<T> = std::result::Result<T, KernelError>;

/// How the token vectors of one sequence become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the sequence's tokens.
    Mean,
    /// The first token's vector.
    Cls,
    /// Component-wise maximum over the tokens.
    Max,
}

/// Element-wise activation applied after a linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// No activation.
    Identity,
    /// The exact (erf) GELU used by BERT.
    Gelu,
    /// Hyperbolic tangent.
    Tanh,
}

/// The spatial shape of an NHWC image batch held as an `(batch·height·width) × channels`
/// matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    /// Images in the batch.
    pub batch: usize,
    /// Rows of pixels per image.
    pub height: usize,
    /// Pixels per row.
    pub width: usize,
}

impl ImageShape {
    /// Pixels in the whole batch: the matrix's row count.
    pub fn pixels(&self) -> usize {
        self.batch * self.height * self.width
    }
}

/// The sliding window of a convolution or a pooling: `kernel_height × kernel_width`,
/// the same stride and zero (or, for max pooling, −∞) padding on both axes, as in
/// PyTorch's `Conv2d` / `MaxPool2d` with `dilation = 1`, `ceil_mode = False`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window2d {
    /// Window rows.
    pub kernel_height: usize,
    /// Window columns.
    pub kernel_width: usize,
    /// Step between windows, on both axes.
    pub stride: usize,
    /// Padding added on every side.
    pub padding: usize,
}

impl Window2d {
    /// A square `kernel × kernel` window.
    pub fn square(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel_height: kernel,
            kernel_width: kernel,
            stride,
            padding,
        }
    }

    /// The output shape for `input`: `(size + 2·padding − kernel) / stride + 1` per axis;
    /// an error when the window is empty or larger than the padded input.
    pub fn output_shape(&self, input: ImageShape) -> Result<ImageShape> {
        let axis = |size: usize, kernel: usize| {
            let padded = size + 2 * self.padding;
            if kernel == 0 || self.stride == 0 || padded < kernel {
                Err(KernelError::Shape(format!(
                    "a {}x{} window with stride {} and padding {} does not fit a {}x{} input",
                    self.kernel_height,
                    self.kernel_width,
                    self.stride,
                    self.padding,
                    input.height,
                    input.width
                )))
            } else {
                Ok((padded - kernel) / self.stride + 1)
            }
        };
        Ok(ImageShape {
            batch: input.batch,
            height: axis(input.height, self.kernel_height)?,
            width: axis(input.width, self.kernel_width)?,
        })
    }
}

/// Row offsets of a ragged batch: sequence `i` is rows `offsets[i]..offsets[i + 1]`.
pub type SeqOffsets = [usize];

/// The op-set, implemented once per device. Every op takes and returns row-major
/// `rows × cols` f32 matrices resident on the backend's device.
pub trait Backend: Send + Sync + 'static {
    /// A matrix on this backend's device.
    type Tensor: Send + Sync;
    /// A linear layer's weight, in the layout this backend multiplies fastest.
    type Weight: Send + Sync;

    /// Human-readable device name, e.g. `cpu`.
    fn device_name(&self) -> String;
    /// Copies a host matrix to the device.
    fn upload(&self, rows: usize, cols: usize, data: &[f32]) -> Result<Self::Tensor>;
    /// Copies a device matrix back to the host (row-major).
    fn download(&self, tensor: &Self::Tensor) -> Result<Vec<f32>>;
    /// `(rows, cols)` of a tensor.
    fn shape(&self, tensor: &Self::Tensor) -> (usize, usize);
    /// Prepares a host `out × in` weight (PyTorch's layout) for [`Backend::linear`].
    fn upload_weight(&self, rows: usize, cols: usize, data: &[f32]) -> Result<Self::Weight>;

    /// Embedding lookup for BERT-style encoders: for every token,
    /// `word[token_ids[t]] + position[position_ids[t]] + token_type[0]`, then layer norm.
    #[allow(clippy::too_many_arguments)]
    fn embed_tokens(
        &self,
        word: &Self::Tensor,
        position: &Self::Tensor,
        token_type: &Self::Tensor,
        token_ids: &[u32],
        position_ids: &[u32],
        norm: &LayerNorm<Self::Tensor>,
    ) -> Result<Self::Tensor>;

    /// `activation(x · weightᵀ + bias)`, with `weight` stored `out × in` as in PyTorch.
    fn linear(
        &self,
        x: &Self::Tensor,
        weight: &Self::Weight,
        bias: Option<&Self::Tensor>,
        activation: Activation,
    ) -> Result<Self::Tensor>;

    /// `x ← layer_norm(x + residual)`.
    fn add_layer_norm(
        &self,
        x: &mut Self::Tensor,
        residual: &Self::Tensor,
        norm: &LayerNorm<Self::Tensor>,
    ) -> Result<()>;

    /// Multi-head self-attention over a ragged batch. `qkv` holds, per token, the query,
    /// key and value projections side by side (`3 × hidden` columns); every sequence
    /// attends only to itself. Returns the `tokens × hidden` context.
    fn attention(
        &self,
        qkv: &Self::Tensor,
        offsets: &SeqOffsets,
        heads: usize,
    ) -> Result<Self::Tensor>;

    /// Pools each sequence's rows into one row. With one sequence per image over its
    /// `h·w` pixel rows (offsets `0, hw, 2hw, ...`), `Mean` is global average pooling.
    fn pool(
        &self,
        x: &Self::Tensor,
        offsets: &SeqOffsets,
        pooling: Pooling,
    ) -> Result<Self::Tensor>;

    /// Pools each sequence, then scales every pooled row to unit L2 norm; devices that
    /// can fuse the two override this.
    fn pool_normalized(
        &self,
        x: &Self::Tensor,
        offsets: &SeqOffsets,
        pooling: Pooling,
    ) -> Result<Self::Tensor> {
        let mut pooled = self.pool(x, offsets, pooling)?;
        self.l2_normalize(&mut pooled)?;
        Ok(pooled)
    }
    /// 2-D convolution of an NHWC batch `x` (`shape.pixels() × in` channels), returning
    /// the `output_shape.pixels() × out` result with `output_shape =
    /// window.output_shape(shape)`. `weight` is `(kernel_height·kernel_width·in) × out`,
    /// rows ordered `(ky, kx, channel)`: PyTorch's `[out, in, kh, kw]` permuted to
    /// `[kh, kw, in, out]`, so the product is `im2col(x) · weight`. The epilogue is
    /// fused: `+ bias[o]`, then `+ residual` (same shape as the output) when given, then
    /// ReLU when `relu`.
    #[allow(clippy::too_many_arguments)]
    fn conv2d(
        &self,
        x: &Self::Tensor,
        shape: ImageShape,
        weight: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        window: Window2d,
        residual: Option<&Self::Tensor>,
        relu: bool,
    ) -> Result<Self::Tensor>;

    /// Max pooling of an NHWC batch over `window` (padding counts as −∞, so every output
    /// is a real input value); returns `window.output_shape(shape).pixels() × channels`.
    fn max_pool2d(
        &self,
        x: &Self::Tensor,
        shape: ImageShape,
        window: Window2d,
    ) -> Result<Self::Tensor>;

    /// Scales every row to unit L2 norm (zero rows stay zero).
    fn l2_normalize(&self, x: &mut Self::Tensor) -> Result<()>;

    /// For each query row, the `k` eligible corpus rows with the largest score
    /// `query · row + bias[row]`, best first; ties go to the lower `tie_rank` (the row
    /// index when absent). NaN scores never rank; fewer than `k` rows give fewer hits.
    fn top_k_dot(
        &self,
        queries: &Self::Tensor,
        corpus: &Self::Tensor,
        k: usize,
        options: &TopKOptions<'_>,
    ) -> Result<Vec<Vec<Hit>>>;
}

/// Parameters of a layer norm.
pub struct LayerNorm<T> {
    /// Scale, one row of `hidden` values.
    pub gamma: T,
    /// Shift, one row of `hidden` values.
    pub beta: T,
    /// Added to the variance.
    pub eps: f32,
}
