//! Durable collections: storage (write-ahead log + snapshots), payloads and filters,
//! exact and HNSW search.

pub mod collection;
mod frozen;
pub mod graph;
pub mod payload;
pub mod store;
pub mod wal;
