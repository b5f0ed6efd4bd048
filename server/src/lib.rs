//! Marquee's server: a tonic gRPC front over plugin-backed models.
//!
//! An Embed request travels: [`services`] (gRPC ↔ domain) → [`engine`] (embedder →
//! queue → batcher → executor) → the plugin's C ABI → its kernels.
//!
//! - [`config`]: settings (embedded defaults, TOML, environment, flags).
//! - [`auth`], [`tls`]: bearer tokens and TLS for the gRPC and HTTP ports.
//! - [`admission`]: server-wide overload control, a tower layer.
//! - [`memory`]: the server-wide budget of request bytes held in memory, a tower layer.
//! - [`shutdown`], [`health`]: signals, the drain, and health checking.
//! - [`engine`]: the inference engine: registry, queues, batcher, executor, pipelines
//!   (see its module map).
//! - [`retrieval`]: durable collections, filters, exact and HNSW search.
//! - [`evaluation`]: ranking metrics (trec_eval definitions) and generation metrics (BLEU as
//!   sacrebleu, ROUGE as rouge-score).
//! - [`services`]: the gRPC services, deadlines and statuses: thin adapters over the
//!   engine and retrieval.
//! - [`http`]: the OpenAI-compatible HTTP API (axum), over the same engine.
//! - [`names`]: which plugin, model and collection names are allowed.
//! - [`metrics`]: Prometheus metrics.
//! - [`server`]: wiring it all together and serving.

pub mod admission;
pub mod auth;
pub mod config;
pub mod engine;
pub mod evaluation;
pub mod health;
pub mod heap;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod names;
pub mod retrieval;
pub mod server;
pub mod services;
pub mod shutdown;
pub mod tls;
pub mod training;
