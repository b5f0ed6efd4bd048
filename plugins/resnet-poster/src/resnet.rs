//! The ResNet trunk (stem, four stages of residual blocks, global average pooling),
//! written once against the kernels' [`Backend`] trait. Every batch norm is folded into
//! its convolution at load time, and each block's residual add and final ReLU are fused
//! into its last convolution. Images are NHWC: `(n·h·w) × 3` pixel rows.

use crate::config::{BlockKind, ResNetConfig};
use crate::weights::{Checkpoint, FoldedConv};
use anyhow::{bail, Result};
use marquee_kernels::{Backend, ImageShape, Pooling, Window2d};

/// A convolution (batch norm folded in) on a backend.
struct Conv<T> {
    weight: T,
    bias: T,
    window: Window2d,
}

/// A residual block: convolutions in sequence, each followed by ReLU, the last one
/// after adding the shortcut (the input, or its 1×1 `downsample` projection).
struct Block<T> {
    convs: Vec<Conv<T>>,
    downsample: Option<Conv<T>>,
}

/// A torchvision ResNet's feature extractor (everything before `fc`) on a backend.
pub struct ResNet<B: Backend> {
    backend: B,
    stem: Conv<B::Tensor>,
    blocks: Vec<Block<B::Tensor>>,
    features: usize,
}

/// torchvision's stem max pooling: 3×3, stride 2, padding 1.
const STEM_POOL: Window2d = Window2d {
    kernel_height: 3,
    kernel_width: 3,
    stride: 2,
    padding: 1,
};

/// Reads one folded convolution and checks its kernel size and input width.
fn load_conv<B: Backend>(
    backend: &B,
    checkpoint: &Checkpoint,
    names: (&str, &str),
    eps: f64,
    expected: (usize, usize),
    stride: usize,
) -> Result<(Conv<B::Tensor>, usize)> {
    let (conv, bn) = names;
    let (kernel, in_channels) = expected;
    let folded: FoldedConv = checkpoint.folded_conv(conv, bn, eps)?;
    if folded.kernel != kernel {
        bail!(
            "{conv} has a {k}x{k} kernel where torchvision's ResNet has {kernel}x{kernel} \
             (does the config's block type match the checkpoint?)",
            k = folded.kernel
        );
    }
    if folded.in_channels != in_channels {
        bail!(
            "{conv} takes {} channels, the previous layer gives {in_channels}",
            folded.in_channels
        );
    }
    let out = folded.out_channels;
    let conv = Conv {
        weight: backend.upload(kernel * kernel * in_channels, out, &folded.weight)?,
        bias: backend.upload(1, out, &folded.bias)?,
        window: Window2d::square(kernel, stride, kernel / 2),
    };
    Ok((conv, out))
}

impl<B: Backend> ResNet<B> {
    /// Builds the network from a checkpoint with torchvision's parameter names
    /// (`conv1`, `bn1`, `layer{1-4}.{i}.conv{1-3}` / `bn{1-3}` / `downsample.{0,1}`),
    /// inferring every channel width from the tensors' shapes; `fc.*` is not used.
    pub fn load(backend: B, config: &ResNetConfig, checkpoint: &Checkpoint) -> Result<Self> {
        let (kind, layers) = config.structure()?;
        let eps = config.batch_norm_eps;
        let b = &backend;
        let (stem, mut channels) = load_conv(b, checkpoint, ("conv1", "bn1"), eps, (7, 3), 2)?;
        let mut blocks = Vec::new();
        for (stage, &count) in layers.iter().enumerate() {
            let stage = stage + 1;
            if checkpoint.has(&format!("layer{stage}.{count}.conv1.weight")) {
                bail!(
                    "the checkpoint has more than {count} blocks in layer{stage} \
                     (config layers {layers:?})"
                );
            }
            for i in 0..count {
                let p = format!("layer{stage}.{i}");
                let stride = if stage > 1 && i == 0 { 2 } else { 1 };
                let block_in = channels;
                // (kernel, stride) of each convolution, torchvision's v1.5 layout.
                let plan: &[(usize, usize)] = match kind {
                    BlockKind::Basic => &[(3, stride), (3, 1)],
                    BlockKind::Bottleneck => &[(1, 1), (3, stride), (1, 1)],
                };
                let mut convs = Vec::with_capacity(plan.len());
                for (j, &(kernel, s)) in plan.iter().enumerate() {
                    let names = (format!("{p}.conv{}", j + 1), format!("{p}.bn{}", j + 1));
                    let (conv, out) = load_conv(
                        b,
                        checkpoint,
                        (&names.0, &names.1),
                        eps,
                        (kernel, channels),
                        s,
                    )?;
                    convs.push(conv);
                    channels = out;
                }
                let downsample = if checkpoint.has(&format!("{p}.downsample.0.weight")) {
                    let names = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                    let (conv, out) = load_conv(
                        b,
                        checkpoint,
                        (&names.0, &names.1),
                        eps,
                        (1, block_in),
                        stride,
                    )?;
                    if out != channels {
                        bail!("{p}.downsample gives {out} channels, the block {channels}");
                    }
                    Some(conv)
                } else if stride != 1 || block_in != channels {
                    bail!(
                        "{p} changes the shape ({block_in} -> {channels} channels, stride \
                         {stride}) but the checkpoint has no {p}.downsample"
                    );
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
            }
        }
        if checkpoint.has("layer5.0.conv1.weight") {
            bail!("the checkpoint has a fifth stage; torchvision's ResNet has four");
        }
        Ok(Self {
            backend,
            stem,
            blocks,
            features: channels,
        })
    }

    /// The backend the weights live on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Length of the pooled feature vector (2,048 for ResNet-50).
    pub fn features(&self) -> usize {
        self.features
    }

    /// Runs the trunk on an NHWC batch (`shape.pixels() × 3`), returning the globally
    /// average-pooled features, `batch × features`.
    pub fn forward(&self, x: &B::Tensor, shape: ImageShape) -> Result<B::Tensor> {
        let b = &self.backend;
        let stem = &self.stem;
        let mut x = b.conv2d(
            x,
            shape,
            &stem.weight,
            Some(&stem.bias),
            stem.window,
            None,
            true,
        )?;
        let mut shape = stem.window.output_shape(shape)?;
        x = b.max_pool2d(&x, shape, STEM_POOL)?;
        shape = STEM_POOL.output_shape(shape)?;
        for block in &self.blocks {
            let projected = match &block.downsample {
                Some(d) => {
                    Some(b.conv2d(&x, shape, &d.weight, Some(&d.bias), d.window, None, false)?)
                }
                None => None,
            };
            let shortcut = projected.as_ref().unwrap_or(&x);
            let mut h: Option<B::Tensor> = None;
            let mut h_shape = shape;
            for (j, conv) in block.convs.iter().enumerate() {
                let last = j + 1 == block.convs.len();
                let next = b.conv2d(
                    h.as_ref().unwrap_or(&x),
                    h_shape,
                    &conv.weight,
                    Some(&conv.bias),
                    conv.window,
                    last.then_some(shortcut),
                    true,
                )?;
                h_shape = conv.window.output_shape(h_shape)?;
                h = Some(next);
            }
            if let Some(h) = h {
                x = h;
                shape = h_shape;
            }
        }
        let per_image = shape.height * shape.width;
        let offsets: Vec<usize> = (0..=shape.batch).map(|i| i * per_image).collect();
        Ok(b.pool(&x, &offsets, Pooling::Mean)?)
    }
}
