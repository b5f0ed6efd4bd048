//! `POST /v1/chat/completions` over the engine's
//! [`Generation`](crate::engine::generation::Generation): OpenAI's request and response
//! shapes, streamed as server-sent events when `stream` is true.
//!
//! Parameters: `max_completion_tokens` / `max_tokens` (default 256), `temperature`
//! (default 1, as OpenAI's; 0 = greedy), `top_p`, `stop`, `seed` (random when absent,
//! as OpenAI's), `logprobs` / `top_logprobs`, `stream`, `stream_options.include_usage`,
//! and vLLM's `top_k`, `min_tokens`, `repetition_penalty`, `ignore_eos`,
//! `stop_token_ids`. Refused with a message: `n` other than 1, non-zero
//! `presence_penalty` / `frequency_penalty`, `logit_bias`, `tools`, a `response_format`
//! other than text, remote image URLs. `model` names a generator, `MODEL:ADAPTER`, or a
//! loaded adapter. Tokens in `logprobs` are written `token_id:ID` (vLLM's
//! `return_tokens_as_token_ids` form): plugins detokenize whole texts, not single tokens.

use super::body::JsonBody;
use super::error::ApiError;
use super::HttpApi;
use crate::engine::deadline::{within, Deadline};
use crate::engine::generation::request::{
    ChatMessage, ContentPart, FinishReason, GenerationEvent, GenerationInput, GenerationParams,
    GenerationResult,
};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use marquee_plugin_api::GeneratedToken;
use serde::Deserialize;
use serde_json::{json, Value};
use std::hash::{BuildHasher, RandomState};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Tokens generated when the request sets no limit.
const DEFAULT_MAX_TOKENS: u32 = 256;
/// OpenAI's bound on `top_logprobs`.
const MAX_TOP_LOGPROBS: u32 = 20;

/// A message's content: a string, or a list of parts.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Deserialize)]
struct ImageUrl {
    url: String,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// A string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The request.
#[derive(Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    model: String,
    messages: Vec<Message>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Option<Stop>,
    seed: Option<i64>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<u32>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    logit_bias: Option<serde_json::Map<String, Value>>,
    tools: Option<Vec<Value>>,
    response_format: Option<Value>,
    top_k: Option<i64>,
    min_tokens: Option<u32>,
    repetition_penalty: Option<f32>,
    #[serde(default)]
    ignore_eos: bool,
    #[serde(default)]
    stop_token_ids: Vec<u32>,
}

/// An image part's bytes: `data:` URIs only, base64-encoded.
fn image_bytes(url: &str) -> Result<Vec<u8>, ApiError> {
    let param = "messages";
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(ApiError::invalid_param(
            param,
            "remote image URLs are not fetched: send the image inline as a data: URI \
             (data:image/png;base64,...)",
        ));
    };
    let Some((media, data)) = rest.split_once(',') else {
        return Err(ApiError::invalid_param(
            param,
            "a data: URI without a comma",
        ));
    };
    if !media.ends_with(";base64") {
        return Err(ApiError::invalid_param(
            param,
            "image data: URIs must be base64-encoded (data:image/png;base64,...)",
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| ApiError::invalid_param(param, format!("the image's base64 is invalid: {e}")))
}

fn messages(messages: Vec<Message>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param("messages", "messages is empty"));
    }
    messages
        .into_iter()
        .map(|m| {
            let content = match m.content {
                None => Vec::new(),
                Some(Content::Text(text)) => vec![ContentPart::Text(text)],
                Some(Content::Parts(parts)) => parts
                    .into_iter()
                    .map(|p| match p {
                        Part::Text { text } => Ok(ContentPart::Text(text)),
                        Part::ImageUrl { image_url } => {
                            image_bytes(&image_url.url).map(ContentPart::Image)
                        }
                    })
                    .collect::<Result<_, _>>()?,
            };
            Ok(ChatMessage {
                role: m.role,
                content,
            })
        })
        .collect()
}

fn unsupported(param: &'static str, what: &str) -> ApiError {
    ApiError::invalid_param(param, format!("{what} is not supported by this server"))
}

fn random_seed() -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The engine's parameters for a request, after refusing what it cannot do.
fn params(r: &ChatRequest, adapter: Option<String>) -> Result<GenerationParams, ApiError> {
    if r.n.is_some_and(|n| n != 1) {
        return Err(unsupported("n", "n other than 1"));
    }
    if r.presence_penalty.is_some_and(|p| p != 0.0) {
        return Err(unsupported("presence_penalty", "presence_penalty"));
    }
    if r.frequency_penalty.is_some_and(|p| p != 0.0) {
        return Err(unsupported("frequency_penalty", "frequency_penalty"));
    }
    if r.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(unsupported("logit_bias", "logit_bias"));
    }
    if r.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(unsupported("tools", "tool calling"));
    }
    if let Some(format) = &r.response_format {
        if format.get("type").and_then(Value::as_str) != Some("text") {
            return Err(unsupported(
                "response_format",
                "a response_format other than text",
            ));
        }
    }
    let top_logprobs = r.top_logprobs.unwrap_or(0);
    if top_logprobs > MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid_param(
            "top_logprobs",
            format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"),
        ));
    }
    if top_logprobs > 0 && !r.logprobs {
        return Err(ApiError::invalid_param(
            "top_logprobs",
            "top_logprobs needs logprobs set to true",
        ));
    }
    let max_new_tokens = r
        .max_completion_tokens
        .or(r.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let defaults = GenerationParams::default();
    Ok(GenerationParams {
        max_new_tokens,
        min_new_tokens: if r.ignore_eos {
            max_new_tokens
        } else {
            r.min_tokens.unwrap_or(0)
        },
        temperature: r.temperature.unwrap_or(1.0),
        top_k: r
            .top_k
            .filter(|&k| k > 0)
            .map_or(0, |k| k.min(u32::MAX as i64) as u32),
        top_p: r.top_p.unwrap_or(defaults.top_p),
        repetition_penalty: r.repetition_penalty.unwrap_or(defaults.repetition_penalty),
        stop: match &r.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        },
        stop_token_ids: r.stop_token_ids.clone(),
        seed: r.seed.map_or_else(random_seed, |s| s as u64),
        logprobs: r.logprobs,
        top_logprobs,
        adapter,
    })
}

fn token_name(id: u32) -> String {
    format!("token_id:{id}")
}

/// OpenAI's `logprobs` object for `tokens`.
fn logprobs(tokens: &[GeneratedToken]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "token": token_name(t.token_id),
                "logprob": t.logprob,
                "bytes": null,
                "top_logprobs": t.top_logprobs.iter().map(|a| json!({
                    "token": token_name(a.token_id),
                    "logprob": a.logprob,
                    "bytes": null,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "content": content })
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::EosToken | FinishReason::StopSequence => "stop",
    }
}

fn usage(r: &GenerationResult) -> Value {
    let u = r.usage;
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// What every response and chunk of one completion shares.
struct Completion {
    id: String,
    created: u64,
    model: String,
    logprobs: bool,
}

impl Completion {
    fn chunk(&self, delta: Value, logprobs: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        })
    }

    fn response(&self, r: &GenerationResult) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": if self.logprobs { logprobs(&r.tokens) } else { Value::Null },
                "finish_reason": finish_reason(r.finish_reason),
            }],
            "usage": usage(r),
        })
    }
}

/// One server-sent event.
fn event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// `POST /v1/chat/completions`.
pub async fn create(
    State(api): State<HttpApi>,
    deadline: Option<Extension<Deadline>>,
    JsonBody(request): JsonBody<ChatRequest>,
) -> Result<Response, ApiError> {
    let deadline = deadline.map(|Extension(d)| d);
    let (model, adapter) = api.generation.model_and_adapter(&request.model)?;
    let params = params(&request, adapter)?;
    let input = GenerationInput::Chat(messages(request.messages)?);
    let completion = Completion {
        id: format!("chatcmpl-{:016x}{:016x}", random_seed(), random_seed()),
        created: super::unix_now(),
        model: if request.model.is_empty() {
            model.name.clone()
        } else {
            request.model
        },
        logprobs: params.logprobs,
    };
    if !request.stream {
        let result = within(
            deadline,
            api.generation
                .generate(&model.name, input, params, deadline),
        )
        .await?;
        return Ok(Json(completion.response(&result)).into_response());
    }
    let include_usage = request.stream_options.unwrap_or_default().include_usage;
    let mut stream = within(
        deadline,
        api.generation.start(&model.name, input, params, deadline),
    )
    .await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        let send = |data: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(data)).await.is_ok() }
        };
        let first = completion.chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            None,
        );
        if !send(event(&first)).await {
            return;
        }
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = stream.next() => next,
            };
            let data = match next {
                None => break,
                Some(Ok(GenerationEvent::Delta { tokens, text })) => {
                    if text.is_empty() && !completion.logprobs {
                        continue;
                    }
                    let lp = if completion.logprobs {
                        logprobs(&tokens)
                    } else {
                        Value::Null
                    };
                    event(&completion.chunk(json!({"content": text}), lp, None))
                }
                Some(Ok(GenerationEvent::Done(result))) => {
                    let reason = finish_reason(result.finish_reason);
                    if !send(event(&completion.chunk(
                        json!({}),
                        Value::Null,
                        Some(reason),
                    )))
                    .await
                    {
                        return;
                    }
                    if include_usage {
                        let mut last = completion.chunk(json!({}), Value::Null, None);
                        last["choices"] = json!([]);
                        last["usage"] = usage(&result);
                        send(event(&last)).await;
                    }
                    break;
                }
                Some(Err(e)) => {
                    send(event(&ApiError::from(e).body())).await;
                    break;
                }
            };
            if !send(data).await {
                return;
            }
        }
        send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn parameters_map_to_the_engine_and_unsupported_ones_are_refused() {
        let r = request(json!({"messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 9, "temperature": 0, "top_k": -1, "stop": "x", "seed": 7,
            "logprobs": true, "top_logprobs": 2, "ignore_eos": true, "repetition_penalty": 1.1}));
        let p = params(&r, Some("a".into())).unwrap();
        assert_eq!(
            (
                p.max_new_tokens,
                p.min_new_tokens,
                p.temperature,
                p.top_k,
                p.seed
            ),
            (9, 9, 0.0, 0, 7)
        );
        assert_eq!(
            (p.stop, p.top_logprobs, p.adapter),
            (vec!["x".to_string()], 2, Some("a".into()))
        );
        let r = request(json!({"messages": [], "max_completion_tokens": 3, "max_tokens": 9}));
        assert_eq!(params(&r, None).unwrap().max_new_tokens, 3);
        assert_eq!(params(&r, None).unwrap().temperature, 1.0);
        for (body, param) in [
            (json!({"messages": [], "n": 2}), "n"),
            (
                json!({"messages": [], "presence_penalty": 0.5}),
                "presence_penalty",
            ),
            (
                json!({"messages": [], "tools": [{"type": "function"}]}),
                "tools",
            ),
            (
                json!({"messages": [], "response_format": {"type": "json_object"}}),
                "response_format",
            ),
            (json!({"messages": [], "top_logprobs": 2}), "top_logprobs"),
            (
                json!({"messages": [], "logprobs": true, "top_logprobs": 21}),
                "top_logprobs",
            ),
        ] {
            let e = params(&request(body), None).unwrap_err();
            assert_eq!((e.status.as_u16(), e.param), (400, Some(param)));
        }
    }

    #[test]
    fn images_come_from_base64_data_uris_only() {
        assert_eq!(
            image_bytes("data:image/png;base64,AAEC").unwrap(),
            vec![0, 1, 2]
        );
        for bad in [
            "https://example.com/a.png",
            "data:image/png,AAEC",
            "data:image/png;base64",
            "data:image/png;base64,@@",
        ] {
            assert_eq!(image_bytes(bad).unwrap_err().status.as_u16(), 400, "{bad}");
        }
    }

    #[test]
    fn messages_take_strings_and_parts() {
        let r = request(json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAEC"}}]}]}));
        let m = messages(r.messages).unwrap();
        assert_eq!(m[0].content, vec![ContentPart::Text("be brief".into())]);
        assert_eq!(
            m[1].content,
            vec![
                ContentPart::Text("what is".into()),
                ContentPart::Image(vec![0, 1, 2])
            ]
        );
        assert!(serde_json::from_value::<ChatRequest>(json!({"messages": [
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}))
        .is_err());
    }
}
