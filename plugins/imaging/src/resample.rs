//! Pillow's resize of 8-bit images (`Image.resize(size, filter)` with no `reducing_gap`,
//! what torchvision's `Resize` and transformers' PIL image processors call), reproduced
//! to the bit: a separable filter (bilinear's triangle or bicubic's `a = -0.5` kernel)
//! whose support grows with the downscale factor (so downscaling averages every source
//! pixel, i.e. antialiasing), coefficients normalised in double precision and then
//! rounded to 22-bit fixed point, the horizontal pass first (over only the rows the
//! vertical pass reads) into an 8-bit intermediate, each pass rounding half up and
//! clipping to 0..=255. A window of the output can be computed alone (e.g. the centre
//! crop torchvision takes next).

/// Fractional bits of Pillow's fixed-point coefficients (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A Pillow resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BILINEAR`: the triangle filter, support 1.
    Bilinear,
    /// `Image.BICUBIC`: Keys' cubic with `a = -0.5`, support 2.
    Bicubic,
}

impl Filter {
    /// The filter's support at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// The filter's weight at distance `x` (Pillow's `bilinear_filter` / `bicubic_filter`).
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear if x < 1.0 => 1.0 - x,
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Bilinear => 0.0,
        }
    }
}

/// The filter taps of `count` consecutive outputs of one axis, from output `first` on:
/// output `first + i` reads source pixels `start[i]..start[i] + len[i]`, weighted by
/// `weights[i * width..][..len[i]]` (fixed point).
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
    width: usize,
}

impl Taps {
    /// Pillow's `precompute_coeffs` for the box `0..in_size` → `out_size` pixels,
    /// followed by `normalize_coeffs_8bpc`, for outputs `first..first + count`.
    fn new(filter: Filter, in_size: usize, out_size: u64, first: u64, count: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support() * filter_scale;
        let width = support.ceil() as usize * 2 + 1;
        let mut taps = Taps {
            start: Vec::with_capacity(count),
            len: Vec::with_capacity(count),
            weights: vec![0; count * width],
            width,
        };
        let inv = 1.0 / filter_scale;
        let mut k = vec![0f64; width];
        for i in 0..count {
            let center = ((first + i as u64) as f64 + 0.5) * scale;
            // C's (int) truncation, then the clamps Pillow applies.
            let lo = ((center - support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let hi = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let n = hi.saturating_sub(lo).min(width);
            let mut total = 0.0;
            for (x, w) in k.iter_mut().enumerate().take(n) {
                *w = filter.weight(((x + lo) as f64 - center + 0.5) * inv);
                total += *w;
            }
            let row = &mut taps.weights[i * width..(i + 1) * width];
            for (x, w) in k.iter().enumerate().take(n) {
                let w = if total != 0.0 { w / total } else { *w };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                row[x] = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            taps.start.push(lo);
            taps.len.push(n);
        }
        taps
    }

    /// Source pixels the taps read: `first..last`.
    fn span(&self) -> (usize, usize) {
        let first = self.start.iter().copied().min().unwrap_or(0);
        let last = (0..self.start.len())
            .map(|i| self.start[i] + self.len[i])
            .max()
            .unwrap_or(first);
        (first, last)
    }

    /// Output `i` (counted from `first`) from source samples `value(j)`.
    #[inline(always)]
    fn apply(&self, i: usize, value: impl Fn(usize) -> u8) -> u8 {
        let weights = &self.weights[i * self.width..][..self.len[i]];
        let mut acc: i32 = 1 << (PRECISION_BITS - 1);
        for (j, &w) in weights.iter().enumerate() {
            acc += value(self.start[i] + j) as i32 * w;
        }
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// A window of an image: `width × height` pixels from column `left`, row `top`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First column.
    pub left: u64,
    /// First row.
    pub top: u64,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

/// Pillow's resize of an interleaved 8-bit RGB image (`width × height × 3`) to
/// `out_width × out_height` with `filter`, as `out_width × out_height × 3` bytes.
pub fn resize_rgb(
    pixels: &[u8],
    width: usize,
    height: usize,
    out_width: usize,
    out_height: usize,
    filter: Filter,
) -> Vec<u8> {
    let window = Window {
        left: 0,
        top: 0,
        width: out_width,
        height: out_height,
    };
    let out = (out_width as u64, out_height as u64);
    resize_rgb_window(pixels, width, height, out, window, filter)
}

/// The pixels inside `window` of Pillow's resize of an interleaved 8-bit RGB image
/// (`width × height × 3`) to `out_width × out_height` (`out`) with `filter`, as
/// `window.width × window.height × 3` bytes. Every output pixel is computed as Pillow
/// computes it, so a window equals the same crop of the full resize, without computing
/// what the crop drops. The window must lie inside the output.
pub fn resize_rgb_window(
    pixels: &[u8],
    width: usize,
    height: usize,
    (out_width, out_height): (u64, u64),
    window: Window,
    filter: Filter,
) -> Vec<u8> {
    debug_assert_eq!(pixels.len(), width * height * 3);
    debug_assert!(window.left + window.width as u64 <= out_width);
    debug_assert!(window.top + window.height as u64 <= out_height);
    let (w, h) = (window.width, window.height);
    let vertical =
        (out_height != height as u64).then(|| Taps::new(filter, height, out_height, window.top, h));
    let horizontal =
        (out_width != width as u64).then(|| Taps::new(filter, width, out_width, window.left, w));
    // Without a vertical pass the window's rows are source rows.
    let (first_row, last_row) = match &vertical {
        Some(taps) => taps.span(),
        None => (window.top as usize, window.top as usize + h),
    };
    // Horizontal pass over the rows the vertical pass reads, window columns only.
    let mut mid = vec![0u8; (last_row - first_row) * w * 3];
    for (r, out_row) in mid.chunks_exact_mut(w * 3).enumerate() {
        let src = &pixels[(first_row + r) * width * 3..][..width * 3];
        match &horizontal {
            Some(taps) => {
                for (x, out_px) in out_row.chunks_exact_mut(3).enumerate() {
                    for (c, v) in out_px.iter_mut().enumerate() {
                        *v = taps.apply(x, |j| src[j * 3 + c]);
                    }
                }
            }
            None => {
                let left = window.left as usize * 3;
                out_row.copy_from_slice(&src[left..left + w * 3]);
            }
        }
    }
    let Some(vertical) = vertical else {
        return mid;
    };
    let stride = w * 3;
    let mut out = vec![0u8; h * stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        for (i, v) in out_row.iter_mut().enumerate() {
            *v = vertical.apply(y, |j| mid[(j - first_row) * stride + i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 5×4 image shrunk horizontally and stretched vertically to 3×7: Pillow 11.3's
    /// `Image.resize((3, 7), filter)` output (values printed by Pillow, copied here).
    #[test]
    fn matches_pillow_both_ways_and_both_filters() {
        let src: Vec<u8> = (0..60u32).map(|i| (i * 13 % 256) as u8).collect();
        let bicubic: [u8; 63] = [
            0, 11, 33, 79, 92, 110, 147, 160, 173, 78, 91, 65, 70, 86, 77, 119, 136, 152, 210, 223,
            122, 67, 82, 32, 74, 91, 112, 199, 217, 165, 151, 128, 105, 90, 39, 56, 143, 164, 181,
            223, 173, 188, 133, 32, 45, 103, 119, 136, 178, 169, 185, 190, 164, 177, 82, 95, 108,
            145, 163, 176, 222, 244, 255,
        ];
        let bilinear: [u8; 63] = [
            17, 30, 43, 78, 91, 104, 139, 152, 165, 87, 100, 73, 77, 90, 82, 117, 130, 143, 198,
            211, 122, 74, 87, 47, 82, 95, 108, 182, 195, 153, 143, 128, 112, 103, 61, 74, 147, 160,
            173, 208, 168, 181, 133, 44, 57, 112, 125, 138, 173, 165, 178, 182, 155, 168, 90, 103,
            116, 151, 164, 177, 212, 225, 238,
        ];
        assert_eq!(resize_rgb(&src, 5, 4, 3, 7, Filter::Bicubic), bicubic);
        assert_eq!(resize_rgb(&src, 5, 4, 3, 7, Filter::Bilinear), bilinear);
        assert_eq!(resize_rgb(&src, 5, 4, 5, 4, Filter::Bicubic), src);
    }
}
