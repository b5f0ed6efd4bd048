//! `marquee.v1.EmbeddingService`: validation, admission, tokenization, batching.

use crate::batcher::EmbedJob;
use crate::config::Limits;
use crate::deadline::{Bounded, Deadline};
use crate::metrics as m;
use crate::registry::Registry;
use crate::services::observed;
use crate::shutdown::Drain;
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
    drain: Drain,
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl EmbeddingApi {
    /// A service over the registry's models; its streams close when `drain` starts.
    pub fn new(
        registry: Arc<Registry>,
        tokenizer: Arc<TokenizerPool>,
        limits: Limits,
        drain: Drain,
    ) -> Self {
        Self {
            registry,
            tokenizer,
            limits,
            drain,
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

    /// Serves one request end to end. Past `deadline` it is not started, and dropped
    /// from the queues it is in; one that cannot finish by then is refused before
    /// inference.
    pub async fn embed_one(
        &self,
        request: EmbedRequest,
        deadline: Option<Deadline>,
    ) -> Result<EmbedResponse, Status> {
        let start = Instant::now();
        let model = self.registry.get(&request.model)?;
        let refuse_truncation = request.truncation() == Truncation::None;
        let texts = self.texts(&model.name, model.kind(), request)?;
        if let Some(d) = deadline.filter(Deadline::passed) {
            return Err(d.exceeded());
        }
        let slot = model.admit(texts.len())?;
        let tokenize_start = Instant::now();
        let batch = self
            .tokenizer
            .tokenize(Arc::clone(&model), texts, refuse_truncation, deadline)
            .await?;
        let tokenize_time = tokenize_start.elapsed();
        if let Err(status) = model.check_deadline(deadline, batch.ids.len()) {
            m::record_dropped(&model.name, "deadline", batch.offsets.len() - 1);
            return Err(status);
        }
        let input_tokens = batch.ids.len() as u64;
        let (reply, result) = oneshot::channel();
        model.submit(EmbedJob {
            ids: batch.ids,
            offsets: batch.offsets,
            enqueued: Instant::now(),
            deadline,
            reply,
            slot,
        })?;
        let output = result.await.map_err(|_| {
            Status::internal(format!("model {} stopped before answering", model.name))
        })??;
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

/// Answers the requests of one EmbedStream as they come, up to `max_stream_in_flight`
/// at once. Stops reading when the client closes its side, when the response stream is
/// gone (client cancelled: requests in progress are dropped from the queues), or when
/// the shutdown drain starts: then the requests already read are answered and the
/// stream ends `UNAVAILABLE`.
async fn serve_stream(
    api: EmbeddingApi,
    mut inbound: Streaming<EmbedRequest>,
    deadline: Option<Deadline>,
    tx: mpsc::Sender<Result<EmbedStreamResponse, Status>>,
) {
    let in_flight = api.limits.max_stream_in_flight;
    let slots = Arc::new(Semaphore::new(in_flight));
    let drain = api.drain.clone();
    loop {
        let message = tokio::select! {
            biased;
            () = tx.closed() => return,
            () = drain.clone().wait() => break,
            message = inbound.next() => message,
        };
        let request = match message {
            None => return,
            Some(Ok(r)) => r,
            Some(Err(status)) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let slot = tokio::select! {
            () = tx.closed() => return,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
        };
        let (api, tx) = (api.clone(), tx.clone());
        tokio::spawn(async move {
            let request_id = request.request_id.clone();
            let work = observed("EmbedStream", deadline, api.embed_one(request, deadline));
            let result = tokio::select! {
                () = tx.closed() => return,
                result = work => result,
            };
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
    // Draining: answer what was read, then close.
    let _ = slots.acquire_many(in_flight as u32).await;
    let _ = tx
        .send(Err(Status::unavailable(
            "the server is shutting down: every request read so far was answered; send the others elsewhere",
        )))
        .await;
}

#[tonic::async_trait]
impl EmbeddingService for EmbeddingApi {
    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let deadline = Deadline::of(&request);
        observed(
            "Embed",
            deadline,
            self.embed_one(request.into_inner(), deadline),
        )
        .await
    }

    type EmbedStreamStream = Bounded<ReceiverStream<Result<EmbedStreamResponse, Status>>>;

    async fn embed_stream(
        &self,
        request: Request<Streaming<EmbedRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        let deadline = Deadline::of(&request);
        let (tx, rx) = mpsc::channel(self.limits.max_stream_in_flight);
        tokio::spawn(serve_stream(
            self.clone(),
            request.into_inner(),
            deadline,
            tx,
        ));
        Ok(Response::new(Bounded::new(
            ReceiverStream::new(rx),
            deadline,
        )))
    }
}
