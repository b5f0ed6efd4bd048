//! Marquee plugin `fusion`: fuses a text embedding with the poster and thumbnail
//! embeddings of the same item by text-queried single-head attention (see [`fusion`]
//! for the equations and the rule for missing images). It loads a directory holding
//! `config.json` (see [`config`]) and `model.safetensors`.

pub mod config;
pub mod fusion;
pub mod weights;

use config::FusionConfig;
use fusion::{Fusion, Inputs};
use marquee_kernels::CpuBackend;
use marquee_plugin_api::{
    export_plugin, parse_options, DType, ModelInfo, Plugin, PluginError, PluginKind, Tensor,
    TensorMut,
};
use serde::Deserialize;
use std::path::Path;
use weights::Weights;

/// Options accepted in the plugin's JSON config: none yet, so only `{}` (or nothing).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {}

/// A loaded fusion model.
pub struct FusionPlugin {
    module: Fusion<CpuBackend>,
}

/// Checks an F32 input of `rows × cols` and that the rows `check(i)` selects are finite.
fn embeddings<'a>(
    tensor: &Tensor<'a>,
    what: &str,
    rows: usize,
    cols: usize,
    check: impl Fn(usize) -> bool,
) -> Result<&'a [f32], PluginError> {
    let values = tensor.as_f32(what)?;
    let shape = tensor.shape();
    if shape != [rows as u64, cols as u64] {
        return Err(PluginError::invalid_argument(format!(
            "{what}: shape {shape:?}, expected [{rows}, {cols}] ({rows} rows as in present, \
             {cols} values as the model takes)"
        )));
    }
    for (i, row) in values.chunks_exact(cols).enumerate() {
        if check(i) && !row.iter().all(|v| v.is_finite()) {
            return Err(PluginError::invalid_argument(format!(
                "{what}: row {i} has a non-finite value"
            )));
        }
    }
    Ok(values)
}

impl FusionPlugin {
    /// Loads a model directory.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let config = FusionConfig::load(&dir.join("config.json"))?;
        let weights = Weights::open(&dir.join("model.safetensors"))?;
        Ok(Self {
            module: Fusion::load(CpuBackend::default(), config, &weights)?,
        })
    }

    /// The module's dimensions.
    pub fn config(&self) -> &FusionConfig {
        self.module.config()
    }

    /// Fuses a batch (see [`fusion`]), `n × output_dim` values.
    pub fn fuse(&self, inputs: &Inputs<'_>) -> Result<Vec<f32>, PluginError> {
        self.module
            .forward(inputs)
            .map_err(|e| PluginError::invalid_argument(format!("{e:#}")))
    }
}

impl Plugin for FusionPlugin {
    const NAME: &'static str = "fusion";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const KIND: PluginKind = PluginKind::Fusion;

    fn accepts(model_dir: &Path) -> bool {
        model_dir.join("model.safetensors").is_file()
            && FusionConfig::load(&model_dir.join("config.json")).is_ok()
    }

    fn create(model_dir: &Path, config_json: &str) -> Result<Self, PluginError> {
        parse_options::<Options>(config_json)?;
        Self::load(model_dir).map_err(|e| PluginError::load_failure(&e))
    }

    fn info(&self) -> ModelInfo {
        let config = self.config();
        ModelInfo::fusion(
            config.text_dim as u32,
            config.image_dim as u32,
            config.output_dim as u32,
        )
    }

    fn embed(&self, inputs: &[Tensor<'_>], output: TensorMut<'_>) -> Result<(), PluginError> {
        let [text, poster, thumbnail, present] = inputs else {
            return Err(PluginError::invalid_argument(format!(
                "fusion takes four inputs (text, poster, thumbnail, present), got {}",
                inputs.len()
            )));
        };
        let config = self.config();
        if present.dtype() != DType::U8 || present.shape().len() != 2 || present.shape()[1] != 2 {
            return Err(PluginError::invalid_argument(format!(
                "present: expected a U8 tensor [n, 2], got {:?} {:?}",
                present.dtype(),
                present.shape()
            )));
        }
        let flags = present.as_bytes();
        let n = flags.len() / 2;
        if let Some(i) = flags.iter().position(|&f| f > 1) {
            return Err(PluginError::invalid_argument(format!(
                "present: row {} holds {}, expected 0 or 1",
                i / 2,
                flags[i]
            )));
        }
        let present: Vec<[bool; 2]> = flags
            .chunks_exact(2)
            .map(|p| [p[0] == 1, p[1] == 1])
            .collect();
        let text = embeddings(text, "text embeddings", n, config.text_dim, |_| true)?;
        let poster = embeddings(poster, "poster embeddings", n, config.image_dim, |i| {
            present[i][0]
        })?;
        let thumbnail = embeddings(
            thumbnail,
            "thumbnail embeddings",
            n,
            config.image_dim,
            |i| present[i][1],
        )?;
        if output.shape != [n as u64, config.output_dim as u64] {
            return Err(PluginError::invalid_argument(format!(
                "output shape {:?}, expected [{n}, {}]",
                output.shape, config.output_dim
            )));
        }
        let values = self.fuse(&Inputs {
            text,
            poster,
            thumbnail,
            present: &present,
        })?;
        output.values.copy_from_slice(&values);
        Ok(())
    }
}

export_plugin!(FusionPlugin);
