//! What can go wrong in storage, as [`StorageError`]. Each variant says what happened;
//! the gRPC status it becomes is decided in `services/`, from [`StorageError::kind`].

use crate::retrieval::wal::WalError;
use marquee_kernels::KernelError;
use std::io;
use std::path::PathBuf;

/// A failed storage operation: a refused request, a missing or clashing collection,
/// a file that could not be written or read back, or a device failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A request, item, filter, vector or collection configuration that storage refuses.
    #[error("{0}")]
    InvalidArgument(String),
    /// No collection of that name.
    #[error("collection {0:?} does not exist")]
    CollectionNotFound(String),
    /// A collection of that name is already open.
    #[error("collection {0} already exists")]
    CollectionExists(String),
    /// A directory holds the new collection's place but is no open collection.
    #[error("{} exists on disk but could not be opened; remove it first", .0.display())]
    DirectoryInTheWay(PathBuf),
    /// Reading or writing a collection's files failed; `context` says doing what.
    #[error("{}", prefixed(.context, .error))]
    Io {
        /// What was being done ("" when the I/O error says enough).
        context: String,
        /// The failure (part of the message, so not also a `source`).
        error: io::Error,
    },
    /// A file holds data that cannot be read back.
    #[error("{}: {problem}", file.display())]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A collection's history is unreadable from a point on: a bad record before the end
    /// of the log, a damaged snapshot, a missing segment.
    #[error("{} is damaged at byte {offset}: {problem}", file.display())]
    Damaged {
        /// The file at fault (for a missing one, the path it should have).
        file: PathBuf,
        /// The byte where its readable part ends.
        offset: u64,
        /// What is wrong there.
        problem: String,
    },
    /// A collection that is on disk but could not be opened at start-up.
    #[error("{}", unopened_message(.name, .kind, .reason))]
    Unopened {
        /// The collection.
        name: String,
        /// The class of the error that kept it closed.
        kind: ErrorKind,
        /// That error's message.
        reason: String,
    },
    /// A write to a collection's log failed: it was not acknowledged.
    #[error("collection {collection}: {error}")]
    Write {
        /// The collection.
        collection: String,
        /// The failure.
        error: WalError,
    },
    /// A write that waited while the collection switched to a re-embedded version: it
    /// was not written, and can be sent again.
    #[error("collection {0} switched to a re-embedded version while this write waited; nothing was written: send it again")]
    Retired(String),
    /// The collection is being re-embedded already.
    #[error("collection {0} is already being re-embedded; wait for that to finish")]
    ReembedInProgress(String),
    /// Items that cannot be re-embedded: they were not upserted as text.
    #[error("{count} items of collection {collection} have no stored text (e.g. {example:?}): only items upserted as text can be re-embedded")]
    WithoutText {
        /// The collection.
        collection: String,
        /// How many items lack text.
        count: usize,
        /// One of them.
        example: String,
    },
    /// The collection was deleted or recreated while it was being re-embedded.
    #[error(
        "collection {0} was deleted or recreated during its re-embedding, which was abandoned"
    )]
    Replaced(String),
    /// The GPU that searches the collection failed.
    #[error("{}", gpu_message(.0))]
    Gpu(KernelError),
    /// The CPU search kernel refused its operands.
    #[error("{0}")]
    CpuSearch(KernelError),
}

/// The class of a [`StorageError`], for callers that map errors to protocol codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's request is wrong.
    InvalidArgument,
    /// What the request names does not exist.
    NotFound,
    /// What the request would create exists.
    AlreadyExists,
    /// A resource (device memory, disk space) ran out.
    ResourceExhausted,
    /// Stored data is damaged: part of it cannot be read back.
    DataLoss,
    /// The storage cannot take writes now (a failed write to disk).
    Unavailable,
    /// The collection is not in the state the request needs (e.g. being re-embedded).
    FailedPrecondition,
    /// A failure of the server's files or devices.
    Internal,
}

impl StorageError {
    /// An I/O failure while doing `context`, for `map_err`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |error| Self::Io { context, error }
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument(_) | Self::Gpu(KernelError::Shape(_)) => {
                ErrorKind::InvalidArgument
            }
            Self::CollectionNotFound(_) => ErrorKind::NotFound,
            Self::CollectionExists(_) | Self::DirectoryInTheWay(_) => ErrorKind::AlreadyExists,
            Self::Gpu(KernelError::OutOfMemory(_)) => ErrorKind::ResourceExhausted,
            Self::Corrupt { .. } | Self::Damaged { .. } => ErrorKind::DataLoss,
            Self::Unopened { kind, .. } => *kind,
            Self::Write { error, .. } if error.no_space() => ErrorKind::ResourceExhausted,
            Self::Write { .. } | Self::Retired(_) => ErrorKind::Unavailable,
            Self::ReembedInProgress(_) | Self::WithoutText { .. } | Self::Replaced(_) => {
                ErrorKind::FailedPrecondition
            }
            Self::Io { .. } | Self::Gpu(_) | Self::CpuSearch(_) => ErrorKind::Internal,
        }
    }
}

fn prefixed(context: &str, error: &io::Error) -> String {
    if context.is_empty() {
        error.to_string()
    } else {
        format!("{context}: {error}")
    }
}

/// Why a collection is closed, and what to do about damage.
fn unopened_message(name: &str, kind: &ErrorKind, reason: &str) -> String {
    let mut message = format!("collection {name} could not be opened: {reason}");
    if *kind == ErrorKind::DataLoss {
        message.push_str(&format!(
            "; `marquee collections repair {name}` shows what keeping its readable history would drop"
        ));
    }
    message
}

/// Out of memory is the caller's to retry smaller; a shape error is the request's.
fn gpu_message(e: &KernelError) -> String {
    match e {
        KernelError::OutOfMemory(m) => format!("GPU out of memory: {m}"),
        KernelError::Shape(m) => m.clone(),
        KernelError::Device(m) => format!("GPU: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_kinds_say_what_happened() {
        use ErrorKind::{AlreadyExists, Internal, InvalidArgument, NotFound, ResourceExhausted};
        use KernelError::{Device, OutOfMemory, Shape};
        use StorageError::{CollectionExists, CollectionNotFound, CpuSearch, Gpu};
        let io = |context| StorageError::io(context)(io::Error::other("disk full"));
        let s = String::from;
        let cases = [
            (
                CollectionNotFound(s("c")),
                NotFound,
                "collection \"c\" does not exist",
            ),
            (
                CollectionExists(s("c")),
                AlreadyExists,
                "collection c already exists",
            ),
            (io("storage error"), Internal, "storage error: disk full"),
            (io(""), Internal, "disk full"),
            (
                Gpu(OutOfMemory(s("2 GiB"))),
                ResourceExhausted,
                "GPU out of memory: 2 GiB",
            ),
            (Gpu(Shape(s("k too large"))), InvalidArgument, "k too large"),
            (
                Gpu(Device(s("launch failed"))),
                Internal,
                "GPU: launch failed",
            ),
            (
                CpuSearch(Shape(s("3 != 4"))),
                Internal,
                "shape mismatch: 3 != 4",
            ),
        ];
        for (error, kind, message) in cases {
            assert_eq!(
                (error.kind(), error.to_string()),
                (kind, message.to_string())
            );
        }
    }
}
