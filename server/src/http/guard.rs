//! What every HTTP API request passes before its handler, in order: the drain (503
//! once shutdown has started), bearer-token authentication (401, or 403 for a user
//! token on an admin route), the server-wide admission shared with gRPC (429 with
//! `Retry-After`), the request memory budget shared with gRPC (429 with `Retry-After`;
//! a body is charged its `Content-Length`, or `limits.max_message_bytes` when it has
//! none), and the request's deadline, read from `X-Request-Timeout` (seconds, fractions
//! allowed). The admission place and the charge are held and the request counted in
//! the metrics until the response body, a stream's last event included, is finished or
//! dropped. A refused request that carries a body is answered with `Connection: close`,
//! as its body is left unread.

use super::error::ApiError;
use super::HttpApi;
use crate::admission::{Guarded, RETRY_AFTER};
use crate::auth::Denied;
use crate::engine::deadline::Deadline;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};

/// Routes that need an admin token.
const ADMIN_ROUTES: [&str; 2] = ["/v1/load_lora_adapter", "/v1/unload_lora_adapter"];

/// The routes, as metric labels; anything else is `unknown` (paths come from clients
/// and must not make a series each).
const ROUTES: [&str; 6] = [
    "/v1/models",
    "/v1/embeddings",
    "/v1/chat/completions",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/v1/models/{id}",
];

fn route_label(path: &str) -> &'static str {
    if path.starts_with("/v1/models/") {
        return ROUTES[5];
    }
    ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("unknown")
}

fn unauthorized(denied: Denied) -> ApiError {
    use axum::http::StatusCode;
    let (status, kind, code, message) = match denied {
        Denied::Missing => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing_api_key",
            "missing credentials: send the header `Authorization: Bearer <token>`",
        ),
        Denied::Malformed => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "the Authorization header is not `Bearer <token>`",
        ),
        Denied::Invalid => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "invalid token",
        ),
        Denied::NeedsAdmin => (
            StatusCode::FORBIDDEN,
            "permission_error",
            "insufficient_permissions",
            "this route needs an admin token",
        ),
    };
    ApiError::new(status, kind, message).with_code(code)
}

/// The request's timeout from `X-Request-Timeout`: positive seconds, fractions allowed.
pub fn timeout_of(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(value) = headers.get("x-request-timeout") else {
        return Ok(None);
    };
    let seconds = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .ok_or_else(|| {
            ApiError::invalid("the header X-Request-Timeout must be a positive number of seconds")
        })?;
    Ok(Some(Duration::from_secs_f64(seconds)))
}

/// The bytes a request's body may hold in memory: its declared length (at most
/// `limit`, past which it is refused unread), none for a GET, else `limit`.
fn body_bytes(request: &Request, limit: usize) -> usize {
    if request.method() == axum::http::Method::GET {
        return 0;
    }
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(limit, |n| n.min(limit as u64) as usize)
}

/// Whether the request carries a body (declared non-empty, or of undeclared length),
/// which a refusal here leaves unread.
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    match headers.get(axum::http::header::CONTENT_LENGTH) {
        Some(length) => length.to_str().map_or(true, |v| v.trim() != "0"),
        None => headers.contains_key(axum::http::header::TRANSFER_ENCODING),
    }
}

/// The middleware in front of every API route (not `/health` and `/ready`).
pub async fn guard(State(api): State<HttpApi>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path();
    let route = route_label(path);
    let needs_admin = ADMIN_ROUTES.contains(&path);
    let admitted = (|| {
        if api.drain.started() {
            return Err(ApiError::draining());
        }
        api.tokens
            .authorize(request.headers(), needs_admin)
            .map_err(unauthorized)?;
        let permit = api.admission.try_admit().ok_or_else(|| {
            let limit = api.admission.limit();
            ApiError::overloaded(
                format!(
                    "the server is overloaded: {limit} calls in progress \
                     (limits.max_concurrent_requests = {limit})"
                ),
                RETRY_AFTER,
            )
        })?;
        let body = body_bytes(&request, api.limits.max_message_bytes);
        let charge = api.request_memory.try_charge(body).ok_or_else(|| {
            crate::metrics::record_request_memory_refusal();
            ApiError::overloaded(api.request_memory.refusal(body), RETRY_AFTER)
        })?;
        Ok((permit, charge))
    })();
    let deadline = timeout_of(request.headers());
    let (permit, deadline) = match (admitted, deadline) {
        (Ok(permit), Ok(deadline)) => (permit, deadline.map(Deadline::after)),
        (Err(error), _) | (_, Err(error)) => {
            crate::metrics::record_http(route, error.status.as_u16(), started.elapsed());
            let error = if has_body(&request) {
                error.closing_connection()
            } else {
                error
            };
            return error.into_response();
        }
    };
    if let Some(deadline) = deadline {
        request.extensions_mut().insert(deadline);
    }
    crate::metrics::add_http_in_flight(route, 1.0);
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let call = Call {
        route,
        status,
        started,
    };
    response.map(|body| Body::new(Guarded::new(body, (permit, call))))
}

/// One API request in progress, for the metrics: recorded when dropped, with its
/// response body.
struct Call {
    route: &'static str,
    status: u16,
    started: Instant,
}

impl Drop for Call {
    fn drop(&mut self) {
        crate::metrics::add_http_in_flight(self.route, -1.0);
        crate::metrics::record_http(self.route, self.status, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_charged_their_declared_length_or_the_limit() {
        let request = |method: &str, length: Option<&str>| {
            let mut builder = axum::http::Request::builder().method(method).uri("/v1/x");
            if let Some(length) = length {
                builder = builder.header("content-length", length);
            }
            builder.body(Body::empty()).unwrap()
        };
        assert_eq!(body_bytes(&request("GET", None), 1000), 0);
        assert_eq!(body_bytes(&request("POST", Some("120")), 1000), 120);
        assert_eq!(body_bytes(&request("POST", Some("5000")), 1000), 1000);
        assert_eq!(body_bytes(&request("POST", None), 1000), 1000);
        assert_eq!(body_bytes(&request("POST", Some("many")), 1000), 1000);
    }

    #[test]
    fn bodies_are_declared_by_length_or_transfer_encoding() {
        let request = |header: Option<(&str, &str)>| {
            let mut builder = axum::http::Request::builder().method("POST").uri("/v1/x");
            if let Some((name, value)) = header {
                builder = builder.header(name, value);
            }
            builder.body(Body::empty()).unwrap()
        };
        assert!(!has_body(&request(None)));
        assert!(!has_body(&request(Some(("content-length", "0")))));
        assert!(has_body(&request(Some(("content-length", "12")))));
        assert!(has_body(&request(Some(("transfer-encoding", "chunked")))));
    }

    #[test]
    fn timeouts_are_seconds_from_x_request_timeout() {
        let mut headers = HeaderMap::new();
        assert_eq!(timeout_of(&headers).unwrap(), None);
        headers.insert("x-request-timeout", "600".parse().unwrap());
        assert_eq!(
            timeout_of(&headers).unwrap(),
            Some(Duration::from_secs(600))
        );
        headers.insert("x-request-timeout", "0.25".parse().unwrap());
        assert_eq!(
            timeout_of(&headers).unwrap(),
            Some(Duration::from_millis(250))
        );
        for bad in ["0", "-1", "soon", "nan", "inf"] {
            headers.insert("x-request-timeout", bad.parse().unwrap());
            assert_eq!(timeout_of(&headers).unwrap_err().status.as_u16(), 400);
        }
    }

    #[test]
    fn routes_are_labelled_by_their_pattern() {
        assert_eq!(route_label("/v1/embeddings"), "/v1/embeddings");
        assert_eq!(
            route_label("/v1/models/all-MiniLM-L6-v2"),
            "/v1/models/{id}"
        );
        assert_eq!(route_label("/v1/anything/else"), "unknown");
    }
}
