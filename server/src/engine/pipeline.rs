//! Running a pipeline for one request: the texts through its text model and the
//! posters and thumbnails through its image model (both at once, each through its
//! model's batcher), then the three embeddings through its fusion model. The missing
//! modality rule is the fusion model's: it attends over the images present, and
//! falls back to the text alone when there is none.

use super::deadline::Deadline;
use super::error::EngineError;
use super::inputs::{FusionRows, Inputs};
use super::registry::{Pipeline, PipelineModels, Registry};
use super::request::{Input, Truncation};
use super::runner::{wrong_input, ModelRunner, Stage};

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

/// Prefixes a stage's error with the pipeline and the model, keeping its kind.
fn in_stage(pipeline: &str, model: &str, note: &str) -> impl Fn(EngineError) -> EngineError {
    let prefix = format!("pipeline {pipeline}, model {model}: ");
    let note = note.to_string();
    move |e| e.map_message(|m| format!("{prefix}{m}{note}"))
}

/// Splits a pipeline's inputs into texts and images, checking them.
fn pipeline_parts(
    runner: &ModelRunner,
    pipeline: &Pipeline,
    inputs: Vec<Input>,
) -> Result<Vec<Parts>, EngineError> {
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            let parts = match input {
                Input::Text(t) => (t, Vec::new(), Vec::new()),
                Input::Multimodal {
                    text,
                    poster,
                    thumbnail,
                } => (text, poster, thumbnail),
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
                return Err(EngineError::Invalid(format!(
                    "input {i} has an empty text; pipeline {} needs one",
                    pipeline.name
                )));
            }
            for (what, bytes) in [("poster", &parts.1), ("thumbnail", &parts.2)] {
                if !bytes.is_empty() {
                    runner.check_image(&format!("input {i}'s {what}"), bytes)?;
                }
            }
            Ok(parts)
        })
        .collect()
}

/// Embeds a pipeline's inputs with `runner`, its models found in `registry`: the fused
/// vectors, and the intermediate ones.
pub async fn run_pipeline(
    runner: &ModelRunner,
    registry: &Registry,
    pipeline: &Pipeline,
    inputs: Vec<Input>,
    truncation: Truncation,
    deadline: Option<Deadline>,
) -> Result<(Stage, PipelineParts), EngineError> {
    let config = &pipeline.config;
    let PipelineModels {
        text: text_model,
        image: image_model,
        fusion: fusion_model,
        dims,
    } = registry.pipeline_models(config)?;
    let parts = pipeline_parts(runner, pipeline, inputs)?;
    let texts: Vec<Input> = parts.iter().map(|p| Input::Text(p.0.clone())).collect();
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
        runner
            .run(&text_model, texts, truncation, deadline)
            .await
            .map_err(in_stage(&pipeline.name, &text_model.name, ""))
    };
    let image_stage = async {
        if offsets.len() == 1 {
            return Ok(Stage::default());
        }
        runner
            .run_ready(&image_model, Inputs::Images { bytes, offsets }, deadline)
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
    let mut fused = runner
        .run_ready(&fusion_model, Inputs::Fusion(rows), deadline)
        .await
        .map_err(in_stage(&pipeline.name, &fusion_model.name, ""))?;
    fused.add_costs(&text);
    fused.add_costs(&images);
    Ok((fused, out))
}
