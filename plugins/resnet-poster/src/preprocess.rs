//! torchvision's ImageNet evaluation transform on a PIL image, reproduced exactly:
//! `Resize(resize_size)` (shorter side, Pillow bilinear) → `CenterCrop(crop_size)` →
//! `ToTensor()` → `Normalize(mean, std)`, written as NHWC rows for the network.

use crate::config::Preprocessing;
use image::RgbImage;
use marquee_imaging::{resize_rgb_window, Filter, Window};

/// torchvision's `_compute_resized_output_size` for an int size: the shorter side
/// becomes `size`, the longer `int(size * long / short)` (float division, truncated).
pub fn resized_size(width: u32, height: u32, size: u32) -> (u64, u64) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = ((size as u64 * long as u64) as f64 / short as f64) as u64;
    if width <= height {
        (size as u64, new_long)
    } else {
        (new_long, size as u64)
    }
}

/// torchvision's crop offset `int(round((size - crop) / 2.0))`: Python rounds halves to
/// even, so an odd margin of `2q + 1` starts at `q` when `q` is even, else at `q + 1`.
pub fn crop_offset(size: u64, crop: u64) -> u64 {
    let margin = size - crop;
    let q = margin / 2;
    if margin % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// The resized and centre-cropped 8-bit image (`crop × crop × 3`): the exact pixels
/// torchvision's `ToTensor` reads. Images already of the resized size are not
/// resampled, as torchvision skips the resize then. `config` must be validated
/// (`crop_size <= resize_size`, so the crop fits the resized image).
pub fn resize_and_crop(image: &RgbImage, config: &Preprocessing) -> Vec<u8> {
    let (w, h) = image.dimensions();
    let (rw, rh) = resized_size(w, h, config.resize_size);
    let crop = config.crop_size as u64;
    let window = Window {
        left: crop_offset(rw, crop),
        top: crop_offset(rh, crop),
        width: crop as usize,
        height: crop as usize,
    };
    resize_rgb_window(
        image.as_raw(),
        w as usize,
        h as usize,
        (rw, rh),
        window,
        Filter::Bilinear,
    )
}

/// `ToTensor` then `Normalize` on interleaved RGB bytes, in f32 exactly as torch
/// computes it (`v / 255`, then `(x - mean) / std`), appended to `out` as NHWC rows.
pub fn normalize_into(pixels: &[u8], config: &Preprocessing, out: &mut Vec<f32>) {
    out.extend(
        pixels.chunks_exact(3).flat_map(|p| {
            [0, 1, 2].map(|c| (p[c] as f32 / 255.0 - config.mean[c]) / config.std[c])
        }),
    );
}
