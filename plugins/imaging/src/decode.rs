//! Decoding untrusted image bytes (JPEG, PNG, WebP, recognised from the bytes, never a
//! file name) into 8-bit RGB exactly as Pillow's `Image.open(...).convert("RGB")` does,
//! with the image's size checked against a pixel limit before any pixel is decoded.
//!
//! JPEG goes through `libjpeg-turbo-rs`, a pure-Rust port of libjpeg-turbo (the library
//! Pillow and torchvision.io link): the same JDCT_ISLOW integer inverse DCT, "fancy"
//! triangle-filter chroma upsampling and integer YCbCr→RGB tables, so its pixels are
//! Pillow's bit for bit. Measured before choosing it, against Pillow 13 (libjpeg-turbo 3):
//! identical on all 3,806 JPEG posters of the shared data set (4:2:0 and 4:4:4, mostly
//! progressive) and on made 4:2:0, 4:2:2, 4:4:4, progressive, greyscale,
//! restart-interval, CMYK and corrupt-but-decodable images. On a 70-image sample of
//! those, the `image` crate's zune-jpeg (the former decoder; it has no option that
//! changes its rounding) was up to 7 levels off on 19% of the pixels, the `jpeg-decoder`
//! crate (stb_image's IDCT) up to 4 on 11%. A C build of libjpeg-turbo (mozjpeg-sys) is
//! exact too, but would bring C into the build; this crate needs nothing but Rust and
//! `thiserror`. PNG and WebP stay on the `image` crate, whose decoders equal Pillow's.

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use libjpeg_turbo_rs::{DecodeLimits, Decoder as JpegDecoder, PixelFormat};
use std::io::Cursor;

/// Why an image could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a JPEG, PNG or WebP image.
    #[error("unsupported image format {0}: only JPEG, PNG and WebP are accepted")]
    Unsupported(String),
    /// The header declares more pixels than allowed (a decompression bomb, or just huge).
    #[error(
        "image of {width}x{height} pixels exceeds the limit of {limit} pixels \
         (option max_image_pixels)"
    )]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The configured maximum pixel count.
        limit: u64,
    },
    /// The bytes are a recognised format but corrupt or truncated.
    #[error("corrupt or truncated {format} image: {reason}")]
    Corrupt {
        /// The format the bytes claimed to be.
        format: &'static str,
        /// The decoder's message.
        reason: String,
    },
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        _ => "WebP",
    }
}

/// Sniffs the format from the leading bytes; only JPEG, PNG and WebP pass.
fn sniff(bytes: &[u8]) -> Result<ImageFormat, DecodeError> {
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => Ok(f),
        Ok(other) => Err(DecodeError::Unsupported(format!("{other:?}"))),
        Err(_) if bytes.is_empty() => Err(DecodeError::Unsupported("(empty input)".into())),
        Err(_) => Err(DecodeError::Unsupported("(unrecognised bytes)".into())),
    }
}

/// Decodes `bytes` to RGB, refusing images of more than `max_pixels` pixels before
/// allocating anything for them.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let format = sniff(bytes)?;
    if format == ImageFormat::Jpeg {
        return decode_jpeg(bytes, max_pixels);
    }
    let corrupt = |e: image::ImageError| DecodeError::Corrupt {
        format: format_name(format),
        reason: e.to_string(),
    };
    // PNG's size is read from its IHDR directly: the decoder also wants the chunks up to
    // the pixel data, which a crafted header need not have.
    if let Some((width, height)) = png_size(bytes) {
        check_size(format, width, height, max_pixels)?;
    }
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_size(format, width, height, max_pixels)?;
    // The decoder's own limits as a second line: the output plus the decoders' working
    // buffers (16-bit RGBA at most 8 bytes per pixel, twice over).
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(working_bytes(max_pixels));
    decoder.set_limits(limits).map_err(corrupt)?;
    let image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    pil_rgb(image).ok_or_else(|| DecodeError::Unsupported("(pixel layout without RGB)".into()))
}

/// What a decoder may allocate for an image of `max_pixels` pixels: 16 bytes a pixel
/// (the largest layouts' output and working buffers), at least 1 MiB.
fn working_bytes(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(16).max(1 << 20)
}

/// Progressive JPEG scans allowed: each scan walks every block again, so a crafted
/// stream of thousands of tiny scans costs far more than its bytes suggest. Real
/// encoders write about ten; 100 is the cap zune-jpeg (the former decoder) applied.
const MAX_JPEG_SCANS: usize = 100;

/// A JPEG through libjpeg-turbo-rs: the frame header is parsed and the size checked
/// before any pixel work, the stream must reach its end-of-image marker (Pillow refuses
/// a truncated JPEG where libjpeg alone would fill the rest with grey), and greyscale and
/// CMYK come out as RGB the way Pillow's `convert("RGB")` makes them.
fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let corrupt = |reason: String| DecodeError::Corrupt {
        format: "JPEG",
        reason,
    };
    let scans_only = DecodeLimits {
        max_scans: MAX_JPEG_SCANS,
        ..DecodeLimits::default()
    };
    let mut decoder =
        JpegDecoder::new_with_limits(bytes, scans_only).map_err(|e| corrupt(e.to_string()))?;
    let frame = decoder.header();
    let (width, height, precision) = (frame.width(), frame.height(), frame.precision);
    check_size(ImageFormat::Jpeg, width as u32, height as u32, max_pixels)?;
    if precision != 8 {
        return Err(corrupt(format!(
            "{precision}-bit samples (only 8-bit JPEG is supported, as in Pillow)"
        )));
    }
    if let Some(reason) = unsupported_sampling(&frame.components) {
        return Err(corrupt(reason));
    }
    if !jpeg_is_complete(bytes) {
        return Err(corrupt(
            "the data ends before the end-of-image marker".into(),
        ));
    }
    decoder.set_limits(DecodeLimits {
        max_pixels,
        max_memory: Some(working_bytes(max_pixels)),
        ..scans_only
    });
    decoder.set_output_format(PixelFormat::Rgb);
    let image = decoder.decode_image().map_err(|e| corrupt(e.to_string()))?;
    let (w, h) = (image.width, image.height);
    if (w, h) != (width, height) || image.data.len() != w * h * 3 {
        return Err(corrupt(format!(
            "decoded {} bytes for {w}x{h} pixels from a {width}x{height} frame",
            image.data.len()
        )));
    }
    RgbImage::from_raw(w as u32, h as u32, image.data)
        .ok_or_else(|| corrupt(format!("{w}x{h} pixels")))
}

/// Why a four-component (CMYK or YCCK) JPEG's sampling factors are beyond the decoder:
/// its four-component path takes the first and last components at the frame's full
/// resolution and the middle two equal, subsampled by whole factors (what Adobe's CMYK
/// and YCCK writers produce), and indexes past its planes otherwise (a panic, found by
/// the `image_decode` fuzz target). `None` for other component counts.
fn unsupported_sampling(
    components: &[libjpeg_turbo_rs::common::types::ComponentInfo],
) -> Option<String> {
    let [c0, c1, c2, c3] = components else {
        return None;
    };
    let factors = |c: &libjpeg_turbo_rs::common::types::ComponentInfo| {
        (c.horizontal_sampling, c.vertical_sampling)
    };
    let (max_h, max_v) = components
        .iter()
        .map(factors)
        .fold((0, 0), |(h, v), (ch, cv)| (h.max(ch), v.max(cv)));
    let (h1, v1) = factors(c1);
    let handled = factors(c0) == (max_h, max_v)
        && factors(c3) == (max_h, max_v)
        && factors(c2) == (h1, v1)
        && h1 > 0
        && v1 > 0
        && max_h % h1 == 0
        && max_v % v1 == 0;
    (!handled).then(|| {
        let all: Vec<String> = components
            .iter()
            .map(|c| format!("{}x{}", c.horizontal_sampling, c.vertical_sampling))
            .collect();
        format!(
            "a four-component (CMYK/YCCK) JPEG with sampling factors {} is not supported",
            all.join(", ")
        )
    })
}

/// Refuses empty images and images of more than `max_pixels` pixels.
fn check_size(
    format: ImageFormat,
    width: u32,
    height: u32,
    max_pixels: u64,
) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt {
            format: format_name(format),
            reason: format!("{width}x{height} pixels"),
        });
    }
    if width as u64 * height as u64 > max_pixels {
        return Err(DecodeError::TooLarge {
            width,
            height,
            limit: max_pixels,
        });
    }
    Ok(())
}

/// Width and height from a PNG's IHDR chunk (the first chunk, at a fixed offset).
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((be(16), be(20)))
}

/// Whether a JPEG stream reaches its end-of-image marker. libjpeg decodes a stream cut
/// short as if the rest were grey (with a warning), where Pillow refuses it ("image file
/// is truncated"), so the marker structure is walked first: segments up to a scan, the
/// scan's entropy-coded data (which never holds an unstuffed `FF` other than restart
/// markers) up to the next marker, and so on until `EOI`.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut pos = 2; // after SOI
    let mut in_scan = false;
    loop {
        if in_scan {
            loop {
                let Some(at) = bytes[pos..].iter().position(|&b| b == 0xFF) else {
                    return false;
                };
                pos += at;
                match bytes.get(pos + 1) {
                    None => return false,
                    Some(0x00) | Some(0xD0..=0xD7) | Some(0xFF) => pos += 1,
                    Some(_) => break,
                }
            }
            in_scan = false;
        }
        // Skip anything before the next marker, and fill bytes.
        while pos < bytes.len() && bytes[pos] != 0xFF {
            pos += 1;
        }
        while bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos + 1) else {
            return false;
        };
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                let Some(len) = bytes.get(pos + 2..pos + 4) else {
                    return false;
                };
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                if len < 2 || pos + 2 + len > bytes.len() {
                    return false;
                }
                pos += 2 + len;
                in_scan = marker == 0xDA;
            }
        }
    }
}

/// Pillow's `convert("RGB")` of what `Image.open` makes of each layout: grey replicated,
/// alpha dropped (not blended), 16-bit colour channels reduced to their high byte;
/// 16-bit greyscale opens as Pillow's `I;16`, whose conversion clips at 255.
fn pil_rgb(image: DynamicImage) -> Option<RgbImage> {
    let (w, h) = (image.width(), image.height());
    let from = |channels: usize, pick: &dyn Fn(&[u16]) -> [u8; 3], data: Vec<u16>| {
        let rgb: Vec<u8> = data.chunks_exact(channels).flat_map(pick).collect();
        RgbImage::from_raw(w, h, rgb)
    };
    let high = |v: u16| (v >> 8) as u8;
    match image {
        DynamicImage::ImageRgb8(img) => Some(img),
        DynamicImage::ImageRgba8(img) => RgbImage::from_raw(
            w,
            h,
            img.into_raw()
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
        ),
        DynamicImage::ImageLuma8(img) => RgbImage::from_raw(
            w,
            h,
            img.into_raw().into_iter().flat_map(|v| [v, v, v]).collect(),
        ),
        DynamicImage::ImageLumaA8(img) => RgbImage::from_raw(
            w,
            h,
            img.into_raw()
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0]])
                .collect(),
        ),
        DynamicImage::ImageRgb16(img) => {
            from(3, &|p| [high(p[0]), high(p[1]), high(p[2])], img.into_raw())
        }
        DynamicImage::ImageRgba16(img) => {
            from(4, &|p| [high(p[0]), high(p[1]), high(p[2])], img.into_raw())
        }
        DynamicImage::ImageLumaA16(img) => {
            from(2, &|p| [high(p[0]), high(p[0]), high(p[0])], img.into_raw())
        }
        DynamicImage::ImageLuma16(img) => from(
            1,
            &|p| {
                let v = p[0].min(255) as u8;
                [v, v, v]
            },
            img.into_raw(),
        ),
        _ => None,
    }
}
