//! Target `image_decode`: untrusted bytes through [`marquee_imaging::decode_rgb`] under a
//! pixel limit taken from the input. It must never panic, and an image it returns must
//! be non-empty, within the limit, and hold exactly three bytes per pixel.

/// The pixel limit an input's first byte selects: its cube over four, from 0 (every
/// image refused) to about 4.1 million pixels.
pub fn pixel_limit(selector: u8) -> u64 {
    u64::from(selector).pow(3) / 4
}

/// Checks one input: a limit selector byte, then the image's bytes.
pub fn check(data: &[u8]) {
    let Some((&selector, image)) = data.split_first() else {
        return;
    };
    let limit = pixel_limit(selector);
    let Ok(rgb) = marquee_imaging::decode_rgb(image, limit) else {
        return;
    };
    let (width, height) = (u64::from(rgb.width()), u64::from(rgb.height()));
    assert!(width > 0 && height > 0, "an empty {width}x{height} image");
    assert!(
        width * height <= limit,
        "{width}x{height} pixels decoded under a limit of {limit}"
    );
    assert_eq!(
        rgb.as_raw().len() as u64,
        width * height * 3,
        "a {width}x{height} image's buffer"
    );
}
