//! Marquee plugin `resnet-poster`: a torchvision ResNet (18/34/50/101/152 or any
//! BasicBlock/Bottleneck depth and width) as an image encoder. It loads a directory
//! holding `config.json` (see [`config`]) and `model.safetensors` (torchvision's
//! parameter names), folds every batch norm into its convolution, and turns encoded
//! images (JPEG, PNG, WebP, recognised from the bytes) into the globally average-pooled
//! features before `fc` (2,048 values for ResNet-50), optionally L2-normalised, after
//! torchvision's exact evaluation preprocessing.

pub mod config;
pub mod preprocess;
pub mod resnet;
pub mod weights;

use anyhow::Context;
use config::{Preprocessing, ResNetConfig};
use marquee_imaging::{decode_rgb, DecodeError};
use marquee_kernels::device::placement;
use marquee_kernels::{Backend, CpuBackend, CudaBackend, ImageShape, KernelError, ResolvedDevice};
use marquee_plugin_api::{
    export_plugin, parse_options, ModelInfo, Plugin, PluginError, PluginKind, Tensor, TensorMut,
};
use rayon::prelude::*;
use resnet::ResNet;
use serde::Deserialize;
use std::path::Path;
use weights::Checkpoint;

/// Images run through the network at once, at most (about 100 MB of activations at
/// ResNet-50's widest layer for 224 × 224 inputs).
pub const MAX_NETWORK_BATCH: usize = 32;

/// Default of [`Options::max_image_pixels`]: 40 megapixels.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// Options accepted in the plugin's JSON config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// L2-normalise every feature vector.
    #[serde(default)]
    pub normalize: bool,
    /// Worker threads for decoding and inference; defaults to all cores.
    pub threads: Option<usize>,
    /// Largest accepted image (width × height), checked from the header before decoding.
    #[serde(default = "default_max_image_pixels")]
    pub max_image_pixels: u64,
    /// `auto` (the GPU when CUDA is usable, else the CPU), `cpu` or `cuda:N`.
    pub device: Option<String>,
    /// `fp32` (default) or `bf16` (GPU only).
    pub precision: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            normalize: false,
            threads: None,
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
            device: None,
            precision: None,
        }
    }
}

fn default_max_image_pixels() -> u64 {
    DEFAULT_MAX_IMAGE_PIXELS
}

/// The network on the device it was placed on.
enum Network {
    /// On the host, in the plugin's thread pool.
    Cpu(Box<ResNet<CpuBackend>>),
    /// On a CUDA device.
    Cuda(Box<ResNet<CudaBackend>>),
}

/// Pooled features of an NHWC batch on one backend, L2-normalised when asked.
fn run<B: Backend>(
    network: &ResNet<B>,
    nhwc: &[f32],
    shape: ImageShape,
    normalize: bool,
) -> anyhow::Result<Vec<f32>> {
    let backend = network.backend();
    let input = backend.upload(shape.pixels(), 3, nhwc)?;
    let mut pooled = network.forward(&input, shape)?;
    if normalize {
        backend.l2_normalize(&mut pooled)?;
    }
    Ok(backend.download(&pooled)?)
}

/// A loaded ResNet image encoder.
pub struct ResNetPoster {
    network: Network,
    preprocessing: Preprocessing,
    normalize: bool,
    max_image_pixels: u64,
    pool: rayon::ThreadPool,
}

fn decode_error(index: usize, e: DecodeError) -> PluginError {
    let message = format!("image {index}: {e}");
    match e {
        DecodeError::TooLarge { .. } => {
            PluginError::new(marquee_plugin_api::Status::ResourceExhausted, message)
        }
        DecodeError::Unsupported(_) | DecodeError::Corrupt { .. } => {
            PluginError::invalid_argument(message)
        }
    }
}

impl ResNetPoster {
    /// Loads a model directory with the given options.
    pub fn load(dir: &Path, options: Options) -> anyhow::Result<Self> {
        if options.max_image_pixels == 0 {
            anyhow::bail!("max_image_pixels must be positive");
        }
        let config = ResNetConfig::load(&dir.join("config.json"))?;
        let path = dir.join("model.safetensors");
        let checkpoint = Checkpoint::open(&path)?;
        let (device, precision) =
            placement(options.device.as_deref(), options.precision.as_deref())
                .map_err(anyhow::Error::msg)?;
        let loading = || format!("loading {}", path.display());
        let network = match device {
            ResolvedDevice::Cuda { ordinal, .. } => {
                let backend = CudaBackend::new(ordinal, precision)?;
                let network = ResNet::load(backend, &config, &checkpoint).with_context(loading)?;
                Network::Cuda(Box::new(network))
            }
            ResolvedDevice::Cpu { .. } => {
                let network = ResNet::load(CpuBackend::default(), &config, &checkpoint)
                    .with_context(loading)?;
                Network::Cpu(Box::new(network))
            }
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads.unwrap_or(0))
            .thread_name(|i| format!("resnet-poster-{i}"))
            .build()?;
        Ok(Self {
            network,
            preprocessing: config.preprocessing,
            normalize: options.normalize,
            max_image_pixels: options.max_image_pixels,
            pool,
        })
    }

    /// Length of each output vector.
    pub fn output_dim(&self) -> usize {
        match &self.network {
            Network::Cpu(n) => n.features(),
            Network::Cuda(n) => n.features(),
        }
    }

    /// Decodes, resizes, crops and normalises encoded images into the network's NHWC
    /// input: `n · crop · crop` rows of 3 values. The first bad image fails the batch,
    /// named by its index.
    pub fn preprocess(&self, images: &[&[u8]]) -> Result<Vec<f32>, PluginError> {
        self.preprocess_numbered(images, 0)
    }

    /// [`preprocess`](Self::preprocess) with errors numbering the images from `first`.
    fn preprocess_numbered(&self, images: &[&[u8]], first: usize) -> Result<Vec<f32>, PluginError> {
        let config = &self.preprocessing;
        let per_image = (config.crop_size as usize).pow(2) * 3;
        let crops: Vec<Result<Vec<f32>, PluginError>> = self.pool.install(|| {
            images
                .par_iter()
                .enumerate()
                .map(|(i, bytes)| {
                    let rgb = decode_rgb(bytes, self.max_image_pixels)
                        .map_err(|e| decode_error(first + i, e))?;
                    let pixels = preprocess::resize_and_crop(&rgb, config);
                    let mut out = Vec::with_capacity(per_image);
                    preprocess::normalize_into(&pixels, config, &mut out);
                    Ok(out)
                })
                .collect()
        });
        Ok(crops.into_iter().collect::<Result<Vec<_>, _>>()?.concat())
    }

    /// Features of an NHWC batch (`shape.pixels() × 3` values), `batch × output_dim`,
    /// L2-normalised when the `normalize` option is set.
    pub fn features(&self, nhwc: &[f32], shape: ImageShape) -> anyhow::Result<Vec<f32>> {
        match &self.network {
            Network::Cpu(n) => self.pool.install(|| run(n, nhwc, shape, self.normalize)),
            Network::Cuda(n) => run(n, nhwc, shape, self.normalize),
        }
    }

    /// Features of a batch in PyTorch's NCHW layout (`batch × 3 × height × width`
    /// values), as [`features`](Self::features).
    pub fn features_nchw(&self, nchw: &[f32], shape: ImageShape) -> anyhow::Result<Vec<f32>> {
        let plane = shape.height * shape.width;
        anyhow::ensure!(
            nchw.len() == shape.pixels() * 3,
            "{} values for {} images of 3x{}x{}",
            nchw.len(),
            shape.batch,
            shape.height,
            shape.width
        );
        let mut nhwc = vec![0f32; nchw.len()];
        for b in 0..shape.batch {
            for c in 0..3 {
                let src = &nchw[(b * 3 + c) * plane..][..plane];
                for (p, v) in src.iter().enumerate() {
                    nhwc[(b * plane + p) * 3 + c] = *v;
                }
            }
        }
        self.features(&nhwc, shape)
    }

    /// Encoded images to features, `images.len() × output_dim` values. Large batches
    /// run [`MAX_NETWORK_BATCH`] images at a time, which bounds the activations' memory.
    pub fn embed_images(&self, images: &[&[u8]]) -> Result<Vec<f32>, PluginError> {
        let side = self.preprocessing.crop_size as usize;
        let mut out = Vec::with_capacity(images.len() * self.output_dim());
        for (i, chunk) in images.chunks(MAX_NETWORK_BATCH).enumerate() {
            let input = self.preprocess_numbered(chunk, i * MAX_NETWORK_BATCH)?;
            let shape = ImageShape {
                batch: chunk.len(),
                height: side,
                width: side,
            };
            out.extend(
                self.features(&input, shape).map_err(|e| {
                    PluginError::inference_failure(&e, KernelError::is_out_of_memory)
                })?,
            );
        }
        Ok(out)
    }
}

/// Splits the concatenated image bytes at the offsets, checking them.
fn split_images<'a>(bytes: &'a [u8], offsets: &[u32]) -> Result<Vec<&'a [u8]>, PluginError> {
    if offsets.first() != Some(&0) || offsets.last().map(|&o| o as usize) != Some(bytes.len()) {
        return Err(PluginError::invalid_argument(
            "offsets must start at 0 and end at the number of image bytes",
        ));
    }
    offsets
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            if w[1] < w[0] {
                Err(PluginError::invalid_argument(format!(
                    "offsets decrease at image {i}"
                )))
            } else {
                Ok(&bytes[w[0] as usize..w[1] as usize])
            }
        })
        .collect()
}

impl Plugin for ResNetPoster {
    const NAME: &'static str = "resnet-poster";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const KIND: PluginKind = PluginKind::ImageEncoder;

    fn accepts(model_dir: &Path) -> bool {
        if !model_dir.join("model.safetensors").is_file() {
            return false;
        }
        #[derive(Deserialize)]
        struct Architecture {
            architecture: Option<String>,
        }
        std::fs::read_to_string(model_dir.join("config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Architecture>(&text).ok())
            .and_then(|c| c.architecture)
            .is_some_and(|a| a.starts_with("resnet"))
    }

    fn create(model_dir: &Path, config_json: &str) -> Result<Self, PluginError> {
        Self::load(model_dir, parse_options(config_json)?)
            .map_err(|e| PluginError::load_failure(&e))
    }

    fn info(&self) -> ModelInfo {
        ModelInfo::image_encoder(self.output_dim() as u32)
    }

    fn embed(&self, inputs: &[Tensor<'_>], output: TensorMut<'_>) -> Result<(), PluginError> {
        let [bytes, offsets] = inputs else {
            return Err(PluginError::invalid_argument(
                "resnet-poster takes two inputs: the encoded images' bytes and their offsets",
            ));
        };
        if bytes.dtype() != marquee_plugin_api::DType::U8 {
            return Err(PluginError::invalid_argument(format!(
                "image bytes: expected U8 tensor, got {:?}",
                bytes.dtype()
            )));
        }
        let images = split_images(bytes.as_bytes(), offsets.as_u32("offsets")?)?;
        let dim = self.output_dim();
        if output.shape != [images.len() as u64, dim as u64] {
            return Err(PluginError::invalid_argument(format!(
                "output shape {:?}, expected [{}, {dim}]",
                output.shape,
                images.len()
            )));
        }
        if images.is_empty() {
            return Ok(());
        }
        let values = self.embed_images(&images)?;
        output.values.copy_from_slice(&values);
        Ok(())
    }
}

export_plugin!(ResNetPoster);
