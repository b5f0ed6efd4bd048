//! Reading a torchvision ResNet checkpoint (safetensors, torchvision's parameter names)
//! and folding each batch norm into the convolution before it.

use anyhow::{bail, Context, Result};
use marquee_plugin_api::weights::floats;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

/// One floating-point tensor of the checkpoint, converted to f32.
pub struct Tensor {
    /// Extent of each dimension.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<f32>,
}

/// The floating-point tensors of a safetensors file by name (F32, F16 and BF16, read as
/// f32). Integer tensors such as batch norm's `num_batches_tracked` are skipped.
pub struct Checkpoint {
    tensors: HashMap<String, Tensor>,
}

/// A convolution with its batch norm folded in, laid out for
/// [`marquee_kernels::Backend::conv2d`].
pub struct FoldedConv {
    /// Output channels.
    pub out_channels: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// `(kernel·kernel·in) × out`, rows ordered `(ky, kx, channel)`.
    pub weight: Vec<f32>,
    /// One bias per output channel.
    pub bias: Vec<f32>,
}

/// A tensor as f32 values; `None` for the integer and boolean tensors a checkpoint also
/// holds (batch counters), an error for other element types.
fn to_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Option<Vec<f32>>> {
    match floats(dtype, data) {
        Some(values) => Ok(Some(values)),
        None if matches!(dtype, Dtype::I64 | Dtype::I32 | Dtype::U8 | Dtype::BOOL) => Ok(None),
        None => bail!("tensor {name} has unsupported dtype {dtype:?}"),
    }
}

impl Checkpoint {
    /// Reads every floating-point tensor of a safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            if let Some(values) = to_f32(&name, view.dtype(), view.data())? {
                let shape = view.shape().to_vec();
                tensors.insert(name, Tensor { shape, values });
            }
        }
        Ok(Self { tensors })
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .with_context(|| format!("tensor {name} not found in the checkpoint"))
    }

    /// A 1-D tensor of `len` values.
    fn vector(&self, name: &str, len: usize) -> Result<&[f32]> {
        let t = self.tensor(name)?;
        if t.shape != [len] {
            bail!("tensor {name} has shape {:?}, expected [{len}]", t.shape);
        }
        Ok(&t.values)
    }

    /// Convolution `conv` (`[out, in, k, k]`, no bias) followed by batch norm `bn`
    /// (`weight`, `bias`, `running_mean`, `running_var`) in eval mode, as one convolution:
    /// `w' = w·γ/√(var+eps)`, `b' = β − mean·γ/√(var+eps)` (computed in f64).
    pub fn folded_conv(&self, conv: &str, bn: &str, eps: f64) -> Result<FoldedConv> {
        let name = format!("{conv}.weight");
        let w = self.tensor(&name)?;
        let [out, cin, kh, kw] = <[usize; 4]>::try_from(w.shape.as_slice())
            .map_err(|_| anyhow::anyhow!("tensor {name} has shape {:?}, expected 4-D", w.shape))?;
        if kh != kw || out == 0 || cin == 0 || kh == 0 {
            bail!(
                "tensor {name} has shape {:?}, expected [out, in, k, k]",
                w.shape
            );
        }
        if self.has(&format!("{conv}.bias")) {
            bail!("{conv} has a bias; torchvision's ResNet convolutions have none");
        }
        let gamma = self.vector(&format!("{bn}.weight"), out)?;
        let beta = self.vector(&format!("{bn}.bias"), out)?;
        let mean = self.vector(&format!("{bn}.running_mean"), out)?;
        let var = self.vector(&format!("{bn}.running_var"), out)?;
        let mut scale = vec![0f64; out];
        let mut bias = vec![0f32; out];
        for o in 0..out {
            let s = gamma[o] as f64 / (var[o] as f64 + eps).sqrt();
            if !s.is_finite() {
                bail!(
                    "{bn}: channel {o} has a non-finite scale (running_var {})",
                    var[o]
                );
            }
            scale[o] = s;
            bias[o] = (beta[o] as f64 - mean[o] as f64 * s) as f32;
        }
        let k = kh;
        let mut weight = vec![0f32; k * k * cin * out];
        for o in 0..out {
            for c in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        let v = w.values[((o * cin + c) * k + ky) * k + kx] as f64 * scale[o];
                        weight[((ky * k + kx) * cin + c) * out + o] = v as f32;
                    }
                }
            }
        }
        Ok(FoldedConv {
            out_channels: out,
            in_channels: cin,
            kernel: k,
            weight,
            bias,
        })
    }
}
