//! The CUDA backend: handwritten kernels (`kernels/cuda/*.cu`, compiled at run time with
//! NVRTC for the device's own architecture) and cuBLAS GEMMs, all through cudarc with the
//! CUDA libraries loaded dynamically, so one build serves hosts with and without a GPU.
//!
//! Tensors are f32, or bf16 with f32 accumulation everywhere ([`Precision`]).
//! Beyond the [`Backend`] ops: [`decoder`] (RMSNorm, rotary, SwiGLU, the paged KV cache
//! and decode attention) and [`sampling`] (choosing tokens from logits), for generators.

mod compile;
mod context;
pub mod decoder;
pub mod sampling;
pub mod topk;

pub use compile::{compile, nvrtc_present, KernelSource, SOURCES};
pub use context::{gpu, probe, Gpu};
pub use topk::MAX_K;

use crate::search::{Hit, SearchFilter, TopKOptions};
use crate::shapes;
use crate::{
    Activation, Backend, ImageShape, KernelError, LayerNorm, Pooling, Result, SeqOffsets, Window2d,
};
use context::driver_error;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasMath_t, cublasOperation_t, cudaDataType,
};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use half::bf16;
use std::sync::Arc;
use topk::DeviceRules;

/// Element type of a backend's tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 storage (on CUDA, GEMMs on TF32 tensor cores; on the CPU, exact f32).
    #[default]
    F32,
    /// bf16 weights and GEMM inputs, f32 sums (bf16 tensor cores on CUDA; AMX tiles or
    /// AVX512-BF16 on the CPU where it has them, else f32 registers on bf16-rounded values).
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "fp32" | "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!("precision {other:?} is not fp32 or bf16")),
        }
    }
}

/// Device memory of one tensor.
pub enum DeviceData {
    /// f32 elements.
    F32(CudaSlice<f32>),
    /// bf16 elements.
    Bf16(CudaSlice<bf16>),
}

/// A row-major `rows × cols` matrix in device memory.
pub struct CudaTensor {
    rows: usize,
    cols: usize,
    data: DeviceData,
}

impl CudaTensor {
    /// The device memory.
    pub fn data(&self) -> &DeviceData {
        &self.data
    }
}

/// Runs every op on one CUDA device.
#[derive(Clone)]
pub struct CudaBackend {
    gpu: Arc<Gpu>,
    precision: Precision,
    ordinal: usize,
    tf32: bool,
    poison: bool,
}

impl CudaBackend {
    /// The backend on device `ordinal` (kernels compiled on first use of the device).
    pub fn new(ordinal: usize, precision: Precision) -> Result<Self> {
        Ok(Self {
            gpu: gpu(ordinal)?,
            precision,
            ordinal,
            tf32: true,
            poison: false,
        })
    }

    /// f32 GEMMs on TF32 tensor cores (the default) or in plain FP32.
    pub fn with_tf32(mut self, on: bool) -> Self {
        self.tf32 = on;
        self
    }

    /// Fills every new output with NaN before a kernel writes it, so an element a kernel
    /// forgets shows up in parity checks.
    pub fn with_poisoned_outputs(mut self, on: bool) -> Self {
        self.poison = on;
        self
    }

    /// The device this backend runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    fn alloc(&self, rows: usize, cols: usize) -> Result<CudaTensor> {
        if self.poison {
            return self.upload(rows, cols, &vec![f32::NAN; rows * cols]);
        }
        let s = &self.gpu.stream;
        let data = match self.precision {
            Precision::F32 => DeviceData::F32(s.alloc_zeros(rows * cols).map_err(driver_error)?),
            Precision::Bf16 => DeviceData::Bf16(s.alloc_zeros(rows * cols).map_err(driver_error)?),
        };
        Ok(CudaTensor { rows, cols, data })
    }

    fn suffix(&self) -> &'static str {
        match self.precision {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Refuses tensors whose element type is not the backend's.
    fn check_precision(&self, tensors: &[&CudaTensor]) -> Result<()> {
        let ours = |t: &&CudaTensor| {
            matches!(
                (&t.data, self.precision),
                (DeviceData::F32(_), Precision::F32) | (DeviceData::Bf16(_), Precision::Bf16)
            )
        };
        shapes::check(tensors.iter().all(ours), || {
            format!(
                "a tensor is not {:?}, the backend's precision",
                self.precision
            )
        })
    }

    fn upload_u32(&self, values: &[u32]) -> Result<CudaSlice<u32>> {
        self.gpu.stream.clone_htod(values).map_err(driver_error)
    }

    /// Column-major `C (m × n) = op(A) · op(B)` through cuBLAS in the backend's element
    /// type with f32 accumulation (TF32 tensor cores for f32 unless turned off); `trans`
    /// says which of A and B are transposed; each operand comes with its leading dimension.
    fn gemm(
        &self,
        trans: (bool, bool),
        (m, n, k): (usize, usize, usize),
        (a, lda): (&DeviceData, usize),
        (b, ldb): (&DeviceData, usize),
        (c, ldc): (&DeviceData, usize),
    ) -> Result<()> {
        let stream = &self.gpu.stream;
        let blas = self.gpu.blas.lock().unwrap_or_else(|p| p.into_inner());
        let tf32 = self.tf32 && self.precision == Precision::F32;
        set_math_mode(&blas, tf32)?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let dtype = match self.precision {
            Precision::F32 => cudaDataType::CUDA_R_32F,
            Precision::Bf16 => cudaDataType::CUDA_R_16BF,
        };
        let compute = if tf32 {
            cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (a, _ra) = device_ptr(a, stream);
        let (b, _rb) = device_ptr(b, stream);
        let (c, _rc) = device_ptr(c, stream);
        // SAFETY: the callers check the operands hold the extents m, n, k and the leading
        // dimensions describe.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                op(trans.0),
                op(trans.1),
                m as i32,
                n as i32,
                k as i32,
                (&alpha) as *const f32 as *const _,
                a as *const _,
                dtype,
                lda as i32,
                b as *const _,
                dtype,
                ldb as i32,
                (&beta) as *const f32 as *const _,
                c as *mut _,
                dtype,
                ldc as i32,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(blas_error)
    }

    fn launch(&self, name: &str, cfg: LaunchConfig, args: &[Arg<'_>]) -> Result<()> {
        let func = self.gpu.kernel(name)?;
        let mut launch = self.gpu.stream.launch_builder(func);
        for arg in args {
            match arg {
                Arg::Tensor(t) => match &t.data {
                    DeviceData::F32(d) => launch.arg(d),
                    DeviceData::Bf16(d) => launch.arg(d),
                },
                Arg::U32s(d) => launch.arg(*d),
                Arg::F32s(d) => launch.arg(*d),
                Arg::Sampling(d) => launch.arg(*d),
                Arg::Paged(g) => launch.arg(g),
                Arg::I32(v) => launch.arg(v),
                Arg::F32(v) => launch.arg(v),
                Arg::Usize(v) => launch.arg(v),
                Arg::Geometry(g) => launch.arg(g),
            };
        }
        // SAFETY: every call site passes the arguments of the named kernel in its order,
        // with buffers of the extents it indexes (checked before the call).
        unsafe { launch.launch(cfg) }.map_err(driver_error)?;
        Ok(())
    }
}

/// One kernel argument.
enum Arg<'a> {
    Tensor(&'a CudaTensor),
    U32s(&'a CudaSlice<u32>),
    F32s(&'a CudaSlice<f32>),
    Sampling(&'a CudaSlice<crate::cpu::sampling::RowSampling>),
    Paged(decoder::PagedGeometry),
    I32(i32),
    F32(f32),
    Usize(usize),
    Geometry(Geometry),
}

/// The `Geometry` struct of `conv.cu`, passed by value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: i32,
    height: i32,
    width: i32,
    channels: i32,
    out_height: i32,
    out_width: i32,
    kernel_height: i32,
    kernel_width: i32,
    stride: i32,
    padding: i32,
}

impl Geometry {
    /// The geometry of `window` over `input` (`channels` wide) giving `output`.
    fn new(input: ImageShape, channels: usize, output: ImageShape, window: Window2d) -> Self {
        Self {
            batch: input.batch as i32,
            height: input.height as i32,
            width: input.width as i32,
            channels: channels as i32,
            out_height: output.height as i32,
            out_width: output.width as i32,
            kernel_height: window.kernel_height as i32,
            kernel_width: window.kernel_width as i32,
            stride: window.stride as i32,
            padding: window.padding as i32,
        }
    }
}

// SAFETY: plain `repr(C)` integers, laid out as the CUDA struct.
unsafe impl cudarc::driver::DeviceRepr for Geometry {}

/// A grid-stride launch over `total` elements: 256 threads a block, at most 65,535 blocks.
fn grid_stride(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (total.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row.
fn rows_config(rows: usize, threads: u32, smem: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem as u32,
    }
}

/// Maps a cuBLAS error, allocation failures as out-of-memory.
fn blas_error(e: cudarc::cublas::result::CublasError) -> KernelError {
    use cudarc::cublas::sys::cublasStatus_t;
    if e.0 == cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED {
        KernelError::OutOfMemory(format!("cuBLAS: {e:?}"))
    } else {
        KernelError::Device(format!("cuBLAS: {e:?}"))
    }
}

/// TF32 tensor cores on or off for the next cuBLAS call.
fn set_math_mode(blas: &CudaBlas, tf32: bool) -> Result<()> {
    let mode = if tf32 {
        cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
    } else {
        cublasMath_t::CUBLAS_DEFAULT_MATH
    };
    // SAFETY: a valid handle owned by `blas`.
    unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), mode) }
        .result()
        .map_err(blas_error)
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Weight = CudaTensor;

    fn device_name(&self) -> String {
        format!("cuda:{} {}", self.ordinal, self.gpu.description)
    }

    fn upload(&self, rows: usize, cols: usize, data: &[f32]) -> Result<CudaTensor> {
        shapes::upload(data.len(), rows, cols)?;
        let s = &self.gpu.stream;
        let data = match self.precision {
            Precision::F32 => DeviceData::F32(s.clone_htod(data).map_err(driver_error)?),
            Precision::Bf16 => {
                let host: Vec<bf16> = data.iter().map(|&v| bf16::from_f32(v)).collect();
                DeviceData::Bf16(s.clone_htod(&host).map_err(driver_error)?)
            }
        };
        Ok(CudaTensor { rows, cols, data })
    }

    fn download(&self, tensor: &CudaTensor) -> Result<Vec<f32>> {
        let s = &self.gpu.stream;
        Ok(match &tensor.data {
            DeviceData::F32(d) => s.clone_dtoh(d).map_err(driver_error)?,
            DeviceData::Bf16(d) => s
                .clone_dtoh(d)
                .map_err(driver_error)?
                .into_iter()
                .map(f32::from)
                .collect(),
        })
    }

    fn shape(&self, tensor: &CudaTensor) -> (usize, usize) {
        (tensor.rows, tensor.cols)
    }

    fn embed_tokens(
        &self,
        word: &CudaTensor,
        position: &CudaTensor,
        token_type: &CudaTensor,
        token_ids: &[u32],
        position_ids: &[u32],
        norm: &LayerNorm<CudaTensor>,
    ) -> Result<CudaTensor> {
        shapes::embedding(
            (word.rows, word.cols),
            (position.rows, position.cols),
            token_type.cols,
            token_ids,
            position_ids,
        )?;
        let hidden = word.cols;
        let out = self.alloc(token_ids.len(), hidden)?;
        if token_ids.is_empty() {
            return Ok(out);
        }
        let ids = self.upload_u32(token_ids)?;
        let positions = self.upload_u32(position_ids)?;
        self.launch(
            &format!("embed_layer_norm_{}", self.suffix()),
            rows_config(token_ids.len(), 256, hidden * 4),
            &[
                Arg::Tensor(&out),
                Arg::Tensor(word),
                Arg::Tensor(position),
                Arg::Tensor(token_type),
                Arg::U32s(&ids),
                Arg::U32s(&positions),
                Arg::Tensor(&norm.gamma),
                Arg::Tensor(&norm.beta),
                Arg::F32(norm.eps),
                Arg::I32(hidden as i32),
            ],
        )?;
        Ok(out)
    }

    fn upload_weight(&self, rows: usize, cols: usize, data: &[f32]) -> Result<CudaTensor> {
        self.upload(rows, cols, data)
    }

    fn linear(
        &self,
        x: &CudaTensor,
        weight: &CudaTensor,
        bias: Option<&CudaTensor>,
        activation: Activation,
    ) -> Result<CudaTensor> {
        shapes::linear(
            x.cols,
            (weight.rows, weight.cols),
            bias.map(|b| b.rows * b.cols),
        )?;
        let (rows, inner, out_cols) = (x.rows, x.cols, weight.rows);
        let out = self.alloc(rows, out_cols)?;
        if rows == 0 {
            return Ok(out);
        }
        // Row-major out (rows × O) = x (rows × I) · Wᵀ; column-major: outᵀ (O × rows) =
        // op(W) (W stored I × O, ld I, transposed) · xᵀ (I × rows, ld I).
        self.gemm(
            (true, false),
            (out_cols, rows, inner),
            (&weight.data, inner),
            (&x.data, inner),
            (&out.data, out_cols),
        )?;
        if bias.is_some() || activation != Activation::Identity {
            let act = match activation {
                Activation::Identity => 0,
                Activation::Gelu => 1,
                Activation::Tanh => 2,
            };
            self.launch(
                &format!("bias_activation_{}", self.suffix()),
                grid_stride(rows * out_cols),
                &[
                    Arg::Tensor(&out),
                    Arg::Tensor(bias.unwrap_or(&out)),
                    Arg::I32(bias.is_some() as i32),
                    Arg::Usize(rows),
                    Arg::I32(out_cols as i32),
                    Arg::I32(act),
                ],
            )?;
        }
        Ok(out)
    }

    fn add_layer_norm(
        &self,
        x: &mut CudaTensor,
        residual: &CudaTensor,
        norm: &LayerNorm<CudaTensor>,
    ) -> Result<()> {
        shapes::residual((x.rows, x.cols), (residual.rows, residual.cols))?;
        if x.rows == 0 {
            return Ok(());
        }
        self.launch(
            &format!("add_layer_norm_{}", self.suffix()),
            rows_config(x.rows, 256, x.cols * 4),
            &[
                Arg::Tensor(x),
                Arg::Tensor(residual),
                Arg::Tensor(&norm.gamma),
                Arg::Tensor(&norm.beta),
                Arg::F32(norm.eps),
                Arg::I32(x.cols as i32),
            ],
        )
    }

    fn attention(
        &self,
        qkv: &CudaTensor,
        offsets: &SeqOffsets,
        heads: usize,
    ) -> Result<CudaTensor> {
        let (hidden, head_dim) = shapes::attention((qkv.rows, qkv.cols), offsets, heads)?;
        shapes::check(head_dim <= 128, || {
            format!("attention: head_dim {head_dim} above the kernel's 128")
        })?;
        let out = self.alloc(qkv.rows, hidden)?;
        let sequences = offsets.len().saturating_sub(1);
        if qkv.rows == 0 || sequences == 0 {
            return Ok(out);
        }
        let offsets: Vec<u32> = offsets.iter().map(|&o| o as u32).collect();
        let offsets = self.upload_u32(&offsets)?;
        let warps = qkv.rows * heads;
        let cfg = LaunchConfig {
            grid_dim: ((warps * 32).div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(
            &format!("ragged_attention_{}", self.suffix()),
            cfg,
            &[
                Arg::Tensor(&out),
                Arg::Tensor(qkv),
                Arg::U32s(&offsets),
                Arg::I32(sequences as i32),
                Arg::I32(qkv.rows as i32),
                Arg::I32(heads as i32),
                Arg::I32(head_dim as i32),
                Arg::F32(1.0 / (head_dim as f32).sqrt()),
            ],
        )?;
        Ok(out)
    }

    fn pool(&self, x: &CudaTensor, offsets: &SeqOffsets, pooling: Pooling) -> Result<CudaTensor> {
        self.pool_with(x, offsets, pooling, false)
    }

    fn pool_normalized(
        &self,
        x: &CudaTensor,
        offsets: &SeqOffsets,
        pooling: Pooling,
    ) -> Result<CudaTensor> {
        self.pool_with(x, offsets, pooling, true)
    }

    fn conv2d(
        &self,
        x: &CudaTensor,
        shape: ImageShape,
        weight: &CudaTensor,
        bias: Option<&CudaTensor>,
        window: Window2d,
        residual: Option<&CudaTensor>,
        relu: bool,
    ) -> Result<CudaTensor> {
        let out_shape = shapes::conv2d(
            (x.rows, x.cols),
            shape,
            (weight.rows, weight.cols),
            bias.map(|b| b.rows * b.cols),
            window,
            residual.map(|r| (r.rows, r.cols)),
        )?;
        let channels = x.cols;
        let patch = window.kernel_height * window.kernel_width * channels;
        let (rows, out_channels) = (out_shape.pixels(), weight.cols);
        let geometry = Geometry::new(shape, channels, out_shape, window);
        // A 1×1 window with stride 1 and no padding reads the input as it stands.
        let pointwise = window.kernel_height == 1
            && window.kernel_width == 1
            && window.stride == 1
            && window.padding == 0;
        let cols = if pointwise {
            None
        } else {
            let cols = self.alloc(rows, patch)?;
            self.launch(
                &format!("im2col_{}", self.suffix()),
                grid_stride(rows * patch),
                &[Arg::Tensor(&cols), Arg::Tensor(x), Arg::Geometry(geometry)],
            )?;
            Some(cols)
        };
        let input = cols.as_ref().unwrap_or(x);
        let out = self.alloc(rows, out_channels)?;
        if rows > 0 {
            // Row-major out (rows × O) = input (rows × K) · weight (K × O); column-major:
            // outᵀ (O × rows) = weightᵀ (O × K, ld O) · inputᵀ (K × rows, ld K).
            self.gemm(
                (false, false),
                (out_channels, rows, patch),
                (&weight.data, out_channels),
                (&input.data, patch),
                (&out.data, out_channels),
            )?;
            let (bias_arg, residual_arg) = (bias.unwrap_or(&out), residual.unwrap_or(&out));
            self.launch(
                &format!("conv_epilogue_{}", self.suffix()),
                grid_stride(rows * out_channels),
                &[
                    Arg::Tensor(&out),
                    Arg::Tensor(bias_arg),
                    Arg::I32(bias.is_some() as i32),
                    Arg::Tensor(residual_arg),
                    Arg::I32(residual.is_some() as i32),
                    Arg::I32(relu as i32),
                    Arg::Usize(rows),
                    Arg::I32(out_channels as i32),
                ],
            )?;
        }
        Ok(out)
    }

    fn max_pool2d(
        &self,
        x: &CudaTensor,
        shape: ImageShape,
        window: Window2d,
    ) -> Result<CudaTensor> {
        let out_shape = shapes::max_pool2d(x.rows, shape, window)?;
        let out = self.alloc(out_shape.pixels(), x.cols)?;
        let geometry = Geometry::new(shape, x.cols, out_shape, window);
        if out.rows > 0 {
            self.launch(
                &format!("max_pool2d_{}", self.suffix()),
                grid_stride(out.rows * out.cols),
                &[Arg::Tensor(&out), Arg::Tensor(x), Arg::Geometry(geometry)],
            )?;
        }
        Ok(out)
    }

    fn l2_normalize(&self, x: &mut CudaTensor) -> Result<()> {
        if x.rows == 0 {
            return Ok(());
        }
        self.launch(
            &format!("l2_normalize_{}", self.suffix()),
            rows_config(x.rows, 128, 0),
            &[Arg::Tensor(x), Arg::I32(x.cols as i32)],
        )
    }

    fn top_k_dot(
        &self,
        queries: &CudaTensor,
        corpus: &CudaTensor,
        k: usize,
        options: &TopKOptions<'_>,
    ) -> Result<Vec<Vec<Hit>>> {
        options.check((queries.rows, queries.cols), (corpus.rows, corpus.cols))?;
        let rules = DeviceRules::upload(&self.gpu, options.row_bias, options.tie_rank)?;
        let host_queries = self.download(queries)?;
        topk::search(
            &self.gpu,
            corpus,
            &rules,
            &host_queries,
            k,
            &SearchFilter {
                allowed: options.allowed,
                excluded: options.excluded,
            },
        )
    }
}

impl CudaBackend {
    fn pool_with(
        &self,
        x: &CudaTensor,
        offsets: &SeqOffsets,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<CudaTensor> {
        shapes::pooling(x.rows, offsets)?;
        let sequences = offsets.len().saturating_sub(1);
        let out = self.alloc(sequences, x.cols)?;
        if sequences == 0 {
            return Ok(out);
        }
        let offsets: Vec<u32> = offsets.iter().map(|&o| o as u32).collect();
        let offsets = self.upload_u32(&offsets)?;
        let mode = match pooling {
            Pooling::Mean => 0,
            Pooling::Cls => 1,
            Pooling::Max => 2,
        };
        self.launch(
            &format!("pool_normalize_{}", self.suffix()),
            rows_config(sequences, 128, x.cols * 4),
            &[
                Arg::Tensor(&out),
                Arg::Tensor(x),
                Arg::U32s(&offsets),
                Arg::I32(x.cols as i32),
                Arg::I32(mode),
                Arg::I32(normalize as i32),
            ],
        )?;
        Ok(out)
    }
}

/// The raw device pointer of a tensor's memory (and the guard that orders its use).
fn device_ptr<'a>(
    data: &'a DeviceData,
    stream: &'a Arc<cudarc::driver::CudaStream>,
) -> (
    cudarc::driver::sys::CUdeviceptr,
    cudarc::driver::SyncOnDrop<'a>,
) {
    match data {
        DeviceData::F32(d) => d.device_ptr(stream),
        DeviceData::Bf16(d) => d.device_ptr(stream),
    }
}
