//! The plugin against the PyTorch module of tests/fixtures/make_fixtures.py (the same
//! equations and missing-image rule), and clear errors for inputs of the wrong shape.
//!
//! Relative error of an output row: `max |got − want| / max |want|`.

use marquee_fusion::fusion::Inputs;
use marquee_fusion::FusionPlugin;
use marquee_plugin_api::abi::*;
use marquee_plugin_api::{Plugin, Status};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture's cases: text, poster, thumbnail, present, expected output.
struct Cases {
    text: Vec<f32>,
    poster: Vec<f32>,
    thumbnail: Vec<f32>,
    present: Vec<[bool; 2]>,
    output: Vec<f32>,
}

fn cases(name: &str) -> Cases {
    let bytes = std::fs::read(fixture(name).join("cases.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| -> Vec<f32> {
        file.tensor(n)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let present = file
        .tensor("present")
        .unwrap()
        .data()
        .chunks_exact(2)
        .map(|p| [p[0] == 1, p[1] == 1])
        .collect();
    Cases {
        text: f32s("text"),
        poster: f32s("poster"),
        thumbnail: f32s("thumbnail"),
        present,
        output: f32s("output"),
    }
}

fn assert_rows_close(got: &[f32], want: &[f32], dim: usize, tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let mut worst = 0f64;
    for (i, (g, w)) in got.chunks(dim).zip(want.chunks(dim)).enumerate() {
        let scale = w.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        let diff = g
            .iter()
            .zip(w)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
        let err = diff / scale;
        assert!(err <= tol, "{what}: row {i} relative error {err:.2e}");
        worst = worst.max(err);
    }
    eprintln!("{what}: largest relative error {worst:.2e}");
}

#[test]
fn outputs_match_the_pytorch_module_for_every_presence_pattern() {
    for name in ["with_bias", "no_bias"] {
        let model = FusionPlugin::create(&fixture(name), "").unwrap();
        let config = model.config().clone();
        assert_eq!(
            (config.text_dim, config.image_dim, config.attention_dim),
            (24, 40, 16)
        );
        assert_eq!(model.info().output_dim, 12);
        let c = cases(name);
        for pattern in [[true, true], [true, false], [false, true], [false, false]] {
            assert!(
                c.present.contains(&pattern),
                "{name}: {pattern:?} not covered"
            );
        }
        let got = model
            .fuse(&Inputs {
                text: &c.text,
                poster: &c.poster,
                thumbnail: &c.thumbnail,
                present: &c.present,
            })
            .unwrap();
        assert_rows_close(&got, &c.output, 12, 1e-5, name);
    }
}

#[test]
fn absent_images_do_not_matter() {
    let model = FusionPlugin::create(&fixture("with_bias"), "").unwrap();
    let c = cases("with_bias");
    let mut poster = c.poster.clone();
    let mut thumbnail = c.thumbnail.clone();
    for (i, p) in c.present.iter().enumerate() {
        if !p[0] {
            poster[i * 40..(i + 1) * 40].fill(f32::NAN);
        }
        if !p[1] {
            thumbnail[i * 40..(i + 1) * 40].fill(0.0);
        }
    }
    let got = model
        .fuse(&Inputs {
            text: &c.text,
            poster: &poster,
            thumbnail: &thumbnail,
            present: &c.present,
        })
        .unwrap();
    assert_rows_close(&got, &c.output, 12, 1e-5, "absent rows replaced");
}

fn last_error(api: &MqPluginApi) -> String {
    unsafe { std::ffi::CStr::from_ptr((api.last_error)()) }
        .to_string_lossy()
        .into_owned()
}

fn f32_tensor(values: &[f32], rows: usize) -> MqTensor {
    MqTensor {
        data: values.as_ptr().cast(),
        shape: [rows as u64, (values.len() / rows.max(1)) as u64, 0, 0],
        ndim: 2,
        dtype: MQ_DTYPE_F32,
    }
}

/// Through the C ABI table the host uses: the four input tensors, then inputs of the
/// wrong dimension, dtype or content.
#[test]
fn the_abi_takes_text_poster_thumbnail_and_presence() {
    let api = unsafe {
        &*marquee_fusion::__marquee_plugin_exports::marquee_plugin_entry(
            MQ_ABI_VERSION_MAJOR,
            MQ_ABI_VERSION_MINOR,
        )
    };
    assert_eq!(api.kind, MQ_KIND_FUSION);
    let dir = std::ffi::CString::new(fixture("no_bias").to_str().unwrap()).unwrap();
    let mut instance = std::ptr::null_mut();
    assert_eq!(
        unsafe { (api.create)(dir.as_ptr(), std::ptr::null(), &mut instance) },
        MQ_STATUS_OK
    );
    let c = cases("no_bias");
    let n = c.present.len();
    let flags: Vec<u8> = c.present.iter().flat_map(|p| p.map(u8::from)).collect();
    let run = |text: &[f32], poster: &[f32], thumbnail: &[f32], present: MqTensor| {
        let inputs = [
            f32_tensor(text, n),
            f32_tensor(poster, n),
            f32_tensor(thumbnail, n),
            present,
        ];
        let mut values = vec![0f32; n * 12];
        let mut output = MqTensorMut {
            data: values.as_mut_ptr().cast(),
            shape: [n as u64, 12, 0, 0],
            ndim: 2,
            dtype: MQ_DTYPE_F32,
        };
        let status = unsafe { (api.embed)(instance, inputs.as_ptr(), 4, &mut output) };
        (status, values, last_error(api))
    };
    let mask = |flags: &[u8]| MqTensor {
        data: flags.as_ptr().cast(),
        shape: [(flags.len() / 2) as u64, 2, 0, 0],
        ndim: 2,
        dtype: MQ_DTYPE_U8,
    };
    let (status, values, error) = run(&c.text, &c.poster, &c.thumbnail, mask(&flags));
    assert_eq!(status, MQ_STATUS_OK, "{error}");
    assert_rows_close(&values, &c.output, 12, 1e-5, "through the ABI");

    let short_text: Vec<f32> = c.text.chunks(24).flat_map(|r| &r[..23]).copied().collect();
    let wide_poster: Vec<f32> = c
        .poster
        .chunks(40)
        .flat_map(|r| r.iter().chain(&[0.0]))
        .copied()
        .collect();
    let mut nan_text = c.text.clone();
    nan_text[5 * 24 + 3] = f32::INFINITY;
    let present_row = c.present.iter().position(|p| p[0]).unwrap();
    let mut nan_poster = c.poster.clone();
    nan_poster[present_row * 40] = f32::NAN;
    let mut bad_flags = flags.clone();
    bad_flags[7] = 2;
    let outcome = |(status, _, error): (MqStatus, Vec<f32>, String)| (status, error);
    let cases: Vec<(&str, (MqStatus, String), String)> = vec![
        (
            "text of 23 values",
            outcome(run(&short_text, &c.poster, &c.thumbnail, mask(&flags))),
            "text embeddings: shape [12, 23], expected [12, 24]".into(),
        ),
        (
            "posters of 41 values",
            outcome(run(&c.text, &wide_poster, &c.thumbnail, mask(&flags))),
            "poster embeddings: shape [12, 41], expected [12, 40]".into(),
        ),
        (
            "presence for 11 rows",
            outcome(run(&c.text, &c.poster, &c.thumbnail, mask(&flags[..22]))),
            "text embeddings: shape [12, 24], expected [11, 24]".into(),
        ),
        (
            "presence flag 2",
            outcome(run(&c.text, &c.poster, &c.thumbnail, mask(&bad_flags))),
            "present: row 3 holds 2, expected 0 or 1".into(),
        ),
        (
            "infinite text",
            outcome(run(&nan_text, &c.poster, &c.thumbnail, mask(&flags))),
            "text embeddings: row 5 has a non-finite value".into(),
        ),
        (
            "NaN in a present poster",
            outcome(run(&c.text, &nan_poster, &c.thumbnail, mask(&flags))),
            format!("poster embeddings: row {present_row} has a non-finite value"),
        ),
        (
            "presence as F32",
            outcome(run(
                &c.text,
                &c.poster,
                &c.thumbnail,
                f32_tensor(&c.text, n),
            )),
            "present: expected a U8 tensor [n, 2]".into(),
        ),
    ];
    for (what, (status, error), message) in cases {
        assert_eq!(status, MQ_STATUS_INVALID_ARGUMENT, "{what}");
        assert!(error.contains(&message), "{what}: {error}");
    }
    let three = [
        f32_tensor(&c.text, n),
        f32_tensor(&c.poster, n),
        f32_tensor(&c.thumbnail, n),
    ];
    let mut values = vec![0f32; n * 12];
    let mut output = MqTensorMut {
        data: values.as_mut_ptr().cast(),
        shape: [n as u64, 12, 0, 0],
        ndim: 2,
        dtype: MQ_DTYPE_F32,
    };
    let status = unsafe { (api.embed)(instance, three.as_ptr(), 3, &mut output) };
    assert_eq!(status, MQ_STATUS_INVALID_ARGUMENT);
    assert!(last_error(api).contains("four inputs"));
    unsafe { (api.destroy)(instance) };
}

#[test]
fn broken_model_directories_are_clear_errors() {
    let empty = tempfile::tempdir().unwrap();
    assert!(!FusionPlugin::accepts(empty.path()));
    let err = FusionPlugin::create(empty.path(), "").err().unwrap();
    assert_eq!(err.status, Status::NotFound);
    assert!(err.message.contains("config.json"), "{}", err.message);
    assert!(FusionPlugin::accepts(&fixture("with_bias")));
    let resnet =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../resnet-poster/tests/fixtures/basic");
    assert!(resnet.join("model.safetensors").is_file());
    assert!(
        !FusionPlugin::accepts(&resnet),
        "a ResNet folder is not a fusion model"
    );

    for (source, config, message) in [
        (
            "with_bias",
            r#"{"text_dim": 24, "image_dim": 40, "attention_dim": 16, "output_dim": 12, "qkv_bias": false}"#,
            "config says qkv_bias = false but the checkpoint has W_Q.bias",
        ),
        (
            "no_bias",
            r#"{"text_dim": 24, "image_dim": 40, "attention_dim": 16, "output_dim": 12}"#,
            "config says qkv_bias = true but the checkpoint lacks W_Q.bias",
        ),
        (
            "with_bias",
            r#"{"text_dim": 384, "image_dim": 40, "attention_dim": 16, "output_dim": 12}"#,
            "tensor W_Q.weight has shape [16, 24], the config implies [16, 384]",
        ),
        (
            "with_bias",
            r#"{"text_dim": 24, "image_dim": 40, "attention_dim": 0, "output_dim": 12}"#,
            "attention_dim must be positive",
        ),
        (
            "with_bias",
            r#"{"text_dim": 24, "image_dim": 40, "attention_dim": 16}"#,
            "missing field `output_dim`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixture(source).join("model.safetensors"),
            dir.path().join("model.safetensors"),
        )
        .unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let err = FusionPlugin::create(dir.path(), "").err().unwrap();
        assert_eq!(err.status, Status::InvalidArgument, "{config}");
        assert!(err.message.contains(message), "{config}: {}", err.message);
    }
    let err = FusionPlugin::create(&fixture("with_bias"), "{\"threads\": 2}")
        .err()
        .unwrap();
    assert_eq!(err.status, Status::InvalidArgument);
}
