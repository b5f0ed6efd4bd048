//! The plugin against torchvision's fixtures (tests/fixtures/make_fixtures.py): the
//! preprocessed input exactly, the pooled features to a relative error of 1e-4 on a
//! fixed tensor and end to end from image bytes, and clear errors for bad input.
//!
//! Relative error of a feature vector: `max |got − want| / max |want|`.

use marquee_imaging::decode_rgb;
use marquee_kernels::ImageShape;
use marquee_plugin_api::abi::*;
use marquee_plugin_api::{Plugin, Status};
use marquee_resnet_poster::config::Preprocessing;
use marquee_resnet_poster::preprocess::{normalize_into, resize_and_crop};
use marquee_resnet_poster::{ResNetPoster, DEFAULT_MAX_IMAGE_PIXELS};
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};

const CHECKPOINTS: [&str; 2] = ["bottleneck", "basic"];
const IMAGES: [&str; 11] = [
    "gray.jpg",
    "landscape.jpg",
    "lossless.webp",
    "lossy.webp",
    "palette.png",
    "png_named.jpg",
    "portrait_444.jpg",
    "progressive.jpg",
    "restart_422.jpg",
    "rgba.png",
    "small_gray.png",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn image_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("images").join(name)).unwrap()
}

fn expected_png(name: &str) -> image::RgbImage {
    image::open(fixtures().join("expected").join(name))
        .unwrap()
        .to_rgb8()
}

fn features_json() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected/features.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn model(checkpoint: &str, options: &str) -> ResNetPoster {
    ResNetPoster::create(&fixtures().join(checkpoint), options)
        .unwrap_or_else(|e| panic!("{checkpoint}: {}", e.message))
}

fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, w| m.max(w.abs() as f64));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (g, w)| m.max((*g as f64 - *w as f64).abs()));
    diff / scale
}

fn is_jpeg(name: &str) -> bool {
    name.ends_with(".jpg") && name != "png_named.jpg"
}

#[test]
fn normalisation_equals_torchvision_for_every_level() {
    let text = std::fs::read_to_string(fixtures().join("expected/normalize.json")).unwrap();
    let table: Value = serde_json::from_str(&text).unwrap();
    let levels: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
    let mut got = Vec::new();
    normalize_into(&levels, &Preprocessing::default(), &mut got);
    for c in 0..3 {
        let want = floats(&table["values"][c]);
        for (v, w) in want.iter().enumerate() {
            assert_eq!(
                got[v * 3 + c].to_bits(),
                w.to_bits(),
                "channel {c} level {v}"
            );
        }
    }
}

/// Resize + centre crop equal torchvision's pixels exactly, for every image, from the
/// bytes: the plugin decodes every format as Pillow does, JPEG included (see
/// `jpeg_decoding_equals_libjpeg_turbo`).
#[test]
fn resize_and_crop_equal_torchvision_pixels() {
    let config = Preprocessing::default();
    for name in IMAGES {
        let rgb = decode_rgb(&image_bytes(name), DEFAULT_MAX_IMAGE_PIXELS).unwrap();
        let got = resize_and_crop(&rgb, &config);
        let want = expected_png(&format!("{name}.crop.png"));
        assert_eq!(want.dimensions(), (224, 224), "{name}");
        let mismatches = got
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            mismatches, 0,
            "{name}: {mismatches} bytes differ from torchvision"
        );
    }
}

/// The JPEG decoder (libjpeg-turbo-rs) reproduces Pillow's libjpeg-turbo bit for bit:
/// JDCT_ISLOW inverse DCT, "fancy" chroma upsampling, libjpeg's YCbCr→RGB tables. The
/// fixtures cover baseline 4:2:0, 4:4:4, progressive 4:2:0, 4:2:2 with restart markers
/// and greyscale (zune-jpeg, the former decoder, was up to 4 levels off on them).
#[test]
fn jpeg_decoding_equals_libjpeg_turbo() {
    for name in IMAGES.iter().filter(|n| is_jpeg(n)) {
        let ours = decode_rgb(&image_bytes(name), DEFAULT_MAX_IMAGE_PIXELS).unwrap();
        let pillow = expected_png(&format!("{name}.decoded.png"));
        assert_eq!(ours.dimensions(), pillow.dimensions(), "{name}");
        let diffs: Vec<u32> = ours
            .as_raw()
            .iter()
            .zip(pillow.as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).unsigned_abs())
            .collect();
        let differing = diffs.iter().filter(|d| **d != 0).count();
        let max = diffs.iter().copied().max().unwrap();
        assert_eq!(
            differing, 0,
            "{name}: {differing} bytes differ from Pillow's, by up to {max} levels"
        );
    }
}

#[test]
fn features_on_a_fixed_tensor_match_torchvision() {
    let bytes = std::fs::read(fixtures().join("expected/fixed_input.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let input = file.tensor("input").unwrap();
    assert_eq!(input.shape(), [2, 3, 45, 61]);
    let values: Vec<f32> = input
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let shape = ImageShape {
        batch: 2,
        height: 45,
        width: 61,
    };
    let expected = features_json();
    for checkpoint in CHECKPOINTS {
        let m = model(checkpoint, "{\"threads\": 2}");
        let got = m.features_nchw(&values, shape).unwrap();
        let dim = m.output_dim();
        for (i, want) in expected[checkpoint]["fixed_input"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let err = relative_error(&got[i * dim..(i + 1) * dim], &floats(want));
            eprintln!("{checkpoint} fixed input {i}: relative error {err:.2e}");
            assert!(
                err <= 1e-4,
                "{checkpoint} input {i}: relative error {err:.2e}"
            );
        }
    }
}

/// End to end from the bytes, every format (JPEG decoded exactly as Pillow does): within
/// 1e-4 of torchvision.
#[test]
fn features_from_image_bytes_match_torchvision() {
    let expected = features_json();
    for checkpoint in CHECKPOINTS {
        let m = model(checkpoint, "");
        let dim = m.output_dim();
        assert_eq!(m.info().output_dim as usize, dim);
        let all: Vec<Vec<u8>> = IMAGES.iter().map(|n| image_bytes(n)).collect();
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        let got = m.embed_images(&refs).unwrap();
        for (i, name) in IMAGES.iter().enumerate() {
            let want = floats(&expected[checkpoint]["images"][name]);
            assert_eq!(want.len(), dim);
            let err = relative_error(&got[i * dim..(i + 1) * dim], &want);
            eprintln!("{checkpoint} {name}: relative error from the bytes {err:.2e}");
            assert!(err <= 1e-4, "{checkpoint} {name}: {err:.2e}");
        }
    }
}

#[test]
fn a_png_named_jpg_is_read_as_png() {
    let bytes = image_bytes("png_named.jpg");
    assert!(bytes.starts_with(b"\x89PNG"));
    let m = model("bottleneck", "");
    let got = m.embed_images(&[&bytes]).unwrap();
    let want = floats(&features_json()["bottleneck"]["images"]["png_named.jpg"]);
    assert!(relative_error(&got, &want) <= 1e-4);
}

#[test]
fn normalize_option_gives_unit_vectors_in_torchvision_direction() {
    let m = model("bottleneck", "{\"normalize\": true, \"threads\": 1}");
    let got = m.embed_images(&[&image_bytes("rgba.png")]).unwrap();
    let want = floats(&features_json()["bottleneck"]["images"]["rgba.png"]);
    let norm = want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let unit: Vec<f32> = want.iter().map(|v| (*v as f64 / norm) as f32).collect();
    assert!(relative_error(&got, &unit) <= 1e-4);
    let got_norm = got.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    assert!((got_norm - 1.0).abs() < 1e-5);
}

/// A PNG header (signature + IHDR with a valid CRC) declaring `width × height` 8-bit RGB.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc32(&ihdr).to_be_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn bad_images_are_clear_errors() {
    let m = model("basic", "");
    let jpeg = image_bytes("landscape.jpg");
    let png = image_bytes("rgba.png");
    let webp = image_bytes("lossy.webp");
    let mut bmp = b"BM".to_vec();
    bmp.extend([0u8; 60]);
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
    // The JPEG with its frame header (SOF0: FF C0, length, precision, height, width)
    // claiming 30000 x 30000 pixels.
    let mut jpeg_bomb = jpeg.clone();
    let sof = jpeg_bomb
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .unwrap();
    jpeg_bomb[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]);
    let mut noise = vec![0u8; 4096];
    let mut state = 12345u32;
    for b in noise.iter_mut() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (state >> 16) as u8;
    }
    let cases: Vec<(&str, Vec<u8>, Status, &str)> = vec![
        (
            "truncated JPEG",
            jpeg[..jpeg.len() / 2].to_vec(),
            Status::InvalidArgument,
            "corrupt or truncated JPEG",
        ),
        (
            "truncated PNG",
            png[..png.len() / 2].to_vec(),
            Status::InvalidArgument,
            "corrupt or truncated PNG",
        ),
        (
            "truncated WebP",
            webp[..webp.len() / 2].to_vec(),
            Status::InvalidArgument,
            "corrupt or truncated WebP",
        ),
        (
            "JPEG header only",
            jpeg[..200].to_vec(),
            Status::InvalidArgument,
            "corrupt or truncated JPEG",
        ),
        (
            "random bytes",
            noise,
            Status::InvalidArgument,
            "unsupported image format",
        ),
        (
            "BMP",
            bmp,
            Status::InvalidArgument,
            "unsupported image format Bmp",
        ),
        (
            "GIF",
            gif,
            Status::InvalidArgument,
            "unsupported image format Gif",
        ),
        (
            "empty",
            Vec::new(),
            Status::InvalidArgument,
            "(empty input)",
        ),
        (
            "30000x30000 PNG",
            png_header(30_000, 30_000),
            Status::ResourceExhausted,
            "30000x30000 pixels exceeds the limit of 40000000",
        ),
        (
            "30000x30000 JPEG",
            jpeg_bomb,
            Status::ResourceExhausted,
            "30000x30000 pixels exceeds the limit",
        ),
        (
            "PNG header without pixel data",
            png_header(64, 64),
            Status::InvalidArgument,
            "corrupt or truncated PNG",
        ),
    ];
    let good = image_bytes("palette.png");
    for (what, bytes, status, message) in cases {
        let err = m.embed_images(&[&good, &bytes]).unwrap_err();
        assert_eq!(err.status, status, "{what}: {}", err.message);
        assert!(
            err.message.starts_with("image 1: ") && err.message.contains(message),
            "{what}: {}",
            err.message
        );
    }
}

#[test]
fn big_batches_run_in_chunks_and_name_the_bad_image() {
    let m = model("basic", "");
    let good = image_bytes("small_gray.png");
    let mut images: Vec<&[u8]> = vec![&good; 40];
    let got = m.embed_images(&images).unwrap();
    let want = floats(&features_json()["basic"]["images"]["small_gray.png"]);
    assert_eq!(got.len(), 40 * want.len());
    for row in got.chunks(want.len()) {
        assert!(relative_error(row, &want) <= 1e-4);
    }
    let bad = b"GIF89a".to_vec();
    images[37] = &bad;
    let err = m.embed_images(&images).unwrap_err();
    assert!(
        err.message.starts_with("image 37: unsupported"),
        "{}",
        err.message
    );
}

#[test]
fn max_image_pixels_option_is_enforced() {
    let m = model("basic", "{\"max_image_pixels\": 50000}");
    let err = m
        .embed_images(&[&image_bytes("landscape.jpg")])
        .unwrap_err();
    assert_eq!(err.status, Status::ResourceExhausted);
    assert!(err.message.contains("640x427"), "{}", err.message);
    assert!(m.embed_images(&[&image_bytes("small_gray.png")]).is_ok());
}

/// Pillow 13's `Image.open(png).convert("RGB")` of 16-bit PNGs, recorded: colour
/// channels keep their high byte; 16-bit greyscale opens as `I;16` and clips at 255.
#[test]
fn sixteen_bit_pngs_convert_as_pillow() {
    use image::{ImageBuffer, ImageFormat, Luma, Rgb};
    let values: [u16; 10] = [0, 255, 256, 383, 384, 1000, 65535, 32768, 32767, 128];
    let encode = |image: image::DynamicImage| {
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let rgb: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(10, 1, |x, _| Rgb([values[x as usize]; 3]));
    let gray: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(10, 1, |x, _| Luma([values[x as usize]]));
    for (image, pillow) in [
        (
            image::DynamicImage::ImageRgb16(rgb),
            [0u8, 0, 1, 1, 1, 3, 255, 128, 127, 0],
        ),
        (
            image::DynamicImage::ImageLuma16(gray),
            [0, 255, 255, 255, 255, 255, 255, 255, 255, 128],
        ),
    ] {
        let decoded = decode_rgb(&encode(image), 100).unwrap();
        let got: Vec<u8> = decoded.pixels().map(|p| p[0]).collect();
        assert_eq!(got, pillow);
        assert!(decoded.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    }
}

/// A tensor to serialise: name, dtype, shape, little-endian bytes.
type RawTensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

#[test]
fn half_precision_checkpoints_load() {
    use safetensors::tensor::{Dtype, TensorView};
    let source = std::fs::read(fixtures().join("bottleneck/model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&source).unwrap();
    // The same weights as F16, BF16, and as F32 holding the F16-rounded values.
    let mut variants: Vec<(&str, Vec<RawTensor>)> = vec![
        ("f16", vec![]),
        ("bf16", vec![]),
        ("f32_of_f16", vec![]),
        ("f32_of_bf16", vec![]),
    ];
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            continue;
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let f16: Vec<half::f16> = values.iter().map(|v| half::f16::from_f32(*v)).collect();
        let bf16: Vec<half::bf16> = values.iter().map(|v| half::bf16::from_f32(*v)).collect();
        let shape = view.shape().to_vec();
        let bytes = [
            (
                Dtype::F16,
                f16.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                Dtype::BF16,
                bf16.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                Dtype::F32,
                f16.iter().flat_map(|v| v.to_f32().to_le_bytes()).collect(),
            ),
            (
                Dtype::F32,
                bf16.iter().flat_map(|v| v.to_f32().to_le_bytes()).collect(),
            ),
        ];
        for ((_, tensors), (dtype, data)) in variants.iter_mut().zip(bytes) {
            tensors.push((name.clone(), dtype, shape.clone(), data));
        }
    }
    let image = image_bytes("lossless.webp");
    let mut features = Vec::new();
    for (variant, tensors) in &variants {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixtures().join("bottleneck/config.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
        let m = ResNetPoster::create(dir.path(), "")
            .unwrap_or_else(|e| panic!("{variant}: {}", e.message));
        features.push(m.embed_images(&[&image]).unwrap());
    }
    assert_eq!(features[0], features[2], "F16 reads as its F32 values");
    assert_eq!(features[1], features[3], "BF16 reads as its F32 values");
    let want = floats(&features_json()["bottleneck"]["images"]["lossless.webp"]);
    assert!(relative_error(&features[0], &want) < 1e-2);
}

/// Copies a checkpoint folder to a temporary directory with another config.
fn with_config(checkpoint: &str, config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join(checkpoint).join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    dir
}

#[test]
fn broken_model_directories_and_options_are_clear_errors() {
    let empty = tempfile::tempdir().unwrap();
    assert!(!ResNetPoster::accepts(empty.path()));
    let err = ResNetPoster::create(empty.path(), "").err().unwrap();
    assert_eq!(err.status, Status::NotFound);
    assert!(err.message.contains("config.json"), "{}", err.message);

    assert!(ResNetPoster::accepts(&fixtures().join("basic")));
    let fusion = fixtures().join("../../../fusion/tests/fixtures/with_bias");
    assert!(fusion.join("model.safetensors").is_file());
    assert!(
        !ResNetPoster::accepts(&fusion),
        "a fusion folder is not a ResNet"
    );
    let cases = [
        (
            "bottleneck",
            r#"{"architecture": "resnet", "block": "basic", "layers": [2, 1, 1, 2]}"#,
            "layer1.0.conv1 has a 1x1 kernel",
        ),
        (
            "basic",
            r#"{"architecture": "resnet", "block": "basic", "layers": [1, 1, 2, 1]}"#,
            "more than 1 blocks in layer1",
        ),
        (
            "basic",
            r#"{"architecture": "resnet", "block": "basic", "layers": [2, 1, 3, 1]}"#,
            "tensor layer3.2.conv1.weight not found",
        ),
        (
            "basic",
            r#"{"architecture": "resnet50"}"#,
            "layer1.0.conv1 has a 3x3 kernel",
        ),
        (
            "basic",
            r#"{"architecture": "resnet18", "layers": [2, 1, 2, 1]}"#,
            "disagree with architecture",
        ),
        (
            "basic",
            r#"{"architecture": "vgg16"}"#,
            "unsupported architecture",
        ),
        (
            "basic",
            r#"{"architecture": "resnet", "block": "basic"}"#,
            "needs both",
        ),
        (
            "basic",
            r#"{"architecture": "resnet", "block": "basic", "layers": [2, 1, 2, 1],
                "preprocessing": {"resize_size": 200}}"#,
            "crop_size 224 must be in 1..=resize_size (200)",
        ),
    ];
    for (checkpoint, config, message) in cases {
        let dir = with_config(checkpoint, config);
        let err = ResNetPoster::create(dir.path(), "").err().unwrap();
        assert_eq!(err.status, Status::InvalidArgument, "{config}");
        assert!(err.message.contains(message), "{config}: {}", err.message);
    }
    for options in [
        "{\"unknown\": 1}",
        "[1]",
        "{\"max_image_pixels\": 0}",
        "{\"normalize\": \"yes\"}",
    ] {
        let err = ResNetPoster::create(&fixtures().join("basic"), options)
            .err()
            .unwrap();
        assert_eq!(err.status, Status::InvalidArgument, "{options}");
    }
}

fn last_error(api: &MqPluginApi) -> String {
    unsafe { std::ffi::CStr::from_ptr((api.last_error)()) }
        .to_string_lossy()
        .into_owned()
}

/// Through the C ABI table the host uses: bytes + offsets in, features out.
#[test]
fn the_abi_takes_concatenated_bytes_and_offsets() {
    let api = unsafe {
        &*marquee_resnet_poster::__marquee_plugin_exports::marquee_plugin_entry(
            MQ_ABI_VERSION_MAJOR,
            MQ_ABI_VERSION_MINOR,
        )
    };
    assert_eq!(api.kind, MQ_KIND_IMAGE_ENCODER);
    let dir = std::ffi::CString::new(fixtures().join("basic").to_str().unwrap()).unwrap();
    let options = std::ffi::CString::new("{\"threads\": 1}").unwrap();
    let mut instance = std::ptr::null_mut();
    assert_eq!(
        unsafe { (api.create)(dir.as_ptr(), options.as_ptr(), &mut instance) },
        MQ_STATUS_OK
    );
    let mut info = MqModelInfo::default();
    assert_eq!(
        unsafe { (api.model_info)(instance, &mut info) },
        MQ_STATUS_OK
    );
    let dim = info.output_dim as usize;
    assert_eq!(dim, 24);

    let run = |images: &[Vec<u8>]| -> (MqStatus, Vec<f32>) {
        let bytes: Vec<u8> = images.concat();
        let mut offsets = vec![0u32];
        for image in images {
            offsets.push(offsets.last().unwrap() + image.len() as u32);
        }
        let inputs = [
            MqTensor {
                data: bytes.as_ptr().cast(),
                shape: [bytes.len() as u64, 0, 0, 0],
                ndim: 1,
                dtype: MQ_DTYPE_U8,
            },
            MqTensor {
                data: offsets.as_ptr().cast(),
                shape: [offsets.len() as u64, 0, 0, 0],
                ndim: 1,
                dtype: MQ_DTYPE_U32,
            },
        ];
        let mut values = vec![0f32; images.len() * dim];
        let mut output = MqTensorMut {
            data: values.as_mut_ptr().cast(),
            shape: [images.len() as u64, dim as u64, 0, 0],
            ndim: 2,
            dtype: MQ_DTYPE_F32,
        };
        let status = unsafe { (api.embed)(instance, inputs.as_ptr(), 2, &mut output) };
        (status, values)
    };
    let images = vec![image_bytes("small_gray.png"), image_bytes("lossy.webp")];
    let (status, values) = run(&images);
    assert_eq!(status, MQ_STATUS_OK, "{}", last_error(api));
    let expected = features_json();
    for (i, name) in ["small_gray.png", "lossy.webp"].iter().enumerate() {
        let want = floats(&expected["basic"]["images"][name]);
        assert!(relative_error(&values[i * dim..(i + 1) * dim], &want) <= 1e-4);
    }
    let (status, _) = run(&[image_bytes("lossy.webp"), png_header(30_000, 30_000)]);
    assert_eq!(status, MQ_STATUS_RESOURCE_EXHAUSTED);
    assert!(last_error(api).starts_with("image 1: image of 30000x30000 pixels"));
    let (status, _) = run(&[b"not an image".to_vec()]);
    assert_eq!(status, MQ_STATUS_INVALID_ARGUMENT);
    assert!(last_error(api).contains("unsupported image format"));
    unsafe { (api.destroy)(instance) };
}

/// Thousands of damaged copies of every fixture (bytes overwritten, bits flipped, cut
/// short): each decodes or is refused with an error, never a panic.
#[test]
fn damaged_images_never_panic() {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut decoded, mut refused) = (0, 0);
    for entry in std::fs::read_dir(fixtures().join("images")).unwrap() {
        let original = std::fs::read(entry.unwrap().path()).unwrap();
        for _ in 0..300 {
            let mut bytes = original.clone();
            for _ in 0..1 + random() % 6 {
                let at = random() as usize % bytes.len();
                match random() % 4 {
                    0 => bytes[at] = random() as u8,
                    1 => bytes[at] ^= 1 << (random() % 8),
                    2 => bytes[at] = 0xFF,
                    _ => bytes.truncate(at.max(4)),
                }
            }
            let outcome = std::panic::catch_unwind(|| {
                marquee_imaging::decode_rgb(&bytes, 40_000_000).is_ok()
            });
            match outcome {
                Ok(true) => decoded += 1,
                Ok(false) => refused += 1,
                Err(_) => panic!("decoding a damaged copy panicked"),
            }
        }
    }
    assert!(
        decoded > 0 && refused > 0,
        "{decoded} decoded, {refused} refused"
    );
}
