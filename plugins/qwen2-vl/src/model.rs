//! A Qwen2.5-VL model directory loaded whole: configuration, preprocessing settings,
//! vision tower and text decoder, with LoRA adapters loaded against it.

use crate::config::{ModelConfig, PreprocessorConfig};
use crate::kv_cache::{PagedKvCache, SeqId};
use crate::lora::{AdapterRows, LinearRegistry, LoraAdapter};
use crate::preprocess::{preprocess_rgb, ImagePatches};
use crate::rope::{rope_index, Position3, VisionTokens};
use crate::text::{Segment, TextDecoder};
use crate::vision::VisionTower;
use crate::weights::Checkpoint;
use crate::{Error, Result};
use marquee_kernels::Matrix;
use std::path::Path;

/// A loaded Qwen2.5-VL model.
#[derive(Debug)]
pub struct Qwen2VlModel {
    /// `config.json`.
    pub config: ModelConfig,
    /// `preprocessor_config.json`.
    pub preprocessor: PreprocessorConfig,
    /// The vision tower.
    pub vision: VisionTower,
    /// The decoder and LM head.
    pub text: TextDecoder,
    registry: LinearRegistry,
}

impl Qwen2VlModel {
    /// Loads the model directory `dir` (config, preprocessor config, weights).
    pub fn load(dir: &Path) -> Result<Self> {
        let config = ModelConfig::load(dir)?;
        let preprocessor = PreprocessorConfig::load(dir)?;
        let mut checkpoint = Checkpoint::load(dir)?;
        let mut registry = LinearRegistry::default();
        let vision = VisionTower::load(&mut checkpoint, &mut registry, &config.vision)?;
        let text = TextDecoder::load(
            &mut checkpoint,
            &mut registry,
            &config.text,
            config.tie_word_embeddings,
        )?;
        let left = checkpoint.remaining();
        if !left.is_empty() {
            return Err(Error::Weights(format!(
                "unused tensors in the checkpoint: {left:?}"
            )));
        }
        Ok(Self {
            config,
            preprocessor,
            vision,
            text,
            registry,
        })
    }

    /// Loads a PEFT LoRA adapter directory for this model.
    pub fn load_adapter(&self, dir: &Path) -> Result<LoraAdapter> {
        let adapter = LoraAdapter::load(dir, &self.registry)?;
        for layer in self.vision.linears().chain(self.text.linears()) {
            adapter.check_shapes(layer)?;
        }
        Ok(adapter)
    }

    /// Preprocesses an interleaved RGB image with the directory's settings.
    pub fn preprocess(&self, rgb: &[u8], width: usize, height: usize) -> Result<ImagePatches> {
        preprocess_rgb(rgb, width, height, &self.preprocessor)
    }

    /// The ids marking images in prompts.
    pub fn vision_tokens(&self) -> VisionTokens {
        VisionTokens {
            vision_start: self.config.vision_start_token_id,
            image: self.config.image_token_id,
            video: self.config.video_token_id,
        }
    }

    /// The processor's expansion: each `<|image_pad|>` of a tokenized prompt becomes as
    /// many as its image has merged tokens, images in order.
    pub fn expand_image_pads(&self, ids: &[u32], images: &[ImagePatches]) -> Result<Vec<u32>> {
        let pad = self.config.image_token_id;
        let found = ids.iter().filter(|&&t| t == pad).count();
        if found != images.len() {
            return Err(Error::Request(format!(
                "{found} image placeholders for {} images",
                images.len()
            )));
        }
        let merge = self.config.vision.spatial_merge_size;
        let mut next = images.iter().peekable();
        let mut out = Vec::with_capacity(ids.len());
        for &t in ids {
            match next.next_if(|_| t == pad) {
                Some(image) => out.extend(std::iter::repeat_n(pad, image.tokens(merge))),
                None => out.push(t),
            }
        }
        Ok(out)
    }

    /// M-RoPE positions and `rope_delta` of a prompt whose images are `images`.
    pub fn positions(&self, ids: &[u32], images: &[ImagePatches]) -> Result<(Vec<Position3>, i64)> {
        let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        rope_index(
            ids,
            &grids,
            self.config.vision.spatial_merge_size,
            self.vision_tokens(),
        )
    }

    /// The decoder input of a prompt: token embeddings, with the vision tower's rows in
    /// place of the `<|image_pad|>` tokens, images in order.
    pub fn embed_prompt(
        &self,
        ids: &[u32],
        images: &[ImagePatches],
        adapter: Option<&LoraAdapter>,
    ) -> Result<Matrix> {
        let mut x = self.text.embed(ids)?;
        let pads: Vec<usize> = (0..ids.len())
            .filter(|&i| ids[i] == self.config.image_token_id)
            .collect();
        let merge = self.config.vision.spatial_merge_size;
        let expected: usize = images.iter().map(|i| i.tokens(merge)).sum();
        if pads.len() != expected {
            return Err(Error::Request(format!(
                "Image features and image tokens do not match: tokens: {}, features {expected}",
                pads.len()
            )));
        }
        if images.is_empty() {
            return Ok(x);
        }
        let refs: Vec<&ImagePatches> = images.iter().collect();
        let mut rows = AdapterRows::none();
        let patches: usize = images.iter().map(|i| i.patches()).sum();
        rows.push(0, patches, adapter);
        let features = self.vision.forward(&refs, &rows)?;
        let h = x.cols;
        for (k, &i) in pads.iter().enumerate() {
            x.data[i * h..(i + 1) * h].copy_from_slice(features.row(k));
        }
        Ok(x)
    }

    /// Logits at every position of one prompt (a prefill on a cache of its own).
    pub fn prompt_logits(
        &self,
        ids: &[u32],
        images: &[ImagePatches],
        adapter: Option<&LoraAdapter>,
    ) -> Result<Matrix> {
        let (positions, _) = self.positions(ids, images)?;
        let x = self.embed_prompt(ids, images, adapter)?;
        let block = 16;
        let mut cache = PagedKvCache::new(
            self.text.num_layers(),
            self.text.kv_width(),
            block,
            ids.len().div_ceil(block),
        );
        let seq = SeqId(0);
        let segment = Segment {
            seq,
            positions: &positions,
            adapter,
        };
        let all: Vec<usize> = (0..ids.len()).collect();
        let hidden = self.text.forward(x, &[segment], &mut cache, &all)?;
        let mut rows = AdapterRows::none();
        rows.push(0, ids.len(), adapter);
        self.text.logits(&hidden, &rows)
    }
}
