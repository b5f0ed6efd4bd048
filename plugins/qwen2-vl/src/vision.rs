//! The vision tower (`Qwen2_5_VisionTransformerPretrainedModel`): patch embedding (the
//! Conv3d whose kernel equals its stride, i.e. one matmul of the flattened patches),
//! 2-D rotary positions, blocks of RMSNorm → attention (fused qkv) → RMSNorm → SwiGLU,
//! attending within 2-D windows except in `fullatt_block_indexes` (whole images), and
//! the patch merger (RMSNorm, 4 patches → one row, Linear → GELU → Linear). Patches are
//! put in window order before the blocks and the merged tokens back after the merger.

use crate::config::VisionConfig;
use crate::lora::{AdapterRows, Linear, LinearRegistry};
use crate::preprocess::ImagePatches;
use crate::rope::vision_angles;
use crate::weights::Checkpoint;
use crate::{Error, Result};
use marquee_kernels::cpu::decoder::{
    add_in_place, apply_rotary, rms_norm, segment_attention, silu_mul,
};
use marquee_kernels::{Activation, Matrix};

/// RMSNorm epsilon of every vision norm.
const VISION_EPS: f32 = 1e-6;

/// One vision block.
#[derive(Debug)]
struct VisionBlock {
    norm1: Vec<f32>,
    norm2: Vec<f32>,
    qkv: Linear,
    proj: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The vision tower.
#[derive(Debug)]
pub struct VisionTower {
    config: VisionConfig,
    patch_embed: Linear,
    blocks: Vec<VisionBlock>,
    merger_norm: Vec<f32>,
    merger_fc1: Linear,
    merger_fc2: Linear,
}

/// A window-order permutation of an image batch's merged tokens and the segments
/// (in window order) that window attention attends within.
struct Windows {
    /// `order[i]`: the merged token (in patch order) at window position `i`.
    order: Vec<usize>,
    /// Row offsets of the windows, in patches.
    window_bounds: Vec<usize>,
    /// Row offsets of the images' frames, in patches.
    frame_bounds: Vec<usize>,
}

impl VisionTower {
    /// Loads the tower from `model.visual.*`.
    pub fn load(
        checkpoint: &mut Checkpoint,
        registry: &mut LinearRegistry,
        config: &VisionConfig,
    ) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let p = "model.visual";
        let patch_shape = [
            h,
            config.in_channels,
            config.temporal_patch_size,
            config.patch_size,
            config.patch_size,
        ];
        let patch_embed = Linear::new(
            registry,
            &format!("{p}.patch_embed.proj"),
            checkpoint.linear_weight(&format!("{p}.patch_embed.proj.weight"), &patch_shape)?,
            None,
        );
        let mut blocks = Vec::with_capacity(config.depth);
        for b in 0..config.depth {
            let n = format!("{p}.blocks.{b}");
            let mut lin = |name: &str, shape, bias| {
                Linear::load(checkpoint, registry, &format!("{n}.{name}"), shape, bias)
            };
            let qkv = lin("attn.qkv", (3 * h, h), true)?;
            let proj = lin("attn.proj", (h, h), true)?;
            let gate = lin("mlp.gate_proj", (i, h), true)?;
            let up = lin("mlp.up_proj", (i, h), true)?;
            let down = lin("mlp.down_proj", (h, i), true)?;
            blocks.push(VisionBlock {
                norm1: checkpoint.row(&format!("{n}.norm1.weight"), h)?.data,
                norm2: checkpoint.row(&format!("{n}.norm2.weight"), h)?.data,
                qkv,
                proj,
                gate,
                up,
                down,
            });
        }
        let merged = h * config.spatial_merge_size * config.spatial_merge_size;
        Ok(Self {
            patch_embed,
            blocks,
            merger_norm: checkpoint.row(&format!("{p}.merger.ln_q.weight"), h)?.data,
            merger_fc1: Linear::load(
                checkpoint,
                registry,
                &format!("{p}.merger.mlp.0"),
                (merged, merged),
                true,
            )?,
            merger_fc2: Linear::load(
                checkpoint,
                registry,
                &format!("{p}.merger.mlp.2"),
                (config.out_hidden_size, merged),
                true,
            )?,
            config: config.clone(),
        })
    }

    /// transformers' `get_window_index` (and `cu_seqlens` for the full-attention blocks).
    fn windows(&self, grids: &[[usize; 3]]) -> Windows {
        let merge = self.config.spatial_merge_size;
        let unit = merge * merge;
        let side = self.config.window_size / merge / self.config.patch_size;
        let mut w = Windows {
            order: Vec::new(),
            window_bounds: vec![0],
            frame_bounds: vec![0],
        };
        let mut base = 0;
        for &[t, gh, gw] in grids {
            let (lh, lw) = (gh / merge, gw / merge);
            for frame in 0..t {
                for wy in 0..lh.div_ceil(side) {
                    for wx in 0..lw.div_ceil(side) {
                        for y in wy * side..((wy + 1) * side).min(lh) {
                            for x in wx * side..((wx + 1) * side).min(lw) {
                                w.order.push(base + frame * lh * lw + y * lw + x);
                            }
                        }
                        w.window_bounds.push(w.order.len() * unit);
                    }
                }
                w.frame_bounds
                    .push(w.frame_bounds.last().unwrap() + lh * lw * unit);
            }
            base += t * lh * lw;
        }
        w
    }

    /// The tower's output for `images` (all computed together, each image attending
    /// only to itself): one row of `out_hidden_size` per merged token, images in order.
    /// `adapter` applies to every image (the batch's images of one request).
    pub fn forward(&self, images: &[&ImagePatches], adapter: &AdapterRows<'_>) -> Result<Matrix> {
        let c = &self.config;
        let values = c.patch_values();
        let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        let merge = c.spatial_merge_size;
        for image in images {
            let [_, gh, gw] = image.grid_thw;
            if gh % merge != 0 || gw % merge != 0 || image.pixels.len() != image.patches() * values
            {
                return Err(Error::Image(format!(
                    "patches of grid {:?} do not fit the tower",
                    image.grid_thw
                )));
            }
        }
        let patches: usize = images.iter().map(|i| i.patches()).sum();
        let unit = merge * merge;
        let windows = self.windows(&grids);
        // Patches in window order (groups of `unit` rows move together).
        let mut input = Matrix::zeros(patches, values);
        let all: Vec<&[f32]> = images.iter().map(|i| i.pixels.as_slice()).collect();
        let flat: Vec<f32> = all.concat();
        for (dst, &src) in windows.order.iter().enumerate() {
            let n = unit * values;
            input.data[dst * n..(dst + 1) * n].copy_from_slice(&flat[src * n..(src + 1) * n]);
        }
        let head_dim = c.head_dim();
        let angles = vision_angles(&grids, head_dim, merge);
        let half = head_dim / 2;
        let (mut cos, mut sin) = (
            vec![0f32; patches * head_dim],
            vec![0f32; patches * head_dim],
        );
        for (dst, &src) in windows.order.iter().enumerate() {
            for k in 0..unit {
                let a = &angles[(src * unit + k) * half..][..half];
                let (d_cos, d_sin) = (
                    &mut cos[(dst * unit + k) * head_dim..][..head_dim],
                    &mut sin[(dst * unit + k) * head_dim..][..head_dim],
                );
                for (j, &angle) in a.iter().enumerate() {
                    let (cv, sv) = (angle.cos(), angle.sin());
                    d_cos[j] = cv;
                    d_cos[j + half] = cv;
                    d_sin[j] = sv;
                    d_sin[j + half] = sv;
                }
            }
        }
        let mut x = self
            .patch_embed
            .forward(&input, adapter, Activation::Identity)?;
        let hidden = c.hidden_size;
        for (b, block) in self.blocks.iter().enumerate() {
            let bounds = if c.fullatt_block_indexes.contains(&b) {
                &windows.frame_bounds
            } else {
                &windows.window_bounds
            };
            let normed = rms_norm(&x, &block.norm1, VISION_EPS);
            let mut qkv = block.qkv.forward(&normed, adapter, Activation::Identity)?;
            apply_rotary(&mut qkv, 0, c.num_heads, head_dim, &cos, &sin);
            apply_rotary(&mut qkv, hidden, c.num_heads, head_dim, &cos, &sin);
            let attended = segment_attention(&qkv, bounds, c.num_heads)?;
            add_in_place(
                &mut x,
                &block
                    .proj
                    .forward(&attended, adapter, Activation::Identity)?,
            );
            let normed = rms_norm(&x, &block.norm2, VISION_EPS);
            let mut gate = block.gate.forward(&normed, adapter, Activation::Identity)?;
            silu_mul(
                &mut gate,
                &block.up.forward(&normed, adapter, Activation::Identity)?,
            );
            add_in_place(
                &mut x,
                &block.down.forward(&gate, adapter, Activation::Identity)?,
            );
        }
        let mut grouped = rms_norm(&x, &self.merger_norm, VISION_EPS);
        grouped.rows /= unit;
        grouped.cols *= unit;
        let merged = self
            .merger_fc1
            .forward(&grouped, adapter, Activation::Gelu)?;
        let merged = self
            .merger_fc2
            .forward(&merged, adapter, Activation::Identity)?;
        // Back to patch order.
        let out_cols = merged.cols;
        let mut out = Matrix::zeros(merged.rows, out_cols);
        for (src, &dst) in windows.order.iter().enumerate() {
            out.data[dst * out_cols..(dst + 1) * out_cols].copy_from_slice(merged.row(src));
        }
        Ok(out)
    }

    /// The layers LoRA adapters may target, for shape checks.
    pub(crate) fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.qkv, &b.proj, &b.gate, &b.up, &b.down])
            .chain([&self.patch_embed, &self.merger_fc1, &self.merger_fc2])
    }
}
