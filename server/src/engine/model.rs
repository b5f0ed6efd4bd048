//! A model being served: its plugin instance, its batcher, and what the host knows
//! about it (kind, output width, a fusion model's input widths).

use super::batcher::Batcher;
use super::deadline::{check_can_finish, Deadline};
use super::error::EngineError;
use super::estimate::Estimate;
use super::generation::scheduler::{Scheduler, SchedulerLimits};
use super::generation::GeneratorServing;
use crate::config::{Batching, GenerationSettings};
use crate::metrics::ModelMetrics;
use marquee_plugin_api::host::PluginInstance;
use marquee_plugin_api::PluginKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The input widths of a fusion model, from the model info its plugin reports (its
/// `text` and `poster` inputs). The host needs them to lay out absent images and to
/// check inputs before they are batched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusionDims {
    /// Width of a text embedding.
    pub text: usize,
    /// Width of a poster or thumbnail embedding.
    pub image: usize,
}

/// A model being served.
pub struct LoadedModel {
    /// Serving name.
    pub name: String,
    /// The plugin instance.
    pub instance: Arc<PluginInstance>,
    /// Directory it was loaded from.
    pub path: PathBuf,
    /// Batching limits.
    pub batching: Batching,
    /// Recent inference speed.
    pub estimate: Arc<Estimate>,
    /// Input widths, for fusion models whose plugin reports them.
    pub fusion_dims: Option<FusionDims>,
    /// Its metric series.
    pub metrics: Arc<ModelMetrics>,
    /// Its queue and inference thread.
    pub batcher: Batcher<PluginInstance>,
    /// For a generator: its scheduler, settings and adapters.
    pub generation: Option<GeneratorServing>,
}

impl LoadedModel {
    /// Starts serving `instance` (loaded from `path`) as `name`: its batcher's
    /// inference thread starts at once, and for a generator its scheduler thread.
    pub fn start(
        name: &str,
        instance: Arc<PluginInstance>,
        path: &Path,
        batching: Batching,
        generation: GenerationSettings,
    ) -> Result<Self, EngineError> {
        let estimate = Arc::new(Estimate::default());
        let metrics = Arc::new(ModelMetrics::new(name));
        let batcher = Batcher::start(
            name,
            Arc::clone(&instance),
            batching.clone(),
            Arc::clone(&estimate),
            Arc::clone(&metrics),
        )?;
        let fusion_dims = (instance.library().kind() == PluginKind::Fusion)
            .then(|| instance.info().fusion_widths())
            .flatten()
            .map(|(text, image)| FusionDims { text, image });
        let generation = if instance.library().kind() == PluginKind::Generator {
            let limits = SchedulerLimits {
                max_step_tokens: generation.max_step_tokens,
            };
            let scheduler = Scheduler::start(name, Arc::clone(&instance), limits)?;
            Some(GeneratorServing::new(scheduler, generation))
        } else {
            None
        };
        Ok(Self {
            name: name.to_string(),
            instance,
            path: path.to_path_buf(),
            batching,
            estimate,
            fusion_dims,
            metrics,
            batcher,
            generation,
        })
    }

    /// What the plugin does.
    pub fn kind(&self) -> PluginKind {
        self.instance.library().kind()
    }

    /// Inputs waiting in the queue (including those being tokenized).
    pub fn queued_inputs(&self) -> usize {
        self.batcher.queued_inputs()
    }

    /// The output width.
    pub fn dimension(&self) -> usize {
        self.instance.info().output_dim as usize
    }

    /// Refuses a request costing `cost` (tokens for text, inputs otherwise) that cannot
    /// finish by its deadline (see [`check_can_finish`]).
    pub fn check_deadline(
        &self,
        deadline: Option<Deadline>,
        cost: usize,
    ) -> Result<(), EngineError> {
        check_can_finish(&self.name, &self.estimate, deadline, cost)
    }
}

/// A model kind in words, with its article, for messages ("a text encoder").
pub fn kind_name(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::TextEncoder => "a text encoder",
        PluginKind::ImageEncoder => "an image encoder",
        PluginKind::Fusion => "a fusion model",
        PluginKind::Generator => "a generator",
    }
}
