//! Reading a JSON request body within the server's limits: `Content-Type:
//! application/json` (else 415), at most `limits.max_message_bytes` (else 413, before
//! reading when `Content-Length` says so), the whole body within
//! `limits.http_read_timeout_ms` (else 408), and JSON that parses into the request type
//! (else 400 naming the line and column, or the field). A body refused before its end is
//! answered with `Connection: close`.

use super::error::ApiError;
use super::HttpApi;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A request body parsed from JSON.
pub struct JsonBody<T>(pub T);

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!("the request body is larger than {limit} bytes (limits.max_message_bytes)"),
    )
}

/// The body's bytes, refused past `limit` bytes or when it does not arrive within `timeout`.
async fn read(request: Request, limit: usize, timeout: Duration) -> Result<Vec<u8>, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let result = if declared.is_some_and(|n| n > limit as u64) {
        Err(too_large(limit))
    } else {
        read_within(request, declared, limit, timeout).await
    };
    // A body left unread (refused, stalled or broken) leaves the connection unusable for
    // the next request: a client that reused it would see it closed under its request.
    result.map_err(ApiError::closing_connection)
}

/// The body's bytes as they arrive, at most `limit` of them, within `timeout`.
async fn read_within(
    request: Request,
    declared: Option<u64>,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, ApiError> {
    let mut chunks = request.into_body().into_data_stream();
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let reading = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::invalid(format!("the request body could not be read: {e}"))
            })?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok(result) => result.map(|()| bytes),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "the request body did not arrive within {} ms (limits.http_read_timeout_ms)",
                timeout.as_millis()
            ),
        )),
    }
}

/// Parses JSON, telling malformed JSON from a well-formed body of the wrong shape.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(format!("invalid request: {e}")),
        _ => ApiError::invalid(format!("the request body is not valid JSON: {e}")),
    })
}

impl<T: DeserializeOwned> FromRequest<HttpApi> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, api: &HttpApi) -> Result<Self, ApiError> {
        if !is_json(&request) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "the request body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let limits = &api.limits;
        let timeout = Duration::from_millis(limits.http_read_timeout_ms);
        let bytes = read(request, limits.max_message_bytes, timeout).await?;
        parse(&bytes).map(JsonBody)
    }
}
