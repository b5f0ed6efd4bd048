//! The ops of decoder transformers on the GPU (`kernels/cuda/decoder.cu`): RMSNorm (with a
//! fused residual add), SwiGLU's gate, rotary embeddings, and the paged KV cache (one
//! layer's keys and values in fixed-size blocks, written from a slot mapping, read by
//! decode attention through per-sequence block tables). Semantics: [`crate::cpu::decoder`].

use super::{grid_stride, rows_config, Arg, CudaBackend, CudaTensor};
use crate::cpu::decoder::{BlockTables, HeadLayout};
use crate::shapes::check;
use crate::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

/// Largest head the decode-attention kernel holds (four values a lane).
pub const MAX_HEAD_DIM: usize = 128;
/// Warps of a decode-attention block (`DECODE_WARPS` in `decoder.cu`).
const DECODE_WARPS: u32 = 4;

/// One layer of a paged KV cache in device memory: keys and values as
/// `[num_blocks · block_size, width]` matrices in the backend's precision.
pub struct PagedKvLayer {
    keys: CudaTensor,
    values: CudaTensor,
    block_size: usize,
}

impl PagedKvLayer {
    /// A layer of `num_blocks` blocks of `block_size` token slots, `width` (KV heads ×
    /// head dim) values each, zeroed (NaN on a backend with poisoned outputs).
    pub fn new(
        backend: &CudaBackend,
        num_blocks: usize,
        block_size: usize,
        width: usize,
    ) -> Result<Self> {
        check(block_size > 0 && width > 0, || {
            format!("paged KV cache: block size {block_size} and width {width} must be positive")
        })?;
        let slots = num_blocks * block_size;
        Ok(Self {
            keys: backend.alloc(slots, width)?,
            values: backend.alloc(slots, width)?,
            block_size,
        })
    }

    /// The keys, one row per token slot.
    pub fn keys(&self) -> &CudaTensor {
        &self.keys
    }

    /// The values, one row per token slot.
    pub fn values(&self) -> &CudaTensor {
        &self.values
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    fn slots(&self) -> usize {
        self.keys.rows
    }
}

/// The cache rows new tokens' keys and values go to, in device memory (one upload serves
/// every layer of a step).
pub struct DeviceSlots {
    slots: CudaSlice<u32>,
    len: usize,
    max: Option<u32>,
}

impl DeviceSlots {
    /// Copies `slots` (a cache row per new token) to `backend`'s device.
    pub fn upload(backend: &CudaBackend, slots: &[u32]) -> Result<Self> {
        Ok(Self {
            slots: backend.upload_u32(non_empty(slots))?,
            len: slots.len(),
            max: slots.iter().copied().max(),
        })
    }
}

/// [`BlockTables`] in device memory: a `sequences × stride` matrix of block ids (rows
/// padded with 0) and the context lengths; one upload serves every layer of a step.
pub struct DeviceBlockTables {
    tables: CudaSlice<u32>,
    context_lens: CudaSlice<u32>,
    stride: usize,
    sequences: usize,
    block_size: usize,
    max_block: u32,
}

impl DeviceBlockTables {
    /// Checks `tables` (every sequence has at least one cached token, and the blocks to
    /// hold its length) and copies it to `backend`'s device.
    pub fn upload(backend: &CudaBackend, tables: &BlockTables<'_>) -> Result<Self> {
        let bs = tables.block_size;
        check(bs > 0, || "block tables: block size 0".into())?;
        check(tables.tables.len() == tables.context_lens.len(), || {
            format!(
                "block tables: {} tables for {} context lengths",
                tables.tables.len(),
                tables.context_lens.len()
            )
        })?;
        let mut max_block = 0;
        for (seq, (table, &len)) in tables.tables.iter().zip(tables.context_lens).enumerate() {
            check(len > 0 && len <= table.len() * bs, || {
                format!(
                    "block tables: sequence {seq} has {len} tokens in {} blocks of {bs}",
                    table.len()
                )
            })?;
            check(len <= u32::MAX as usize, || {
                format!("block tables: sequence {seq} has {len} tokens")
            })?;
            max_block = table[..len.div_ceil(bs)]
                .iter()
                .fold(max_block, |m, &b| m.max(b));
        }
        let stride = tables.tables.iter().map(Vec::len).max().unwrap_or(0);
        let mut flat = vec![0u32; tables.tables.len() * stride];
        for (row, table) in flat.chunks_exact_mut(stride.max(1)).zip(tables.tables) {
            row[..table.len()].copy_from_slice(table);
        }
        let lens: Vec<u32> = tables.context_lens.iter().map(|&l| l as u32).collect();
        Ok(Self {
            tables: backend.upload_u32(non_empty(&flat))?,
            context_lens: backend.upload_u32(non_empty(&lens))?,
            stride,
            sequences: lens.len(),
            block_size: bs,
            max_block,
        })
    }
}

/// `values`, or one 0 in place of an empty slice (the device has no empty buffers).
fn non_empty(values: &[u32]) -> &[u32] {
    if values.is_empty() {
        &[0]
    } else {
        values
    }
}

/// The `PagedGeometry` struct of `decoder.cu`, passed by value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct PagedGeometry {
    table_stride: i32,
    block_size: i32,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    scale: f32,
}

// SAFETY: plain `repr(C)` scalars, laid out as the CUDA struct.
unsafe impl cudarc::driver::DeviceRepr for PagedGeometry {}

impl CudaBackend {
    /// `Qwen2RMSNorm` of every row of `x`: `x · rsqrt(mean(x²) + eps) · weight`, into a
    /// new tensor ([`crate::cpu::decoder::rms_norm`]).
    pub fn rms_norm(&self, x: &CudaTensor, weight: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        self.rms_norm_with(x, None, weight, eps)
    }

    /// `x += residual`, then returns the RMSNorm of the new `x` (the residual stream's
    /// add and the next layer's norm, fused).
    pub fn add_rms_norm(
        &self,
        x: &mut CudaTensor,
        residual: &CudaTensor,
        weight: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        self.same_shape("add_rms_norm", x, residual)?;
        self.rms_norm_with(x, Some(residual), weight, eps)
    }

    fn rms_norm_with(
        &self,
        x: &CudaTensor,
        residual: Option<&CudaTensor>,
        weight: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        self.check_precision(&[x, weight])?;
        check(weight.rows * weight.cols == x.cols, || {
            format!(
                "rms_norm: {} weights for rows of {}",
                weight.rows * weight.cols,
                x.cols
            )
        })?;
        let out = self.alloc(x.rows, x.cols)?;
        if x.rows == 0 || x.cols == 0 {
            return Ok(out);
        }
        self.launch(
            &format!("rms_norm_{}", self.suffix()),
            rows_config(x.rows, 256, 0),
            &[
                Arg::Tensor(&out),
                Arg::Tensor(x),
                Arg::Tensor(residual.unwrap_or(x)),
                Arg::I32(residual.is_some() as i32),
                Arg::Tensor(weight),
                Arg::F32(eps),
                Arg::I32(x.cols as i32),
            ],
        )?;
        Ok(out)
    }

    /// `gate ← silu(gate) · up` element-wise ([`crate::cpu::decoder::silu_mul`]).
    pub fn silu_mul(&self, gate: &mut CudaTensor, up: &CudaTensor) -> Result<()> {
        self.same_shape("silu_mul", gate, up)?;
        let total = gate.rows * gate.cols;
        if total == 0 {
            return Ok(());
        }
        self.launch(
            &format!("silu_mul_{}", self.suffix()),
            grid_stride(total),
            &[Arg::Tensor(gate), Arg::Tensor(up), Arg::Usize(total)],
        )
    }

    /// Rotary embedding in place on the `heads` heads of `head_dim` values starting at
    /// column `offset` of every row of `x`, with row `r`'s cos/sin the row `r` of `cos` /
    /// `sin` (`rows × head_dim`) ([`crate::cpu::decoder::apply_rotary`]).
    pub fn apply_rotary(
        &self,
        x: &mut CudaTensor,
        offset: usize,
        heads: usize,
        head_dim: usize,
        cos: &CudaTensor,
        sin: &CudaTensor,
    ) -> Result<()> {
        self.check_precision(&[x, cos, sin])?;
        check(head_dim.is_multiple_of(2), || {
            format!("rotary: head_dim {head_dim} is odd")
        })?;
        check(offset + heads * head_dim <= x.cols, || {
            format!(
                "rotary: {heads} heads of {head_dim} from column {offset} overrun rows of {}",
                x.cols
            )
        })?;
        for table in [cos, sin] {
            check(table.rows == x.rows && table.cols == head_dim, || {
                format!(
                    "rotary: a {}x{} cos/sin table for {} rows of heads of {head_dim}",
                    table.rows, table.cols, x.rows
                )
            })?;
        }
        let total = x.rows * heads * (head_dim / 2);
        if total == 0 {
            return Ok(());
        }
        self.launch(
            &format!("rotary_{}", self.suffix()),
            grid_stride(total),
            &[
                Arg::Tensor(x),
                Arg::Tensor(cos),
                Arg::Tensor(sin),
                Arg::Usize(x.rows),
                Arg::I32(x.cols as i32),
                Arg::I32(offset as i32),
                Arg::I32(heads as i32),
                Arg::I32(head_dim as i32),
            ],
        )
    }

    /// Stores row `r` of `keys` / `values` in cache row `slots[r]` of `layer`
    /// ([`crate::cpu::decoder::scatter_rows`]).
    pub fn kv_cache_write(
        &self,
        layer: &mut PagedKvLayer,
        keys: &CudaTensor,
        values: &CudaTensor,
        slots: &DeviceSlots,
    ) -> Result<()> {
        self.check_precision(&[&layer.keys, &layer.values])?;
        self.same_shape("kv_cache_write", keys, values)?;
        check(
            keys.rows == slots.len && keys.cols == layer.keys.cols,
            || {
                format!(
                    "kv_cache_write: {}x{} rows for {} slots of width {}",
                    keys.rows, keys.cols, slots.len, layer.keys.cols
                )
            },
        )?;
        check(
            slots.max.is_none_or(|m| (m as usize) < layer.slots()),
            || {
                format!(
                    "kv_cache_write: slot {:?} outside a cache of {} slots",
                    slots.max,
                    layer.slots()
                )
            },
        )?;
        if slots.len == 0 {
            return Ok(());
        }
        self.launch(
            &format!("kv_cache_write_{}", self.suffix()),
            grid_stride(keys.rows * keys.cols),
            &[
                Arg::Tensor(&layer.keys),
                Arg::Tensor(&layer.values),
                Arg::Tensor(keys),
                Arg::Tensor(values),
                Arg::U32s(&slots.slots),
                Arg::Usize(keys.rows),
                Arg::I32(keys.cols as i32),
            ],
        )
    }

    /// Decode attention: row `i` of `q` (`heads · head_dim`) is sequence `i`'s new query,
    /// attending with scores `q·k · scale` to its cached tokens in `layer` through
    /// `tables`; GQA as `layout` says. Returns `sequences × heads·head_dim`
    /// ([`crate::cpu::decoder::paged_decode_attention`]).
    pub fn paged_decode_attention(
        &self,
        q: &CudaTensor,
        layer: &PagedKvLayer,
        tables: &DeviceBlockTables,
        layout: HeadLayout,
        scale: f32,
    ) -> Result<CudaTensor> {
        let HeadLayout {
            heads,
            kv_heads,
            head_dim,
        } = layout;
        self.check_precision(&[q, &layer.keys, &layer.values])?;
        check(
            heads > 0
                && kv_heads > 0
                && heads % kv_heads == 0
                && (1..=MAX_HEAD_DIM).contains(&head_dim),
            || {
                format!(
                "paged attention: {heads} heads over {kv_heads} KV heads of {head_dim} (at most {MAX_HEAD_DIM})"
            )
            },
        )?;
        check(
            q.rows == tables.sequences && q.cols == heads * head_dim,
            || {
                format!(
                    "paged attention: a {}x{} query for {} sequences of {heads} heads of {head_dim}",
                    q.rows, q.cols, tables.sequences
                )
            },
        )?;
        check(layer.keys.cols == kv_heads * head_dim, || {
            format!(
                "paged attention: cache rows of {} for {kv_heads} KV heads of {head_dim}",
                layer.keys.cols
            )
        })?;
        check(
            tables.block_size == layer.block_size
                && (tables.sequences == 0
                    || (tables.max_block as usize + 1) * layer.block_size <= layer.slots()),
            || {
                format!(
                    "paged attention: tables of blocks of {} up to block {} for a cache of {} slots in blocks of {}",
                    tables.block_size,
                    tables.max_block,
                    layer.slots(),
                    layer.block_size
                )
            },
        )?;
        let out = self.alloc(q.rows, q.cols)?;
        if tables.sequences == 0 {
            return Ok(out);
        }
        let geometry = PagedGeometry {
            table_stride: tables.stride as i32,
            block_size: layer.block_size as i32,
            heads: heads as i32,
            kv_heads: kv_heads as i32,
            head_dim: head_dim as i32,
            scale,
        };
        self.launch(
            &format!("paged_decode_attention_{}", self.suffix()),
            LaunchConfig {
                grid_dim: ((tables.sequences * heads) as u32, 1, 1),
                block_dim: (DECODE_WARPS * 32, 1, 1),
                shared_mem_bytes: 0,
            },
            &[
                Arg::Tensor(&out),
                Arg::Tensor(q),
                Arg::Tensor(&layer.keys),
                Arg::Tensor(&layer.values),
                Arg::U32s(&tables.tables),
                Arg::U32s(&tables.context_lens),
                Arg::Paged(geometry),
            ],
        )?;
        Ok(out)
    }

    /// Refuses operands of different shapes.
    fn same_shape(&self, op: &str, a: &CudaTensor, b: &CudaTensor) -> Result<()> {
        self.check_precision(&[a, b])?;
        check(a.rows == b.rows && a.cols == b.cols, || {
            format!(
                "{op}: a {}x{} and a {}x{} operand",
                a.rows, a.cols, b.rows, b.cols
            )
        })
    }
}
