//! The raw C ABI, mirrored one to one by `include/marquee_plugin.h` (a test keeps the
//! two in sync). Enumerations cross as `u32` constants so an unknown value from a
//! newer peer is never undefined behaviour.
//!
//! Compatibility rule (as Triton's `tritonbackend.h`): a plugin built against
//! `MAJOR.MINOR` works with any host of the same major and a minor of at least its own.
//! A new minor only appends (optional functions at the end of [`MqPluginApi`], fields
//! at the end of [`MqModelInfo`]); anything else is a new major. Every major begins
//! [`MqPluginApi`] with `struct_size`, `abi_major`, `abi_minor`, and the host treats a
//! function at or past `struct_size` as absent, like a null one.
//!
//! Versions: 2.0 added the table's size and version fields, the host's major and minor
//! passed to the entry, and the named input/output descriptors of [`MqModelInfo`];
//! 2.1 added the optional [`MqPluginApi::token_states`] and
//! [`MqModelInfo::token_state_dim`] / [`MqModelInfo::token_state_layers`]; 2.2 added
//! the generator calls (`apply_chat_template`, `start_sequence`, `step`,
//! `cancel_sequence`, `load_adapter`, `unload_adapter`, `generator_state`) and the
//! generator fields of [`MqModelInfo`].

use std::ffi::{c_char, c_void};

/// Major version of this ABI: a plugin of another major is refused.
pub const MQ_ABI_VERSION_MAJOR: u32 = 2;

/// Minor version of this ABI: a host runs plugins of its major up to its own minor.
pub const MQ_ABI_VERSION_MINOR: u32 = 2;

/// Name of the one symbol every plugin exports:
/// `const MqPluginApi *marquee_plugin_entry(uint32_t host_major, uint32_t host_minor)`.
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

/// One named input or output of a model. `width` is the number of elements per row
/// (per batch item), 0 for a ragged input whose rows vary in length. The names by kind
/// are listed in the header and in `plugins/README.md`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqTensorDesc {
    /// NUL-terminated UTF-8 name.
    pub name: *const c_char,
    /// Element type.
    pub dtype: MqDType,
    /// Elements per row, 0 when ragged.
    pub width: u32,
}

/// What one loaded model instance takes and returns. The descriptor arrays are owned
/// by the instance and valid until it is destroyed. The host zeroes the struct before
/// `model_info`, so fields appended by a newer minor read 0 from older plugins.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqModelInfo {
    /// Length of each output vector.
    pub output_dim: u32,
    /// Token limit of one input (text encoders), 0 when not applicable.
    pub max_input_tokens: u32,
    /// `n_inputs` descriptors of `embed`'s inputs, in order.
    pub inputs: *const MqTensorDesc,
    /// Number of input descriptors.
    pub n_inputs: usize,
    /// `n_outputs` descriptors of the outputs.
    pub outputs: *const MqTensorDesc,
    /// Number of output descriptors.
    pub n_outputs: usize,
    /// Width of a `token_states` row, 0 when not supported (added in 2.1).
    pub token_state_dim: u32,
    /// `L`: `token_states` takes layers `0..=L` (added in 2.1).
    pub token_state_layers: u32,
    /// Generators: most tokens a sequence may hold, prompt and generated (added in 2.2).
    pub max_context_tokens: u32,
    /// Generators: tokens per KV-cache block (added in 2.2).
    pub kv_block_size: u32,
    /// Generators: KV-cache blocks in all (added in 2.2).
    pub kv_blocks: u32,
    /// Generators: most images one prompt may hold, 0 without vision (added in 2.2).
    pub max_images: u32,
}

impl Default for MqModelInfo {
    fn default() -> Self {
        Self {
            output_dim: 0,
            max_input_tokens: 0,
            inputs: std::ptr::null(),
            n_inputs: 0,
            outputs: std::ptr::null(),
            n_outputs: 0,
            token_state_dim: 0,
            token_state_layers: 0,
            max_context_tokens: 0,
            kv_block_size: 0,
            kv_blocks: 0,
            max_images: 0,
        }
    }
}

/// Opaque model instance owned by the plugin.
#[repr(C)]
pub struct MqInstance {
    _private: [u8; 0],
}

/// `accepts`: 1 when the plugin can load the model directory, 0 otherwise.
pub type MqAcceptsFn = unsafe extern "C" fn(model_dir: *const c_char) -> u32;
/// `create`: loads a model directory with a JSON object of options (may be empty).
pub type MqCreateFn = unsafe extern "C" fn(
    model_dir: *const c_char,
    config_json: *const c_char,
    out: *mut *mut MqInstance,
) -> MqStatus;
/// `destroy`: frees an instance made by `create`.
pub type MqDestroyFn = unsafe extern "C" fn(instance: *mut MqInstance);
/// `model_info`: describes an instance into a zeroed struct.
pub type MqModelInfoFn =
    unsafe extern "C" fn(instance: *const MqInstance, out: *mut MqModelInfo) -> MqStatus;
/// `tokenize(instance, text, text_len, max_tokens, out_ids, out_len, untruncated_len)`:
/// see [`MqPluginApi::tokenize`].
pub type MqTokenizeFn = unsafe extern "C" fn(
    *const MqInstance,
    *const u8,
    usize,
    u32,
    *mut u32,
    *mut usize,
    *mut usize,
) -> MqStatus;
/// `embed`: see [`MqPluginApi::embed`].
pub type MqEmbedFn = unsafe extern "C" fn(
    instance: *const MqInstance,
    inputs: *const MqTensor,
    n_inputs: usize,
    output: *mut MqTensorMut,
) -> MqStatus;
/// `last_error`: the calling thread's last message, NUL-terminated; never null.
pub type MqLastErrorFn = unsafe extern "C" fn() -> *const c_char;
/// `token_states`: see [`MqPluginApi::token_states`].
pub type MqTokenStatesFn = unsafe extern "C" fn(
    instance: *const MqInstance,
    inputs: *const MqTensor,
    n_inputs: usize,
    layer: u32,
    output: *mut MqTensorMut,
) -> MqStatus;

/// Identifies a sequence within one generator instance.
pub type MqSequenceId = u64;

/// Most alternatives `top_logprobs` may ask for.
pub const MQ_MAX_TOP_LOGPROBS: u32 = 20;

/// How a sequence ends (`MQ_FINISH_*`).
pub type MqFinish = u32;
/// Still generating.
pub const MQ_FINISH_NONE: MqFinish = 0;
/// `max_new_tokens` reached (or the context is full).
pub const MQ_FINISH_LENGTH: MqFinish = 1;
/// An end token of the model or of `stop_token_ids` was generated.
pub const MQ_FINISH_EOS: MqFinish = 2;

/// How a sequence chooses its tokens (added in 2.2).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqSamplingParams {
    /// Most tokens to generate (≥ 1).
    pub max_new_tokens: u32,
    /// End tokens are suppressed until this many tokens are generated.
    pub min_new_tokens: u32,
    /// Softmax temperature; 0 = greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = all.
    pub top_k: u32,
    /// Nucleus mass in (0, 1]; 1 = all.
    pub top_p: f32,
    /// Repetition penalty; 1 = off.
    pub repetition_penalty: f32,
    /// Seed of the sequence's random generator.
    pub seed: u64,
    /// Tokens that end the sequence besides the model's end tokens.
    pub stop_token_ids: *const u32,
    /// Number of `stop_token_ids`.
    pub n_stop_token_ids: usize,
    /// Alternatives to report per token, at most [`MQ_MAX_TOP_LOGPROBS`].
    pub top_logprobs: u32,
}

/// A sequence to start (added in 2.2).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqSequenceStart {
    /// The prompt's token ids, one image placeholder per image (as the chat template
    /// renders it); the plugin expands each placeholder to the image's token count.
    pub token_ids: *const u32,
    /// Number of `token_ids`.
    pub n_token_ids: usize,
    /// The encoded images (JPEG, PNG, WebP) back to back.
    pub images: *const u8,
    /// `n_images + 1` byte offsets into `images` (null when `n_images` is 0).
    pub image_offsets: *const u32,
    /// Number of images.
    pub n_images: usize,
    /// NUL-terminated name of a loaded adapter, or null for none.
    pub adapter: *const c_char,
    /// Token choice.
    pub params: MqSamplingParams,
}

/// What `start_sequence` reports (added in 2.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MqSequenceStarted {
    /// The new sequence.
    pub id: MqSequenceId,
    /// Prompt tokens after image expansion.
    pub prompt_tokens: u32,
    /// Of those, the tokens standing for images.
    pub image_tokens: u32,
}

/// A token and its log-probability (added in 2.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MqTokenLogprob {
    /// The token.
    pub token_id: u32,
    /// Its log-probability.
    pub logprob: f32,
}

/// One sequence's outcome of a `step` (added in 2.2). Pointers are owned by the
/// instance and valid until its next generator call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqStepResult {
    /// The sequence.
    pub id: MqSequenceId,
    /// 1 when a token was generated; 0 while the prompt is still being processed.
    pub has_token: u32,
    /// The generated token.
    pub token_id: u32,
    /// Its log-probability (after repetition penalty and temperature).
    pub logprob: f32,
    /// `MQ_FINISH_*`; a finished sequence's blocks are already free.
    pub finish: MqFinish,
    /// UTF-8 text the token completes (not NUL-terminated; may be empty).
    pub text: *const u8,
    /// Bytes of `text`.
    pub text_len: usize,
    /// The most likely alternatives, most likely first.
    pub top_logprobs: *const MqTokenLogprob,
    /// Number of `top_logprobs`.
    pub n_top_logprobs: usize,
}

/// A loaded LoRA adapter (added in 2.2). `target_modules` is owned by the instance and
/// valid until its next generator call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MqAdapterInfo {
    /// Rank `r`.
    pub rank: u32,
    /// `lora_alpha`.
    pub alpha: f32,
    /// 1 when the scale is `alpha / sqrt(r)` (rsLoRA), else `alpha / r`.
    pub use_rslora: u32,
    /// The adapted modules, comma-separated, NUL-terminated.
    pub target_modules: *const c_char,
}

/// A generator's load (added in 2.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MqGeneratorState {
    /// KV-cache blocks in all.
    pub kv_blocks: u32,
    /// KV-cache blocks not held by any sequence.
    pub kv_blocks_free: u32,
    /// Live sequences.
    pub sequences: u32,
}

/// `apply_chat_template`: see [`MqPluginApi::apply_chat_template`].
pub type MqApplyChatTemplateFn = unsafe extern "C" fn(
    instance: *const MqInstance,
    messages_json: *const c_char,
    out: *mut u8,
    capacity: usize,
    out_len: *mut usize,
) -> MqStatus;
/// `start_sequence`: see [`MqPluginApi::start_sequence`].
pub type MqStartSequenceFn = unsafe extern "C" fn(
    instance: *const MqInstance,
    start: *const MqSequenceStart,
    out: *mut MqSequenceStarted,
) -> MqStatus;
/// `step`: see [`MqPluginApi::step`].
pub type MqStepFn = unsafe extern "C" fn(
    instance: *const MqInstance,
    ids: *const MqSequenceId,
    n_ids: usize,
    token_budget: u32,
    results: *mut *const MqStepResult,
    n_results: *mut usize,
) -> MqStatus;
/// `cancel_sequence`: see [`MqPluginApi::cancel_sequence`].
pub type MqCancelSequenceFn =
    unsafe extern "C" fn(instance: *const MqInstance, id: MqSequenceId) -> MqStatus;
/// `load_adapter`: see [`MqPluginApi::load_adapter`].
pub type MqLoadAdapterFn = unsafe extern "C" fn(
    instance: *const MqInstance,
    name: *const c_char,
    dir: *const c_char,
    out: *mut MqAdapterInfo,
) -> MqStatus;
/// `unload_adapter`: see [`MqPluginApi::unload_adapter`].
pub type MqUnloadAdapterFn =
    unsafe extern "C" fn(instance: *const MqInstance, name: *const c_char) -> MqStatus;
/// `generator_state`: see [`MqPluginApi::generator_state`].
pub type MqGeneratorStateFn =
    unsafe extern "C" fn(instance: *const MqInstance, out: *mut MqGeneratorState) -> MqStatus;

/// The table a plugin's entry symbol returns; static for the library's lifetime.
///
/// Required functions are never null; optional ones (`None`) may be null or lie past
/// `struct_size`, and the host then reports the capability as missing.
///
/// Threading contract: `tokenize`, `model_info` and `last_error` may be called from
/// any number of threads at once; `embed` and `token_states` are called by one thread
/// at a time per instance. Strings returned by `last_error` are valid until the
/// calling thread's next call into the plugin. Generators: `apply_chat_template` may
/// run concurrently with anything; `start_sequence`, `step`, `cancel_sequence`,
/// `load_adapter`, `unload_adapter` and `generator_state` are called by one thread at a
/// time per instance.
#[repr(C)]
pub struct MqPluginApi {
    /// `size_of::<MqPluginApi>()` as the plugin was built; functions at or past it are
    /// absent.
    pub struct_size: u32,
    /// The [`MQ_ABI_VERSION_MAJOR`] the plugin was built with.
    pub abi_major: u32,
    /// The [`MQ_ABI_VERSION_MINOR`] the plugin was built with.
    pub abi_minor: u32,
    /// One of `MQ_KIND_*`.
    pub kind: MqKind,
    /// Plugin name, NUL-terminated UTF-8 (e.g. `bert-text`).
    pub name: *const c_char,
    /// Plugin version, NUL-terminated UTF-8.
    pub version: *const c_char,
    /// Required: whether the plugin can load a model directory.
    pub accepts: MqAcceptsFn,
    /// Required: loads a model directory.
    pub create: MqCreateFn,
    /// Required: frees an instance.
    pub destroy: MqDestroyFn,
    /// Required: describes an instance.
    pub model_info: MqModelInfoFn,
    /// Required: tokenizes UTF-8 text into at most `max_tokens` ids (truncating at the
    /// end, special tokens kept), writing them to `out_ids` (capacity `max_tokens`) and
    /// their count to `out_len`; `untruncated_len` receives the count before
    /// truncation. Plugins that take no text return `MQ_STATUS_UNIMPLEMENTED`.
    pub tokenize: MqTokenizeFn,
    /// Required: embeds one batch; the output is F32 `[n, dim]` for every kind. Inputs
    /// by kind:
    /// - text encoders: `inputs[0]` = all token ids (U32, `[tokens]`), `inputs[1]` =
    ///   sequence offsets (U32, `[n + 1]`);
    /// - image encoders: `inputs[0]` = the encoded images (JPEG, PNG, ...) back to back
    ///   (U8, `[bytes]`), `inputs[1]` = their byte offsets (U32, `[n + 1]`);
    /// - fusion: `inputs[0]` = text embeddings (F32, `[n, text_dim]`), `inputs[1]` =
    ///   poster and `inputs[2]` = thumbnail embeddings (F32, `[n, image_dim]` each),
    ///   `inputs[3]` = which images are present (U8, `[n, 2]`: poster, thumbnail; 1 =
    ///   present, 0 = absent, its row ignored).
    pub embed: MqEmbedFn,
    /// Required: message of the calling thread's last failed call.
    pub last_error: MqLastErrorFn,
    /// Optional (text encoders), added in 2.1: the hidden state of every token after
    /// `layer` (0 = the embeddings' output, `L` = the last layer, as transformers'
    /// `hidden_states[layer]`) for a ragged batch laid out as `embed`'s (`inputs[0]` =
    /// token ids, `inputs[1]` = offsets); the output is F32 `[tokens, token_state_dim]`.
    pub token_states: Option<MqTokenStatesFn>,
    /// Optional (generators), added in 2.2: renders chat messages (a JSON array of
    /// `{"role", "content": [{"type": "text", "text"} | {"type": "image"}]}`) with the
    /// model's chat template and its generation prompt. Writes at most `capacity` bytes
    /// of UTF-8 to `out` and the full length to `out_len`; the host calls again with a
    /// larger buffer when that is more than `capacity`.
    pub apply_chat_template: Option<MqApplyChatTemplateFn>,
    /// Optional (generators), added in 2.2: admits a sequence, reserving KV-cache
    /// blocks for its prompt and `max_new_tokens` (`MQ_STATUS_RESOURCE_EXHAUSTED` when
    /// they are not free; `MQ_STATUS_NOT_FOUND` for an unknown adapter;
    /// `MQ_STATUS_INVALID_ARGUMENT` for bad images, parameters or a prompt over the
    /// context). Its prompt is processed by the following steps.
    pub start_sequence: Option<MqStartSequenceFn>,
    /// Optional (generators), added in 2.2: one forward pass over the listed live
    /// sequences, processing at most `token_budget` tokens (0: no limit): every decoding
    /// sequence its last token, then prompts in the order listed, a chunk at a time.
    /// `*results` receives one result per listed sequence, in order.
    pub step: Option<MqStepFn>,
    /// Optional (generators), added in 2.2: ends a live sequence and frees its blocks.
    pub cancel_sequence: Option<MqCancelSequenceFn>,
    /// Optional (generators), added in 2.2: loads a PEFT LoRA adapter directory under
    /// a name (`MQ_STATUS_INVALID_ARGUMENT` when it does not fit the model).
    pub load_adapter: Option<MqLoadAdapterFn>,
    /// Optional (generators), added in 2.2: unloads an adapter; live sequences using
    /// it keep it until they end.
    pub unload_adapter: Option<MqUnloadAdapterFn>,
    /// Optional (generators), added in 2.2: the KV cache's use and the live sequences.
    pub generator_state: Option<MqGeneratorStateFn>,
}

/// Signature of the entry symbol: takes the host's major and minor version.
pub type MqEntryFn = unsafe extern "C" fn(host_major: u32, host_minor: u32) -> *const MqPluginApi;
