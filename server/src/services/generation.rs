//! `marquee.v1.GenerationService`: requests translated to the engine's terms and run by
//! its [`Generation`]; GenerateStream forwards each delta as it comes, and a client
//! that goes away cancels its sequence.

use crate::engine::deadline::Deadline;
use crate::engine::generation::request::{
    ChatMessage, ContentPart, FinishReason, GenerationEvent, GenerationInput, GenerationParams,
    GenerationResult as DomainResult, RecallInput,
};
use crate::engine::generation::{Generation, LoadedAdapter};
use crate::services::deadline::{Bounded, DeadlineOf};
use crate::services::observed;
use marquee_plugin_api::GeneratedToken as DomainToken;
use marquee_proto::v1::generation_service_server::GenerationService;
use marquee_proto::v1::{
    content_part, generate_request, generate_stream_response, AdapterInfo, FinishReason as Proto,
    GenerateRequest, GenerateResponse, GenerateStreamResponse, GeneratedToken, GenerationDelta,
    GenerationParameters, GenerationResult, GenerationTimings, GenerationUsage,
    ListAdaptersRequest, ListAdaptersResponse, LoadAdapterRequest, TokenLogprob,
    UnloadAdapterRequest, UnloadAdapterResponse,
};
use std::path::Path;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The generation service.
#[derive(Clone)]
pub struct GenerationApi {
    generation: Generation,
}

impl GenerationApi {
    /// A service generating with `generation`.
    pub fn new(generation: Generation) -> Self {
        Self { generation }
    }
}

/// The request's input in the engine's terms.
fn input(request: generate_request::Input) -> GenerationInput {
    match request {
        generate_request::Input::Chat(chat) => GenerationInput::Chat(
            chat.messages
                .into_iter()
                .map(|m| ChatMessage {
                    role: m.role,
                    content: m
                        .content
                        .into_iter()
                        .filter_map(|p| p.part)
                        .map(|p| match p {
                            content_part::Part::Text(t) => ContentPart::Text(t),
                            content_part::Part::Image(b) => ContentPart::Image(b),
                        })
                        .collect(),
                })
                .collect(),
        ),
        generate_request::Input::Recall(r) => GenerationInput::Recall(RecallInput {
            scene_images: r.scene_images,
            ocr_text: r.ocr_text,
            transcript: r.transcript,
        }),
    }
}

/// The request's parameters in the engine's terms, unset fields at their defaults.
fn params(p: Option<GenerationParameters>) -> GenerationParams {
    let p = p.unwrap_or_default();
    let defaults = GenerationParams::default();
    GenerationParams {
        max_new_tokens: p.max_new_tokens.unwrap_or(defaults.max_new_tokens),
        min_new_tokens: p.min_new_tokens,
        temperature: p.temperature.unwrap_or(defaults.temperature),
        top_k: p.top_k,
        top_p: p.top_p.unwrap_or(defaults.top_p),
        repetition_penalty: p.repetition_penalty.unwrap_or(defaults.repetition_penalty),
        stop: p.stop,
        stop_token_ids: p.stop_token_ids,
        seed: p.seed.unwrap_or(defaults.seed),
        logprobs: p.logprobs,
        top_logprobs: p.top_logprobs,
        adapter: Some(p.adapter).filter(|a| !a.is_empty()),
    }
}

fn token(t: DomainToken) -> GeneratedToken {
    GeneratedToken {
        token_id: t.token_id,
        logprob: t.logprob,
        top_logprobs: t
            .top_logprobs
            .into_iter()
            .map(|a| TokenLogprob {
                token_id: a.token_id,
                logprob: a.logprob,
            })
            .collect(),
    }
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn result(r: DomainResult) -> GenerationResult {
    GenerationResult {
        model: r.model,
        text: r.text,
        token_ids: r.token_ids,
        finish_reason: match r.finish_reason {
            FinishReason::Length => Proto::Length,
            FinishReason::EosToken => Proto::EosToken,
            FinishReason::StopSequence => Proto::StopSequence,
        } as i32,
        usage: Some(GenerationUsage {
            prompt_tokens: r.usage.prompt_tokens,
            image_tokens: r.usage.image_tokens,
            completion_tokens: r.usage.completion_tokens,
        }),
        timings: Some(GenerationTimings {
            queue_ms: millis(r.timings.queue),
            time_to_first_token_ms: millis(r.timings.time_to_first_token),
            decode_ms: millis(r.timings.decode),
        }),
        tokens: r.tokens.into_iter().map(token).collect(),
    }
}

fn adapter_info(model: &str, a: LoadedAdapter) -> AdapterInfo {
    AdapterInfo {
        model: model.to_string(),
        name: a.name,
        path: a.path.display().to_string(),
        rank: a.info.rank,
        alpha: a.info.alpha,
        use_rslora: a.info.use_rslora,
        target_modules: a.info.target_modules,
    }
}

/// The request's model, input and parameters in the engine's terms.
pub(crate) fn request_parts(
    r: GenerateRequest,
) -> Result<(String, GenerationInput, GenerationParams), Status> {
    let prompt = r
        .input
        .ok_or_else(|| Status::invalid_argument("the request has no input (chat or recall)"))?;
    Ok((r.model, input(prompt), params(r.parameters)))
}

#[tonic::async_trait]
impl GenerationService for GenerationApi {
    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<GenerateResponse>, Status> {
        let deadline = Deadline::of(&request);
        observed("Generate", deadline, async {
            let (model, input, params) = request_parts(request.into_inner())?;
            let r = self
                .generation
                .generate(&model, input, params, deadline)
                .await?;
            Ok(GenerateResponse {
                result: Some(result(r)),
            })
        })
        .await
    }

    type GenerateStreamStream = Bounded<ReceiverStream<Result<GenerateStreamResponse, Status>>>;

    async fn generate_stream(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStreamStream>, Status> {
        let deadline = Deadline::of(&request);
        let mut stream = observed("GenerateStream", deadline, async {
            let (model, input, params) = request_parts(request.into_inner())?;
            Ok(self
                .generation
                .start(&model, input, params, deadline)
                .await?)
        })
        .await?
        .into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let message = event.map_err(Status::from).map(|e| GenerateStreamResponse {
                    event: Some(match e {
                        GenerationEvent::Delta { tokens, text } => {
                            generate_stream_response::Event::Delta(GenerationDelta {
                                tokens: tokens.into_iter().map(token).collect(),
                                text,
                            })
                        }
                        GenerationEvent::Done(r) => {
                            generate_stream_response::Event::Result(result(r))
                        }
                    }),
                });
                // A closed channel means the client went away: dropping `stream`
                // cancels the sequence.
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Bounded::new(
            ReceiverStream::new(rx),
            deadline,
        )))
    }

    async fn load_adapter(
        &self,
        request: Request<LoadAdapterRequest>,
    ) -> Result<Response<AdapterInfo>, Status> {
        observed("LoadAdapter", Deadline::of(&request), async {
            let r = request.into_inner();
            if r.name.is_empty() || r.path.is_empty() {
                return Err(Status::invalid_argument("name and path are required"));
            }
            let loaded = self
                .generation
                .load_adapter(&r.model, &r.name, Path::new(&r.path))
                .await?;
            let model = self.generation.generator(&r.model)?.name.clone();
            Ok(adapter_info(&model, loaded))
        })
        .await
    }

    async fn unload_adapter(
        &self,
        request: Request<UnloadAdapterRequest>,
    ) -> Result<Response<UnloadAdapterResponse>, Status> {
        observed("UnloadAdapter", Deadline::of(&request), async {
            let r = request.into_inner();
            self.generation.unload_adapter(&r.model, &r.name)?;
            Ok(UnloadAdapterResponse {})
        })
        .await
    }

    async fn list_adapters(
        &self,
        request: Request<ListAdaptersRequest>,
    ) -> Result<Response<ListAdaptersResponse>, Status> {
        observed("ListAdapters", Deadline::of(&request), async {
            let (model, adapters) = self.generation.adapters(&request.into_inner().model)?;
            Ok(ListAdaptersResponse {
                adapters: adapters
                    .into_iter()
                    .map(|a| adapter_info(&model, a))
                    .collect(),
            })
        })
        .await
    }
}
