//! Marquee's server: a tonic gRPC front over plugin-backed models.
//!
//! - [`config`]: settings (embedded defaults, TOML, environment, flags).
//! - [`registry`]: loaded plugins and models, load/unload at run time.
//! - [`retrieval`]: durable collections, filters, exact and HNSW search.
//! - [`tokenize`]: the tokenization worker pool.
//! - [`batcher`]: the per-model dynamic batcher and inference thread.
//! - [`evaluation`]: ranking metrics (trec_eval definitions).
//! - [`services`]: the gRPC services.
//! - [`metrics`]: Prometheus metrics.
//! - [`server`]: wiring it all together and serving.

pub mod batcher;
pub mod config;
pub mod evaluation;
pub mod metrics;
pub mod registry;
pub mod retrieval;
pub mod server;
pub mod services;
pub mod status;
pub mod tokenize;
