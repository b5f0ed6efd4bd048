//! `marquee.v1.ModelService`: listing, loading and unloading models at run time.

use crate::config::{Batching, GenerationSettings};
use crate::engine::deadline::Deadline;
use crate::engine::model::LoadedModel;
use crate::engine::registry::{Pipeline, Registry};
use crate::services::deadline::DeadlineOf;
use crate::services::observed;
use marquee_plugin_api::PluginKind;
use marquee_proto::v1::model_service_server::ModelService;
use marquee_proto::v1::{
    BatchingInfo, GetModelRequest, ListModelsRequest, ListModelsResponse, LoadModelRequest,
    ModelInfo, ModelKind, PipelineInfo, UnloadModelRequest, UnloadModelResponse,
};
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The model-management service.
pub struct ModelApi {
    registry: Arc<Registry>,
    default_batching: Batching,
    default_generation: GenerationSettings,
}

impl ModelApi {
    /// A service over the registry; models loaded at run time get `default_batching`
    /// and, generators, `default_generation`.
    pub fn new(
        registry: Arc<Registry>,
        default_batching: Batching,
        default_generation: GenerationSettings,
    ) -> Self {
        Self {
            registry,
            default_batching,
            default_generation,
        }
    }

    fn info(&self, model: &LoadedModel) -> ModelInfo {
        let library = model.instance.library();
        let info = model.instance.info();
        let kind = match library.kind() {
            PluginKind::TextEncoder => ModelKind::TextEncoder,
            PluginKind::ImageEncoder => ModelKind::ImageEncoder,
            PluginKind::Fusion => ModelKind::Fusion,
            PluginKind::Generator => ModelKind::Generator,
        };
        ModelInfo {
            name: model.name.clone(),
            plugin: library.name().to_string(),
            plugin_version: library.version().to_string(),
            kind: kind as i32,
            dimension: info.output_dim,
            max_input_tokens: info.max_input_tokens,
            path: model.path.display().to_string(),
            is_default: self.registry.default_model_name().as_deref() == Some(model.name.as_str()),
            batching: Some(BatchingInfo {
                max_batch_size: model.batching.max_batch_size as u32,
                max_batch_tokens: model.batching.max_batch_tokens as u32,
                max_queue_delay_us: model.batching.max_queue_delay_us,
                max_queue_inputs: model.batching.max_queue_inputs as u32,
            }),
            device: "cpu".into(),
            queued_inputs: model.queued_inputs() as u32,
            pipeline: None,
        }
    }

    fn pipeline_info(pipeline: &Pipeline) -> ModelInfo {
        let c = &pipeline.config;
        ModelInfo {
            name: pipeline.name.clone(),
            kind: ModelKind::Pipeline as i32,
            dimension: pipeline.dimension as u32,
            pipeline: Some(PipelineInfo {
                text_model: c.text.clone(),
                image_model: c.image.clone(),
                fusion_model: c.fusion.clone(),
                store_text: c.store.text.clone(),
                store_poster: c.store.poster.clone(),
                store_thumbnail: c.store.thumbnail.clone(),
            }),
            ..ModelInfo::default()
        }
    }
}

#[tonic::async_trait]
impl ModelService for ModelApi {
    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        observed("ListModels", Deadline::of(&request), async {
            let mut models: Vec<ModelInfo> = self
                .registry
                .models()
                .iter()
                .map(|m| self.info(m))
                .chain(
                    self.registry
                        .pipelines()
                        .iter()
                        .map(|p| Self::pipeline_info(p)),
                )
                .collect();
            models.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(ListModelsResponse { models })
        })
        .await
    }

    async fn get_model(
        &self,
        request: Request<GetModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        observed("GetModel", Deadline::of(&request), async {
            let name = request.into_inner().name;
            if name.is_empty() {
                return Err(Status::invalid_argument("name is required"));
            }
            if let Some(pipeline) = self.registry.pipeline(&name) {
                return Ok(Self::pipeline_info(&pipeline));
            }
            let model = self.registry.get(&name)?;
            Ok(self.info(&model))
        })
        .await
    }

    async fn load_model(
        &self,
        request: Request<LoadModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        observed("LoadModel", Deadline::of(&request), async {
            let r = request.into_inner();
            if r.name.is_empty() || r.path.is_empty() {
                return Err(Status::invalid_argument("name and path are required"));
            }
            if !r.config_json.trim().is_empty() {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&r.config_json)
                    .map_err(|e| {
                        Status::invalid_argument(format!("config_json is not a JSON object: {e}"))
                    })?;
            }
            let registry = Arc::clone(&self.registry);
            let batching = self.default_batching.clone();
            let generation = self.default_generation.clone();
            let model = tokio::task::spawn_blocking(move || {
                registry.load_model(
                    &r.name,
                    &r.plugin,
                    &PathBuf::from(&r.path),
                    &r.config_json,
                    batching,
                    generation,
                )
            })
            .await
            .map_err(|e| Status::internal(format!("loading the model: {e}")))??;
            Ok(self.info(&model))
        })
        .await
    }

    async fn unload_model(
        &self,
        request: Request<UnloadModelRequest>,
    ) -> Result<Response<UnloadModelResponse>, Status> {
        observed("UnloadModel", Deadline::of(&request), async {
            self.registry.unload_model(&request.into_inner().name)?;
            Ok(UnloadModelResponse {})
        })
        .await
    }
}
