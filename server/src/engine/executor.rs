//! Running one batch: the [`Executor`] trait the batcher runs against, and its
//! implementation for a plugin instance, which hands the batch to the plugin through
//! the C ABI (see `plugins/README.md` for each kind's tensors).

use super::error::EngineError;
use super::inputs::Inputs;
use marquee_plugin_api::host::{InputTensor, PluginInstance};
use marquee_plugin_api::DType;

/// Something that turns a batch of inputs into vectors: a model's plugin instance, or
/// a stand-in in tests.
pub trait Executor: Send + Sync + 'static {
    /// The length of each vector it returns.
    fn output_dim(&self) -> usize;

    /// Runs one batch: `batch.count() × output_dim()` values, in input order.
    fn execute(&self, batch: &Inputs) -> Result<Vec<f32>, EngineError>;
}

impl Executor for PluginInstance {
    fn output_dim(&self) -> usize {
        self.info().output_dim as usize
    }

    fn execute(&self, batch: &Inputs) -> Result<Vec<f32>, EngineError> {
        let vectors = match batch {
            Inputs::Tokens { ids, offsets } => {
                let offsets: Vec<u32> = offsets.iter().map(|&o| o as u32).collect();
                self.embed_tokens(ids, &offsets)
            }
            Inputs::Images { bytes, offsets } => {
                let offsets: Vec<u32> = offsets.iter().map(|&o| o as u32).collect();
                self.embed(
                    &[
                        tensor(DType::U8, &[bytes.len() as u64], bytes),
                        tensor(DType::U32, &[offsets.len() as u64], le_bytes(&offsets)),
                    ],
                    batch.count(),
                )
            }
            Inputs::Fusion(rows) => {
                let n = rows.rows() as u64;
                let (t, m) = (rows.text_dim as u64, rows.image_dim as u64);
                self.embed(
                    &[
                        tensor(DType::F32, &[n, t], le_bytes(&rows.text)),
                        tensor(DType::F32, &[n, m], le_bytes(&rows.poster)),
                        tensor(DType::F32, &[n, m], le_bytes(&rows.thumbnail)),
                        tensor(DType::U8, &[n, 2], &rows.present),
                    ],
                    batch.count(),
                )
            }
        };
        Ok(vectors?)
    }
}

/// One input tensor of a plugin call.
fn tensor<'a>(dtype: DType, shape: &'a [u64], bytes: &'a [u8]) -> InputTensor<'a> {
    InputTensor {
        dtype,
        shape,
        bytes,
    }
}

/// The bytes of a slice of plain 4-byte numbers (`u32`, `f32`), without copying.
fn le_bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: called with u32 and f32 only, which have no padding; u8 has no alignment
    // requirement; the length is the slice's size in bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}
