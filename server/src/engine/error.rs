//! What can go wrong in the engine, in its own terms. The gRPC layer
//! (`services::status`) gives each kind its status code; the messages are the ones
//! callers read.

use crate::retrieval::error::StorageError;
use marquee_plugin_api::host::HostError;
use marquee_plugin_api::Status as PluginStatus;
use std::time::Duration;

/// A failed engine operation. Each variant carries the message for the caller.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request, or a name or input in it, is malformed or of a kind the model does
    /// not take.
    #[error("{0}")]
    Invalid(String),
    /// A model, plugin, pipeline or stored item that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A model, pipeline or plugin of that name is already there.
    #[error("{0}")]
    AlreadyExists(String),
    /// A plugin library that resolves outside the plugin directory.
    #[error("{0}")]
    OutsidePluginDir(String),
    /// The server's setup does not allow it: a plugin that does not load, a fusion
    /// model without input widths.
    #[error("{0}")]
    Precondition(String),
    /// A size limit exceeded (an image over `limits.max_image_bytes`), or a plugin out
    /// of resources.
    #[error("{0}")]
    Exhausted(String),
    /// The model's queue is full; places are likely free again after `retry_after`.
    #[error("{message}; retry in {} ms", retry_millis(*retry_after))]
    Overloaded {
        /// What is full, and how full.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The deadline passed, or the work cannot finish before it.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The model is being unloaded and takes no more work.
    #[error("{0}")]
    ShuttingDown(String),
    /// Something the model cannot do (generation).
    #[error("{0}")]
    Unsupported(String),
    /// A failure inside the server or a plugin.
    #[error("{0}")]
    Internal(String),
    /// The collection store's own error, passed on whole (see [`storage`]).
    #[error("{0}")]
    Storage(StorageError),
}

/// The retry hint in whole milliseconds, at least 1, as the overload message gives it.
pub fn retry_millis(retry_after: Duration) -> u128 {
    retry_after.as_millis().max(1)
}

/// The engine's error for a failed collection-store call: the one place that turns the
/// store's error type into an engine error.
pub fn storage(error: StorageError) -> EngineError {
    EngineError::Storage(error)
}

impl EngineError {
    /// The same kind of error with its message rewritten by `rewrite`. An overload
    /// becomes a plain [`EngineError::Exhausted`] carrying its full message (the retry
    /// hint no longer describes the rewritten context); a store error is passed on
    /// unchanged, its message being the store's.
    pub fn map_message(self, rewrite: impl FnOnce(&str) -> String) -> EngineError {
        use EngineError::*;
        match self {
            Invalid(m) => Invalid(rewrite(&m)),
            NotFound(m) => NotFound(rewrite(&m)),
            AlreadyExists(m) => AlreadyExists(rewrite(&m)),
            OutsidePluginDir(m) => OutsidePluginDir(rewrite(&m)),
            Precondition(m) => Precondition(rewrite(&m)),
            Exhausted(m) => Exhausted(rewrite(&m)),
            overloaded @ Overloaded { .. } => Exhausted(rewrite(&overloaded.to_string())),
            DeadlineExceeded(m) => DeadlineExceeded(rewrite(&m)),
            ShuttingDown(m) => ShuttingDown(rewrite(&m)),
            Unsupported(m) => Unsupported(rewrite(&m)),
            Internal(m) => Internal(rewrite(&m)),
            storage @ Storage(_) => storage,
        }
    }
}

impl EngineError {
    /// A plugin failure of status class `status` with `message`.
    pub fn from_plugin(status: PluginStatus, message: String) -> EngineError {
        match status {
            PluginStatus::InvalidArgument => EngineError::Invalid(message),
            PluginStatus::NotFound => EngineError::NotFound(message),
            PluginStatus::ResourceExhausted => EngineError::Exhausted(message),
            PluginStatus::Unimplemented => EngineError::Unsupported(message),
            PluginStatus::Internal => EngineError::Internal(message),
        }
    }
}

impl From<HostError> for EngineError {
    /// A plugin failure, classed by the status the plugin reported (load failures are
    /// internal).
    fn from(error: HostError) -> Self {
        EngineError::from_plugin(error.status(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_messages_keep_their_kind() {
        let e = EngineError::NotFound("no model".into()).map_message(|m| format!("x: {m}"));
        assert!(matches!(&e, EngineError::NotFound(m) if m == "x: no model"));
        let overloaded = EngineError::Overloaded {
            message: "full".into(),
            retry_after: Duration::from_micros(10),
        };
        assert_eq!(overloaded.to_string(), "full; retry in 1 ms");
        let e = overloaded.map_message(|m| format!("p: {m}"));
        assert!(matches!(&e, EngineError::Exhausted(m) if m == "p: full; retry in 1 ms"));
    }

    #[test]
    fn plugin_failures_are_classed_by_their_status() {
        let call = |status| HostError::Call {
            plugin: "p".into(),
            status,
            message: "bad image".into(),
        };
        let e = EngineError::from(call(PluginStatus::InvalidArgument));
        assert!(matches!(&e, EngineError::Invalid(m) if m == "plugin p: bad image"));
        let e = EngineError::from(call(PluginStatus::ResourceExhausted));
        assert!(matches!(e, EngineError::Exhausted(_)));
        let open = HostError::Open {
            path: "/x.so".into(),
            reason: "gone".into(),
        };
        assert!(matches!(EngineError::from(open), EngineError::Internal(_)));
    }
}
