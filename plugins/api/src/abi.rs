//! The raw C ABI, mirrored one to one by `include/marquee_plugin.h` (a test keeps the
//! two in sync). Enumerations cross as `u32` constants so an unknown value from a
//! newer peer is never undefined behaviour.

use std::ffi::{c_char, c_void};

/// Version of this ABI. The host passes its own to the entry symbol; a plugin built
/// for another version returns null.
pub const MQ_ABI_VERSION: u32 = 1;

/// Name of the one symbol every plugin exports:
/// `const MqPluginApi *marquee_plugin_entry(uint32_t host_abi_version)`.
pub const MQ_ENTRY_SYMBOL: &str = "marquee_plugin_entry";

/// Status of an ABI call (`MQ_STATUS_*`).
pub type MqStatus = u32;
/// The call succeeded.
pub const MQ_STATUS_OK: MqStatus = 0;
/// The caller's input is wrong (bad shape, bad text, bad config).
pub const MQ_STATUS_INVALID_ARGUMENT: MqStatus = 1;
/// A file or resource the call needs does not exist.
pub const MQ_STATUS_NOT_FOUND: MqStatus = 2;
/// Out of memory or over a limit.
pub const MQ_STATUS_RESOURCE_EXHAUSTED: MqStatus = 3;
/// The plugin does not implement this call.
pub const MQ_STATUS_UNIMPLEMENTED: MqStatus = 4;
/// A bug or unexpected failure inside the plugin (panics land here).
pub const MQ_STATUS_INTERNAL: MqStatus = 5;

/// What a plugin does (`MQ_KIND_*`).
pub type MqKind = u32;
/// Text → vector.
pub const MQ_KIND_TEXT_ENCODER: MqKind = 1;
/// Image → vector.
pub const MQ_KIND_IMAGE_ENCODER: MqKind = 2;
/// Several embeddings → one vector.
pub const MQ_KIND_FUSION: MqKind = 3;
/// Inputs → generated text.
pub const MQ_KIND_GENERATOR: MqKind = 4;

/// Element type of a tensor (`MQ_DTYPE_*`).
pub type MqDType = u32;
/// 32-bit float.
pub const MQ_DTYPE_F32: MqDType = 1;
/// 32-bit unsigned integer.
pub const MQ_DTYPE_U32: MqDType = 2;
/// Byte.
pub const MQ_DTYPE_U8: MqDType = 3;

/// Most dimensions a tensor may have.
pub const MQ_MAX_DIMS: usize = 4;

/// A read-only tensor: `data` holds `product(shape[..ndim])` elements of `dtype`,
/// densely packed in row-major order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqTensor {
    /// First element.
    pub data: *const c_void,
    /// Extent of each dimension; entries past `ndim` are ignored.
    pub shape: [u64; MQ_MAX_DIMS],
    /// Number of dimensions in use.
    pub ndim: u32,
    /// Element type.
    pub dtype: MqDType,
}

/// A tensor the callee writes into; the caller owns and sizes the buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqTensorMut {
    /// First element.
    pub data: *mut c_void,
    /// Extent of each dimension; entries past `ndim` are ignored.
    pub shape: [u64; MQ_MAX_DIMS],
    /// Number of dimensions in use.
    pub ndim: u32,
    /// Element type.
    pub dtype: MqDType,
}

/// What one loaded model instance takes and returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MqModelInfo {
    /// Length of each output vector.
    pub output_dim: u32,
    /// Token limit of one input (text encoders), 0 when not applicable.
    pub max_input_tokens: u32,
}

/// Opaque model instance owned by the plugin.
#[repr(C)]
pub struct MqInstance {
    _private: [u8; 0],
}

/// The table a plugin's entry symbol returns; static for the library's lifetime.
///
/// Threading contract: `tokenize`, `model_info` and `last_error` may be called from
/// any number of threads at once; `embed` is called by one thread at a time per
/// instance. Strings returned by `last_error` are valid until the calling thread's
/// next call into the plugin.
#[repr(C)]
pub struct MqPluginApi {
    /// Must equal the host's [`MQ_ABI_VERSION`].
    pub abi_version: u32,
    /// One of `MQ_KIND_*`.
    pub kind: MqKind,
    /// Plugin name, NUL-terminated UTF-8 (e.g. `bert-text`).
    pub name: *const c_char,
    /// Plugin version, NUL-terminated UTF-8.
    pub version: *const c_char,
    /// Returns 1 when the plugin can load the model directory, 0 otherwise.
    pub accepts: unsafe extern "C" fn(model_dir: *const c_char) -> u32,
    /// Loads a model directory with a JSON object of options (may be empty).
    pub create: unsafe extern "C" fn(
        model_dir: *const c_char,
        config_json: *const c_char,
        out: *mut *mut MqInstance,
    ) -> MqStatus,
    /// Frees an instance made by `create`.
    pub destroy: unsafe extern "C" fn(instance: *mut MqInstance),
    /// Describes an instance.
    pub model_info:
        unsafe extern "C" fn(instance: *const MqInstance, out: *mut MqModelInfo) -> MqStatus,
    /// Tokenizes UTF-8 text into at most `max_tokens` ids (truncating at the end,
    /// special tokens kept), writing them to `out_ids` (capacity `max_tokens`) and
    /// their count to `out_len`; `untruncated_len` receives the count before truncation.
    pub tokenize: unsafe extern "C" fn(
        instance: *const MqInstance,
        text: *const u8,
        text_len: usize,
        max_tokens: u32,
        out_ids: *mut u32,
        out_len: *mut usize,
        untruncated_len: *mut usize,
    ) -> MqStatus,
    /// Embeds one batch; the output is F32 `[n, dim]` for every kind. Inputs by kind:
    /// - text encoders: `inputs[0]` = all token ids (U32, `[tokens]`), `inputs[1]` =
    ///   sequence offsets (U32, `[n + 1]`);
    /// - image encoders: `inputs[0]` = the encoded images (JPEG, PNG, ...) back to back
    ///   (U8, `[bytes]`), `inputs[1]` = their byte offsets (U32, `[n + 1]`);
    /// - fusion: `inputs[0]` = text embeddings (F32, `[n, text_dim]`), `inputs[1]` =
    ///   poster and `inputs[2]` = thumbnail embeddings (F32, `[n, image_dim]` each),
    ///   `inputs[3]` = which images are present (U8, `[n, 2]`: poster, thumbnail; 1 =
    ///   present, 0 = absent, its row ignored).
    pub embed: unsafe extern "C" fn(
        instance: *const MqInstance,
        inputs: *const MqTensor,
        n_inputs: usize,
        output: *mut MqTensorMut,
    ) -> MqStatus,
    /// Message of the calling thread's last failed call, NUL-terminated; never null.
    pub last_error: unsafe extern "C" fn() -> *const c_char,
}

/// Signature of the entry symbol.
pub type MqEntryFn = unsafe extern "C" fn(host_abi_version: u32) -> *const MqPluginApi;
