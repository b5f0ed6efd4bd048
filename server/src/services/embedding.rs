//! `marquee.v1.EmbeddingService`: requests translated to the engine's terms and
//! embedded by its [`Embedder`]; EmbedStream answers its requests as they come.

use crate::config::Limits;
use crate::engine::deadline::Deadline;
use crate::engine::embedder::{Embedded, Embedder};
use crate::engine::request::{Input, StoredInput, Truncation};
use crate::services::deadline::{Bounded, DeadlineOf};
use crate::services::observed;
use crate::shutdown::Drain;
use marquee_proto::v1::embed_input::Input as ProtoInput;
use marquee_proto::v1::embedding_service_server::EmbeddingService;
use marquee_proto::v1::{
    embed_stream_response, EmbedInput, EmbedRequest, EmbedResponse, EmbedStreamResponse, Embedding,
    MultimodalInput, StreamError, Timings, Truncation as ProtoTruncation, Usage,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// The embedding service.
#[derive(Clone)]
pub struct EmbeddingApi {
    embedder: Embedder,
    limits: Limits,
    drain: Drain,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// A multimodal input in the engine's terms.
pub(crate) fn multimodal(m: MultimodalInput) -> Input {
    Input::Multimodal {
        text: m.text,
        poster: m.poster,
        thumbnail: m.thumbnail,
    }
}

/// An input in the engine's terms.
pub(crate) fn input(input: EmbedInput) -> Input {
    match input.input {
        Some(ProtoInput::Text(t)) => Input::Text(t),
        Some(ProtoInput::Image(b)) => Input::Image(b),
        Some(ProtoInput::Multimodal(m)) => multimodal(m),
        Some(ProtoInput::FusionVectors(v)) => Input::FusionVectors {
            text: v.text,
            poster: v.poster,
            thumbnail: v.thumbnail,
        },
        Some(ProtoInput::Stored(s)) => Input::Stored(StoredInput {
            item_id: s.item_id,
            text_collection: s.text_collection,
            poster_collection: s.poster_collection,
            thumbnail_collection: s.thumbnail_collection,
        }),
        None => Input::Missing,
    }
}

/// The response for what a request's inputs became, `start` being when it arrived.
fn response(embedded: Embedded, start: Instant) -> EmbedResponse {
    let stage = embedded.stage;
    EmbedResponse {
        model: embedded.model,
        embeddings: stage
            .rows()
            .map(|v| Embedding { values: v.to_vec() })
            .collect(),
        dimension: stage.dim as u32,
        usage: Some(Usage {
            input_tokens: stage.input_tokens,
            truncated_inputs: stage.truncated_inputs,
        }),
        timings: Some(Timings {
            queue_us: micros(stage.queue),
            tokenize_us: micros(stage.tokenize),
            inference_us: micros(stage.inference),
            total_us: micros(start.elapsed()),
        }),
    }
}

impl EmbeddingApi {
    /// A service embedding with `embedder`; its streams close when `drain` starts.
    pub fn new(embedder: Embedder, limits: Limits, drain: Drain) -> Self {
        Self {
            embedder,
            limits,
            drain,
        }
    }

    /// Serves one request end to end (see [`Embedder::embed`]).
    pub async fn embed_one(
        &self,
        request: EmbedRequest,
        deadline: Option<Deadline>,
    ) -> Result<EmbedResponse, Status> {
        let start = Instant::now();
        let truncation = match request.truncation() {
            ProtoTruncation::None => Truncation::Refuse,
            ProtoTruncation::Unspecified | ProtoTruncation::End => Truncation::End,
        };
        let inputs = request.inputs.into_iter().map(input).collect();
        let embedded = self
            .embedder
            .embed(&request.model, inputs, truncation, deadline)
            .await?;
        Ok(response(embedded, start))
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
