//! `marquee.v1.EmbeddingService`: validation, admission, tokenization, batching, for
//! every model kind: texts (tokenized first), encoded images, and embeddings to fuse
//! (given, or looked up in collections). Pipelines are in [`super::pipeline`].

use crate::batcher::EmbedJob;
use crate::config::Limits;
use crate::deadline::{Bounded, Deadline};
use crate::inputs::{FusionRows, Inputs};
use crate::metrics as m;
use crate::registry::{kind_name, LoadedModel, QueueSlot, Registry};
use crate::retrieval::store::Store;
use crate::services::observed;
use crate::services::pipeline::PipelineParts;
use crate::shutdown::Drain;
use crate::tokenize::TokenizerPool;
use marquee_plugin_api::PluginKind;
use marquee_proto::v1::embed_input::Input;
use marquee_proto::v1::embedding_service_server::EmbeddingService;
use marquee_proto::v1::{
    embed_stream_response, EmbedInput, EmbedRequest, EmbedResponse, EmbedStreamResponse, Embedding,
    StoredFusionInput, StreamError, Timings, Truncation, Usage,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// The embedding service.
#[derive(Clone)]
pub struct EmbeddingApi {
    registry: Arc<Registry>,
    tokenizer: Arc<TokenizerPool>,
    store: Arc<Store>,
    limits: Limits,
    drain: Drain,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// What one model (or a pipeline's models together) computed for a request.
#[derive(Debug, Default)]
pub struct Stage {
    /// `n × dim` values in input order.
    pub vectors: Vec<f32>,
    /// Length of each vector.
    pub dim: usize,
    /// Tokens fed to a text model.
    pub input_tokens: u64,
    /// Texts cut at the token limit.
    pub truncated_inputs: u32,
    /// Time queued before the first batch (summed over a pipeline's models).
    pub queue: Duration,
    /// Time tokenizing.
    pub tokenize: Duration,
    /// Time in the batches that carried the inputs (summed over a pipeline's models).
    pub inference: Duration,
}

impl Stage {
    /// The vectors one by one.
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.vectors.chunks_exact(self.dim.max(1))
    }

    /// Adds another stage's usage and times to this one's.
    pub fn add_costs(&mut self, other: &Stage) {
        self.input_tokens += other.input_tokens;
        self.truncated_inputs += other.truncated_inputs;
        self.queue += other.queue;
        self.tokenize += other.tokenize;
        self.inference += other.inference;
    }

    fn response(self, model: String, start: Instant) -> EmbedResponse {
        EmbedResponse {
            model,
            embeddings: self
                .rows()
                .map(|v| Embedding { values: v.to_vec() })
                .collect(),
            dimension: self.dim as u32,
            usage: Some(Usage {
                input_tokens: self.input_tokens,
                truncated_inputs: self.truncated_inputs,
            }),
            timings: Some(Timings {
                queue_us: micros(self.queue),
                tokenize_us: micros(self.tokenize),
                inference_us: micros(self.inference),
                total_us: micros(start.elapsed()),
            }),
        }
    }
}

/// What an input is, for messages.
fn input_name(input: &Option<Input>) -> &'static str {
    match input {
        Some(Input::Text(_)) => "a text",
        Some(Input::Image(_)) => "an image",
        Some(Input::Multimodal(_)) => "a multimodal input",
        Some(Input::FusionVectors(_)) => "a set of vectors to fuse",
        Some(Input::Stored(_)) => "a stored item to fuse",
        None => "empty",
    }
}

/// `INVALID_ARGUMENT` for input `i` of a kind `model` does not take.
pub(crate) fn wrong_input(
    i: usize,
    input: &Option<Input>,
    model: &str,
    kind: &str,
    takes: &str,
) -> Status {
    if input.is_none() {
        return Status::invalid_argument(format!("input {i} has neither text nor image"));
    }
    Status::invalid_argument(format!(
        "input {i} is {}, but model {model} is {kind}, which takes {takes}",
        input_name(input)
    ))
}

impl EmbeddingApi {
    /// A service over the registry's models (fusion inputs may name the store's
    /// collections); its streams close when `drain` starts.
    pub fn new(
        registry: Arc<Registry>,
        tokenizer: Arc<TokenizerPool>,
        store: Arc<Store>,
        limits: Limits,
        drain: Drain,
    ) -> Self {
        Self {
            registry,
            tokenizer,
            store,
            limits,
            drain,
        }
    }

    /// The model registry it serves from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The texts of a text encoder's inputs.
    fn texts(model: &LoadedModel, inputs: Vec<EmbedInput>) -> Result<Vec<String>, Status> {
        inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| match input.input {
                Some(Input::Text(t)) if t.is_empty() => Err(Status::invalid_argument(format!(
                    "input {i} is an empty string"
                ))),
                Some(Input::Text(t)) => Ok(t),
                other => Err(wrong_input(
                    i,
                    &other,
                    &model.name,
                    "a text encoder",
                    "texts",
                )),
            })
            .collect()
    }

    /// Checks one encoded image against `limits.max_image_bytes`.
    pub(crate) fn check_image(&self, what: &str, bytes: &[u8]) -> Result<(), Status> {
        if bytes.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{what} is an empty image"
            )));
        }
        if bytes.len() > self.limits.max_image_bytes {
            return Err(Status::resource_exhausted(format!(
                "{what} is an image of {} bytes, over limits.max_image_bytes = {}",
                bytes.len(),
                self.limits.max_image_bytes
            )));
        }
        Ok(())
    }

    /// The encoded images of an image encoder's inputs, back to back.
    fn images(&self, model: &LoadedModel, inputs: Vec<EmbedInput>) -> Result<Inputs, Status> {
        let mut bytes = Vec::new();
        let mut offsets = vec![0];
        for (i, input) in inputs.into_iter().enumerate() {
            match input.input {
                Some(Input::Image(image)) => {
                    self.check_image(&format!("input {i}"), &image)?;
                    bytes.extend_from_slice(&image);
                    offsets.push(bytes.len());
                }
                other => {
                    return Err(wrong_input(
                        i,
                        &other,
                        &model.name,
                        "an image encoder",
                        "encoded images",
                    ))
                }
            }
        }
        Ok(Inputs::Images { bytes, offsets })
    }

    /// A stored item's vector in `collection`; `None` when the item is not there.
    fn stored_vector(&self, collection: &str, id: &str) -> Result<Option<Vec<f32>>, Status> {
        Ok(self.store.get(collection)?.vector_of(id))
    }

    /// The text, poster and thumbnail vectors of a stored fusion input.
    fn stored_row(&self, i: usize, s: &StoredFusionInput) -> Result<[Option<Vec<f32>>; 3], Status> {
        if s.text_collection.is_empty() {
            return Err(Status::invalid_argument(format!(
                "input {i}: a stored fusion input needs a text_collection"
            )));
        }
        let text = self
            .stored_vector(&s.text_collection, &s.item_id)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "input {i}: item {:?} is not in collection {}",
                    s.item_id, s.text_collection
                ))
            })?;
        let image = |collection: &str| match collection {
            "" => Ok(None),
            c => self.stored_vector(c, &s.item_id),
        };
        Ok([
            Some(text),
            image(&s.poster_collection)?,
            image(&s.thumbnail_collection)?,
        ])
    }

    /// The rows a fusion model's inputs make, checked against its widths (from its
    /// `config.json`; without them, the first row's widths bind the others).
    fn fusion_rows(
        &self,
        model: &LoadedModel,
        inputs: Vec<EmbedInput>,
    ) -> Result<FusionRows, Status> {
        let mut rows = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.into_iter().enumerate() {
            let row = match input.input {
                Some(Input::FusionVectors(v)) => {
                    let image = |v: Vec<f32>| (!v.is_empty()).then_some(v);
                    [Some(v.text), image(v.poster), image(v.thumbnail)]
                }
                Some(Input::Stored(s)) => self.stored_row(i, &s)?,
                other => {
                    return Err(wrong_input(
                        i,
                        &other,
                        &model.name,
                        "a fusion model",
                        "fusion_vectors or stored items",
                    ))
                }
            };
            rows.push(row);
        }
        let first_image = rows.iter().flat_map(|r| [&r[1], &r[2]]).flatten().next();
        let (text_dim, image_dim) = match model.fusion_dims {
            Some(d) => (d.text, d.image),
            None => (
                rows.first().and_then(|r| r[0].as_ref()).map_or(0, Vec::len),
                first_image.map_or(0, Vec::len),
            ),
        };
        let mut fused = FusionRows::new(text_dim, image_dim);
        for (i, [text, poster, thumbnail]) in rows.iter().enumerate() {
            let text = text.as_deref().unwrap_or_default();
            for (what, v, width) in [
                ("text embedding", Some(text), text_dim),
                ("poster embedding", poster.as_deref(), image_dim),
                ("thumbnail embedding", thumbnail.as_deref(), image_dim),
            ] {
                if let Some(v) = v.filter(|v| v.len() != width) {
                    return Err(Status::invalid_argument(format!(
                        "input {i}: the {what} has {} values, fusion model {} takes {width}",
                        v.len(),
                        model.name
                    )));
                }
            }
            fused.push(text, poster.as_deref(), thumbnail.as_deref());
        }
        Ok(fused)
    }

    /// Embeds inputs with one model (no pipeline), after checking that they are of the
    /// kind it takes.
    pub(crate) async fn embed_with_model(
        &self,
        model: &Arc<LoadedModel>,
        inputs: Vec<EmbedInput>,
        refuse_truncation: bool,
        deadline: Option<Deadline>,
    ) -> Result<Stage, Status> {
        let ready = match model.kind() {
            PluginKind::TextEncoder => {
                let texts = Self::texts(model, inputs)?;
                return self
                    .embed_texts_with(model, texts, refuse_truncation, deadline)
                    .await;
            }
            PluginKind::ImageEncoder => self.images(model, inputs)?,
            PluginKind::Fusion => Inputs::Fusion(self.fusion_rows(model, inputs)?),
            PluginKind::Generator => {
                return Err(Status::unimplemented(format!(
                    "model {} is {}; generation has no RPC yet",
                    model.name,
                    kind_name(PluginKind::Generator)
                )))
            }
        };
        self.embed_ready(model, ready, deadline).await
    }

    /// Admits, tokenizes and embeds texts with a text encoder.
    async fn embed_texts_with(
        &self,
        model: &Arc<LoadedModel>,
        texts: Vec<String>,
        refuse_truncation: bool,
        deadline: Option<Deadline>,
    ) -> Result<Stage, Status> {
        if let Some(d) = deadline.filter(Deadline::passed) {
            return Err(d.exceeded());
        }
        let slot = model.admit(texts.len())?;
        let tokenize_start = Instant::now();
        let batch = self
            .tokenizer
            .tokenize(Arc::clone(model), texts, refuse_truncation, deadline)
            .await?;
        let tokenize = tokenize_start.elapsed();
        model.metrics.record_tokenize(tokenize);
        let input_tokens = batch.ids.len() as u64;
        let inputs = Inputs::Tokens {
            ids: batch.ids,
            offsets: batch.offsets,
        };
        let mut stage = self.run_job(model, slot, inputs, deadline).await?;
        stage.tokenize = tokenize;
        stage.input_tokens = input_tokens;
        stage.truncated_inputs = batch.truncated_inputs;
        Ok(stage)
    }

    /// Admits and embeds inputs that need no preparation (images, fusion rows).
    pub(crate) async fn embed_ready(
        &self,
        model: &Arc<LoadedModel>,
        inputs: Inputs,
        deadline: Option<Deadline>,
    ) -> Result<Stage, Status> {
        if let Some(d) = deadline.filter(Deadline::passed) {
            return Err(d.exceeded());
        }
        let slot = model.admit(inputs.count())?;
        self.run_job(model, slot, inputs, deadline).await
    }

    /// Queues admitted inputs for the model's batcher and waits for their vectors;
    /// refused first when they could not finish by the deadline.
    async fn run_job(
        &self,
        model: &Arc<LoadedModel>,
        slot: QueueSlot,
        inputs: Inputs,
        deadline: Option<Deadline>,
    ) -> Result<Stage, Status> {
        if let Err(status) = model.check_deadline(deadline, inputs.cost_from(0)) {
            m::record_dropped(&model.name, "deadline", inputs.count());
            return Err(status);
        }
        let output = match model.try_run_alone(&inputs) {
            Some(output) => {
                drop(slot);
                output?
            }
            None => {
                let (reply, result) = oneshot::channel();
                model.submit(EmbedJob {
                    inputs,
                    enqueued: Instant::now(),
                    deadline,
                    reply,
                    slot,
                })?;
                result.await.map_err(|_| {
                    Status::internal(format!("model {} stopped before answering", model.name))
                })??
            }
        };
        model.metrics.record_job(output.queue, output.inference);
        Ok(Stage {
            vectors: output.vectors,
            dim: model.dimension(),
            queue: output.queue,
            inference: output.inference,
            ..Stage::default()
        })
    }

    /// Serves one request end to end, and for a pipeline also returns its intermediate
    /// embeddings. Past `deadline` it is not started, and dropped from the queues it
    /// is in; one that cannot finish by then is refused before inference.
    pub async fn embed_detailed(
        &self,
        request: EmbedRequest,
        deadline: Option<Deadline>,
    ) -> Result<(EmbedResponse, Option<PipelineParts>), Status> {
        let start = Instant::now();
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
        let refuse_truncation = request.truncation() == Truncation::None;
        if let Some(pipeline) = self.registry.pipeline(&request.model) {
            let (stage, parts) = self
                .embed_pipeline(&pipeline, request.inputs, refuse_truncation, deadline)
                .await?;
            return Ok((stage.response(pipeline.name.clone(), start), Some(parts)));
        }
        let model = self.registry.get(&request.model)?;
        let stage = self
            .embed_with_model(&model, request.inputs, refuse_truncation, deadline)
            .await?;
        Ok((stage.response(model.name.clone(), start), None))
    }

    /// Serves one request end to end (see [`embed_detailed`](Self::embed_detailed)).
    pub async fn embed_one(
        &self,
        request: EmbedRequest,
        deadline: Option<Deadline>,
    ) -> Result<EmbedResponse, Status> {
        Ok(self.embed_detailed(request, deadline).await?.0)
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
