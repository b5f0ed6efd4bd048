//! `Qwen2VLImageProcessor` (the PIL processor, `use_fast=False`) on one RGB image:
//! `smart_resize`, Pillow's bicubic resize, `× rescale_factor` (in double, then f32),
//! `(x − mean) / std` in f32, the still image repeated over the temporal patch, and the
//! patches flattened as `(channel, frame, row, column)` rows ordered so that each
//! `merge × merge` group of patches is consecutive.

use crate::config::PreprocessorConfig;
use crate::{Error, Result};
use marquee_imaging::{resize_rgb, Filter};

/// A preprocessed image: the vision tower's input.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePatches {
    /// `grid_t · grid_h · grid_w` rows of `3 · temporal · patch²` values.
    pub pixels: Vec<f32>,
    /// `[t, h, w]` in patches.
    pub grid_thw: [usize; 3],
}

impl ImagePatches {
    /// Patches (rows of `pixels`).
    pub fn patches(&self) -> usize {
        self.grid_thw.iter().product()
    }

    /// LLM tokens the image becomes: patches / merge².
    pub fn tokens(&self, merge: usize) -> usize {
        self.patches() / (merge * merge)
    }
}

/// Python's `round` (halves to even) of a non-negative value.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc() - 0.5).abs() == 0.0 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    }
}

/// transformers' `smart_resize`: `(height, width)` multiples of `factor`, within
/// `min_pixels..=max_pixels`, the aspect ratio kept as well as possible.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(usize, usize)> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if height == 0 || width == 0 {
        return Err(Error::Image("an image must have pixels".into()));
    }
    if h.max(w) / h.min(w) > 200.0 {
        return Err(Error::Image(format!(
            "absolute aspect ratio must be smaller than 200, got {}",
            h.max(w) / h.min(w)
        )));
    }
    let mut h_bar = round_half_even(h / f) * f;
    let mut w_bar = round_half_even(w / f) * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// Preprocesses one interleaved 8-bit RGB image of `width × height` pixels.
pub fn preprocess_rgb(
    rgb: &[u8],
    width: usize,
    height: usize,
    config: &PreprocessorConfig,
) -> Result<ImagePatches> {
    if rgb.len() != width * height * 3 {
        return Err(Error::Image(format!(
            "{} bytes for a {width}x{height} RGB image",
            rgb.len()
        )));
    }
    let (patch, merge, temporal) = (
        config.patch_size,
        config.merge_size,
        config.temporal_patch_size,
    );
    let (rh, rw) = smart_resize(
        height,
        width,
        patch * merge,
        config.min_pixels,
        config.max_pixels,
    )?;
    let resized = if (rh, rw) == (height, width) {
        rgb.to_vec()
    } else {
        resize_rgb(rgb, width, height, rw, rh, Filter::Bicubic)
    };
    // Channel-first normalised planes, exactly as numpy computes them.
    let plane = rh * rw;
    let mut planes = vec![0f32; 3 * plane];
    for (i, px) in resized.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let scaled = (px[c] as f64 * config.rescale_factor) as f32;
            planes[c * plane + i] = (scaled - config.image_mean[c]) / config.image_std[c];
        }
    }
    let (gh, gw) = (rh / patch, rw / patch);
    let row_len = 3 * temporal * patch * patch;
    let mut pixels = Vec::with_capacity(gh * gw * row_len);
    for bh in 0..gh / merge {
        for bw in 0..gw / merge {
            for mh in 0..merge {
                for mw in 0..merge {
                    let (py, px) = ((bh * merge + mh) * patch, (bw * merge + mw) * patch);
                    for c in 0..3 {
                        // Every frame of a still image is the image itself.
                        for _ in 0..temporal {
                            for y in 0..patch {
                                let start = c * plane + (py + y) * rw + px;
                                pixels.extend_from_slice(&planes[start..start + patch]);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ImagePatches {
        pixels,
        grid_thw: [1, gh, gw],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding_and_the_three_branches() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        // 42 / 28 = 1.5 rounds to 2 (even); 70 / 28 = 2.5 rounds to 2.
        assert_eq!(smart_resize(42, 70, 28, 0, u64::MAX).unwrap(), (56, 56));
        assert!(smart_resize(1, 300, 28, 0, u64::MAX).is_err());
    }
}
