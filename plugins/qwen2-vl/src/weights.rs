//! The checkpoint: `model.safetensors`, or the shards listed by
//! `model.safetensors.index.json`, with f32, bf16 or f16 tensors. bf16 and f16 tensors
//! stay 16-bit until the model takes them: linear layers' weights keep them (their
//! products widen them exactly as they go), everything else is widened to f32. Names
//! are brought to the newer layout (`model.language_model.*`, `model.visual.*`,
//! `lm_head.*`) whichever layout the files use (the older one is `model.*`, `visual.*`),
//! as transformers' `_checkpoint_conversion_mapping` does.

use crate::{Error, Result};
use marquee_kernels::cpu::packed::{HalfFormat, PackedWeight};
use marquee_kernels::Matrix;
use marquee_plugin_api::weights::floats;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// A tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The values.
    pub data: TensorData,
}

/// A tensor's values as the file stores them.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// f32 (or wider, narrowed).
    F32(Vec<f32>),
    /// bf16 or f16 bit patterns.
    Half(Vec<u16>, HalfFormat),
}

impl Tensor {
    /// The values as f32 (16-bit values widened exactly).
    pub fn into_f32(self) -> Vec<f32> {
        self.data.into_f32()
    }
}

impl TensorData {
    /// The values as f32 (16-bit values widened exactly).
    fn into_f32(self) -> Vec<f32> {
        match self {
            TensorData::F32(values) => values,
            TensorData::Half(bits, format) => {
                let mut values = vec![0.0; bits.len()];
                format.widen(&bits, &mut values);
                values
            }
        }
    }

    /// `self`'s values followed by `other`'s: 16-bit when both are of one 16-bit
    /// format, else widened to f32.
    fn append(self, other: TensorData) -> TensorData {
        match (self, other) {
            (TensorData::Half(mut bits, format), TensorData::Half(more, other_format))
                if format == other_format =>
            {
                bits.extend_from_slice(&more);
                TensorData::Half(bits, format)
            }
            (first, second) => {
                let mut values = first.into_f32();
                values.extend_from_slice(&second.into_f32());
                TensorData::F32(values)
            }
        }
    }

    /// The values as a row-major `rows × cols` linear weight, packed for products
    /// (16-bit values stay 16-bit).
    fn pack(self, rows: usize, cols: usize) -> PackedWeight {
        match self {
            TensorData::F32(values) => PackedWeight::pack(rows, cols, &values),
            TensorData::Half(bits, format) => PackedWeight::pack_half(rows, cols, &bits, format),
        }
    }
}

/// The values of a tensor of element type `dtype` stored as `bytes`, `None` when they
/// are not floating point.
fn tensor_data(dtype: Dtype, bytes: &[u8]) -> Option<TensorData> {
    let format = match dtype {
        Dtype::BF16 => HalfFormat::Bf16,
        Dtype::F16 => HalfFormat::F16,
        _ => return floats(dtype, bytes).map(TensorData::F32),
    };
    let bits = bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    Some(TensorData::Half(bits, format))
}

/// Every tensor of a checkpoint, by its name in the newer layout.
#[derive(Debug, Default)]
pub struct Checkpoint {
    tensors: HashMap<String, Tensor>,
}

/// The name of `name` in the newer layout.
pub fn canonical_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("visual.") {
        format!("model.visual.{rest}")
    } else if name.starts_with("model.language_model.") || name.starts_with("model.visual.") {
        name.to_string()
    } else if let Some(rest) = name.strip_prefix("model.") {
        format!("model.language_model.{rest}")
    } else {
        name.to_string()
    }
}

/// Reads a file whole.
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Every floating-point tensor of one safetensors file, by its stored name.
pub(crate) fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = read_bytes(path)?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Weights(format!("{}: {e}", path.display())))?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = tensor_data(view.dtype(), view.data()).ok_or_else(|| {
                Error::Weights(format!(
                    "{name}: element type {:?} is not a float",
                    view.dtype()
                ))
            })?;
            Ok((
                name,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            ))
        })
        .collect()
}

impl Checkpoint {
    /// Loads the checkpoint of the model directory `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<String> = if index.exists() {
            let json: serde_json::Value = serde_json::from_str(&crate::read_to_string(&index)?)
                .map_err(|e| Error::Weights(format!("{}: {e}", index.display())))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Weights("index has no weight_map".into()))?;
            let shards: BTreeSet<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            shards.into_iter().collect()
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut checkpoint = Checkpoint::default();
        for file in files {
            for (name, tensor) in read_safetensors(&dir.join(&file))? {
                checkpoint.tensors.insert(canonical_name(&name), tensor);
            }
        }
        Ok(checkpoint)
    }

    /// Whether the checkpoint holds `name` (newer layout).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes and returns `name`, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::Weights(format!("missing tensor {name}")))?;
        if tensor.shape != shape {
            return Err(Error::Weights(format!(
                "{name} has shape {:?}, expected {shape:?}",
                tensor.shape
            )));
        }
        Ok(tensor)
    }

    /// `name` as a `rows × cols` matrix; tensors of more dimensions are flattened after
    /// the first (a Conv3d kernel becomes `out × (in·t·h·w)`).
    pub fn matrix(&mut self, name: &str, shape: &[usize]) -> Result<Matrix> {
        let t = self.take(name, shape)?;
        let rows = shape[0];
        let cols = shape[1..].iter().product();
        Ok(Matrix {
            rows,
            cols,
            data: t.into_f32(),
        })
    }

    /// `name` as a linear layer's `out × in` weight (flattened as [`Checkpoint::matrix`]),
    /// packed for products; a bf16 or f16 tensor stays 16-bit.
    pub fn linear_weight(&mut self, name: &str, shape: &[usize]) -> Result<PackedWeight> {
        let t = self.take(name, shape)?;
        Ok(t.data.pack(shape[0], shape[1..].iter().product()))
    }

    /// The `out × in` weights `names` (each `(name, out)`) stacked row-wise into one
    /// packed weight, so one product serves layers that read the same input. They stay
    /// 16-bit when all are of one 16-bit format.
    pub fn stacked_linear_weight(
        &mut self,
        names: &[(String, usize)],
        in_features: usize,
    ) -> Result<PackedWeight> {
        let mut stacked: Option<TensorData> = None;
        for (name, out) in names {
            let data = self.take(name, &[*out, in_features])?.data;
            stacked = Some(match stacked {
                None => data,
                Some(rows) => rows.append(data),
            });
        }
        let rows = names.iter().map(|(_, out)| out).sum();
        let data = stacked.ok_or_else(|| Error::Weights("no weights to stack".into()))?;
        Ok(data.pack(rows, in_features))
    }

    /// The vectors `names` (each `(name, len)`) one after the other, as a one-row matrix.
    pub fn stacked_row(&mut self, names: &[(String, usize)]) -> Result<Matrix> {
        let mut data = Vec::new();
        for (name, len) in names {
            data.extend_from_slice(&self.take(name, &[*len])?.into_f32());
        }
        Ok(Matrix {
            rows: 1,
            cols: data.len(),
            data,
        })
    }

    /// A vector `name` of `len` values as a one-row matrix.
    pub fn row(&mut self, name: &str, len: usize) -> Result<Matrix> {
        let t = self.take(name, &[len])?;
        Ok(Matrix {
            rows: 1,
            cols: len,
            data: t.into_f32(),
        })
    }

    /// Names left after the model took what it uses, sorted (for error reports).
    pub fn remaining(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.keys().cloned().collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_map_to_the_newer_names() {
        assert_eq!(
            canonical_name("model.layers.0.mlp.up_proj.weight"),
            "model.language_model.layers.0.mlp.up_proj.weight"
        );
        assert_eq!(
            canonical_name("visual.blocks.1.attn.qkv.bias"),
            "model.visual.blocks.1.attn.qkv.bias"
        );
        assert_eq!(
            canonical_name("model.visual.merger.ln_q.weight"),
            "model.visual.merger.ln_q.weight"
        );
        assert_eq!(
            canonical_name("model.language_model.norm.weight"),
            "model.language_model.norm.weight"
        );
        assert_eq!(canonical_name("lm_head.weight"), "lm_head.weight");
    }

    #[test]
    fn reads_f16_tensors_and_checks_shapes() {
        use safetensors::tensor::{Dtype, TensorView};
        let values = [1.5f32, -2.0, 0.25];
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::F16, vec![3], &bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        safetensors::serialize_to_file(
            [("model.norm.weight", view)],
            None,
            &dir.path().join("model.safetensors"),
        )
        .unwrap();
        let mut c = Checkpoint::load(dir.path()).unwrap();
        assert!(c.take("model.language_model.norm.weight", &[4]).is_err());
        let mut c2 = Checkpoint::load(dir.path()).unwrap();
        assert_eq!(
            c2.row("model.language_model.norm.weight", 3).unwrap().data,
            values
        );
        assert!(c.remaining().is_empty());
    }
}
