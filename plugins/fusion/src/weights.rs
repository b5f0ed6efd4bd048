//! Reading the fusion module's tensors from a safetensors file (F32, F16 or BF16).

use anyhow::{bail, Context, Result};
use marquee_plugin_api::weights::floats;
use safetensors::SafeTensors;
use std::path::Path;

/// A safetensors file held in memory.
pub struct Weights {
    bytes: Vec<u8>,
}

impl Weights {
    /// Reads and parses a safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Self { bytes })
    }

    /// Whether the file holds a tensor of this name.
    pub fn has(&self, name: &str) -> bool {
        SafeTensors::deserialize(&self.bytes).is_ok_and(|t| t.tensor(name).is_ok())
    }

    /// The tensor `name` as f32 values, checked to have exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let tensors = SafeTensors::deserialize(&self.bytes)?;
        let view = tensors
            .tensor(name)
            .with_context(|| format!("tensor {name} not found in the checkpoint"))?;
        if view.shape() != shape {
            bail!(
                "tensor {name} has shape {:?}, the config implies {shape:?}",
                view.shape()
            );
        }
        let data = view.data();
        floats(view.dtype(), data)
            .with_context(|| format!("tensor {name} has unsupported dtype {:?}", view.dtype()))
    }
}
