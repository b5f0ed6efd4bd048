//! Rotary positions: the decoder's M-RoPE (temporal, height and width positions on
//! contiguous sections of the frequency slots, `mrope_section`), transformers'
//! `get_rope_index` for a prompt with images, and the vision tower's 2-D rotary table.

use crate::{Error, Result};

/// A token's `[temporal, height, width]` position.
pub type Position3 = [i64; 3];

/// `1 / θ^(2i/dim)` for `i < dim/2`, in f32 as transformers' default rope init.
pub fn inverse_frequencies(theta: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / dim as f32))
        .collect()
}

/// The decoder's M-RoPE tables.
#[derive(Clone, Debug)]
pub struct MRope {
    inv_freq: Vec<f32>,
    /// For each frequency slot, the position axis it rotates by (0 t, 1 h, 2 w).
    axis: Vec<usize>,
    head_dim: usize,
}

impl MRope {
    /// Tables for `head_dim`, base `theta` and `mrope_section`.
    pub fn new(theta: f64, head_dim: usize, mrope_section: &[usize]) -> Self {
        let axis = mrope_section
            .iter()
            .enumerate()
            .flat_map(|(a, &n)| std::iter::repeat_n(a, n))
            .collect();
        Self {
            inv_freq: inverse_frequencies(theta, head_dim),
            axis,
            head_dim,
        }
    }

    /// Appends the `head_dim` cosines and sines of `position` to `cos` / `sin`.
    pub fn push(&self, position: Position3, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        let start = cos.len();
        for (f, &a) in self.inv_freq.iter().zip(&self.axis) {
            let angle = f * position[a] as f32;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
        // The second half repeats the first (emb = cat(freqs, freqs)).
        cos.extend_from_within(start..start + self.head_dim / 2);
        sin.extend_from_within(start..start + self.head_dim / 2);
    }
}

/// The ids that mark images in a prompt.
#[derive(Clone, Copy, Debug)]
pub struct VisionTokens {
    /// `<|vision_start|>`.
    pub vision_start: u32,
    /// `<|image_pad|>`.
    pub image: u32,
    /// `<|video_pad|>`.
    pub video: u32,
}

/// transformers' `get_rope_index` for one prompt with images (no videos): text positions
/// count up on all three axes; an image of `grid_thw` patches, merged by `merge`, takes
/// `t = 0` and its merged row and column, offset by the text before it; text after an
/// image continues from the largest position + 1. Returns the positions and the
/// `rope_delta` (largest position + 1 − prompt length) that decode positions add.
pub fn rope_index(
    ids: &[u32],
    grids: &[[usize; 3]],
    merge: usize,
    tokens: VisionTokens,
) -> Result<(Vec<Position3>, i64)> {
    let mut positions: Vec<Position3> = Vec::with_capacity(ids.len());
    let starts = ids
        .windows(2)
        .filter(|w| w[0] == tokens.vision_start)
        .filter(|w| w[1] == tokens.image || w[1] == tokens.video)
        .count();
    if ids
        .windows(2)
        .any(|w| w[0] == tokens.vision_start && w[1] == tokens.video)
    {
        return Err(Error::Request("videos are not supported".into()));
    }
    if starts != grids.len() {
        return Err(Error::Request(format!(
            "{starts} images in the prompt, {} given",
            grids.len()
        )));
    }
    let next = |positions: &Vec<Position3>| {
        positions.last().map_or(0, |_| {
            positions.iter().flat_map(|p| *p).max().unwrap_or(-1) + 1
        })
    };
    let mut st = 0usize;
    for grid in grids {
        let ed = st
            + ids[st..]
                .iter()
                .position(|&t| t == tokens.image)
                .ok_or_else(|| Error::Request("an image has no <|image_pad|> tokens".into()))?;
        let base = next(&positions);
        for i in 0..(ed - st) as i64 {
            positions.push([base + i; 3]);
        }
        let (t, h, w) = (grid[0], grid[1] / merge, grid[2] / merge);
        let offset = base + (ed - st) as i64;
        if ed + t * h * w > ids.len() || ids[ed..ed + t * h * w].iter().any(|&x| x != tokens.image)
        {
            return Err(Error::Request(format!(
                "an image of {}x{} merged patches needs {} consecutive <|image_pad|> tokens",
                h,
                w,
                t * h * w
            )));
        }
        for _ in 0..t {
            for r in 0..h {
                for c in 0..w {
                    // Images have no time: every frame's temporal position is 0.
                    positions.push([offset, offset + r as i64, offset + c as i64]);
                }
            }
        }
        st = ed + t * h * w;
    }
    if st < ids.len() {
        let base = next(&positions);
        for i in 0..(ids.len() - st) as i64 {
            positions.push([base + i; 3]);
        }
    }
    let delta = positions.iter().flat_map(|p| *p).max().map_or(0, |m| m + 1) - ids.len() as i64;
    Ok((positions, delta))
}

/// The vision tower's rotary angles for every patch of images `grids`, in patch order
/// (merge groups consecutive): `head_dim / 2` values per patch, the row's
/// frequencies then the column's (`Qwen2_5_VisionRotaryEmbedding(head_dim / 2)`).
pub fn vision_angles(grids: &[[usize; 3]], head_dim: usize, merge: usize) -> Vec<f32> {
    let inv_freq = inverse_frequencies(10_000.0, head_dim / 2);
    let mut out = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            for bh in 0..h / merge {
                for bw in 0..w / merge {
                    for mh in 0..merge {
                        for mw in 0..merge {
                            let (row, col) = ((bh * merge + mh) as f32, (bw * merge + mw) as f32);
                            out.extend(inv_freq.iter().map(|f| row * f));
                            out.extend(inv_freq.iter().map(|f| col * f));
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: VisionTokens = VisionTokens {
        vision_start: 5,
        image: 6,
        video: 7,
    };

    #[test]
    fn text_only_prompts_count_up_with_no_delta() {
        let (p, d) = rope_index(&[1, 2, 3], &[], 2, TOKENS).unwrap();
        assert_eq!(p, vec![[0; 3], [1; 3], [2; 3]]);
        assert_eq!(d, 0);
    }

    #[test]
    fn an_image_takes_its_grid_and_text_resumes_after_its_largest_position() {
        // Text, vision_start, 2x3 merged tokens, text.
        let ids = [1, 5, 6, 6, 6, 6, 6, 6, 9];
        let (p, d) = rope_index(&ids, &[[1, 4, 6]], 2, TOKENS).unwrap();
        assert_eq!(p[2], [2, 2, 2]);
        assert_eq!(p[7], [2, 3, 4]);
        assert_eq!(p[8], [5; 3]);
        assert_eq!(d, 6 - 9);
        assert!(rope_index(&ids, &[], 2, TOKENS).is_err());
    }
}
