//! The host side: opening plugin libraries with `libloading`, the ABI handshake, and
//! safe wrappers around instances. Every failure is an [`HostError`], never a panic.

use crate::abi::*;
use crate::sdk::Tokens;
use crate::types::{
    AdapterInfo, DType, Finish, GeneratedToken, GeneratorState, ModelInfo, PluginKind,
    SequenceStart, SequenceStarted, Status, StepOutput, TensorSpec,
};
use libloading::Library;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Why a plugin could not be loaded or a call into it failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The file is missing or not a loadable shared library.
    #[error("cannot load plugin {path}: {reason}")]
    Open {
        /// The library's path.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// The library lacks the entry symbol.
    #[error("{path} is not a Marquee plugin: it exports no `{MQ_ENTRY_SYMBOL}` symbol")]
    MissingEntry {
        /// The library's path.
        path: PathBuf,
    },
    /// The plugin was built for another ABI version, or its table is malformed.
    #[error("plugin {path} is incompatible: {reason}")]
    Incompatible {
        /// The library's path.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// A call into the plugin failed.
    #[error("plugin {plugin}: {message}")]
    Call {
        /// Plugin name.
        plugin: String,
        /// Status class reported by the plugin.
        status: Status,
        /// The plugin's message.
        message: String,
    },
}

impl HostError {
    /// The status class of a failed call; load failures count as `Internal`.
    pub fn status(&self) -> Status {
        match self {
            HostError::Call { status, .. } => *status,
            _ => Status::Internal,
        }
    }
}

/// An opened plugin library that passed the handshake.
pub struct PluginLibrary {
    /// The plugin's table, copied up to its `struct_size`: later functions are `None`.
    api: MqPluginApi,
    abi_version: (u32, u32),
    name: String,
    version: String,
    kind: PluginKind,
    path: PathBuf,
    // Declared last: dropped after everything that points into it.
    _library: Library,
}

// SAFETY: the ABI table is immutable and its functions follow the threading contract
// documented on `MqPluginApi`; `PluginInstance` serialises `embed` and `token_states`.
unsafe impl Send for PluginLibrary {}
unsafe impl Sync for PluginLibrary {}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish()
    }
}

fn c_string(ptr: *const std::ffi::c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null strings from the plugin are NUL-terminated by the ABI contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .ok()
        .map(str::to_string)
}

/// Size of an ABI 2.0 table: every required function, none of the optional ones.
const REQUIRED_TABLE_SIZE: usize = std::mem::offset_of!(MqPluginApi, token_states);

/// The required functions of the table, by name and offset.
const REQUIRED_FUNCTIONS: [(&str, usize); 7] = [
    ("accepts", std::mem::offset_of!(MqPluginApi, accepts)),
    ("create", std::mem::offset_of!(MqPluginApi, create)),
    ("destroy", std::mem::offset_of!(MqPluginApi, destroy)),
    ("model_info", std::mem::offset_of!(MqPluginApi, model_info)),
    ("tokenize", std::mem::offset_of!(MqPluginApi, tokenize)),
    ("embed", std::mem::offset_of!(MqPluginApi, embed)),
    ("last_error", std::mem::offset_of!(MqPluginApi, last_error)),
];

/// Why a plugin of ABI `major.minor` cannot run on this host, `None` when it can: the
/// same major and a minor no newer than the host's.
pub fn abi_mismatch(major: u32, minor: u32) -> Option<String> {
    let host = format!("{MQ_ABI_VERSION_MAJOR}.{MQ_ABI_VERSION_MINOR}");
    if major != MQ_ABI_VERSION_MAJOR {
        Some(format!(
            "it was built for ABI version {major}.{minor} and the host speaks {host}: \
             a plugin needs a host of the same major version"
        ))
    } else if minor > MQ_ABI_VERSION_MINOR {
        Some(format!(
            "it was built for ABI version {major}.{minor}, newer than the host's {host}: \
             a plugin needs a host of its major version and at least its minor version"
        ))
    } else {
        None
    }
}

/// Copies a plugin's table after checking its version and size, leaving every function
/// at or past its `struct_size` absent (`None`).
///
/// # Safety
/// `table` must point to a table that starts with `struct_size`, `abi_major` and
/// `abi_minor` and holds `struct_size` readable bytes.
unsafe fn copy_table(table: *const MqPluginApi) -> Result<MqPluginApi, String> {
    let [struct_size, major, minor] = std::ptr::read(table.cast::<[u32; 3]>());
    if let Some(reason) = abi_mismatch(major, minor) {
        return Err(reason);
    }
    let size = struct_size as usize;
    if size < REQUIRED_TABLE_SIZE {
        return Err(format!(
            "its function table is {size} bytes, smaller than the {REQUIRED_TABLE_SIZE} \
             bytes every ABI {MQ_ABI_VERSION_MAJOR}.x table has"
        ));
    }
    let mut copy = std::mem::MaybeUninit::<MqPluginApi>::zeroed();
    let copied = size.min(std::mem::size_of::<MqPluginApi>());
    std::ptr::copy_nonoverlapping(table.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), copied);
    let bytes = copy.as_ptr().cast::<u8>();
    for (name, offset) in REQUIRED_FUNCTIONS {
        if std::ptr::read_unaligned(bytes.add(offset).cast::<usize>()) == 0 {
            return Err(format!("its required function `{name}` is null"));
        }
    }
    // SAFETY: required functions are non-null, optional ones are null or copied from
    // the plugin, and every other field is plain data or a raw pointer.
    Ok(copy.assume_init())
}

impl PluginLibrary {
    /// Opens a shared library and performs the ABI handshake: the host passes its
    /// version to the entry symbol and refuses a table of another major or a newer minor.
    pub fn open(path: &Path) -> Result<Arc<Self>, HostError> {
        let open_err = |reason: String| HostError::Open {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(open_err("no such file".into()));
        }
        // SAFETY: loading a library runs its initialisers; plugins are trusted code
        // from the operator's plugin directory.
        let library = unsafe { Library::new(path) }.map_err(|e| open_err(e.to_string()))?;
        // SAFETY: the symbol's type is fixed by the ABI.
        let entry: MqEntryFn = unsafe {
            *library
                .get::<MqEntryFn>(MQ_ENTRY_SYMBOL.as_bytes())
                .map_err(|_| HostError::MissingEntry {
                    path: path.to_path_buf(),
                })?
        };
        let incompatible = |reason: String| HostError::Incompatible {
            path: path.to_path_buf(),
            reason,
        };
        // SAFETY: the entry takes the host's ABI version and returns a static table or null.
        let table = unsafe { entry(MQ_ABI_VERSION_MAJOR, MQ_ABI_VERSION_MINOR) };
        if table.is_null() {
            return Err(incompatible(format!(
                "it does not support ABI version {MQ_ABI_VERSION_MAJOR}.{MQ_ABI_VERSION_MINOR}, \
                 the host's"
            )));
        }
        // SAFETY: a non-null table follows the ABI's layout rule.
        let api = unsafe { copy_table(table) }.map_err(incompatible)?;
        let kind = PluginKind::from_code(api.kind)
            .ok_or_else(|| incompatible(format!("unknown plugin kind {}", api.kind)))?;
        let name = c_string(api.name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| incompatible("missing plugin name".into()))?;
        let version = c_string(api.version).unwrap_or_default();
        Ok(Arc::new(Self {
            abi_version: (api.abi_major, api.abi_minor),
            api,
            name,
            version,
            kind,
            path: path.to_path_buf(),
            _library: library,
        }))
    }

    /// Plugin name from the handshake.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Plugin version from the handshake.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// What the plugin does.
    pub fn kind(&self) -> PluginKind {
        self.kind
    }
    /// Where the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The ABI version `(major, minor)` the plugin was built with.
    pub fn abi_version(&self) -> (u32, u32) {
        self.abi_version
    }

    fn error(&self, status: Status, message: String) -> HostError {
        HostError::Call {
            plugin: self.name.clone(),
            status,
            message,
        }
    }

    fn last_error(&self, status: Status) -> HostError {
        // SAFETY: `last_error` never returns null per the ABI; checked anyway.
        let message = c_string(unsafe { (self.api.last_error)() })
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "unknown error".into());
        self.error(status, message)
    }

    fn check(&self, code: MqStatus) -> Result<(), HostError> {
        match Status::from_code(code) {
            None => Ok(()),
            Some(status) => Err(self.last_error(status)),
        }
    }

    /// Whether the plugin can load this model directory.
    pub fn accepts(&self, model_dir: &Path) -> bool {
        let Ok(dir) = CString::new(model_dir.to_string_lossy().as_bytes()) else {
            return false;
        };
        // SAFETY: valid NUL-terminated string.
        unsafe { (self.api.accepts)(dir.as_ptr()) == 1 }
    }

    /// Loads a model directory as a new instance.
    pub fn create(
        self: &Arc<Self>,
        model_dir: &Path,
        config_json: &str,
    ) -> Result<PluginInstance, HostError> {
        let bad = |what: &str| {
            self.error(
                Status::InvalidArgument,
                format!("{what} contains a NUL byte"),
            )
        };
        let dir = CString::new(model_dir.to_string_lossy().as_bytes()).map_err(|_| bad("path"))?;
        let config = CString::new(config_json).map_err(|_| bad("config"))?;
        let mut raw: *mut MqInstance = std::ptr::null_mut();
        // SAFETY: valid strings and out-pointer.
        self.check(unsafe { (self.api.create)(dir.as_ptr(), config.as_ptr(), &mut raw) })?;
        let raw = NonNull::new(raw).ok_or_else(|| {
            self.error(
                Status::Internal,
                "create succeeded but returned no instance".into(),
            )
        })?;
        let mut instance = PluginInstance {
            library: Arc::clone(self),
            raw,
            info: ModelInfo::default(),
            call_lock: Mutex::new(()),
        };
        let mut info = MqModelInfo::default();
        // SAFETY: live instance and a zeroed out-struct, as the ABI asks.
        self.check(unsafe { (self.api.model_info)(raw.as_ptr(), &mut info) })?;
        // SAFETY: the descriptors live as long as the instance, which is alive.
        instance.info = unsafe { model_info(&info) }
            .map_err(|e| self.error(Status::Internal, format!("model info: {e}")))?;
        Ok(instance)
    }
}

/// The descriptors of an ABI array as owned specs.
///
/// # Safety
/// `descs` must be null with `n == 0`, or point to `n` descriptors.
unsafe fn tensor_specs(descs: *const MqTensorDesc, n: usize) -> Result<Vec<TensorSpec>, String> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if descs.is_null() {
        return Err(format!("{n} descriptors at a null pointer"));
    }
    std::slice::from_raw_parts(descs, n)
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name = c_string(d.name).ok_or_else(|| format!("descriptor {i} has no name"))?;
            let dtype = DType::from_code(d.dtype)
                .ok_or_else(|| format!("{name}: unknown dtype {}", d.dtype))?;
            Ok(TensorSpec {
                name,
                dtype,
                width: d.width,
            })
        })
        .collect()
}

/// The owned form of a plugin's model info.
///
/// # Safety
/// The descriptor pointers in `raw` must be valid as the ABI specifies.
unsafe fn model_info(raw: &MqModelInfo) -> Result<ModelInfo, String> {
    Ok(ModelInfo {
        output_dim: raw.output_dim,
        max_input_tokens: raw.max_input_tokens,
        inputs: tensor_specs(raw.inputs, raw.n_inputs)?,
        outputs: tensor_specs(raw.outputs, raw.n_outputs)?,
        token_state_dim: raw.token_state_dim,
        token_state_layers: raw.token_state_layers,
        max_context_tokens: raw.max_context_tokens,
        kv_block_size: raw.kv_block_size,
        kv_blocks: raw.kv_blocks,
        max_images: raw.max_images,
    })
}

/// A loaded model inside a plugin; destroyed on drop.
pub struct PluginInstance {
    library: Arc<PluginLibrary>,
    raw: NonNull<MqInstance>,
    info: ModelInfo,
    /// Serialises `embed` and `token_states`, and the generator calls, as the ABI's
    /// threading contract asks.
    call_lock: Mutex<()>,
}

// SAFETY: see `PluginLibrary`; `embed` and `token_states` are serialised by `call_lock`.
unsafe impl Send for PluginInstance {}
unsafe impl Sync for PluginInstance {}

/// An input tensor for [`PluginInstance::embed`].
pub struct InputTensor<'a> {
    /// Element type.
    pub dtype: DType,
    /// Extent of each dimension (at most `MQ_MAX_DIMS`).
    pub shape: &'a [u64],
    /// The elements' bytes.
    pub bytes: &'a [u8],
}

impl PluginInstance {
    /// What the model takes and returns: its named inputs and outputs with their widths
    /// (for a fusion model, [`ModelInfo::fusion_widths`] gives the text and image widths).
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    /// The library it lives in.
    pub fn library(&self) -> &Arc<PluginLibrary> {
        &self.library
    }

    /// Tokenizes one text, keeping at most `max_tokens` ids.
    pub fn tokenize(&self, text: &str, max_tokens: u32) -> Result<Tokens, HostError> {
        let mut ids = vec![0u32; max_tokens as usize];
        let (mut len, mut untruncated_len) = (0usize, 0usize);
        // SAFETY: `ids` has room for `max_tokens` ids; the text slice is valid.
        self.library.check(unsafe {
            (self.library.api.tokenize)(
                self.raw.as_ptr(),
                text.as_ptr(),
                text.len(),
                max_tokens,
                ids.as_mut_ptr(),
                &mut len,
                &mut untruncated_len,
            )
        })?;
        ids.truncate(len.min(max_tokens as usize));
        Ok(Tokens {
            ids,
            untruncated_len,
        })
    }

    fn invalid(&self, message: String) -> HostError {
        self.library.error(Status::InvalidArgument, message)
    }

    /// The ABI form of the inputs, checked against their shapes.
    fn raw_tensors(&self, inputs: &[InputTensor<'_>]) -> Result<Vec<MqTensor>, HostError> {
        inputs
            .iter()
            .map(|t| {
                if t.shape.len() > MQ_MAX_DIMS {
                    return Err(self.invalid(format!("tensor with {} dimensions", t.shape.len())));
                }
                let count: u64 = t.shape.iter().product();
                if count as usize * t.dtype.size() != t.bytes.len() {
                    return Err(self.invalid("tensor bytes do not match its shape".into()));
                }
                let mut shape = [0u64; MQ_MAX_DIMS];
                shape[..t.shape.len()].copy_from_slice(t.shape);
                Ok(MqTensor {
                    data: t.bytes.as_ptr().cast(),
                    shape,
                    ndim: t.shape.len() as u32,
                    dtype: t.dtype.code(),
                })
            })
            .collect()
    }

    /// Runs `call` with the inputs and an F32 output of `rows × cols`, one call at a
    /// time per instance, and returns the output.
    fn call_with_output(
        &self,
        inputs: &[InputTensor<'_>],
        [rows, cols]: [usize; 2],
        call: impl FnOnce(*const MqTensor, usize, *mut MqTensorMut) -> MqStatus,
    ) -> Result<Vec<f32>, HostError> {
        let raw_inputs = self.raw_tensors(inputs)?;
        let mut values = vec![0f32; rows * cols];
        let mut output = MqTensorMut {
            data: values.as_mut_ptr().cast(),
            shape: [rows as u64, cols as u64, 0, 0],
            ndim: 2,
            dtype: MQ_DTYPE_F32,
        };
        let _one_at_a_time = self.call_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.library
            .check(call(raw_inputs.as_ptr(), raw_inputs.len(), &mut output))?;
        Ok(values)
    }

    /// Runs `embed` on generic tensors, returning `rows × output_dim` floats.
    pub fn embed(&self, inputs: &[InputTensor<'_>], rows: usize) -> Result<Vec<f32>, HostError> {
        let embed = self.library.api.embed;
        let instance = self.raw.as_ptr();
        self.call_with_output(inputs, [rows, self.info.output_dim as usize], |i, n, o| {
            // SAFETY: live instance; tensors point into live buffers sized as their
            // shapes say.
            unsafe { embed(instance, i, n, o) }
        })
    }

    /// Embeds a ragged batch of token sequences (text encoders).
    pub fn embed_tokens(&self, ids: &[u32], offsets: &[u32]) -> Result<Vec<f32>, HostError> {
        with_token_inputs(ids, offsets, |inputs| {
            self.embed(inputs, offsets.len().saturating_sub(1))
        })
    }

    /// Every token's hidden state after `layer` (0 = the embeddings' output, `L` = the
    /// last layer, as transformers' `hidden_states[layer]`) for a ragged batch of token
    /// sequences: `ids.len() × token_state_dim` floats, row `t` for token `t`. Fails
    /// with `Unimplemented` when the plugin lacks the optional `token_states` call.
    pub fn token_states(
        &self,
        ids: &[u32],
        offsets: &[u32],
        layer: u32,
    ) -> Result<Vec<f32>, HostError> {
        let (major, minor) = self.library.abi_version;
        let Some(token_states) = self.library.api.token_states else {
            return Err(self.library.error(
                Status::Unimplemented,
                format!(
                    "it does not return per-token hidden states (it lacks the optional \
                     token_states call; plugin ABI {major}.{minor})"
                ),
            ));
        };
        let dim = self.info.token_state_dim as usize;
        if dim == 0 {
            return Err(self.library.error(
                Status::Internal,
                "it has token_states but reports a token state width of 0".into(),
            ));
        }
        let instance = self.raw.as_ptr();
        with_token_inputs(ids, offsets, |inputs| {
            self.call_with_output(inputs, [ids.len(), dim], |i, n, o| {
                // SAFETY: as in `embed`.
                unsafe { token_states(instance, i, n, layer, o) }
            })
        })
    }
}

/// The generator calls (ABI 2.2). Each fails with `Unimplemented` when the plugin lacks
/// the call; results are copied out before the next call can invalidate them.
impl PluginInstance {
    fn generator_call<F: Copy>(&self, f: Option<F>, what: &str) -> Result<F, HostError> {
        let (major, minor) = self.library.abi_version;
        f.ok_or_else(|| {
            self.library.error(
                Status::Unimplemented,
                format!("it does not generate (it lacks the optional {what} call; plugin ABI {major}.{minor})"),
            )
        })
    }

    fn c_arg(&self, value: &str, what: &str) -> Result<CString, HostError> {
        CString::new(value).map_err(|_| self.invalid(format!("{what} contains a NUL byte")))
    }

    /// Renders chat messages (a JSON array, see the ABI) with the model's chat template
    /// and its generation prompt.
    pub fn apply_chat_template(&self, messages_json: &str) -> Result<String, HostError> {
        let render =
            self.generator_call(self.library.api.apply_chat_template, "apply_chat_template")?;
        let messages = self.c_arg(messages_json, "messages")?;
        let mut buffer = vec![0u8; 4096];
        loop {
            let mut len = 0usize;
            // SAFETY: live instance, valid string, buffer of the given capacity.
            self.library.check(unsafe {
                render(
                    self.raw.as_ptr(),
                    messages.as_ptr(),
                    buffer.as_mut_ptr(),
                    buffer.len(),
                    &mut len,
                )
            })?;
            if len <= buffer.len() {
                buffer.truncate(len);
                return String::from_utf8(buffer).map_err(|_| {
                    self.library.error(
                        Status::Internal,
                        "the chat template gave invalid UTF-8".into(),
                    )
                });
            }
            buffer.resize(len, 0);
        }
    }

    /// Admits a sequence, reserving its KV-cache blocks.
    pub fn start_sequence(&self, start: &SequenceStart<'_>) -> Result<SequenceStarted, HostError> {
        let start_fn = self.generator_call(self.library.api.start_sequence, "start_sequence")?;
        let mut offsets = Vec::with_capacity(start.images.len() + 1);
        let mut bytes = Vec::with_capacity(start.images.iter().map(|i| i.len()).sum());
        offsets.push(0u32);
        for image in &start.images {
            bytes.extend_from_slice(image);
            offsets.push(
                u32::try_from(bytes.len())
                    .map_err(|_| self.invalid("the images exceed 4 GiB together".into()))?,
            );
        }
        let adapter = start
            .adapter
            .map(|a| self.c_arg(a, "adapter"))
            .transpose()?;
        let p = &start.params;
        let raw = MqSequenceStart {
            token_ids: start.token_ids.as_ptr(),
            n_token_ids: start.token_ids.len(),
            images: bytes.as_ptr(),
            image_offsets: if start.images.is_empty() {
                std::ptr::null()
            } else {
                offsets.as_ptr()
            },
            n_images: start.images.len(),
            adapter: adapter.as_ref().map_or(std::ptr::null(), |a| a.as_ptr()),
            params: MqSamplingParams {
                max_new_tokens: p.max_new_tokens,
                min_new_tokens: p.min_new_tokens,
                temperature: p.temperature,
                top_k: p.top_k,
                top_p: p.top_p,
                repetition_penalty: p.repetition_penalty,
                seed: p.seed,
                stop_token_ids: p.stop_token_ids.as_ptr(),
                n_stop_token_ids: p.stop_token_ids.len(),
                top_logprobs: p.top_logprobs,
            },
        };
        let mut out = MqSequenceStarted::default();
        let _one_at_a_time = self.call_lock.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: every pointer in `raw` points into buffers alive for the call.
        self.library
            .check(unsafe { start_fn(self.raw.as_ptr(), &raw, &mut out) })?;
        Ok(SequenceStarted {
            id: out.id,
            prompt_tokens: out.prompt_tokens,
            image_tokens: out.image_tokens,
        })
    }

    /// One step over the listed sequences within `token_budget` tokens (0: no limit).
    pub fn step(&self, ids: &[u64], token_budget: u32) -> Result<Vec<StepOutput>, HostError> {
        let step = self.generator_call(self.library.api.step, "step")?;
        let mut results: *const MqStepResult = std::ptr::null();
        let mut n = 0usize;
        let _one_at_a_time = self.call_lock.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: live instance, valid id slice and out-pointers.
        self.library.check(unsafe {
            step(
                self.raw.as_ptr(),
                ids.as_ptr(),
                ids.len(),
                token_budget,
                &mut results,
                &mut n,
            )
        })?;
        if n != ids.len() || (n > 0 && results.is_null()) {
            return Err(self.library.error(
                Status::Internal,
                format!("step returned {n} results for {} sequences", ids.len()),
            ));
        }
        // SAFETY: the plugin's results stay valid until the next generator call, which
        // `call_lock` holds off until they are copied.
        let raw = if n == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(results, n) }
        };
        raw.iter()
            .map(|r| {
                // SAFETY: as above.
                let text = unsafe { raw_slice(r.text, r.text_len) };
                let top = unsafe { raw_slice(r.top_logprobs, r.n_top_logprobs) };
                Ok(StepOutput {
                    id: r.id,
                    token: (r.has_token != 0).then(|| GeneratedToken {
                        token_id: r.token_id,
                        logprob: r.logprob,
                        top_logprobs: top.to_vec(),
                    }),
                    finish: Finish::from_code(r.finish),
                    text: String::from_utf8(text.to_vec()).map_err(|_| {
                        self.library
                            .error(Status::Internal, "step gave invalid UTF-8 text".into())
                    })?,
                })
            })
            .collect()
    }

    /// Ends a live sequence, freeing its blocks.
    pub fn cancel_sequence(&self, id: u64) -> Result<(), HostError> {
        let cancel = self.generator_call(self.library.api.cancel_sequence, "cancel_sequence")?;
        let _one_at_a_time = self.call_lock.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: live instance.
        self.library.check(unsafe { cancel(self.raw.as_ptr(), id) })
    }

    /// Loads a PEFT LoRA adapter directory under `name`.
    pub fn load_adapter(&self, name: &str, dir: &Path) -> Result<AdapterInfo, HostError> {
        let load = self.generator_call(self.library.api.load_adapter, "load_adapter")?;
        let name = self.c_arg(name, "adapter name")?;
        let dir = self.c_arg(&dir.to_string_lossy(), "adapter path")?;
        let mut out = MqAdapterInfo {
            rank: 0,
            alpha: 0.0,
            use_rslora: 0,
            target_modules: std::ptr::null(),
        };
        let _one_at_a_time = self.call_lock.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: live instance, valid strings and out-struct.
        self.library
            .check(unsafe { load(self.raw.as_ptr(), name.as_ptr(), dir.as_ptr(), &mut out) })?;
        Ok(AdapterInfo {
            rank: out.rank,
            alpha: out.alpha,
            use_rslora: out.use_rslora != 0,
            target_modules: c_string(out.target_modules)
                .unwrap_or_default()
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// Unloads an adapter.
    pub fn unload_adapter(&self, name: &str) -> Result<(), HostError> {
        let unload = self.generator_call(self.library.api.unload_adapter, "unload_adapter")?;
        let name = self.c_arg(name, "adapter name")?;
        let _one_at_a_time = self.call_lock.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: live instance, valid string.
        self.library
            .check(unsafe { unload(self.raw.as_ptr(), name.as_ptr()) })
    }

    /// The KV cache's use and the live sequences.
    pub fn generator_state(&self) -> Result<GeneratorState, HostError> {
        let state = self.generator_call(self.library.api.generator_state, "generator_state")?;
        let mut out = MqGeneratorState::default();
        let _one_at_a_time = self.call_lock.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: live instance and out-struct.
        self.library
            .check(unsafe { state(self.raw.as_ptr(), &mut out) })?;
        Ok(GeneratorState {
            kv_blocks: out.kv_blocks,
            kv_blocks_free: out.kv_blocks_free,
            sequences: out.sequences,
        })
    }
}

/// A slice from a plugin's pointer and length (empty when the length is 0).
///
/// # Safety
/// `ptr` must point to `len` values when `len > 0`.
unsafe fn raw_slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 || ptr.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, len)
    }
}

/// Runs `f` on a ragged batch of token sequences laid out as `embed`'s two inputs.
fn with_token_inputs<R>(
    ids: &[u32],
    offsets: &[u32],
    f: impl FnOnce(&[InputTensor<'_>]) -> R,
) -> R {
    let (ids_shape, offsets_shape) = ([ids.len() as u64], [offsets.len() as u64]);
    f(&[
        InputTensor {
            dtype: DType::U32,
            shape: &ids_shape,
            bytes: u32_bytes(ids),
        },
        InputTensor {
            dtype: DType::U32,
            shape: &offsets_shape,
            bytes: u32_bytes(offsets),
        },
    ])
}

/// The bytes of a `u32` slice, without copying.
fn u32_bytes(values: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding and u8 has no alignment requirement.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        // SAFETY: the instance came from this library's `create` and is destroyed once.
        unsafe { (self.library.api.destroy)(self.raw.as_ptr()) }
    }
}
