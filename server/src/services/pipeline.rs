//! Running a pipeline for one request: the texts through its text model and the
//! posters and thumbnails through its image model (both at once, each through its
//! model's batcher), then the three embeddings through its fusion model. The missing
//! modality rule is the fusion model's: it attends over the images present, and
//! falls back to the text alone when there is none.

use crate::deadline::Deadline;
use crate::inputs::{FusionRows, Inputs};
use crate::pipeline::Pipeline;
use crate::services::embedding::{wrong_input, EmbeddingApi, Stage};
use marquee_plugin_api::PluginKind;
use marquee_proto::v1::embed_input::Input;
use marquee_proto::v1::EmbedInput;
use tonic::Status;

/// A pipeline's intermediate embeddings, one per input, as the models returned them.
#[derive(Debug, Default)]
pub struct PipelineParts {
    /// The text model's embeddings.
    pub text: Vec<Vec<f32>>,
    /// The image model's embeddings of the posters; `None` where absent.
    pub poster: Vec<Option<Vec<f32>>>,
    /// The image model's embeddings of the thumbnails; `None` where absent.
    pub thumbnail: Vec<Option<Vec<f32>>>,
}

/// One input's parts: its text, poster and thumbnail bytes (empty: absent).
type Parts = (String, Vec<u8>, Vec<u8>);

/// Prefixes a stage's error with the pipeline and the model, keeping its code.
fn in_stage(pipeline: &str, model: &str, note: &str) -> impl Fn(Status) -> Status {
    let prefix = format!("pipeline {pipeline}, model {model}: ");
    let note = note.to_string();
    move |s| Status::new(s.code(), format!("{prefix}{}{note}", s.message()))
}

impl EmbeddingApi {
    /// Splits a pipeline's inputs into texts and images, checking them.
    fn pipeline_parts(
        &self,
        pipeline: &Pipeline,
        inputs: Vec<EmbedInput>,
    ) -> Result<Vec<Parts>, Status> {
        inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| {
                let parts = match input.input {
                    Some(Input::Text(t)) => (t, Vec::new(), Vec::new()),
                    Some(Input::Multimodal(m)) => (m.text, m.poster, m.thumbnail),
                    other => {
                        return Err(wrong_input(
                            i,
                            &other,
                            &pipeline.name,
                            "a pipeline",
                            "multimodal inputs or texts",
                        ))
                    }
                };
                if parts.0.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "input {i} has an empty text; pipeline {} needs one",
                        pipeline.name
                    )));
                }
                for (what, bytes) in [("poster", &parts.1), ("thumbnail", &parts.2)] {
                    if !bytes.is_empty() {
                        self.check_image(&format!("input {i}'s {what}"), bytes)?;
                    }
                }
                Ok(parts)
            })
            .collect()
    }

    /// Embeds a pipeline's inputs: the fused vectors, and the intermediate ones.
    pub(crate) async fn embed_pipeline(
        &self,
        pipeline: &Pipeline,
        inputs: Vec<EmbedInput>,
        refuse_truncation: bool,
        deadline: Option<Deadline>,
    ) -> Result<(Stage, PipelineParts), Status> {
        let config = &pipeline.config;
        let registry = self.registry();
        let text_model = registry.model_of_kind(&config.text, PluginKind::TextEncoder)?;
        let image_model = registry.model_of_kind(&config.image, PluginKind::ImageEncoder)?;
        let fusion_model = registry.model_of_kind(&config.fusion, PluginKind::Fusion)?;
        let dims = fusion_model.fusion_dims.ok_or_else(|| {
            Status::failed_precondition(format!(
                "fusion model {} gives no text_dim and image_dim",
                fusion_model.name
            ))
        })?;
        let parts = self.pipeline_parts(pipeline, inputs)?;
        let texts: Vec<EmbedInput> = parts
            .iter()
            .map(|p| EmbedInput {
                input: Some(Input::Text(p.0.clone())),
            })
            .collect();
        // Images in input order, poster before thumbnail.
        let mut bytes = Vec::new();
        let mut offsets = vec![0];
        for (_, poster, thumbnail) in &parts {
            for image in [poster, thumbnail].into_iter().filter(|b| !b.is_empty()) {
                bytes.extend_from_slice(image);
                offsets.push(bytes.len());
            }
        }
        let text_stage = async {
            self.embed_with_model(&text_model, texts, refuse_truncation, deadline)
                .await
                .map_err(in_stage(&pipeline.name, &text_model.name, ""))
        };
        let image_stage = async {
            if offsets.len() == 1 {
                return Ok(Stage::default());
            }
            self.embed_ready(&image_model, Inputs::Images { bytes, offsets }, deadline)
                .await
                .map_err(in_stage(
                    &pipeline.name,
                    &image_model.name,
                    " (images are numbered over the request's posters and thumbnails in \
                     input order, poster first)",
                ))
        };
        let (text, images) = tokio::try_join!(text_stage, image_stage)?;
        let mut image_rows = images.rows();
        let mut out = PipelineParts::default();
        let mut rows = FusionRows::new(dims.text, dims.image);
        for ((_, poster, thumbnail), text) in parts.iter().zip(text.rows()) {
            let mut next = |present: bool| {
                present
                    .then(|| image_rows.next().map(<[f32]>::to_vec))
                    .flatten()
            };
            let poster = next(!poster.is_empty());
            let thumbnail = next(!thumbnail.is_empty());
            rows.push(text, poster.as_deref(), thumbnail.as_deref());
            out.text.push(text.to_vec());
            out.poster.push(poster);
            out.thumbnail.push(thumbnail);
        }
        let mut fused = self
            .embed_ready(&fusion_model, Inputs::Fusion(rows), deadline)
            .await
            .map_err(in_stage(&pipeline.name, &fusion_model.name, ""))?;
        fused.add_costs(&text);
        fused.add_costs(&images);
        Ok((fused, out))
    }
}
