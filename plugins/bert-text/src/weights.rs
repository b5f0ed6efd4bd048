//! Reading tensors from safetensors files as f32 matrices on a backend.

use anyhow::{bail, Context, Result};
use marquee_kernels::Backend;
use marquee_plugin_api::weights::floats;
use safetensors::SafeTensors;
use std::path::Path;

/// A safetensors file held in memory, with an optional name prefix to try
/// (fine-tuned checkpoints often store `bert.encoder...` instead of `encoder...`).
pub struct Weights {
    bytes: Vec<u8>,
    prefixes: Vec<String>,
}

impl Weights {
    /// Reads a safetensors file; names are looked up as-is and with each of `prefixes`.
    pub fn open(path: &Path, prefixes: &[&str]) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        let mut all = vec![String::new()];
        all.extend(prefixes.iter().map(|p| p.to_string()));
        Ok(Self {
            bytes,
            prefixes: all,
        })
    }

    /// The tensor `name` converted to f32, with its shape.
    pub fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let tensors = SafeTensors::deserialize(&self.bytes)?;
        let view = self
            .prefixes
            .iter()
            .find_map(|p| tensors.tensor(&format!("{p}{name}")).ok())
            .with_context(|| format!("tensor {name} not found in the checkpoint"))?;
        let data = view.data();
        let values: Vec<f32> = floats(view.dtype(), data)
            .with_context(|| format!("tensor {name} has unsupported dtype {:?}", view.dtype()))?;
        Ok((view.shape().to_vec(), values))
    }

    /// The tensor `name` as a `rows × cols` matrix on `backend`; 1-D tensors become one row.
    pub fn matrix<B: Backend>(
        &self,
        backend: &B,
        name: &str,
        shape: [usize; 2],
    ) -> Result<B::Tensor> {
        let (got, values) = self.tensor(name)?;
        let flat: usize = got.iter().product();
        let expected_dims = if shape[0] == 1 {
            vec![shape[1]]
        } else {
            shape.to_vec()
        };
        if got != expected_dims && got != shape.to_vec() {
            bail!("tensor {name} has shape {got:?}, expected {shape:?}");
        }
        debug_assert_eq!(flat, shape[0] * shape[1]);
        Ok(backend.upload(shape[0], shape[1], &values)?)
    }

    /// Several same-shape tensors stacked into one matrix (e.g. fused Q, K, V): matrices
    /// row-wise, vectors (`shape[0] == 1`) concatenated into one row.
    pub fn stacked<B: Backend>(
        &self,
        backend: &B,
        names: &[String],
        shape: [usize; 2],
    ) -> Result<B::Tensor> {
        let mut all = Vec::with_capacity(names.len() * shape[0] * shape[1]);
        for name in names {
            let (got, values) = self.tensor(name)?;
            let expected_dims = if shape[0] == 1 {
                vec![shape[1]]
            } else {
                shape.to_vec()
            };
            if got != expected_dims {
                bail!("tensor {name} has shape {got:?}, expected {shape:?}");
            }
            all.extend(values);
        }
        if shape[0] == 1 {
            Ok(backend.upload(1, shape[1] * names.len(), &all)?)
        } else {
            Ok(backend.upload(shape[0] * names.len(), shape[1], &all)?)
        }
    }
}
