//! Durable collections: storage (write-ahead log + snapshots), payloads and filters,
//! exact (CPU or GPU) and HNSW search.

pub mod collection;
mod frozen;
pub mod gpu;
pub mod graph;
pub mod payload;
pub mod store;
pub mod wal;
