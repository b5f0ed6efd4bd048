//! Linear layers with PEFT LoRA adapters applied unmerged: `y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ`
//! with `s = lora_alpha / r` (or `/ √r` with `use_rslora`), computed only for the rows
//! of the requests that chose the adapter, so one batch can mix adapters and none.

use crate::weights::{canonical_name, read_safetensors, Checkpoint};
use crate::{read_to_string, Error, Result};
use marquee_kernels::cpu::packed::PackedWeight;
use marquee_kernels::cpu::{matvec, packed};
use marquee_kernels::{Activation, Matrix};
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

/// The model's linear layers by name, numbered in load order (an adapter keeps its
/// matrices by these numbers).
#[derive(Debug, Default)]
pub struct LinearRegistry {
    ids: HashMap<String, usize>,
}

impl LinearRegistry {
    /// Layers registered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no layer is registered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Registers a layer under `name` and returns its number.
    fn register(&mut self, name: &str) -> usize {
        let id = self.ids.len();
        self.ids.insert(name.to_string(), id);
        id
    }
}

/// A linear layer, `weight` (`out × in` as in PyTorch) packed for products. It may
/// stack several of the model's layers that read the same input (q, k and v; gate and
/// up): each is a range of its output columns, with its own LoRA pairs, and one product
/// (one pass of a decode step over the weights) serves them all.
#[derive(Debug)]
pub struct Linear {
    parts: Vec<Part>,
    weight: PackedWeight,
    bias: Option<Matrix>,
}

/// One of the model's layers within a [`Linear`].
#[derive(Debug)]
struct Part {
    /// Its number in the registry.
    id: usize,
    /// Its output columns.
    columns: Range<usize>,
}

impl Linear {
    /// Loads `{name}.weight` (`out × in`) and, when `bias`, `{name}.bias`, registering
    /// the layer under `name`.
    pub fn load(
        checkpoint: &mut Checkpoint,
        registry: &mut LinearRegistry,
        name: &str,
        (out, input): (usize, usize),
        bias: bool,
    ) -> Result<Self> {
        Self::load_stacked(checkpoint, registry, &[(name, out)], input, bias)
    }

    /// Loads the layers `names` (each `(name, out)`, all reading `input` features) as
    /// one, their outputs side by side in that order, registering each under its name.
    pub fn load_stacked(
        checkpoint: &mut Checkpoint,
        registry: &mut LinearRegistry,
        names: &[(&str, usize)],
        input: usize,
        bias: bool,
    ) -> Result<Self> {
        let suffixed = |suffix: &str| -> Vec<(String, usize)> {
            names
                .iter()
                .map(|&(name, out)| (format!("{name}.{suffix}"), out))
                .collect()
        };
        let weight = checkpoint.stacked_linear_weight(&suffixed("weight"), input)?;
        let bias = if bias {
            Some(checkpoint.stacked_row(&suffixed("bias"))?)
        } else {
            None
        };
        let mut start = 0;
        let parts = names
            .iter()
            .map(|&(name, out)| {
                start += out;
                Part {
                    id: registry.register(name),
                    columns: start - out..start,
                }
            })
            .collect();
        Ok(Self {
            parts,
            weight,
            bias,
        })
    }

    /// A layer from its matrices, registered under `name`.
    pub fn new(
        registry: &mut LinearRegistry,
        name: &str,
        weight: PackedWeight,
        bias: Option<Matrix>,
    ) -> Self {
        Self {
            parts: vec![Part {
                id: registry.register(name),
                columns: 0..weight.out_features(),
            }],
            weight,
            bias,
        }
    }

    /// Output features (of all its layers together).
    pub fn out_features(&self) -> usize {
        self.weight.out_features()
    }

    /// `activation(x·Wᵀ + b)` plus the LoRA deltas of `adapters`, whose deltas are added
    /// before the activation.
    pub fn forward(
        &self,
        x: &Matrix,
        adapters: &AdapterRows<'_>,
        activation: Activation,
    ) -> Result<Matrix> {
        // Per adapted (row span, layer): the delta of those rows and columns.
        let deltas: Vec<(usize, &Range<usize>, Matrix)> = adapters
            .spans
            .iter()
            .flat_map(|&(start, end, adapter)| {
                self.parts.iter().filter_map(move |part| {
                    let pair = adapter.pairs.get(part.id)?.as_ref()?;
                    Some((start, end, &part.columns, pair))
                })
            })
            .map(|(start, end, columns, pair)| {
                let rows = Matrix {
                    rows: end - start,
                    cols: x.cols,
                    data: x.data[start * x.cols..end * x.cols].to_vec(),
                };
                let down = matvec::linear(&rows, &pair.a, None, Activation::Identity)?;
                let mut up = matvec::linear(&down, &pair.b, None, Activation::Identity)?;
                up.data.iter_mut().for_each(|v| *v *= pair.scale);
                Ok((start, columns, up))
            })
            .collect::<Result<_>>()?;
        if deltas.is_empty() {
            return Ok(packed::linear(
                x,
                &self.weight,
                self.bias.as_ref(),
                activation,
            )?);
        }
        let mut y = packed::linear(x, &self.weight, self.bias.as_ref(), Activation::Identity)?;
        let width = y.cols;
        for (start, columns, delta) in deltas {
            for (r, delta_row) in delta.data.chunks_exact(delta.cols).enumerate() {
                y.data[(start + r) * width..][columns.clone()]
                    .iter_mut()
                    .zip(delta_row)
                    .for_each(|(v, d)| *v += d);
            }
        }
        match activation {
            Activation::Identity => {}
            Activation::Gelu => y.data.iter_mut().for_each(|v| *v = gelu(*v)),
            Activation::Tanh => y.data.iter_mut().for_each(|v| *v = v.tanh()),
        }
        Ok(y)
    }
}

/// The exact (erf) GELU.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x / std::f32::consts::SQRT_2))
}

/// One adapted layer's `A` (`r × in`), `B` (`out × r`) and scale.
#[derive(Debug)]
struct LoraPair {
    a: Matrix,
    b: Matrix,
    scale: f32,
}

/// PEFT's `target_modules`: module names, or one regular expression.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TargetModules {
    Names(Vec<String>),
    Pattern(String),
}

impl Default for TargetModules {
    fn default() -> Self {
        TargetModules::Names(Vec::new())
    }
}

impl TargetModules {
    fn into_list(self) -> Vec<String> {
        match self {
            TargetModules::Names(names) => names,
            TargetModules::Pattern(pattern) => vec![pattern],
        }
    }
}

/// `adapter_config.json` fields that decide how an adapter applies.
#[derive(Debug, Deserialize)]
struct AdapterConfig {
    r: usize,
    lora_alpha: f32,
    #[serde(default)]
    target_modules: TargetModules,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    peft_type: Option<String>,
    #[serde(default)]
    rank_pattern: HashMap<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: HashMap<String, serde_json::Value>,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    bias: Option<String>,
}

/// A PEFT LoRA adapter, its matrices indexed by the model's layer numbers.
#[derive(Debug)]
pub struct LoraAdapter {
    pairs: Vec<Option<LoraPair>>,
    /// Layers the adapter changes.
    pub adapted_layers: usize,
    /// Rank `r`.
    pub rank: usize,
    /// `lora_alpha`.
    pub alpha: f32,
    /// Whether the scale is `alpha / sqrt(r)` (rsLoRA).
    pub use_rslora: bool,
    /// `target_modules` of the adapter's configuration.
    pub target_modules: Vec<String>,
}

impl LoraAdapter {
    /// Loads a PEFT adapter directory (`adapter_config.json` +
    /// `adapter_model.safetensors`) for a model whose layers are `registry`.
    pub fn load(dir: &Path, registry: &LinearRegistry) -> Result<Self> {
        let config: AdapterConfig =
            serde_json::from_str(&read_to_string(&dir.join("adapter_config.json"))?)
                .map_err(|e| Error::Adapter(format!("adapter_config.json: {e}")))?;
        if config.peft_type.as_deref().is_some_and(|t| t != "LORA") {
            return Err(Error::Adapter(format!(
                "{:?} adapters are not supported",
                config.peft_type
            )));
        }
        if config.use_dora {
            return Err(Error::Adapter(
                "DoRA adapters (use_dora) are not supported: merge them or train plain LoRA".into(),
            ));
        }
        if !config.rank_pattern.is_empty() || !config.alpha_pattern.is_empty() {
            return Err(Error::Adapter(
                "per-module rank_pattern / alpha_pattern are not supported".into(),
            ));
        }
        if config
            .modules_to_save
            .as_ref()
            .is_some_and(|m| !m.is_empty())
        {
            return Err(Error::Adapter("modules_to_save are not supported".into()));
        }
        if config.bias.as_deref().is_some_and(|b| b != "none") {
            return Err(Error::Adapter(
                "adapters with trained biases are not supported".into(),
            ));
        }
        if config.r == 0 {
            return Err(Error::Adapter("r must be positive".into()));
        }
        let scale = if config.use_rslora {
            config.lora_alpha / (config.r as f32).sqrt()
        } else {
            config.lora_alpha / config.r as f32
        };
        let mut halves: HashMap<(String, bool), Matrix> = HashMap::new();
        for (name, tensor) in read_safetensors(&dir.join("adapter_model.safetensors"))? {
            let path = name.strip_prefix("base_model.model.").unwrap_or(&name);
            let (module, is_a) = if let Some(m) = path.strip_suffix(".lora_A.weight") {
                (m, true)
            } else if let Some(m) = path.strip_suffix(".lora_B.weight") {
                (m, false)
            } else {
                return Err(Error::Adapter(format!("unsupported adapter tensor {name}")));
            };
            if tensor.shape.len() != 2 {
                return Err(Error::Adapter(format!("{name} is not a matrix")));
            }
            let matrix = Matrix {
                rows: tensor.shape[0],
                cols: tensor.shape[1],
                data: tensor.into_f32(),
            };
            halves.insert((canonical_name(module), is_a), matrix);
        }
        let mut pairs: Vec<Option<LoraPair>> = (0..registry.len()).map(|_| None).collect();
        let mut adapted_layers = 0;
        for ((module, is_a), a) in halves
            .iter()
            .filter(|((_, is_a), _)| *is_a)
            .map(|(k, v)| (k.clone(), v))
        {
            debug_assert!(is_a);
            let b = halves
                .get(&(module.clone(), false))
                .ok_or_else(|| Error::Adapter(format!("{module} has lora_A but no lora_B")))?;
            let id = *registry.ids.get(&module).ok_or_else(|| {
                Error::Adapter(format!("{module} is not a linear layer of the model"))
            })?;
            if a.rows != config.r || b.cols != config.r {
                return Err(Error::Adapter(format!(
                    "{module}: rank differs from r = {}",
                    config.r
                )));
            }
            pairs[id] = Some(LoraPair {
                a: a.clone(),
                b: b.clone(),
                scale,
            });
            adapted_layers += 1;
        }
        if halves.len() != 2 * adapted_layers {
            return Err(Error::Adapter("some lora_B matrices have no lora_A".into()));
        }
        Ok(Self {
            pairs,
            adapted_layers,
            rank: config.r,
            alpha: config.lora_alpha,
            use_rslora: config.use_rslora,
            target_modules: config.target_modules.into_list(),
        })
    }

    /// Checks each adapted layer's shapes against the model's layers.
    pub(crate) fn check_shapes(&self, layer: &Linear) -> Result<()> {
        for part in &layer.parts {
            let Some(Some(pair)) = self.pairs.get(part.id) else {
                continue;
            };
            let (out, input) = (part.columns.len(), layer.weight.in_features());
            if pair.a.cols != input || pair.b.rows != out {
                return Err(Error::Adapter(format!(
                    "a LoRA pair of shapes {}x{} / {}x{} does not fit a {out}x{input} layer",
                    pair.a.rows, pair.a.cols, pair.b.rows, pair.b.cols,
                )));
            }
        }
        Ok(())
    }
}

/// Which rows of a batch use which adapter: spans `start..end` of rows, rows outside
/// every span use none.
#[derive(Clone, Debug, Default)]
pub struct AdapterRows<'a> {
    spans: Vec<(usize, usize, &'a LoraAdapter)>,
}

impl<'a> AdapterRows<'a> {
    /// No adapter for any row.
    pub fn none() -> Self {
        Self::default()
    }

    /// Rows `start..end` use `adapter` (nothing when `None`).
    pub fn push(&mut self, start: usize, end: usize, adapter: Option<&'a LoraAdapter>) {
        if let Some(adapter) = adapter {
            if start < end {
                self.spans.push((start, end, adapter));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dora_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("adapter_config.json"),
            r#"{"r": 4, "lora_alpha": 8, "use_dora": true, "peft_type": "LORA"}"#,
        )
        .unwrap();
        let err = LoraAdapter::load(dir.path(), &LinearRegistry::default()).unwrap_err();
        assert!(err.to_string().contains("DoRA"), "{err}");
    }
}
