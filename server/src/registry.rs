//! Loaded plugins and the models served with them. Models can be loaded and unloaded
//! at run time: an unloaded model stops taking requests at once, and its inference
//! thread finishes the jobs already queued before the instance is destroyed.

use crate::batcher::{self, EmbedJob, JobOutput};
use crate::config::Batching;
use crate::deadline::Deadline;
use crate::estimate::Estimate;
use crate::inputs::Inputs;
use crate::metrics as m;
use crate::pipeline::{FusionDims, Pipeline};
use dashmap::DashMap;
use marquee_plugin_api::host::{PluginInstance, PluginLibrary};
use marquee_plugin_api::PluginKind;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Shortest and longest retry hint sent with a full queue.
const RETRY_HINT: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(60));

/// A model's queue places (`max_queue_inputs` of them).
struct Queue {
    metrics: Arc<m::ModelMetrics>,
    places: Arc<Semaphore>,
    capacity: usize,
}

impl Queue {
    fn taken(&self) -> usize {
        self.capacity - self.places.available_permits()
    }
}

/// Places held in a model's queue by one request, from admission (before
/// tokenization) until its job leaves the queue: answered, failed, or dropped because
/// its caller went away or its deadline passed. The queue-depth gauge follows.
pub struct QueueSlot {
    permit: Option<OwnedSemaphorePermit>,
    queue: Arc<Queue>,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.queue.metrics.set_queue_depth(self.queue.taken());
    }
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
    /// Input widths, for fusion models whose `config.json` gives them.
    pub fusion_dims: Option<FusionDims>,
    /// Its metric series.
    pub metrics: Arc<m::ModelMetrics>,
    queue: Arc<Queue>,
    jobs: mpsc::Sender<EmbedJob>,
    /// Held while the plugin runs: by the inference thread for a batch, or by a request
    /// running alone on an idle model ([`LoadedModel::try_run_alone`]).
    engine: Arc<Mutex<()>>,
}

impl LoadedModel {
    /// What the plugin does.
    pub fn kind(&self) -> PluginKind {
        self.instance.library().kind()
    }

    /// Inputs waiting in the queue (including those being tokenized).
    pub fn queued_inputs(&self) -> usize {
        self.queue.taken()
    }

    /// Reserves `inputs` places in the queue, or fails with `RESOURCE_EXHAUSTED` and a
    /// retry hint.
    pub fn admit(&self, inputs: usize) -> Result<QueueSlot, Status> {
        let permit = u32::try_from(inputs).ok().and_then(|n| {
            Arc::clone(&self.queue.places)
                .try_acquire_many_owned(n)
                .ok()
        });
        let Some(permit) = permit else {
            let queued = self.queued_inputs();
            let capacity = self.batching.max_queue_inputs;
            return Err(crate::status::overloaded(
                format!(
                    "model {} is overloaded: {queued} of {capacity} queue places taken \
                     (batching.max_queue_inputs = {capacity}), {inputs} requested",
                    self.name
                ),
                self.retry_hint((queued + inputs).saturating_sub(capacity)),
            ));
        };
        self.metrics.set_queue_depth(self.queued_inputs());
        Ok(QueueSlot {
            permit: Some(permit),
            queue: Arc::clone(&self.queue),
        })
    }

    /// When `missing` more queue places will likely be free: the batches needed to run
    /// that many inputs at the recent mean batch time, plus the batching delay.
    fn retry_hint(&self, missing: usize) -> Duration {
        let batches = missing.max(1).div_ceil(self.batching.max_batch_size) as u32;
        let delay = Duration::from_micros(self.batching.max_queue_delay_us);
        (self.estimate.mean_batch() * batches + delay).clamp(RETRY_HINT.0, RETRY_HINT.1)
    }

    /// The output width.
    pub fn dimension(&self) -> usize {
        self.instance.info().output_dim as usize
    }

    /// Refuses a request costing `cost` (tokens for text, inputs otherwise) that cannot
    /// finish by its deadline even at the model's fastest recent rate (see
    /// [`Estimate::fastest`]).
    pub fn check_deadline(&self, deadline: Option<Deadline>, cost: usize) -> Result<(), Status> {
        let Some(deadline) = deadline else {
            return Ok(());
        };
        if deadline.passed() {
            return Err(deadline.exceeded());
        }
        match self.estimate.fastest(cost) {
            Some(needed) if needed > deadline.remaining() => {
                Err(cannot_finish(&self.name, needed, deadline.remaining()))
            }
            _ => Ok(()),
        }
    }

    /// Runs a request's inputs at once on the calling thread when the model is idle:
    /// nothing else queued or running, no batching delay configured, and the inputs fit
    /// one batch. This saves the two thread hand-offs of the queue (to the inference
    /// thread and back), the largest part of a lone request's overhead. `None`: the model
    /// is busy (or the runtime cannot block a worker); queue the job instead.
    pub fn try_run_alone(&self, inputs: &Inputs) -> Option<Result<JobOutput, Status>> {
        let (count, cost) = (inputs.count(), inputs.cost_from(0));
        let fits = count <= self.batching.max_batch_size && cost <= self.batching.max_batch_tokens;
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !fits
            || !multi_thread
            || self.batching.max_queue_delay_us > 0
            || self.queued_inputs() != count
        {
            return None;
        }
        let engine = self.engine.try_lock().ok()?;
        let start = Instant::now();
        let result = tokio::task::block_in_place(|| inputs.embed(&self.instance));
        let elapsed = start.elapsed();
        drop(engine);
        Some(match result {
            Ok(vectors) => {
                self.estimate.record(elapsed, cost);
                self.metrics.record_batch(count, cost, elapsed);
                Ok(JobOutput {
                    vectors,
                    queue: Duration::ZERO,
                    inference: elapsed,
                })
            }
            Err(e) => {
                tracing::debug!(model = self.name, error = %e, "request failed");
                Err(crate::status::from_host(&e))
            }
        })
    }

    /// Hands a job (tokenized, or ready as it came) to the inference thread.
    pub fn submit(&self, job: EmbedJob) -> Result<(), Status> {
        self.jobs
            .send(job)
            .map_err(|_| Status::unavailable(format!("model {} is shutting down", self.name)))
    }
}

/// `DEADLINE_EXCEEDED` for a request that would finish after its deadline.
pub fn cannot_finish(model: &str, needed: Duration, remaining: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "model {model} needs at least {} ms for this request and {} ms remain before its deadline; not run",
        needed.as_millis(),
        remaining.as_millis()
    ))
}

/// Everything loaded: plugin libraries and models.
pub struct Registry {
    plugin_dir: PathBuf,
    plugins: Mutex<Vec<Arc<PluginLibrary>>>,
    models: DashMap<String, Arc<LoadedModel>>,
    pipelines: DashMap<String, Arc<Pipeline>>,
    default_model: RwLock<String>,
}

/// Whether a plugin, model or collection name is a plain name (no path separators or `..`).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.contains("..")
}

impl Registry {
    /// An empty registry loading plugins from `plugin_dir`.
    pub fn new(plugin_dir: PathBuf, default_model: String) -> Self {
        Self {
            plugin_dir,
            plugins: Mutex::new(Vec::new()),
            models: DashMap::new(),
            pipelines: DashMap::new(),
            default_model: RwLock::new(default_model),
        }
    }

    /// The directory plugins come from.
    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    /// Loads the plugin library `lib<stem>.so` (platform naming) from the plugin directory.
    pub fn load_plugin(&self, stem: &str) -> Result<Arc<PluginLibrary>, Status> {
        if !is_plain_name(stem) {
            return Err(Status::invalid_argument(format!(
                "plugin name {stem:?} must be a plain file stem (letters, digits, '-', '_', '.')"
            )));
        }
        let file = self.plugin_dir.join(libloading_filename(stem));
        let canonical_dir = self.plugin_dir.canonicalize().map_err(|e| {
            Status::failed_precondition(format!(
                "plugin directory {}: {e}",
                self.plugin_dir.display()
            ))
        })?;
        let canonical = file.canonicalize().map_err(|_| {
            Status::not_found(format!(
                "no plugin library {} in {}",
                file.display(),
                canonical_dir.display()
            ))
        })?;
        if !canonical.starts_with(&canonical_dir) {
            return Err(Status::permission_denied(format!(
                "{} resolves outside the plugin directory",
                file.display()
            )));
        }
        let mut plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = plugins.iter().find(|p| p.path() == canonical) {
            return Ok(Arc::clone(p));
        }
        let library = PluginLibrary::open(&canonical)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        if plugins.iter().any(|p| p.name() == library.name()) {
            return Err(Status::already_exists(format!(
                "a plugin named {} is already loaded",
                library.name()
            )));
        }
        tracing::info!(plugin = library.name(), version = library.version(), path = %canonical.display(), "plugin loaded");
        plugins.push(Arc::clone(&library));
        Ok(library)
    }

    /// Loaded plugin libraries.
    pub fn plugins(&self) -> Vec<Arc<PluginLibrary>> {
        self.plugins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The plugin for a model: by handshake name (loading `marquee_<name>` from the
    /// plugin directory if needed), or the first loaded plugin accepting the directory.
    fn plugin_for(&self, plugin: &str, path: &Path) -> Result<Arc<PluginLibrary>, Status> {
        if plugin.is_empty() {
            return self
                .plugins()
                .into_iter()
                .find(|p| p.accepts(path))
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "no loaded plugin accepts the model directory {}",
                        path.display()
                    ))
                });
        }
        if let Some(p) = self.plugins().into_iter().find(|p| p.name() == plugin) {
            return Ok(p);
        }
        self.load_plugin(&format!("marquee_{}", plugin.replace('-', "_")))
            .map_err(|e| match e.code() {
                tonic::Code::NotFound => Status::not_found(format!("no plugin named {plugin:?}")),
                _ => e,
            })
    }

    /// Loads a model directory and starts serving it under `name`. Blocking: call it
    /// off the async runtime.
    pub fn load_model(
        &self,
        name: &str,
        plugin: &str,
        path: &Path,
        options_json: &str,
        batching: Batching,
    ) -> Result<Arc<LoadedModel>, Status> {
        if !is_plain_name(name) {
            return Err(Status::invalid_argument(format!(
                "model name {name:?} must be letters, digits, '-', '_' or '.'"
            )));
        }
        if self.models.contains_key(name) || self.pipelines.contains_key(name) {
            return Err(Status::already_exists(format!(
                "model {name} is already loaded"
            )));
        }
        if !path.is_dir() {
            return Err(Status::not_found(format!(
                "model directory {} does not exist",
                path.display()
            )));
        }
        let library = self.plugin_for(plugin, path)?;
        let instance = Arc::new(
            library
                .create(path, options_json)
                .map_err(|e| crate::status::from_host(&e))?,
        );
        // Unbounded as a channel, bounded by the queue places each job holds.
        let (jobs, receiver) = mpsc::channel();
        let estimate = Arc::new(Estimate::default());
        let metrics = Arc::new(m::ModelMetrics::new(name));
        let engine = Arc::new(Mutex::new(()));
        let model = Arc::new(LoadedModel {
            name: name.to_string(),
            instance: Arc::clone(&instance),
            path: path.to_path_buf(),
            metrics: Arc::clone(&metrics),
            queue: Arc::new(Queue {
                metrics: Arc::clone(&metrics),
                places: Arc::new(Semaphore::new(batching.max_queue_inputs)),
                capacity: batching.max_queue_inputs,
            }),
            batching: batching.clone(),
            estimate: Arc::clone(&estimate),
            fusion_dims: (library.kind() == PluginKind::Fusion)
                .then(|| FusionDims::read(path))
                .flatten(),
            jobs,
            engine: Arc::clone(&engine),
        });
        match self.models.entry(name.to_string()) {
            dashmap::Entry::Occupied(_) => {
                return Err(Status::already_exists(format!(
                    "model {name} is already loaded"
                )))
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(Arc::clone(&model));
            }
        }
        let thread_name = format!("infer-{name}");
        let model_name = name.to_string();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                batcher::run(
                    model_name, instance, batching, estimate, metrics, engine, receiver,
                )
            })
            .map_err(|e| Status::internal(format!("starting the inference thread: {e}")))?;
        tracing::info!(model = name, plugin = library.name(), dim = model.instance.info().output_dim, path = %path.display(), "model loaded");
        Ok(model)
    }

    /// Stops serving a model. Queued requests still complete.
    pub fn unload_model(&self, name: &str) -> Result<(), Status> {
        self.models
            .remove(name)
            .map(|_| tracing::info!(model = name, "model unloaded"))
            .ok_or_else(|| Status::not_found(format!("model {name} is not loaded")))
    }

    /// Serves a pipeline of loaded models under `name`, after checking that its models
    /// are loaded, of the right kinds, and that their widths fit the fusion model.
    pub fn add_pipeline(
        &self,
        name: &str,
        config: &crate::config::PipelineConfig,
    ) -> Result<Arc<Pipeline>, Status> {
        if !is_plain_name(name) {
            return Err(Status::invalid_argument(format!(
                "pipeline name {name:?} must be letters, digits, '-', '_' or '.'"
            )));
        }
        if self.models.contains_key(name) || self.pipelines.contains_key(name) {
            return Err(Status::already_exists(format!(
                "a model or pipeline named {name} is already served"
            )));
        }
        let text = self.model_of_kind(&config.text, PluginKind::TextEncoder)?;
        let image = self.model_of_kind(&config.image, PluginKind::ImageEncoder)?;
        let fusion = self.model_of_kind(&config.fusion, PluginKind::Fusion)?;
        let dims = fusion.fusion_dims.ok_or_else(|| {
            Status::failed_precondition(format!(
                "fusion model {} gives no text_dim and image_dim in its config.json",
                fusion.name
            ))
        })?;
        if (text.dimension(), image.dimension()) != (dims.text, dims.image) {
            return Err(Status::invalid_argument(format!(
                "pipeline {name}: fusion model {} takes text of {} and images of {} values; \
                 text model {} returns {}, image model {} returns {}",
                fusion.name,
                dims.text,
                dims.image,
                text.name,
                text.dimension(),
                image.name,
                image.dimension()
            )));
        }
        let pipeline = Arc::new(Pipeline {
            name: name.to_string(),
            config: config.clone(),
            dimension: fusion.dimension(),
        });
        self.pipelines
            .insert(name.to_string(), Arc::clone(&pipeline));
        tracing::info!(
            pipeline = name,
            text = config.text,
            image = config.image,
            fusion = config.fusion,
            dim = pipeline.dimension,
            "pipeline served"
        );
        Ok(pipeline)
    }

    /// The model `name`, which must be of `kind` (`INVALID_ARGUMENT` naming its kind
    /// otherwise).
    pub fn model_of_kind(&self, name: &str, kind: PluginKind) -> Result<Arc<LoadedModel>, Status> {
        let model = self.get(name)?;
        if model.kind() != kind {
            return Err(Status::invalid_argument(format!(
                "model {name} is {}, not {}",
                kind_name(model.kind()),
                kind_name(kind)
            )));
        }
        Ok(model)
    }

    /// The pipeline served as `name`, if any.
    pub fn pipeline(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.pipelines.get(name).map(|p| Arc::clone(&p))
    }

    /// Every pipeline, sorted by name.
    pub fn pipelines(&self) -> Vec<Arc<Pipeline>> {
        let mut all: Vec<_> = self
            .pipelines
            .iter()
            .map(|p| Arc::clone(p.value()))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The output width of a model or pipeline.
    pub fn dimension_of(&self, name: &str) -> Result<usize, Status> {
        match self.pipeline(name) {
            Some(p) => Ok(p.dimension),
            None => Ok(self.get(name)?.dimension()),
        }
    }

    /// The model serving `name`, or the default model for an empty name.
    pub fn get(&self, name: &str) -> Result<Arc<LoadedModel>, Status> {
        let name = if name.is_empty() {
            self.default_model_name()
                .ok_or_else(|| Status::not_found("no model is loaded"))?
        } else {
            name.to_string()
        };
        self.models
            .get(&name)
            .map(|m| Arc::clone(&m))
            .ok_or_else(|| {
                let mut loaded: Vec<String> = self.models.iter().map(|m| m.key().clone()).collect();
                loaded.sort();
                Status::not_found(format!(
                    "model {name:?} is not loaded (loaded: {})",
                    if loaded.is_empty() {
                        "none".into()
                    } else {
                        loaded.join(", ")
                    }
                ))
            })
    }

    /// The default model's name: the configured one if loaded, else the first by name.
    pub fn default_model_name(&self) -> Option<String> {
        let configured = self
            .default_model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if self.models.contains_key(&configured) {
            return Some(configured);
        }
        self.models.iter().map(|m| m.key().clone()).min()
    }

    /// Every loaded model, sorted by name.
    pub fn models(&self) -> Vec<Arc<LoadedModel>> {
        let mut all: Vec<_> = self.models.iter().map(|m| Arc::clone(m.value())).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
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

/// `lib<stem>.so` on Linux, `lib<stem>.dylib` on macOS, `<stem>.dll` on Windows.
fn libloading_filename(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_only() {
        assert!(is_plain_name("marquee_bert_text"));
        assert!(is_plain_name("all-MiniLM-L6-v2"));
        for bad in ["", "../x", "a/b", "..", "a\\b", "x y"] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn missing_and_non_library_plugins_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path().to_path_buf(), String::new());
        let missing = registry.load_plugin("nothing_here").unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        std::fs::write(
            dir.path().join(libloading_filename("garbage")),
            b"not an ELF",
        )
        .unwrap();
        let garbage = registry.load_plugin("garbage").unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::FailedPrecondition);
        assert!(
            garbage.message().contains("cannot load plugin"),
            "{}",
            garbage.message()
        );
        assert_eq!(
            registry.load_plugin("../etc").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
