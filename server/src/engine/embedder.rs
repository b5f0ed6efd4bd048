//! The engine's front door: embeds a request's inputs with a served model or pipeline,
//! by name, and reports the vectors with their usage and timings. The gRPC embedding
//! service, retrieval (queries, upserts) and evaluation all embed through it.

use super::deadline::Deadline;
use super::error::EngineError;
use super::pipeline::{run_pipeline, PipelineParts};
use super::registry::Registry;
use super::request::{Input, Truncation};
use super::runner::{ModelRunner, Stage};
use super::tokenizer_pool::TokenizerPool;
use crate::config::Limits;
use crate::retrieval::store::Store;
use std::sync::Arc;

/// What a request's inputs became.
#[derive(Debug)]
pub struct Embedded {
    /// The serving name of the model or pipeline that embedded them.
    pub model: String,
    /// The vectors, usage and timings.
    pub stage: Stage,
    /// For a pipeline, its intermediate embeddings.
    pub parts: Option<PipelineParts>,
}

/// Embeds inputs with the registry's models and pipelines.
#[derive(Clone)]
pub struct Embedder {
    registry: Arc<Registry>,
    runner: Arc<ModelRunner>,
}

impl Embedder {
    /// An embedder over the registry's models, tokenizing on `tokenizer`; stored fusion
    /// inputs name the store's collections; requests are held to `limits`.
    pub fn new(
        registry: Arc<Registry>,
        tokenizer: Arc<TokenizerPool>,
        store: Arc<Store>,
        limits: Limits,
    ) -> Self {
        Self {
            registry,
            runner: Arc::new(ModelRunner::new(tokenizer, store, limits)),
        }
    }

    /// The model registry it embeds with.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Embeds `inputs` with the model or pipeline served as `model` (empty: the default
    /// model). Past `deadline` it is not started, and dropped from the queues it is in;
    /// one that cannot finish by then is refused before inference.
    pub async fn embed(
        &self,
        model: &str,
        inputs: Vec<Input>,
        truncation: Truncation,
        deadline: Option<Deadline>,
    ) -> Result<Embedded, EngineError> {
        let n = inputs.len();
        let max_inputs = self.runner.limits().max_inputs_per_request;
        if n == 0 {
            return Err(EngineError::Invalid("the request has no inputs".into()));
        }
        if n > max_inputs {
            return Err(EngineError::Invalid(format!(
                "the request has {n} inputs, over the limit of {max_inputs} per request"
            )));
        }
        if let Some(pipeline) = self.registry.pipeline(model) {
            let (stage, parts) = run_pipeline(
                &self.runner,
                &self.registry,
                &pipeline,
                inputs,
                truncation,
                deadline,
            )
            .await?;
            return Ok(Embedded {
                model: pipeline.name.clone(),
                stage,
                parts: Some(parts),
            });
        }
        let model = self.registry.get(model)?;
        let stage = self
            .runner
            .run(&model, inputs, truncation, deadline)
            .await?;
        Ok(Embedded {
            model: model.name.clone(),
            stage,
            parts: None,
        })
    }
}
