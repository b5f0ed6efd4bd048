//! The SDK's shims: handshake, error reporting, and panics caught at the boundary.

use marquee_plugin_api::abi::*;
use marquee_plugin_api::{
    export_plugin, parse_options, ModelInfo, Plugin, PluginError, PluginKind, Status, Tensor,
    TensorMut, Tokens,
};
use std::ffi::{CStr, CString};
use std::path::Path;

struct Exploding;

impl Plugin for Exploding {
    const NAME: &'static str = "exploding";
    const VERSION: &'static str = "0.0.1";
    const KIND: PluginKind = PluginKind::TextEncoder;

    fn accepts(_: &Path) -> bool {
        panic!("accepts exploded")
    }
    fn create(_: &Path, config_json: &str) -> Result<Self, PluginError> {
        if config_json.contains("fail") {
            return Err(PluginError::invalid_argument("bad config: fail requested"));
        }
        Ok(Exploding)
    }
    fn info(&self) -> ModelInfo {
        ModelInfo::text_encoder(2, 8)
    }
    fn tokenize(&self, _: &str, _: usize) -> Result<Tokens, PluginError> {
        panic!("tokenizer exploded")
    }
    fn embed(&self, _: &[Tensor<'_>], _: TensorMut<'_>) -> Result<(), PluginError> {
        let v: Vec<u32> = Vec::new();
        let _ = v[3];
        Ok(())
    }
}

export_plugin!(Exploding);

fn last_error(api: &MqPluginApi) -> String {
    unsafe { CStr::from_ptr((api.last_error)()) }
        .to_string_lossy()
        .into_owned()
}

fn entry(major: u32, minor: u32) -> *const MqPluginApi {
    __marquee_plugin_exports::marquee_plugin_entry(major, minor)
}

fn api() -> &'static MqPluginApi {
    unsafe { &*entry(MQ_ABI_VERSION_MAJOR, MQ_ABI_VERSION_MINOR) }
}

#[test]
fn handshake_refuses_other_abi_versions() {
    assert!(entry(MQ_ABI_VERSION_MAJOR + 1, MQ_ABI_VERSION_MINOR).is_null());
    assert!(entry(MQ_ABI_VERSION_MAJOR - 1, MQ_ABI_VERSION_MINOR).is_null());
    // A host of an older minor may lack what the plugin relies on; a newer one may not.
    assert!(entry(MQ_ABI_VERSION_MAJOR, MQ_ABI_VERSION_MINOR - 1).is_null());
    assert_eq!(
        entry(MQ_ABI_VERSION_MAJOR, MQ_ABI_VERSION_MINOR + 1),
        api() as *const MqPluginApi
    );
    let api = api();
    assert_eq!(
        (api.struct_size, api.abi_major, api.abi_minor),
        (
            std::mem::size_of::<MqPluginApi>() as u32,
            MQ_ABI_VERSION_MAJOR,
            MQ_ABI_VERSION_MINOR
        )
    );
    assert_eq!(api.kind, MQ_KIND_TEXT_ENCODER);
    assert_eq!(
        unsafe { CStr::from_ptr(api.name) }.to_str().unwrap(),
        "exploding"
    );
    // The plugin leaves the optional per-token call out, so the host sees it absent.
    assert!(api.token_states.is_none());
}

#[test]
fn model_info_describes_named_inputs_owned_by_the_instance() {
    let api = api();
    let dir = CString::new("/tmp").unwrap();
    unsafe {
        let mut instance = std::ptr::null_mut();
        assert_eq!(
            (api.create)(dir.as_ptr(), std::ptr::null(), &mut instance),
            MQ_STATUS_OK
        );
        let mut info = MqModelInfo::default();
        assert_eq!((api.model_info)(instance, &mut info), MQ_STATUS_OK);
        assert_eq!((info.output_dim, info.max_input_tokens), (2, 8));
        let described = |descs: *const MqTensorDesc, n: usize| {
            std::slice::from_raw_parts(descs, n)
                .iter()
                .map(|d| {
                    let name = CStr::from_ptr(d.name).to_str().unwrap().to_string();
                    (name, d.dtype, d.width)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            described(info.inputs, info.n_inputs),
            [
                ("token_ids".to_string(), MQ_DTYPE_U32, 0),
                ("offsets".to_string(), MQ_DTYPE_U32, 0)
            ]
        );
        assert_eq!(
            described(info.outputs, info.n_outputs),
            [("embedding".to_string(), MQ_DTYPE_F32, 2)]
        );
        assert_eq!(info.token_state_dim, 0);
        (api.destroy)(instance);
    }
}

#[test]
fn options_parse_with_defaults_and_refuse_unknown_keys() {
    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        threads: Option<usize>,
    }
    assert_eq!(parse_options::<Options>("  ").unwrap(), Options::default());
    assert_eq!(
        parse_options::<Options>("{\"threads\": 3}").unwrap(),
        Options { threads: Some(3) }
    );
    let err = parse_options::<Options>("{\"thread\": 3}").unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(
        err.message
            .starts_with("plugin config: unknown field `thread`"),
        "{}",
        err.message
    );
}

#[test]
fn errors_and_panics_never_cross_the_boundary() {
    let api = api();
    let dir = CString::new("/tmp").unwrap();
    unsafe {
        // A panic in accepts reads as "no".
        assert_eq!((api.accepts)(dir.as_ptr()), 0);
        assert!(last_error(api).contains("plugin panicked: accepts exploded"));

        let mut instance = std::ptr::null_mut();
        let fail = CString::new("{\"fail\": true}").unwrap();
        assert_eq!(
            (api.create)(dir.as_ptr(), fail.as_ptr(), &mut instance),
            MQ_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(last_error(api), "bad config: fail requested");
        assert!(instance.is_null());

        assert_eq!(
            (api.create)(dir.as_ptr(), std::ptr::null(), &mut instance),
            MQ_STATUS_OK
        );
        let mut info = MqModelInfo::default();
        assert_eq!((api.model_info)(instance, &mut info), MQ_STATUS_OK);
        assert_eq!(info.output_dim, 2);

        let (mut ids, mut len, mut full) = ([0u32; 8], 0usize, 0usize);
        let text = b"hello";
        let status = (api.tokenize)(
            instance,
            text.as_ptr(),
            text.len(),
            8,
            ids.as_mut_ptr(),
            &mut len,
            &mut full,
        );
        assert_eq!(status, MQ_STATUS_INTERNAL);
        assert!(last_error(api).contains("plugin panicked: tokenizer exploded"));

        let mut out = [0f32; 2];
        let mut output = MqTensorMut {
            data: out.as_mut_ptr().cast(),
            shape: [1, 2, 0, 0],
            ndim: 2,
            dtype: MQ_DTYPE_F32,
        };
        assert_eq!(
            (api.embed)(instance, std::ptr::null(), 0, &mut output),
            MQ_STATUS_INTERNAL
        );
        assert!(
            last_error(api).contains("index out of bounds"),
            "{}",
            last_error(api)
        );

        // Malformed tensors are refused before the plugin sees them.
        output.dtype = MQ_DTYPE_U8;
        assert_eq!(
            (api.embed)(instance, std::ptr::null(), 0, &mut output),
            MQ_STATUS_INVALID_ARGUMENT
        );
        assert!(last_error(api).contains("output must be an F32 tensor"));

        (api.destroy)(instance);
    }
}
