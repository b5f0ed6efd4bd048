//! Durable collections: storage (write-ahead log + snapshots), payloads and filters,
//! exact (CPU or GPU) and HNSW search. Failures are [`error::StorageError`]s.

pub mod collection;
pub mod error;
pub mod faults;
mod frozen;
pub mod gpu;
pub mod graph;
pub mod payload;
pub mod store;
pub mod wal;
