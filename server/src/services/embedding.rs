//! `marquee.v1.EmbeddingService`: validation, admission, tokenization, batching.

use crate::batcher::EmbedJob;
use crate::config::Limits;
use crate::metrics as m;
use crate::registry::Registry;
use crate::services::observed;
use crate::tokenize::TokenizerPool;
use marquee_plugin_api::PluginKind;
use marquee_proto::v1::embed_input::Input;
use marquee_proto::v1::embedding_service_server::EmbeddingService;
use marquee_proto::v1::{
    embed_stream_response, EmbedRequest, EmbedResponse, EmbedStreamResponse, Embedding,
    StreamError, Timings, Truncation, Usage,
};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// The embedding service.
#[derive(Clone)]
pub struct EmbeddingApi {
    registry: Arc<Registry>,
    tokenizer: Arc<TokenizerPool>,
    limits: Limits,
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl EmbeddingApi {
    /// A service over the registry's models.
    pub fn new(registry: Arc<Registry>, tokenizer: Arc<TokenizerPool>, limits: Limits) -> Self {
        Self {
            registry,
            tokenizer,
            limits,
        }
    }

    /// The model registry it serves from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Checks the inputs against the model and returns the texts.
    fn texts(
        &self,
        model_name: &str,
        kind: PluginKind,
        request: EmbedRequest,
    ) -> Result<Vec<String>, Status> {
        let n = request.inputs.len();
        if n == 0 {
            return Err(Status::invalid_argument("the request has no inputs"));
        }
        if n > self.limits.max_inputs_per_request {
            return Err(Status::invalid_argument(format!(
                "the request has {n} inputs, over the limit of {} per request",
                self.limits.max_inputs_per_request
            )));
        }
        if kind != PluginKind::TextEncoder {
            return Err(Status::unimplemented(format!(
                "model {model_name} is a {kind:?}; only text encoders are served so far"
            )));
        }
        request
            .inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| match input.input {
                Some(Input::Text(t)) if t.is_empty() => Err(Status::invalid_argument(format!(
                    "input {i} is an empty string"
                ))),
                Some(Input::Text(t)) => Ok(t),
                Some(Input::Image(_)) => Err(Status::invalid_argument(format!(
                    "input {i} is an image, but model {model_name} is a text encoder"
                ))),
                None => Err(Status::invalid_argument(format!(
                    "input {i} has neither text nor image"
                ))),
            })
            .collect()
    }

    /// Serves one request end to end.
    pub async fn embed_one(&self, request: EmbedRequest) -> Result<EmbedResponse, Status> {
        let start = Instant::now();
        let model = self.registry.get(&request.model)?;
        let refuse_truncation = request.truncation() == Truncation::None;
        let texts = self.texts(&model.name, model.kind(), request)?;
        let permit = model.admit(texts.len())?;
        let tokenize_start = Instant::now();
        let batch = self
            .tokenizer
            .tokenize(Arc::clone(&model), texts, refuse_truncation)
            .await?;
        let tokenize_time = tokenize_start.elapsed();
        let input_tokens = batch.ids.len() as u64;
        let (reply, result) = oneshot::channel();
        model.submit(EmbedJob {
            ids: batch.ids,
            offsets: batch.offsets,
            enqueued: Instant::now(),
            reply,
            permit,
        })?;
        let output = result.await.map_err(|_| {
            Status::internal(format!("model {} stopped before answering", model.name))
        })??;
        m::set_queue_depth(&model.name, model.queued_inputs());
        m::record_stage(&model.name, "tokenize", tokenize_time);
        m::record_stage(&model.name, "queue", output.queue);
        m::record_stage(&model.name, "inference", output.inference);
        let dim = model.instance.info().output_dim as usize;
        Ok(EmbedResponse {
            model: model.name.clone(),
            embeddings: output
                .vectors
                .chunks_exact(dim.max(1))
                .map(|v| Embedding { values: v.to_vec() })
                .collect(),
            dimension: dim as u32,
            usage: Some(Usage {
                input_tokens,
                truncated_inputs: batch.truncated_inputs,
            }),
            timings: Some(Timings {
                queue_us: micros(output.queue),
                tokenize_us: micros(tokenize_time),
                inference_us: micros(output.inference),
                total_us: micros(start.elapsed()),
            }),
        })
    }
}

#[tonic::async_trait]
impl EmbeddingService for EmbeddingApi {
    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        observed("Embed", self.embed_one(request.into_inner())).await
    }

    type EmbedStreamStream = ReceiverStream<Result<EmbedStreamResponse, Status>>;

    async fn embed_stream(
        &self,
        request: Request<Streaming<EmbedRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let in_flight = self.limits.max_stream_in_flight;
        let (tx, rx) = mpsc::channel(in_flight);
        let slots = Arc::new(Semaphore::new(in_flight));
        let api = self.clone();
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                let request = match message {
                    Ok(r) => r,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let (api, tx) = (api.clone(), tx.clone());
                tokio::spawn(async move {
                    let request_id = request.request_id.clone();
                    let result = observed("EmbedStream", api.embed_one(request)).await;
                    let result = Some(match result {
                        Ok(r) => embed_stream_response::Result::Response(r.into_inner()),
                        Err(s) => embed_stream_response::Result::Error(StreamError {
                            code: s.code() as i32,
                            message: s.message().to_string(),
                        }),
                    });
                    let _ = tx
                        .send(Ok(EmbedStreamResponse { request_id, result }))
                        .await;
                    drop(slot);
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
