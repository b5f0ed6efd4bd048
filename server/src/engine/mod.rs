//! The inference engine: everything between a decoded request and the plugin that
//! computes its vectors. It knows no gRPC; its errors are [`error::EngineError`], which
//! the services turn into statuses.
//!
//! The path of an Embed request, in order:
//!
//! 1. [`embedder`]: the front door: a model or pipeline by name, inputs as
//!    [`request::Input`]s, vectors with usage and timings back.
//! 2. [`pipeline`]: for a pipeline, its text and image models, then its fusion model.
//! 3. [`runner`]: one model's share: inputs checked and laid out ([`inputs`]), texts
//!    tokenized ([`tokenizer_pool`]), queue places taken ([`queue`]), the deadline
//!    checked ([`deadline`], [`estimate`]), the job run alone or queued.
//! 4. [`batcher`]: the model's inference thread, merging jobs into batches, and the
//!    lone-request fast path.
//! 5. [`executor`]: one batch through the plugin's C ABI (`marquee_plugin_api`).
//!
//! Beside the path: [`registry`] (plugins, models and pipelines loaded and unloaded)
//! and [`model`] (one served model: plugin instance, batcher, widths). Generator
//! models take their own path: [`generation`] (prompt, scheduler with continuous
//! batching, streamed tokens).

pub mod batcher;
pub mod deadline;
pub mod embedder;
pub mod error;
pub mod estimate;
pub mod executor;
pub mod generation;
pub mod inputs;
pub mod model;
pub mod pipeline;
pub mod queue;
pub mod registry;
pub mod request;
pub mod runner;
pub mod tokenizer_pool;
