//! The host side: opening plugin libraries with `libloading`, the ABI handshake, and
//! safe wrappers around instances. Every failure is an [`HostError`], never a panic.

use crate::abi::*;
use crate::sdk::Tokens;
use crate::types::{DType, ModelInfo, PluginKind, Status};
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
    api: &'static MqPluginApi,
    name: String,
    version: String,
    kind: PluginKind,
    path: PathBuf,
    // Declared last: dropped after everything that points into it.
    _library: Library,
}

// SAFETY: the ABI table is immutable and its functions follow the threading contract
// documented on `MqPluginApi`; `PluginInstance` serialises `embed`.
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

impl PluginLibrary {
    /// Opens a shared library and performs the ABI handshake.
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
        let api = unsafe { entry(MQ_ABI_VERSION).as_ref() }.ok_or_else(|| {
            incompatible(format!("it does not support ABI version {MQ_ABI_VERSION}"))
        })?;
        if api.abi_version != MQ_ABI_VERSION {
            return Err(incompatible(format!(
                "it speaks ABI version {}, the host {MQ_ABI_VERSION}",
                api.abi_version
            )));
        }
        let kind = PluginKind::from_code(api.kind)
            .ok_or_else(|| incompatible(format!("unknown plugin kind {}", api.kind)))?;
        let name = c_string(api.name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| incompatible("missing plugin name".into()))?;
        let version = c_string(api.version).unwrap_or_default();
        // SAFETY: the table lives as long as the library, which `Self` owns.
        let api: &'static MqPluginApi = unsafe { &*(api as *const MqPluginApi) };
        Ok(Arc::new(Self {
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

    fn last_error(&self, status: Status) -> HostError {
        // SAFETY: `last_error` never returns null per the ABI; checked anyway.
        let message = c_string(unsafe { (self.api.last_error)() })
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "unknown error".into());
        HostError::Call {
            plugin: self.name.clone(),
            status,
            message,
        }
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
        let bad = |what: &str| HostError::Call {
            plugin: self.name.clone(),
            status: Status::InvalidArgument,
            message: format!("{what} contains a NUL byte"),
        };
        let dir = CString::new(model_dir.to_string_lossy().as_bytes()).map_err(|_| bad("path"))?;
        let config = CString::new(config_json).map_err(|_| bad("config"))?;
        let mut raw: *mut MqInstance = std::ptr::null_mut();
        // SAFETY: valid strings and out-pointer.
        self.check(unsafe { (self.api.create)(dir.as_ptr(), config.as_ptr(), &mut raw) })?;
        let raw = NonNull::new(raw).ok_or_else(|| HostError::Call {
            plugin: self.name.clone(),
            status: Status::Internal,
            message: "create succeeded but returned no instance".into(),
        })?;
        let mut instance = PluginInstance {
            library: Arc::clone(self),
            raw,
            info: ModelInfo::default(),
            embed_lock: Mutex::new(()),
        };
        let mut info = ModelInfo::default();
        // SAFETY: live instance and valid out-pointer.
        self.check(unsafe { (self.api.model_info)(raw.as_ptr(), &mut info) })?;
        instance.info = info;
        Ok(instance)
    }
}

/// A loaded model inside a plugin; destroyed on drop.
pub struct PluginInstance {
    library: Arc<PluginLibrary>,
    raw: NonNull<MqInstance>,
    info: ModelInfo,
    embed_lock: Mutex<()>,
}

// SAFETY: see `PluginLibrary`; `embed` is serialised by `embed_lock`.
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
    /// What the model takes and returns.
    pub fn info(&self) -> ModelInfo {
        self.info
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

    /// Runs `embed` on generic tensors, returning `rows × output_dim` floats.
    pub fn embed(&self, inputs: &[InputTensor<'_>], rows: usize) -> Result<Vec<f32>, HostError> {
        let invalid = |message: String| HostError::Call {
            plugin: self.library.name.clone(),
            status: Status::InvalidArgument,
            message,
        };
        let mut raw_inputs = Vec::with_capacity(inputs.len());
        for t in inputs {
            if t.shape.len() > MQ_MAX_DIMS {
                return Err(invalid(format!("tensor with {} dimensions", t.shape.len())));
            }
            let count: u64 = t.shape.iter().product();
            if count as usize * t.dtype.size() != t.bytes.len() {
                return Err(invalid("tensor bytes do not match its shape".into()));
            }
            let mut shape = [0u64; MQ_MAX_DIMS];
            shape[..t.shape.len()].copy_from_slice(t.shape);
            raw_inputs.push(MqTensor {
                data: t.bytes.as_ptr().cast(),
                shape,
                ndim: t.shape.len() as u32,
                dtype: t.dtype.code(),
            });
        }
        let dim = self.info.output_dim as usize;
        let mut values = vec![0f32; rows * dim];
        let mut output = MqTensorMut {
            data: values.as_mut_ptr().cast(),
            shape: [rows as u64, dim as u64, 0, 0],
            ndim: 2,
            dtype: MQ_DTYPE_F32,
        };
        let _one_at_a_time = self.embed_lock.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: tensors point into live buffers sized as their shapes say.
        self.library.check(unsafe {
            (self.library.api.embed)(
                self.raw.as_ptr(),
                raw_inputs.as_ptr(),
                raw_inputs.len(),
                &mut output,
            )
        })?;
        Ok(values)
    }

    /// Embeds a ragged batch of token sequences (text encoders).
    pub fn embed_tokens(&self, ids: &[u32], offsets: &[u32]) -> Result<Vec<f32>, HostError> {
        self.embed(
            &[
                InputTensor {
                    dtype: DType::U32,
                    shape: &[ids.len() as u64],
                    bytes: u32_bytes(ids),
                },
                InputTensor {
                    dtype: DType::U32,
                    shape: &[offsets.len() as u64],
                    bytes: u32_bytes(offsets),
                },
            ],
            offsets.len().saturating_sub(1),
        )
    }
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
