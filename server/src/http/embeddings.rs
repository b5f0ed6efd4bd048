//! `POST /v1/embeddings`: OpenAI's request and response shapes over the engine's
//! [`Embedder`](crate::engine::embedder::Embedder). `input` is a string, a list of
//! strings, a token-id array or a list of them (ids of the model's own vocabulary,
//! taken whole); `encoding_format` is `float` or `base64` (little-endian f32, as the
//! OpenAI SDKs decode it). Marquee's additions: `"truncate": false` refuses texts over
//! the model's token limit instead of cutting them; a `Server-Timing` header gives the
//! time the request spent queued, tokenizing and in inference.

use super::body::JsonBody;
use super::error::ApiError;
use super::HttpApi;
use crate::engine::deadline::{within, Deadline};
use crate::engine::request::{Input, Truncation};
use crate::engine::runner::Stage;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The request.
#[derive(Deserialize)]
pub struct EmbeddingRequest {
    input: Value,
    #[serde(default)]
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default = "default_truncate")]
    truncate: bool,
}

fn default_truncate() -> bool {
    true
}

/// One vector, as floats or base64.
#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// The response.
#[derive(Serialize)]
pub struct EmbeddingResponse {
    object: &'static str,
    data: Vec<EmbeddingObject>,
    model: String,
    usage: Usage,
}

fn token_ids(i: Option<usize>, values: &[Value]) -> Result<Vec<u32>, ApiError> {
    values
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    let at = i.map(|i| format!("input[{i}]")).unwrap_or("input".into());
                    ApiError::invalid_param(
                        "input",
                        format!("{at} mixes token ids with other values: {v} is not a token id"),
                    )
                })
        })
        .collect()
}

/// The engine's inputs for `input`.
fn inputs(input: Value) -> Result<Vec<Input>, ApiError> {
    let shape_error = || {
        ApiError::invalid_param(
            "input",
            "input must be a string, a list of strings, a token-id array or a list of token-id arrays",
        )
    };
    match input {
        Value::String(text) => Ok(vec![Input::Text(text)]),
        Value::Array(items) => match items.first() {
            None => Err(ApiError::invalid_param("input", "input is an empty list")),
            Some(Value::Number(_)) => Ok(vec![Input::TokenIds(token_ids(None, &items)?)]),
            Some(Value::String(_)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => Ok(Input::Text(text)),
                    _ => Err(shape_error()),
                })
                .collect(),
            Some(Value::Array(_)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Array(ids) => Ok(Input::TokenIds(token_ids(Some(i), &ids)?)),
                    _ => Err(shape_error()),
                })
                .collect(),
            Some(_) => Err(shape_error()),
        },
        _ => Err(shape_error()),
    }
}

fn base64_of(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `POST /v1/embeddings`.
pub async fn create(
    State(api): State<HttpApi>,
    deadline: Option<Extension<Deadline>>,
    JsonBody(request): JsonBody<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let deadline = deadline.map(|Extension(d)| d);
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("encoding_format {other:?} is not float or base64"),
            ))
        }
    };
    let inputs = inputs(request.input)?;
    let truncation = if request.truncate {
        Truncation::End
    } else {
        Truncation::Refuse
    };
    let embedded = within(
        deadline,
        api.embedder
            .embed(&request.model, inputs, truncation, deadline),
    )
    .await?;
    let stage = embedded.stage;
    if let Some(asked) = request.dimensions.filter(|&d| d != stage.dim as u64) {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "model {} gives {} dimensions; it cannot give {asked}",
                embedded.model, stage.dim
            ),
        ));
    }
    let data = stage
        .rows()
        .enumerate()
        .map(|(index, row)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: if base64 {
                Vector::Base64(base64_of(row))
            } else {
                Vector::Float(row.to_vec())
            },
        })
        .collect();
    let timing = server_timing(&stage);
    let response = Json(EmbeddingResponse {
        object: "list",
        data,
        model: embedded.model,
        usage: Usage {
            prompt_tokens: stage.input_tokens,
            total_tokens: stage.input_tokens,
        },
    });
    Ok((
        [(header::HeaderName::from_static("server-timing"), timing)],
        response,
    )
        .into_response())
}

/// The `Server-Timing` value of a request's stages, in ms.
fn server_timing(stage: &Stage) -> String {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    format!(
        "queue;dur={:.3}, tokenize;dur={:.3}, inference;dur={:.3}",
        ms(stage.queue),
        ms(stage.tokenize),
        ms(stage.inference)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_openai_input_shape_and_clear_errors_for_others() {
        assert_eq!(inputs(json!("hi")).unwrap(), vec![Input::Text("hi".into())]);
        assert_eq!(
            inputs(json!(["a", "b"])).unwrap(),
            vec![Input::Text("a".into()), Input::Text("b".into())]
        );
        assert_eq!(
            inputs(json!([101, 7592, 102])).unwrap(),
            vec![Input::TokenIds(vec![101, 7592, 102])]
        );
        assert_eq!(
            inputs(json!([[101, 102], [101, 2, 102]])).unwrap(),
            vec![
                Input::TokenIds(vec![101, 102]),
                Input::TokenIds(vec![101, 2, 102])
            ]
        );
        for bad in [
            json!([]),
            json!(3),
            json!({"text": "x"}),
            json!(["a", 1]),
            json!([1, -2]),
            json!([[1], "a"]),
            json!([1.5]),
            json!([5000000000u64]),
        ] {
            let e = inputs(bad.clone()).unwrap_err();
            assert_eq!((e.status.as_u16(), e.param), (400, Some("input")), "{bad}");
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(base64_of(&[1.0, -2.5]), "AACAPwAAIMA=");
    }
}
