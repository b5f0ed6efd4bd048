//! Loaded plugins and the models and pipelines served with them. Models can be loaded
//! and unloaded at run time: an unloaded model stops taking requests at once, and its
//! inference thread finishes the jobs already queued before the instance is destroyed.

use super::error::EngineError;
use super::model::{kind_name, FusionDims, LoadedModel};
use crate::config::{Batching, GenerationSettings, PipelineConfig};
use crate::names::is_plain_name;
use dashmap::DashMap;
use marquee_plugin_api::host::PluginLibrary;
use marquee_plugin_api::PluginKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// A pipeline being served: models composed in the configuration (text encoder + image
/// encoder → fusion model) under their own name beside the models.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    /// Serving name.
    pub name: String,
    /// Its models and intermediate collections.
    pub config: PipelineConfig,
    /// Length of its vectors (the fusion model's output).
    pub dimension: usize,
}

/// A pipeline's models, resolved from the registry.
pub struct PipelineModels {
    /// Its text encoder.
    pub text: Arc<LoadedModel>,
    /// Its image encoder.
    pub image: Arc<LoadedModel>,
    /// Its fusion model.
    pub fusion: Arc<LoadedModel>,
    /// The fusion model's input widths.
    pub dims: FusionDims,
}

/// Everything loaded: plugin libraries and models.
pub struct Registry {
    plugin_dir: PathBuf,
    plugins: Mutex<Vec<Arc<PluginLibrary>>>,
    models: DashMap<String, Arc<LoadedModel>>,
    pipelines: DashMap<String, Arc<Pipeline>>,
    default_model: RwLock<String>,
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
    pub fn load_plugin(&self, stem: &str) -> Result<Arc<PluginLibrary>, EngineError> {
        if !is_plain_name(stem) {
            return Err(EngineError::Invalid(format!(
                "plugin name {stem:?} must be a plain file stem (letters, digits, '-', '_', '.')"
            )));
        }
        let file = self.plugin_dir.join(libloading_filename(stem));
        let canonical_dir = self.plugin_dir.canonicalize().map_err(|e| {
            EngineError::Precondition(format!(
                "plugin directory {}: {e}",
                self.plugin_dir.display()
            ))
        })?;
        let canonical = file.canonicalize().map_err(|_| {
            EngineError::NotFound(format!(
                "no plugin library {} in {}",
                file.display(),
                canonical_dir.display()
            ))
        })?;
        if !canonical.starts_with(&canonical_dir) {
            return Err(EngineError::OutsidePluginDir(format!(
                "{} resolves outside the plugin directory",
                file.display()
            )));
        }
        let mut plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = plugins.iter().find(|p| p.path() == canonical) {
            return Ok(Arc::clone(p));
        }
        let library = PluginLibrary::open(&canonical)
            .map_err(|e| EngineError::Precondition(e.to_string()))?;
        if plugins.iter().any(|p| p.name() == library.name()) {
            return Err(EngineError::AlreadyExists(format!(
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
    fn plugin_for(&self, plugin: &str, path: &Path) -> Result<Arc<PluginLibrary>, EngineError> {
        if plugin.is_empty() {
            return self
                .plugins()
                .into_iter()
                .find(|p| p.accepts(path))
                .ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "no loaded plugin accepts the model directory {}",
                        path.display()
                    ))
                });
        }
        if let Some(p) = self.plugins().into_iter().find(|p| p.name() == plugin) {
            return Ok(p);
        }
        self.load_plugin(&format!("marquee_{}", plugin.replace('-', "_")))
            .map_err(|e| match e {
                EngineError::NotFound(_) => {
                    EngineError::NotFound(format!("no plugin named {plugin:?}"))
                }
                e => e,
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
        generation: GenerationSettings,
    ) -> Result<Arc<LoadedModel>, EngineError> {
        if !is_plain_name(name) {
            return Err(EngineError::Invalid(format!(
                "model name {name:?} must be letters, digits, '-', '_' or '.'"
            )));
        }
        if self.models.contains_key(name) || self.pipelines.contains_key(name) {
            return Err(EngineError::AlreadyExists(format!(
                "model {name} is already loaded"
            )));
        }
        if !path.is_dir() {
            return Err(EngineError::NotFound(format!(
                "model directory {} does not exist",
                path.display()
            )));
        }
        let library = self.plugin_for(plugin, path)?;
        let instance = Arc::new(library.create(path, options_json)?);
        let model = Arc::new(LoadedModel::start(
            name, instance, path, batching, generation,
        )?);
        match self.models.entry(name.to_string()) {
            dashmap::Entry::Occupied(_) => {
                return Err(EngineError::AlreadyExists(format!(
                    "model {name} is already loaded"
                )))
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(Arc::clone(&model));
            }
        }
        tracing::info!(model = name, plugin = library.name(), dim = model.instance.info().output_dim, path = %path.display(), "model loaded");
        Ok(model)
    }

    /// Stops serving a model. Queued requests still complete.
    pub fn unload_model(&self, name: &str) -> Result<(), EngineError> {
        self.models
            .remove(name)
            .map(|_| tracing::info!(model = name, "model unloaded"))
            .ok_or_else(|| EngineError::NotFound(format!("model {name} is not loaded")))
    }

    /// Serves a pipeline of loaded models under `name`, after checking that its models
    /// are loaded, of the right kinds, and that their widths fit the fusion model.
    pub fn add_pipeline(
        &self,
        name: &str,
        config: &PipelineConfig,
    ) -> Result<Arc<Pipeline>, EngineError> {
        if !is_plain_name(name) {
            return Err(EngineError::Invalid(format!(
                "pipeline name {name:?} must be letters, digits, '-', '_' or '.'"
            )));
        }
        if self.models.contains_key(name) || self.pipelines.contains_key(name) {
            return Err(EngineError::AlreadyExists(format!(
                "a model or pipeline named {name} is already served"
            )));
        }
        let PipelineModels {
            text,
            image,
            fusion,
            dims,
        } = self.pipeline_models(config)?;
        if (text.dimension(), image.dimension()) != (dims.text, dims.image) {
            return Err(EngineError::Invalid(format!(
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

    /// A pipeline's loaded models, each of the kind its place needs, and the fusion
    /// model's input widths.
    pub fn pipeline_models(&self, config: &PipelineConfig) -> Result<PipelineModels, EngineError> {
        let text = self.model_of_kind(&config.text, PluginKind::TextEncoder)?;
        let image = self.model_of_kind(&config.image, PluginKind::ImageEncoder)?;
        let fusion = self.model_of_kind(&config.fusion, PluginKind::Fusion)?;
        let dims = fusion.fusion_dims.ok_or_else(|| {
            EngineError::Precondition(format!(
                "fusion model {} reports no text and image input widths in its model info",
                fusion.name
            ))
        })?;
        Ok(PipelineModels {
            text,
            image,
            fusion,
            dims,
        })
    }

    /// The model `name`, which must be of `kind` (`INVALID_ARGUMENT` naming its kind
    /// otherwise).
    pub fn model_of_kind(
        &self,
        name: &str,
        kind: PluginKind,
    ) -> Result<Arc<LoadedModel>, EngineError> {
        let model = self.get(name)?;
        if model.kind() != kind {
            return Err(EngineError::Invalid(format!(
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
    pub fn dimension_of(&self, name: &str) -> Result<usize, EngineError> {
        match self.pipeline(name) {
            Some(p) => Ok(p.dimension),
            None => Ok(self.get(name)?.dimension()),
        }
    }

    /// The model serving `name`, or the default model for an empty name.
    pub fn get(&self, name: &str) -> Result<Arc<LoadedModel>, EngineError> {
        let name = if name.is_empty() {
            self.default_model_name()
                .ok_or_else(|| EngineError::NotFound("no model is loaded".into()))?
        } else {
            name.to_string()
        };
        self.models
            .get(&name)
            .map(|m| Arc::clone(&m))
            .ok_or_else(|| {
                let mut loaded: Vec<String> = self.models.iter().map(|m| m.key().clone()).collect();
                loaded.sort();
                EngineError::NotFound(format!(
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
    fn missing_and_non_library_plugins_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path().to_path_buf(), String::new());
        let missing = registry.load_plugin("nothing_here").unwrap_err();
        assert!(matches!(missing, EngineError::NotFound(_)), "{missing}");
        std::fs::write(
            dir.path().join(libloading_filename("garbage")),
            b"not an ELF",
        )
        .unwrap();
        let garbage = registry.load_plugin("garbage").unwrap_err();
        assert!(
            matches!(&garbage, EngineError::Precondition(m) if m.contains("cannot load plugin")),
            "{garbage}"
        );
        let outside = registry.load_plugin("../etc").unwrap_err();
        assert!(matches!(outside, EngineError::Invalid(_)), "{outside}");
    }
}
