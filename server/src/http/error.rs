//! Errors of the HTTP API in OpenAI's shape, `{"error": {"message", "type", "param",
//! "code"}}`, with the matching HTTP status, and the engine's errors mapped to them
//! (the same kinds the gRPC edge maps to status codes).

use crate::engine::error::EngineError;
use crate::retrieval::error::ErrorKind;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// A failed HTTP request: its status, OpenAI error type and message.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// OpenAI's error `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// What went wrong, for the caller.
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<&'static str>,
    /// A machine-readable code (`model_not_found`, `invalid_api_key`, ...).
    pub code: Option<&'static str>,
    /// When to try again (429, 503): sent as `Retry-After`.
    pub retry_after: Option<Duration>,
    /// The request body was left unread, so the connection cannot carry another request:
    /// the response says `Connection: close` and the server closes it after sending.
    pub close_connection: bool,
}

impl ApiError {
    /// An error of `status` and `kind`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            close_connection: false,
        }
    }

    /// 400: the request is malformed or asks for something the model cannot do.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 about the field `param`.
    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            ..Self::invalid(message)
        }
    }

    /// 404: no such route, model or adapter.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    /// 503: the server is shutting down.
    pub fn draining() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is shutting down: send the request elsewhere",
        )
    }

    /// 429 with a retry hint.
    pub fn overloaded(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            code: Some("rate_limit_exceeded"),
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
        }
    }

    /// The same error, answered with `Connection: close` (its request body was not read
    /// to the end).
    pub fn closing_connection(mut self) -> Self {
        self.close_connection = true;
        self
    }

    /// The same error with `code` set.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body, `{"error": {...}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        let (status, kind) = match error {
            EngineError::Overloaded { retry_after, .. } => {
                return ApiError::overloaded(message, retry_after)
            }
            EngineError::NotFound(_) => {
                return ApiError::not_found(message).with_code("model_not_found")
            }
            EngineError::Storage(e) => match e.kind() {
                ErrorKind::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_request_error"),
                ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found_error"),
                ErrorKind::AlreadyExists => (StatusCode::CONFLICT, "invalid_request_error"),
                ErrorKind::ResourceExhausted => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error")
                }
                ErrorKind::Internal | ErrorKind::DataLoss => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
                }
                ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
                ErrorKind::FailedPrecondition => (StatusCode::CONFLICT, "invalid_request_error"),
            },
            EngineError::Invalid(_) | EngineError::Precondition(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            EngineError::AlreadyExists(_) => (StatusCode::CONFLICT, "invalid_request_error"),
            EngineError::OutsidePluginDir(_) => (StatusCode::FORBIDDEN, "permission_error"),
            EngineError::Exhausted(_) => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
            EngineError::DeadlineExceeded(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout_error"),
            EngineError::ShuttingDown(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
            EngineError::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "invalid_request_error"),
            EngineError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        };
        ApiError::new(status, kind, message)
    }
}

/// `Retry-After` in whole seconds, at least 1 (the header takes no fractions).
fn retry_after_seconds(after: Duration) -> u64 {
    (after.as_secs_f64().ceil() as u64).max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(after)),
            );
        }
        if self.close_connection {
            // HTTP/1.1 only: hyper leaves connection headers out of HTTP/2 responses.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_take_their_http_status_and_openai_shape() {
        let e = ApiError::from(EngineError::NotFound("model \"x\" is not loaded".into()));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(
            e.body(),
            serde_json::json!({"error": {"message": "model \"x\" is not loaded",
                "type": "not_found_error", "param": null, "code": "model_not_found"}})
        );
        let e = ApiError::from(EngineError::Overloaded {
            message: "model m is overloaded".into(),
            retry_after: Duration::from_millis(250),
        });
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        let response = e.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(!response.headers().contains_key(header::CONNECTION));
        let closing = ApiError::invalid("x").closing_connection().into_response();
        assert_eq!(closing.headers()[header::CONNECTION], "close");
        for (error, status) in [
            (EngineError::Invalid("x".into()), 400),
            (EngineError::Exhausted("x".into()), 413),
            (EngineError::DeadlineExceeded("x".into()), 504),
            (EngineError::ShuttingDown("x".into()), 503),
            (EngineError::OutsidePluginDir("x".into()), 403),
            (EngineError::Internal("x".into()), 500),
        ] {
            assert_eq!(ApiError::from(error).status.as_u16(), status);
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }
}
