//! Decoding untrusted image bytes (JPEG, PNG, WebP, recognised from the bytes, never a
//! file name) into 8-bit RGB exactly as Pillow's `Image.open(...).convert("RGB")` does,
//! with the image's size checked against a pixel limit before any pixel is decoded.

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
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
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DecodeError::Corrupt {
            format: "JPEG",
            reason: "the data ends before the end-of-image marker".into(),
        });
    }
    // The decoder's own limits as a second line: the output plus the decoders' working
    // buffers (16-bit RGBA at most 8 bytes per pixel, twice over).
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(1 << 20));
    decoder.set_limits(limits).map_err(corrupt)?;
    let image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    pil_rgb(image).ok_or_else(|| DecodeError::Unsupported("(pixel layout without RGB)".into()))
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

/// Whether a JPEG stream reaches its end-of-image marker. zune-jpeg decodes a stream cut
/// short as if the rest were grey, where Pillow refuses it ("image file is truncated"),
/// so the marker structure is walked first: segments up to a scan, the scan's
/// entropy-coded data (which never holds an unstuffed `FF` other than restart markers)
/// up to the next marker, and so on until `EOI`.
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
