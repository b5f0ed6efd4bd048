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

    /// The tensor `name`'s values after checking it is `rows × cols` (1-D when `rows` is 1).
    fn checked(&self, name: &str, shape: [usize; 2]) -> Result<Vec<f32>> {
        let (got, values) = self.tensor(name)?;
        let expected_dims = if shape[0] == 1 {
            vec![shape[1]]
        } else {
            shape.to_vec()
        };
        if got != expected_dims && got != shape.to_vec() {
            bail!("tensor {name} has shape {got:?}, expected {shape:?}");
        }
        Ok(values)
    }

    /// The tensor `name` as a `rows × cols` matrix on `backend`; 1-D tensors become one row.
    pub fn matrix<B: Backend>(
        &self,
        backend: &B,
        name: &str,
        shape: [usize; 2],
    ) -> Result<B::Tensor> {
        Ok(backend.upload(shape[0], shape[1], &self.checked(name, shape)?)?)
    }

    /// The `out × in` weight `name` of a linear layer, prepared for `backend`'s products.
    pub fn linear_weight<B: Backend>(
        &self,
        backend: &B,
        name: &str,
        shape: [usize; 2],
    ) -> Result<B::Weight> {
        Ok(backend.upload_weight(shape[0], shape[1], &self.checked(name, shape)?)?)
    }

    /// Several same-shape tensors' values back to back (e.g. fused Q, K, V: matrices
    /// stacked row-wise, vectors concatenated).
    pub fn stacked(&self, names: &[String], shape: [usize; 2]) -> Result<Vec<f32>> {
        let mut all = Vec::with_capacity(names.len() * shape[0] * shape[1]);
        for name in names {
            all.extend(self.checked(name, shape)?);
        }
        Ok(all)
    }
}
