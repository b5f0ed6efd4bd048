//! The OpenAI-compatible HTTP API (axum) on its own listener (`http_listen`):
//! `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/chat/completions`, vLLM's
//! adapter routes, and `GET /health` / `GET /ready` for load balancers.
//!
//! Handlers translate JSON to the engine's terms and call the same engine as the gRPC
//! services; every API request passes the same authentication, admission, deadlines
//! and metrics ([`guard`]), bodies are read within the server's limits ([`body`]), and
//! errors take OpenAI's JSON shape ([`error`]).

mod body;
mod chat;
mod embeddings;
mod error;
mod guard;
pub mod listener;
mod models;

use crate::admission::AdmissionLayer;
use crate::auth::Tokens;
use crate::config::Limits;
use crate::engine::embedder::Embedder;
use crate::engine::generation::Generation;
use crate::memory::RequestMemory;
use crate::shutdown::Drain;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use std::sync::Arc;

/// What the HTTP handlers share: the engine, and the server's guards.
#[derive(Clone)]
pub struct HttpApi {
    embedder: Embedder,
    generation: Generation,
    tokens: Arc<Tokens>,
    admission: AdmissionLayer,
    request_memory: RequestMemory,
    drain: Drain,
    limits: Limits,
    /// When the server started, in Unix seconds (the models' `created`).
    started: u64,
}

impl HttpApi {
    /// The API over the same engine, tokens, admission places, request memory budget
    /// and drain as gRPC.
    pub fn new(
        embedder: Embedder,
        generation: Generation,
        tokens: Arc<Tokens>,
        admission: AdmissionLayer,
        request_memory: RequestMemory,
        drain: Drain,
        limits: Limits,
    ) -> Self {
        Self {
            embedder,
            generation,
            tokens,
            admission,
            request_memory,
            drain,
            limits,
            started: unix_now(),
        }
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/models", get(models::list))
            .route("/v1/models/{id}", get(models::get))
            .route("/v1/embeddings", post(embeddings::create))
            .route("/v1/chat/completions", post(chat::create))
            .route("/v1/load_lora_adapter", post(models::load_adapter))
            .route("/v1/unload_lora_adapter", post(models::unload_adapter))
            .fallback(unknown_route)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                guard::guard,
            ))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .with_state(self)
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

/// `GET /health`: 200 while the process serves.
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /ready`: 200 when the server takes work (not draining, a model loaded), else 503.
async fn ready(State(api): State<HttpApi>) -> Response {
    let models = api.generation.registry().models().len();
    let (status, state) = if api.drain.started() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if models == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "no model loaded")
    } else {
        (StatusCode::OK, "ready")
    };
    (
        status,
        Json(serde_json::json!({"status": state, "models": models})),
    )
        .into_response()
}
