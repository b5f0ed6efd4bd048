//! The safe side a Rust plugin author writes against.
//!
//! Implement [`Plugin`] for your model type and call [`export_plugin!`](crate::export_plugin)
//! once in the `cdylib`. The macro generates the entry symbol, which hands the host a
//! table of `extern "C"` shims that validate pointers, convert tensors to safe views,
//! and catch every panic, turning it into `MQ_STATUS_INTERNAL` with the panic message
//! as the thread's last error. [`parse_options`] reads a plugin's JSON options.

use crate::abi::*;
use crate::types::{
    AdapterInfo, DType, Finish, GeneratorState, ModelInfo, PluginKind, SamplingParams,
    SequenceStart, SequenceStarted, Status, StepOutput, TensorSpec,
};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// A failed plugin call: a status class and a message for the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    /// The status class.
    pub status: Status,
    /// What went wrong, for humans.
    pub message: String,
}

impl PluginError {
    /// A failure of the given class.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    /// The caller's input is wrong.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Status::InvalidArgument, message)
    }
    /// A needed file does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Status::NotFound, message)
    }
    /// A failure inside the plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Status::Internal, message)
    }
    /// The call is not implemented.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Status::Unimplemented, message)
    }

    /// A model that could not be loaded: `NOT_FOUND` when a file is missing, otherwise
    /// `INVALID_ARGUMENT` (a bad directory or option), with the whole error chain.
    pub fn load_failure(e: &anyhow::Error) -> Self {
        let missing = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        });
        let status = if missing {
            Status::NotFound
        } else {
            Status::InvalidArgument
        };
        Self::new(status, format!("{e:#}"))
    }

    /// A failed inference: `RESOURCE_EXHAUSTED` when `out_of_memory` recognises a cause
    /// (the caller may retry smaller), otherwise `INTERNAL`.
    pub fn inference_failure(
        e: &anyhow::Error,
        out_of_memory: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
    ) -> Self {
        let status = if e.chain().any(out_of_memory) {
            Status::ResourceExhausted
        } else {
            Status::Internal
        };
        Self::new(status, format!("{e:#}"))
    }
}

/// Token ids of one text after truncation, and its length before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Ids fed to the model (at most the requested maximum).
    pub ids: Vec<u32>,
    /// How many tokens the text had before truncation.
    pub untruncated_len: usize,
}

/// A borrowed read-only tensor handed to [`Plugin::embed`].
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    dtype: DType,
    shape: &'a [u64],
    bytes: &'a [u8],
}

/// A borrowed output tensor for [`Plugin::embed`] to fill.
#[derive(Debug)]
pub struct TensorMut<'a> {
    /// Element type (the host asks for F32 embeddings).
    pub dtype: DType,
    /// Extent of each dimension.
    pub shape: &'a [u64],
    /// The output values, `product(shape)` of them.
    pub values: &'a mut [f32],
}

impl<'a> Tensor<'a> {
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Extent of each dimension.
    pub fn shape(&self) -> &'a [u64] {
        self.shape
    }
    /// The elements as `u32`, or an error naming `what` if the dtype differs.
    pub fn as_u32(&self, what: &str) -> Result<&'a [u32], PluginError> {
        self.typed(DType::U32, what)
    }
    /// The elements as `f32`, or an error naming `what` if the dtype differs.
    pub fn as_f32(&self, what: &str) -> Result<&'a [f32], PluginError> {
        self.typed(DType::F32, what)
    }
    /// The raw bytes (for U8 tensors such as encoded images).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn typed<T: Copy>(&self, want: DType, what: &str) -> Result<&'a [T], PluginError> {
        if self.dtype != want {
            return Err(PluginError::invalid_argument(format!(
                "{what}: expected {want:?} tensor, got {:?}",
                self.dtype
            )));
        }
        let (head, body, tail) = unsafe { self.bytes.align_to::<T>() };
        if !head.is_empty() || !tail.is_empty() {
            return Err(PluginError::invalid_argument(format!(
                "{what}: misaligned tensor"
            )));
        }
        Ok(body)
    }
}

/// A model plugin. One value of the implementing type is one loaded model instance.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// Plugin name, unique among plugins (e.g. `bert-text`).
    const NAME: &'static str;
    /// Plugin version.
    const VERSION: &'static str;
    /// What the plugin does.
    const KIND: PluginKind;

    /// Whether this plugin can load the model directory (checked by file layout).
    fn accepts(model_dir: &Path) -> bool;
    /// Loads a model directory; `config_json` is a JSON object of options or empty.
    fn create(model_dir: &Path, config_json: &str) -> Result<Self, PluginError>;
    /// Describes the loaded model.
    fn info(&self) -> ModelInfo;
    /// Tokenizes one text, keeping at most `max_tokens` ids (text encoders).
    fn tokenize(&self, _text: &str, _max_tokens: usize) -> Result<Tokens, PluginError> {
        Err(PluginError::unimplemented(format!(
            "plugin {} does not tokenize text",
            Self::NAME
        )))
    }
    /// Embeds one batch into `output` (see the ABI's `embed` for the input layout).
    fn embed(&self, inputs: &[Tensor<'_>], output: TensorMut<'_>) -> Result<(), PluginError>;
    /// Whether the plugin implements [`Plugin::token_states`]; when false the table's
    /// `token_states` is null, so the host reports the capability as missing.
    const HAS_TOKEN_STATES: bool = false;
    /// Writes every token's hidden state after `layer` (0 = the embeddings' output) for
    /// a ragged batch laid out as `embed`'s into `output`, `[tokens, token_state_dim]`
    /// (text encoders; see the ABI's `token_states`).
    fn token_states(
        &self,
        _inputs: &[Tensor<'_>],
        _layer: u32,
        _output: TensorMut<'_>,
    ) -> Result<(), PluginError> {
        Err(PluginError::unimplemented(format!(
            "plugin {} does not return per-token hidden states",
            Self::NAME
        )))
    }

    /// Whether the plugin implements the generator calls below; when false their
    /// table entries are null.
    const IS_GENERATOR: bool = false;
    /// Renders chat messages (the ABI's JSON form) with the model's chat template and
    /// its generation prompt.
    fn apply_chat_template(&self, _messages_json: &str) -> Result<String, PluginError> {
        Err(not_a_generator::<Self>())
    }
    /// Admits a sequence (see the ABI's `start_sequence`).
    fn start_sequence(&self, _start: SequenceStart<'_>) -> Result<SequenceStarted, PluginError> {
        Err(not_a_generator::<Self>())
    }
    /// One forward pass over the listed sequences within `token_budget` tokens (0: no
    /// limit); one output per listed sequence, in order.
    fn step(&self, _ids: &[u64], _token_budget: usize) -> Result<Vec<StepOutput>, PluginError> {
        Err(not_a_generator::<Self>())
    }
    /// Ends a live sequence, freeing its blocks.
    fn cancel_sequence(&self, _id: u64) -> Result<(), PluginError> {
        Err(not_a_generator::<Self>())
    }
    /// Loads a PEFT LoRA adapter directory under `name`.
    fn load_adapter(&self, _name: &str, _dir: &Path) -> Result<AdapterInfo, PluginError> {
        Err(not_a_generator::<Self>())
    }
    /// Unloads an adapter.
    fn unload_adapter(&self, _name: &str) -> Result<(), PluginError> {
        Err(not_a_generator::<Self>())
    }
    /// The KV cache's use and the live sequences.
    fn generator_state(&self) -> Result<GeneratorState, PluginError> {
        Err(not_a_generator::<Self>())
    }
}

fn not_a_generator<P: Plugin>() -> PluginError {
    PluginError::unimplemented(format!("plugin {} does not generate", P::NAME))
}

/// Parses a plugin's JSON options: an empty string gives `T::default()`, anything else
/// must be a JSON object of `T`'s fields (derive `Deserialize` with
/// `#[serde(deny_unknown_fields)]` to refuse unknown keys). Errors are
/// `INVALID_ARGUMENT`, `plugin config: ...`.
pub fn parse_options<T: serde::de::DeserializeOwned + Default>(
    config_json: &str,
) -> Result<T, PluginError> {
    if config_json.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(config_json)
        .map_err(|e| PluginError::invalid_argument(format!("plugin config: {e}")))
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `body`, turning errors and panics into a status code and the thread's last error.
fn guard(body: impl FnOnce() -> Result<(), PluginError>) -> MqStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MQ_STATUS_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status.code()
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("plugin panicked: {what}"));
            MQ_STATUS_INTERNAL
        }
    }
}

/// Reads a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` must be null or point to a NUL-terminated string.
unsafe fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, PluginError> {
    if ptr.is_null() {
        return Err(PluginError::invalid_argument(format!("{what} is null")));
    }
    CStr::from_ptr(ptr)
        .to_str()
        .map_err(|_| PluginError::invalid_argument(format!("{what} is not UTF-8")))
}

fn dims(shape: &[u64; MQ_MAX_DIMS], ndim: u32) -> Result<&[u64], PluginError> {
    shape
        .get(..ndim as usize)
        .ok_or_else(|| PluginError::invalid_argument(format!("tensor with {ndim} dimensions")))
}

fn element_count(shape: &[u64]) -> Result<usize, PluginError> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .ok_or_else(|| PluginError::invalid_argument("tensor size overflows"))
}

/// Builds safe views of the host's tensors.
///
/// # Safety
/// The pointers must describe valid tensors as the ABI specifies.
unsafe fn tensor_args<'a>(
    inputs: *const MqTensor,
    n_inputs: usize,
    output: *mut MqTensorMut,
) -> Result<(Vec<Tensor<'a>>, TensorMut<'a>), PluginError> {
    if (inputs.is_null() && n_inputs > 0) || output.is_null() {
        return Err(PluginError::invalid_argument("null tensor pointer"));
    }
    let raw_inputs: &[MqTensor] = if n_inputs == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(inputs, n_inputs)
    };
    let mut views = Vec::with_capacity(n_inputs);
    for (i, t) in raw_inputs.iter().enumerate() {
        let dtype = DType::from_code(t.dtype)
            .ok_or_else(|| PluginError::invalid_argument(format!("input {i}: unknown dtype")))?;
        let shape = dims(&t.shape, t.ndim)?;
        let len = element_count(shape)? * dtype.size();
        let bytes = if len == 0 {
            &[][..]
        } else if t.data.is_null() {
            return Err(PluginError::invalid_argument(format!(
                "input {i}: null data"
            )));
        } else {
            std::slice::from_raw_parts(t.data as *const u8, len)
        };
        views.push(Tensor {
            dtype,
            shape,
            bytes,
        });
    }
    let out = &*output;
    if DType::from_code(out.dtype) != Some(DType::F32) {
        return Err(PluginError::invalid_argument(
            "output must be an F32 tensor",
        ));
    }
    let shape = dims(&out.shape, out.ndim)?;
    let len = element_count(shape)?;
    let values = if len == 0 {
        &mut [][..]
    } else if out.data.is_null() {
        return Err(PluginError::invalid_argument("output: null data"));
    } else {
        std::slice::from_raw_parts_mut(out.data as *mut f32, len)
    };
    Ok((
        views,
        TensorMut {
            dtype: DType::F32,
            shape,
            values,
        },
    ))
}

/// A plugin instance as the host holds it: the plugin's value and its model info in
/// ABI form, which `model_info` hands out and which lives as long as the instance.
struct Hosted<P> {
    plugin: P,
    info: MqModelInfo,
    /// What the last generator call handed out, valid until the next one.
    generator_out: Mutex<GeneratorOutput>,
    // Own the memory `info` points into.
    _inputs: Vec<MqTensorDesc>,
    _outputs: Vec<MqTensorDesc>,
    _names: Vec<CString>,
}

impl<P: Plugin> Hosted<P> {
    fn new(plugin: P) -> Self {
        let info = plugin.info();
        let mut names = Vec::new();
        let mut descriptors = |specs: &[TensorSpec]| -> Vec<MqTensorDesc> {
            specs
                .iter()
                .map(|spec| {
                    let name = CString::new(spec.name.replace('\0', " ")).unwrap_or_default();
                    let desc = MqTensorDesc {
                        name: name.as_ptr(),
                        dtype: spec.dtype.code(),
                        width: spec.width,
                    };
                    names.push(name);
                    desc
                })
                .collect()
        };
        let inputs = descriptors(&info.inputs);
        let outputs = descriptors(&info.outputs);
        Self {
            info: MqModelInfo {
                output_dim: info.output_dim,
                max_input_tokens: info.max_input_tokens,
                inputs: inputs.as_ptr(),
                n_inputs: inputs.len(),
                outputs: outputs.as_ptr(),
                n_outputs: outputs.len(),
                token_state_dim: info.token_state_dim,
                token_state_layers: info.token_state_layers,
                max_context_tokens: info.max_context_tokens,
                kv_block_size: info.kv_block_size,
                kv_blocks: info.kv_blocks,
                max_images: info.max_images,
            },
            generator_out: Mutex::new(GeneratorOutput::default()),
            plugin,
            _inputs: inputs,
            _outputs: outputs,
            _names: names,
        }
    }
}

/// The plugin behind an instance pointer.
///
/// # Safety
/// `instance` must be null or come from `create::<P>` and not be destroyed.
unsafe fn hosted<'a, P: Plugin>(instance: *const MqInstance) -> Result<&'a Hosted<P>, PluginError> {
    (instance as *const Hosted<P>)
        .as_ref()
        .ok_or_else(|| PluginError::invalid_argument("null instance"))
}

unsafe extern "C" fn accepts<P: Plugin>(model_dir: *const c_char) -> u32 {
    let mut ok = false;
    guard(|| {
        ok = P::accepts(Path::new(str_arg(model_dir, "model_dir")?));
        Ok(())
    });
    ok as u32
}

unsafe extern "C" fn create<P: Plugin>(
    model_dir: *const c_char,
    config_json: *const c_char,
    out: *mut *mut MqInstance,
) -> MqStatus {
    guard(|| {
        if out.is_null() {
            return Err(PluginError::invalid_argument("null output pointer"));
        }
        let dir = str_arg(model_dir, "model_dir")?;
        let config = if config_json.is_null() {
            ""
        } else {
            str_arg(config_json, "config_json")?
        };
        let instance = Box::new(Hosted::new(P::create(Path::new(dir), config)?));
        *out = Box::into_raw(instance) as *mut MqInstance;
        Ok(())
    })
}

unsafe extern "C" fn destroy<P: Plugin>(instance: *mut MqInstance) {
    guard(|| {
        if !instance.is_null() {
            drop(Box::from_raw(instance as *mut Hosted<P>));
        }
        Ok(())
    });
}

unsafe extern "C" fn model_info<P: Plugin>(
    instance: *const MqInstance,
    out: *mut MqModelInfo,
) -> MqStatus {
    guard(|| {
        let hosted = hosted::<P>(instance)?;
        let out = out
            .as_mut()
            .ok_or_else(|| PluginError::invalid_argument("null output pointer"))?;
        *out = hosted.info;
        Ok(())
    })
}

unsafe extern "C" fn tokenize<P: Plugin>(
    instance: *const MqInstance,
    text: *const u8,
    text_len: usize,
    max_tokens: u32,
    out_ids: *mut u32,
    out_len: *mut usize,
    untruncated_len: *mut usize,
) -> MqStatus {
    guard(|| {
        let p = &hosted::<P>(instance)?.plugin;
        if (text.is_null() && text_len > 0)
            || out_ids.is_null()
            || out_len.is_null()
            || untruncated_len.is_null()
        {
            return Err(PluginError::invalid_argument("null pointer argument"));
        }
        let bytes = if text_len == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(text, text_len)
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| PluginError::invalid_argument("text is not UTF-8"))?;
        let tokens = p.tokenize(text, max_tokens as usize)?;
        if tokens.ids.len() > max_tokens as usize {
            return Err(PluginError::internal("tokenizer exceeded max_tokens"));
        }
        std::ptr::copy_nonoverlapping(tokens.ids.as_ptr(), out_ids, tokens.ids.len());
        *out_len = tokens.ids.len();
        *untruncated_len = tokens.untruncated_len;
        Ok(())
    })
}

/// Runs `call` on the plugin with safe views of the host's tensors.
///
/// # Safety
/// As [`hosted`] and [`tensor_args`].
unsafe fn with_tensors<P: Plugin>(
    instance: *const MqInstance,
    (inputs, n_inputs): (*const MqTensor, usize),
    output: *mut MqTensorMut,
    call: impl FnOnce(&P, &[Tensor<'_>], TensorMut<'_>) -> Result<(), PluginError>,
) -> MqStatus {
    guard(|| {
        let p = &hosted::<P>(instance)?.plugin;
        let (inputs, output) = tensor_args(inputs, n_inputs, output)?;
        call(p, &inputs, output)
    })
}

unsafe extern "C" fn embed<P: Plugin>(
    instance: *const MqInstance,
    inputs: *const MqTensor,
    n_inputs: usize,
    output: *mut MqTensorMut,
) -> MqStatus {
    with_tensors(instance, (inputs, n_inputs), output, P::embed)
}

unsafe extern "C" fn token_states<P: Plugin>(
    instance: *const MqInstance,
    inputs: *const MqTensor,
    n_inputs: usize,
    layer: u32,
    output: *mut MqTensorMut,
) -> MqStatus {
    with_tensors(instance, (inputs, n_inputs), output, |p: &P, i, o| {
        p.token_states(i, layer, o)
    })
}

/// The memory behind the pointers of the last `step` or `load_adapter` results.
#[derive(Default)]
struct GeneratorOutput {
    outputs: Vec<StepOutput>,
    results: Vec<MqStepResult>,
    target_modules: CString,
}

// SAFETY: the raw pointers in `results` point into `outputs`, owned alongside.
unsafe impl Send for GeneratorOutput {}

/// A slice from an ABI pointer and length (empty when the length is 0).
///
/// # Safety
/// `ptr` must point to `len` values when `len > 0`.
unsafe fn slice_arg<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], PluginError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(PluginError::invalid_argument(format!("{what} is null")));
    }
    Ok(std::slice::from_raw_parts(ptr, len))
}

/// The safe form of a `start_sequence` argument.
///
/// # Safety
/// The pointers in `start` must be valid as the ABI specifies.
unsafe fn sequence_start<'a>(start: &'a MqSequenceStart) -> Result<SequenceStart<'a>, PluginError> {
    let token_ids = slice_arg(start.token_ids, start.n_token_ids, "token_ids")?;
    let mut images = Vec::with_capacity(start.n_images);
    if start.n_images > 0 {
        let offsets = slice_arg(start.image_offsets, start.n_images + 1, "image_offsets")?;
        let end = offsets[start.n_images] as usize;
        let bytes = slice_arg(start.images, end, "images")?;
        for w in offsets.windows(2) {
            let (a, b) = (w[0] as usize, w[1] as usize);
            if a > b || b > end {
                return Err(PluginError::invalid_argument("image offsets out of order"));
            }
            images.push(&bytes[a..b]);
        }
    }
    let adapter = if start.adapter.is_null() {
        None
    } else {
        Some(str_arg(start.adapter, "adapter")?)
    };
    let p = &start.params;
    if p.top_logprobs > MQ_MAX_TOP_LOGPROBS {
        return Err(PluginError::invalid_argument(format!(
            "top_logprobs is {}, at most {MQ_MAX_TOP_LOGPROBS}",
            p.top_logprobs
        )));
    }
    Ok(SequenceStart {
        token_ids,
        images,
        adapter,
        params: SamplingParams {
            max_new_tokens: p.max_new_tokens,
            min_new_tokens: p.min_new_tokens,
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            repetition_penalty: p.repetition_penalty,
            seed: p.seed,
            stop_token_ids: slice_arg(p.stop_token_ids, p.n_stop_token_ids, "stop_token_ids")?
                .to_vec(),
            top_logprobs: p.top_logprobs,
        },
    })
}

unsafe extern "C" fn apply_chat_template<P: Plugin>(
    instance: *const MqInstance,
    messages_json: *const c_char,
    out: *mut u8,
    capacity: usize,
    out_len: *mut usize,
) -> MqStatus {
    guard(|| {
        let p = &hosted::<P>(instance)?.plugin;
        if out_len.is_null() || (out.is_null() && capacity > 0) {
            return Err(PluginError::invalid_argument("null output pointer"));
        }
        let text = p.apply_chat_template(str_arg(messages_json, "messages_json")?)?;
        std::ptr::copy_nonoverlapping(text.as_ptr(), out, text.len().min(capacity));
        *out_len = text.len();
        Ok(())
    })
}

unsafe extern "C" fn start_sequence<P: Plugin>(
    instance: *const MqInstance,
    start: *const MqSequenceStart,
    out: *mut MqSequenceStarted,
) -> MqStatus {
    guard(|| {
        let p = &hosted::<P>(instance)?.plugin;
        let (Some(start), false) = (start.as_ref(), out.is_null()) else {
            return Err(PluginError::invalid_argument("null pointer argument"));
        };
        let started = p.start_sequence(sequence_start(start)?)?;
        *out = MqSequenceStarted {
            id: started.id,
            prompt_tokens: started.prompt_tokens,
            image_tokens: started.image_tokens,
        };
        Ok(())
    })
}

unsafe extern "C" fn step<P: Plugin>(
    instance: *const MqInstance,
    ids: *const MqSequenceId,
    n_ids: usize,
    token_budget: u32,
    results: *mut *const MqStepResult,
    n_results: *mut usize,
) -> MqStatus {
    guard(|| {
        let hosted = hosted::<P>(instance)?;
        if results.is_null() || n_results.is_null() {
            return Err(PluginError::invalid_argument("null output pointer"));
        }
        let ids = slice_arg(ids, n_ids, "ids")?;
        let outputs = hosted.plugin.step(ids, token_budget as usize)?;
        let mut held = hosted
            .generator_out
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        held.outputs = outputs;
        let results_now: Vec<MqStepResult> = held
            .outputs
            .iter()
            .map(|o| {
                let token = o.token.as_ref();
                let top = token.map_or(&[][..], |t| &t.top_logprobs[..]);
                MqStepResult {
                    id: o.id,
                    has_token: token.is_some() as u32,
                    token_id: token.map_or(0, |t| t.token_id),
                    logprob: token.map_or(0.0, |t| t.logprob),
                    finish: Finish::code(o.finish),
                    text: o.text.as_ptr(),
                    text_len: o.text.len(),
                    top_logprobs: top.as_ptr(),
                    n_top_logprobs: top.len(),
                }
            })
            .collect();
        held.results = results_now;
        *results = held.results.as_ptr();
        *n_results = held.results.len();
        Ok(())
    })
}

unsafe extern "C" fn cancel_sequence<P: Plugin>(
    instance: *const MqInstance,
    id: MqSequenceId,
) -> MqStatus {
    guard(|| hosted::<P>(instance)?.plugin.cancel_sequence(id))
}

unsafe extern "C" fn load_adapter<P: Plugin>(
    instance: *const MqInstance,
    name: *const c_char,
    dir: *const c_char,
    out: *mut MqAdapterInfo,
) -> MqStatus {
    guard(|| {
        let hosted = hosted::<P>(instance)?;
        let out = out
            .as_mut()
            .ok_or_else(|| PluginError::invalid_argument("null output pointer"))?;
        let info = hosted
            .plugin
            .load_adapter(str_arg(name, "name")?, Path::new(str_arg(dir, "dir")?))?;
        let mut held = hosted
            .generator_out
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        held.target_modules =
            CString::new(info.target_modules.join(",").replace('\0', " ")).unwrap_or_default();
        *out = MqAdapterInfo {
            rank: info.rank,
            alpha: info.alpha,
            use_rslora: info.use_rslora as u32,
            target_modules: held.target_modules.as_ptr(),
        };
        Ok(())
    })
}

unsafe extern "C" fn unload_adapter<P: Plugin>(
    instance: *const MqInstance,
    name: *const c_char,
) -> MqStatus {
    guard(|| {
        hosted::<P>(instance)?
            .plugin
            .unload_adapter(str_arg(name, "name")?)
    })
}

unsafe extern "C" fn generator_state<P: Plugin>(
    instance: *const MqInstance,
    out: *mut MqGeneratorState,
) -> MqStatus {
    guard(|| {
        let p = &hosted::<P>(instance)?.plugin;
        let out = out
            .as_mut()
            .ok_or_else(|| PluginError::invalid_argument("null output pointer"))?;
        let state = p.generator_state()?;
        *out = MqGeneratorState {
            kv_blocks: state.kv_blocks,
            kv_blocks_free: state.kv_blocks_free,
            sequences: state.sequences,
        };
        Ok(())
    })
}

unsafe extern "C" fn last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The table a plugin exports, with the strings it points to.
#[doc(hidden)]
pub struct ExportedApi {
    table: MqPluginApi,
    _name: CString,
    _version: CString,
}

// SAFETY: the table holds only function pointers and pointers to the strings beside it,
// all immutable.
unsafe impl Sync for ExportedApi {}
unsafe impl Send for ExportedApi {}

/// Whether a plugin built with this SDK works with a host of the given version: same
/// major, a minor at least the SDK's.
pub fn host_supported(host_major: u32, host_minor: u32) -> bool {
    host_major == MQ_ABI_VERSION_MAJOR && host_minor >= MQ_ABI_VERSION_MINOR
}

/// The body of the entry symbol [`export_plugin!`](crate::export_plugin) generates:
/// null for a host this SDK cannot serve, else `P`'s table (built once into `cell`).
#[doc(hidden)]
pub fn entry<P: Plugin>(
    cell: &'static OnceLock<ExportedApi>,
    host_major: u32,
    host_minor: u32,
) -> *const MqPluginApi {
    if !host_supported(host_major, host_minor) {
        return std::ptr::null();
    }
    let api = cell.get_or_init(|| {
        let name = CString::new(P::NAME).unwrap_or_default();
        let version = CString::new(P::VERSION).unwrap_or_default();
        ExportedApi {
            table: MqPluginApi {
                struct_size: std::mem::size_of::<MqPluginApi>() as u32,
                abi_major: MQ_ABI_VERSION_MAJOR,
                abi_minor: MQ_ABI_VERSION_MINOR,
                kind: P::KIND.code(),
                name: name.as_ptr(),
                version: version.as_ptr(),
                accepts: accepts::<P>,
                create: create::<P>,
                destroy: destroy::<P>,
                model_info: model_info::<P>,
                tokenize: tokenize::<P>,
                embed: embed::<P>,
                last_error,
                token_states: P::HAS_TOKEN_STATES.then_some(token_states::<P> as MqTokenStatesFn),
                apply_chat_template: P::IS_GENERATOR
                    .then_some(apply_chat_template::<P> as MqApplyChatTemplateFn),
                start_sequence: P::IS_GENERATOR.then_some(start_sequence::<P> as MqStartSequenceFn),
                step: P::IS_GENERATOR.then_some(step::<P> as MqStepFn),
                cancel_sequence: P::IS_GENERATOR
                    .then_some(cancel_sequence::<P> as MqCancelSequenceFn),
                load_adapter: P::IS_GENERATOR.then_some(load_adapter::<P> as MqLoadAdapterFn),
                unload_adapter: P::IS_GENERATOR.then_some(unload_adapter::<P> as MqUnloadAdapterFn),
                generator_state: P::IS_GENERATOR
                    .then_some(generator_state::<P> as MqGeneratorStateFn),
            },
            _name: name,
            _version: version,
        }
    });
    &api.table
}

/// Generates the entry symbol `marquee_plugin_entry` for a type implementing
/// [`Plugin`]. Call it once, at the root of a `cdylib` crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub mod __marquee_plugin_exports {
            use super::*;

            static API: std::sync::OnceLock<$crate::sdk::ExportedApi> = std::sync::OnceLock::new();

            /// The plugin's entry symbol: the handshake of the Marquee plugin ABI.
            #[no_mangle]
            pub extern "C" fn marquee_plugin_entry(
                host_major: u32,
                host_minor: u32,
            ) -> *const $crate::abi::MqPluginApi {
                $crate::sdk::entry::<$plugin>(&API, host_major, host_minor)
            }
        }
    };
}
