//! Safe Rust views of the ABI's enumerations and structs, shared by SDK and host.

use crate::abi::*;

/// Outcome class of a failed call, mirroring the `MQ_STATUS_*` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The caller's input is wrong.
    InvalidArgument,
    /// A needed file or resource does not exist.
    NotFound,
    /// Out of memory or over a limit.
    ResourceExhausted,
    /// Not implemented by this plugin.
    Unimplemented,
    /// A failure inside the plugin.
    Internal,
}

impl Status {
    /// The ABI code.
    pub fn code(self) -> MqStatus {
        match self {
            Status::InvalidArgument => MQ_STATUS_INVALID_ARGUMENT,
            Status::NotFound => MQ_STATUS_NOT_FOUND,
            Status::ResourceExhausted => MQ_STATUS_RESOURCE_EXHAUSTED,
            Status::Unimplemented => MQ_STATUS_UNIMPLEMENTED,
            Status::Internal => MQ_STATUS_INTERNAL,
        }
    }

    /// The status for an ABI code (`None` for OK); unknown codes read as internal.
    pub fn from_code(code: MqStatus) -> Option<Status> {
        match code {
            MQ_STATUS_OK => None,
            MQ_STATUS_INVALID_ARGUMENT => Some(Status::InvalidArgument),
            MQ_STATUS_NOT_FOUND => Some(Status::NotFound),
            MQ_STATUS_RESOURCE_EXHAUSTED => Some(Status::ResourceExhausted),
            MQ_STATUS_UNIMPLEMENTED => Some(Status::Unimplemented),
            _ => Some(Status::Internal),
        }
    }
}

/// What a plugin does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// Text → vector.
    TextEncoder,
    /// Image → vector.
    ImageEncoder,
    /// Several embeddings → one vector.
    Fusion,
    /// Inputs → generated text.
    Generator,
}

impl PluginKind {
    /// The ABI code.
    pub fn code(self) -> MqKind {
        match self {
            PluginKind::TextEncoder => MQ_KIND_TEXT_ENCODER,
            PluginKind::ImageEncoder => MQ_KIND_IMAGE_ENCODER,
            PluginKind::Fusion => MQ_KIND_FUSION,
            PluginKind::Generator => MQ_KIND_GENERATOR,
        }
    }

    /// The kind for an ABI code, `None` when unknown.
    pub fn from_code(code: MqKind) -> Option<PluginKind> {
        Some(match code {
            MQ_KIND_TEXT_ENCODER => PluginKind::TextEncoder,
            MQ_KIND_IMAGE_ENCODER => PluginKind::ImageEncoder,
            MQ_KIND_FUSION => PluginKind::Fusion,
            MQ_KIND_GENERATOR => PluginKind::Generator,
            _ => return None,
        })
    }
}

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 32-bit unsigned integer.
    U32,
    /// Byte.
    U8,
}

impl DType {
    /// The ABI code.
    pub fn code(self) -> MqDType {
        match self {
            DType::F32 => MQ_DTYPE_F32,
            DType::U32 => MQ_DTYPE_U32,
            DType::U8 => MQ_DTYPE_U8,
        }
    }

    /// The dtype for an ABI code, `None` when unknown.
    pub fn from_code(code: MqDType) -> Option<DType> {
        Some(match code {
            MQ_DTYPE_F32 => DType::F32,
            MQ_DTYPE_U32 => DType::U32,
            MQ_DTYPE_U8 => DType::U8,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::U8 => 1,
        }
    }
}

/// What a loaded model takes and returns.
pub type ModelInfo = MqModelInfo;
