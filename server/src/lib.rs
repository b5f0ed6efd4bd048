//! Marquee's server: a tonic gRPC front over plugin-backed models.
//!
//! - [`config`]: settings (embedded defaults, TOML, environment, flags).
//! - [`auth`], [`tls`]: bearer tokens and TLS for the gRPC port.
//! - [`admission`], [`deadline`], [`estimate`]: overload control and deadlines.
//! - [`shutdown`], [`health`]: signals, the drain, and health checking.
//! - [`registry`]: loaded plugins and models, load/unload at run time.
//! - [`retrieval`]: durable collections, filters, exact and HNSW search.
//! - [`tokenize`]: the tokenization worker pool.
//! - [`pipeline`]: models composed into pipelines (text + image → fusion).
//! - [`inputs`]: job inputs in each plugin kind's layout, assembled into batches.
//! - [`batcher`]: the per-model dynamic batcher and inference thread.
//! - [`evaluation`]: ranking metrics (trec_eval definitions).
//! - [`services`]: the gRPC services.
//! - [`metrics`]: Prometheus metrics.
//! - [`server`]: wiring it all together and serving.

pub mod admission;
pub mod auth;
pub mod batcher;
pub mod config;
pub mod deadline;
pub mod estimate;
pub mod evaluation;
pub mod health;
pub mod inputs;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod retrieval;
pub mod server;
pub mod services;
pub mod shutdown;
pub mod status;
pub mod tls;
pub mod tokenize;
