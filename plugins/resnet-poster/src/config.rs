//! `config.json` of a ResNet model directory, as serde structs mirroring the file:
//!
//! ```json
//! {
//!   "architecture": "resnet",          // or "resnet18" / "resnet34" / "resnet50" / "resnet101" / "resnet152"
//!   "block": "bottleneck",             // "basic" or "bottleneck"; implied by a named architecture
//!   "layers": [3, 4, 6, 3],            // blocks per stage; implied by a named architecture
//!   "batch_norm_eps": 1e-5,            // optional, torchvision's default
//!   "preprocessing": {                 // optional, torchvision's ImageNet defaults
//!     "resize_size": 256, "crop_size": 224,
//!     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]
//!   }
//! }
//! ```
//!
//! Channel widths are not configured: they are read from the checkpoint's tensor shapes.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// The residual block of a ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34).
    Basic,
    /// 1×1, 3×3 (strided), 1×1 with 4× expansion (ResNet-50/101/152, torchvision's v1.5).
    Bottleneck,
}

/// `config.json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// `resnet` (then `block` and `layers` are required) or a torchvision model name.
    pub architecture: String,
    /// The residual block; must agree with a named architecture when both are given.
    #[serde(default)]
    pub block: Option<BlockKind>,
    /// Blocks in each of the four stages; must agree with a named architecture.
    #[serde(default)]
    pub layers: Option<Vec<usize>>,
    /// Batch-norm epsilon (torchvision: 1e-5).
    #[serde(default = "default_eps")]
    pub batch_norm_eps: f64,
    /// How images become the network's input.
    #[serde(default)]
    pub preprocessing: Preprocessing,
}

/// torchvision's `Resize(resize_size) → CenterCrop(crop_size) → ToTensor → Normalize(mean, std)`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// The shorter side is resized to this many pixels (bilinear, as Pillow).
    #[serde(default = "default_resize")]
    pub resize_size: u32,
    /// Side of the centred square crop taken from the resized image.
    #[serde(default = "default_crop")]
    pub crop_size: u32,
    /// Per-channel mean subtracted after scaling to [0, 1].
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    #[serde(default = "default_std")]
    pub std: [f32; 3],
}

impl Default for Preprocessing {
    fn default() -> Self {
        Self {
            resize_size: default_resize(),
            crop_size: default_crop(),
            mean: default_mean(),
            std: default_std(),
        }
    }
}

fn default_eps() -> f64 {
    1e-5
}
fn default_resize() -> u32 {
    256
}
fn default_crop() -> u32 {
    224
}
fn default_mean() -> [f32; 3] {
    [0.485, 0.456, 0.406]
}
fn default_std() -> [f32; 3] {
    [0.229, 0.224, 0.225]
}

/// The block and stage depths of torchvision's named ResNets.
fn named(architecture: &str) -> Option<(BlockKind, [usize; 4])> {
    Some(match architecture {
        "resnet18" => (BlockKind::Basic, [2, 2, 2, 2]),
        "resnet34" => (BlockKind::Basic, [3, 4, 6, 3]),
        "resnet50" => (BlockKind::Bottleneck, [3, 4, 6, 3]),
        "resnet101" => (BlockKind::Bottleneck, [3, 4, 23, 3]),
        "resnet152" => (BlockKind::Bottleneck, [3, 8, 36, 3]),
        _ => return None,
    })
}

impl ResNetConfig {
    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        config
            .structure()
            .and_then(|_| config.preprocessing.validate())
            .with_context(|| format!("in {}", path.display()))?;
        Ok(config)
    }

    /// The residual block and the number of blocks per stage.
    pub fn structure(&self) -> Result<(BlockKind, [usize; 4])> {
        let given_layers = match &self.layers {
            None => None,
            Some(l) => Some(
                <[usize; 4]>::try_from(l.as_slice())
                    .map_err(|_| anyhow::anyhow!("layers must list 4 stages, got {}", l.len()))?,
            ),
        };
        let (block, layers) = match (self.architecture.as_str(), named(&self.architecture)) {
            ("resnet", _) => match (self.block, given_layers) {
                (Some(b), Some(l)) => (b, l),
                _ => bail!("architecture \"resnet\" needs both \"block\" and \"layers\""),
            },
            (_, Some((block, layers))) => {
                if self.block.is_some_and(|b| b != block)
                    || given_layers.is_some_and(|l| l != layers)
                {
                    bail!(
                        "block/layers disagree with architecture {:?} ({block:?}, {layers:?})",
                        self.architecture
                    );
                }
                (block, layers)
            }
            (other, None) => bail!(
                "unsupported architecture {other:?} (supported: resnet, resnet18, resnet34, \
                 resnet50, resnet101, resnet152)"
            ),
        };
        if layers.contains(&0) {
            bail!("every stage needs at least one block, got layers {layers:?}");
        }
        if !self.batch_norm_eps.is_finite() || self.batch_norm_eps <= 0.0 {
            bail!("batch_norm_eps must be positive");
        }
        Ok((block, layers))
    }
}

impl Preprocessing {
    /// Checks the sizes and statistics.
    pub fn validate(&self) -> Result<()> {
        if self.crop_size == 0 || self.crop_size > self.resize_size {
            bail!(
                "crop_size {} must be in 1..=resize_size ({})",
                self.crop_size,
                self.resize_size
            );
        }
        if self.resize_size > 4096 {
            bail!("resize_size {} is above 4096", self.resize_size);
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || self.mean.iter().any(|m| !m.is_finite())
        {
            bail!("mean must be finite and std positive");
        }
        Ok(())
    }
}
