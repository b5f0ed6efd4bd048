//! `GET /v1/models` and `GET /v1/models/{id}` (the served models, pipelines and
//! adapters as OpenAI model objects, with vLLM's `parent` and `max_model_len`), and
//! vLLM's runtime adapter routes `POST /v1/load_lora_adapter` and
//! `POST /v1/unload_lora_adapter` (admin token).

use super::body::JsonBody;
use super::error::ApiError;
use super::HttpApi;
use axum::extract::{Path, State};
use axum::Json;
use marquee_plugin_api::PluginKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One entry of `/v1/models`.
#[derive(Serialize)]
pub struct ModelObject {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    /// For an adapter, the generator it adapts.
    parent: Option<String>,
    /// `text-encoder`, `image-encoder`, `fusion`, `generator`, `pipeline` or `adapter`.
    kind: &'static str,
    /// The most tokens one input (encoders) or one sequence (generators) may hold.
    max_model_len: Option<u32>,
}

/// `/v1/models`' answer.
#[derive(Serialize)]
pub struct ModelList {
    object: &'static str,
    data: Vec<ModelObject>,
}

/// The kind's label, as the CLI prints it.
fn kind_label(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::TextEncoder => "text-encoder",
        PluginKind::ImageEncoder => "image-encoder",
        PluginKind::Fusion => "fusion",
        PluginKind::Generator => "generator",
    }
}

fn models(api: &HttpApi) -> Vec<ModelObject> {
    let entry = |id: String, parent, kind, max_model_len| ModelObject {
        id,
        object: "model",
        created: api.started,
        owned_by: "marquee",
        parent,
        kind,
        max_model_len,
    };
    let mut list = Vec::new();
    let mut served = api.generation.registry().models();
    served.sort_by(|a, b| a.name.cmp(&b.name));
    for model in served {
        let info = model.instance.info();
        let kind = model.kind();
        let limit = match kind {
            PluginKind::Generator => info.max_context_tokens,
            _ => info.max_input_tokens,
        };
        list.push(entry(
            model.name.clone(),
            None,
            kind_label(kind),
            Some(limit).filter(|&n| n > 0),
        ));
        for adapter in model.generation.iter().flat_map(|g| g.adapters()) {
            list.push(entry(
                adapter.name,
                Some(model.name.clone()),
                "adapter",
                Some(limit).filter(|&n| n > 0),
            ));
        }
    }
    for pipeline in api.generation.registry().pipelines() {
        list.push(entry(pipeline.name.clone(), None, "pipeline", None));
    }
    list
}

/// `GET /v1/models`.
pub async fn list(State(api): State<HttpApi>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: models(&api),
    })
}

/// `GET /v1/models/{id}`.
pub async fn get(
    State(api): State<HttpApi>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    models(&api)
        .into_iter()
        .find(|m| m.id == id)
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!("model {id} is not loaded")).with_code("model_not_found")
        })
}

/// vLLM's `load_lora_adapter` body; `model` (a Marquee addition) picks the generator,
/// the default one when absent.
#[derive(Deserialize)]
pub struct LoadAdapter {
    lora_name: String,
    lora_path: PathBuf,
    #[serde(default)]
    model: String,
}

/// vLLM's `unload_lora_adapter` body.
#[derive(Deserialize)]
pub struct UnloadAdapter {
    lora_name: String,
    #[serde(default)]
    model: String,
}

/// `POST /v1/load_lora_adapter`: the adapter as a model object.
pub async fn load_adapter(
    State(api): State<HttpApi>,
    JsonBody(request): JsonBody<LoadAdapter>,
) -> Result<Json<ModelObject>, ApiError> {
    let loaded = api
        .generation
        .load_adapter(&request.model, &request.lora_name, &request.lora_path)
        .await?;
    let model = api.generation.generator(&request.model)?;
    Ok(Json(ModelObject {
        id: loaded.name,
        object: "model",
        created: api.started,
        owned_by: "marquee",
        parent: Some(model.name.clone()),
        kind: "adapter",
        max_model_len: Some(model.instance.info().max_context_tokens),
    }))
}

/// `POST /v1/unload_lora_adapter`.
pub async fn unload_adapter(
    State(api): State<HttpApi>,
    JsonBody(request): JsonBody<UnloadAdapter>,
) -> Result<Json<serde_json::Value>, ApiError> {
    api.generation
        .unload_adapter(&request.model, &request.lora_name)?;
    Ok(Json(
        serde_json::json!({"id": request.lora_name, "object": "model", "deleted": true}),
    ))
}
