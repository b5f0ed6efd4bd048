//! Server configuration: embedded defaults, then a TOML file, then `MARQUEE_`-prefixed
//! environment variables (nested keys joined by `__`), then command-line overrides.

use anyhow::{bail, Context, Result};
use marquee_kernels::{DeviceRequest, Precision};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The embedded defaults (`server/src/defaults.toml`).
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Per-request limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most inputs one Embed request may carry.
    pub max_inputs_per_request: usize,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Most requests of one EmbedStream processed at once.
    pub max_stream_in_flight: usize,
    /// Most RPCs in progress on the whole server (health checks and reflection not
    /// counted); beyond it `RESOURCE_EXHAUSTED`.
    pub max_concurrent_requests: usize,
    /// Most concurrent HTTP/2 streams one connection may open (clients wait beyond it).
    pub max_concurrent_streams: u32,
    /// Most queries one EvaluateRetrieval call may carry.
    pub max_eval_queries: usize,
    /// Largest query set one EvaluateRetrieval call may carry, in encoded bytes.
    pub max_eval_bytes: usize,
    /// How long an HTTP client may take to send its request head and then its body, in
    /// ms; a slower head closes the connection, a slower body is answered 408.
    pub http_read_timeout_ms: u64,
    /// Largest encoded image (one input, poster or thumbnail), in bytes; beyond it
    /// `RESOURCE_EXHAUSTED`. The decoded size is bounded by the image plugin's
    /// `max_image_pixels` option.
    pub max_image_bytes: usize,
    /// Request bytes the server holds in memory at once, over every call: gRPC
    /// messages being handled and HTTP bodies; beyond it `RESOURCE_EXHAUSTED` before
    /// a message's bytes are read. At least `max_message_bytes`.
    pub max_request_memory_bytes: usize,
}

/// The dynamic batcher's limits for one model.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// Most inputs in one batch.
    pub max_batch_size: usize,
    /// Most tokens in one batch (one longer input still runs alone).
    pub max_batch_tokens: usize,
    /// How long the first queued input waits for others to fill its batch, in µs.
    pub max_queue_delay_us: u64,
    /// Most inputs waiting in the queue; beyond it requests get RESOURCE_EXHAUSTED.
    pub max_queue_inputs: usize,
}

/// How a generator model is scheduled and prompted.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenerationSettings {
    /// Most new tokens one scheduler step processes: every decoding sequence's token,
    /// then prompt chunks up to this budget (chunked prefill).
    pub max_step_tokens: u32,
    /// The instruction a recall input is rendered with: `{ocr_text}` and
    /// `{transcript}` are replaced by the input's; it follows the scene images in one
    /// user message.
    pub recall_instruction: String,
}

/// The tokenization worker pool.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokenization {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
}

/// Fine-tuning jobs (`TrainingService`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Worker threads of a job that names none; 0 means half the cores (at least one),
    /// so that serving goes on beside it.
    pub threads: usize,
}

impl Training {
    /// The worker threads of a job asking for `requested` (0: the configured share).
    pub fn threads(&self, requested: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        match (requested, self.threads) {
            (0, 0) => (cores / 2).max(1),
            (0, n) | (n, _) => n,
        }
    }
}

/// Retrieval limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retrieval {
    /// Largest `k` of Search, Recommend and evaluation cut-offs.
    pub max_k: usize,
    /// Where exact search runs for collections that name no device: `auto`, `cpu`, `cuda:N`.
    pub device: String,
    /// Element type of collection matrices kept on a GPU: `fp32` or `bf16`.
    pub precision: String,
    /// Collections on the CPU also keep their rows in f16 (+50% memory): exact searches
    /// of a few queries and HNSW walks read half the bytes (exact results stay exact).
    pub f16_shortlist: bool,
}

/// TLS for the gRPC port; off when `cert` is empty.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate they signed (mTLS).
    pub client_ca: PathBuf,
}

impl Tls {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

/// Bearer-token authentication; off when no token is configured.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Tokens allowed to call every RPC except the admin ones.
    pub tokens: Vec<String>,
    /// Tokens allowed to call every RPC, including LoadModel, UnloadModel and DeleteCollection.
    pub admin_tokens: Vec<String>,
    /// File with more user tokens, one per line (blank lines and `#` comments skipped).
    pub tokens_file: PathBuf,
    /// File with more admin tokens, in the same format.
    pub admin_tokens_file: PathBuf,
}

/// One model to load at start-up.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model directory; relative paths are under `data_dir`.
    pub path: PathBuf,
    /// Plugin name (as in its handshake); empty picks the first plugin that accepts the directory.
    #[serde(default)]
    pub plugin: String,
    /// Options handed to the plugin as a JSON object.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// `auto`, `cpu` or `cuda:N`: resolved by the server (one log line says which and why)
    /// and handed to the plugin as its `device` option. Absent: the plugin decides.
    #[serde(default)]
    pub device: Option<String>,
    /// Batching limits for this model; the global `[batching]` when absent.
    #[serde(default)]
    pub batching: Option<Batching>,
    /// Generation settings for this generator; the global `[generation]` when absent.
    #[serde(default)]
    pub generation: Option<GenerationSettings>,
}

/// The collections that receive a pipeline's intermediate embeddings on Upsert; an
/// empty name stores nothing.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PipelineStore {
    /// Collection for the text model's embeddings.
    #[serde(default)]
    pub text: String,
    /// Collection for the poster embeddings (items with a poster only).
    #[serde(default)]
    pub poster: String,
    /// Collection for the thumbnail embeddings (items with a thumbnail only).
    #[serde(default)]
    pub thumbnail: String,
}

/// A model composed of loaded models: text encoder + image encoder → fusion model.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Serving name of the text encoder.
    pub text: String,
    /// Serving name of the image encoder (posters and thumbnails alike).
    pub image: String,
    /// Serving name of the fusion model.
    pub fusion: String,
    /// Where the intermediate embeddings go on Upsert.
    #[serde(default)]
    pub store: PipelineStore,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus metrics listen address (`/metrics`).
    pub metrics_listen: SocketAddr,
    /// OpenAI-compatible HTTP API listen address; empty turns it off.
    pub http_listen: String,
    /// Local data directory (models, later collections).
    pub data_dir: PathBuf,
    /// Directory plugins are loaded from; empty means the server executable's directory.
    pub plugin_dir: PathBuf,
    /// Plugin libraries to load at start-up, by file stem without the `lib` prefix.
    pub plugins: Vec<String>,
    /// Model that answers requests naming none.
    pub default_model: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log_level: String,
    /// How long a shutdown (SIGTERM, SIGINT) waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: u64,
    /// Per-request limits.
    pub limits: Limits,
    /// Default batching limits.
    pub batching: Batching,
    /// Default generation settings.
    pub generation: GenerationSettings,
    /// Tokenization worker pool.
    pub tokenization: Tokenization,
    /// Fine-tuning jobs.
    pub training: Training,
    /// Retrieval limits.
    pub retrieval: Retrieval,
    /// TLS for the gRPC port.
    pub tls: Tls,
    /// Bearer-token authentication.
    pub auth: Auth,
    /// Models to load at start-up, by serving name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Pipelines served beside the models, by serving name.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// `MARQUEE_*` environment variables that name no setting (the CLI's
    /// `MARQUEE_ADDR` and `MARQUEE_TOKEN`, say), left out rather than refused.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

/// The top-level keys and tables of the embedded defaults.
fn top_level_keys() -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut in_table = false;
    for line in DEFAULTS_TOML.lines() {
        if let Some(table) = line.strip_prefix('[') {
            in_table = true;
            keys.extend(table.split(['.', ']']).next());
        } else if !in_table && !line.starts_with('#') {
            keys.extend(line.split_once(" = ").map(|(k, _)| k));
        }
    }
    keys
}

/// The `MARQUEE_*` environment split into settings and the names of the others.
fn marquee_env() -> (config::Map<String, String>, Vec<String>) {
    let known = top_level_keys();
    let (mut settings, mut ignored) = (config::Map::new(), Vec::new());
    for (name, value) in std::env::vars() {
        let Some(key) = name.strip_prefix("MARQUEE_") else {
            continue;
        };
        let top = key.split("__").next().unwrap_or_default().to_lowercase();
        if known.contains(&top.as_str()) {
            settings.insert(name, value);
        } else {
            ignored.push(name);
        }
    }
    ignored.sort();
    (settings, ignored)
}

impl Settings {
    /// Loads the defaults, then `file` if given, then the `MARQUEE_` environment.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULTS_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(file) = file {
            if !file.is_file() {
                bail!("config file {} does not exist", file.display());
            }
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let (env, ignored_env) = marquee_env();
        builder = builder.add_source(
            config::Environment::with_prefix("MARQUEE")
                .source(Some(env))
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("plugins")
                .with_list_parse_key("auth.tokens")
                .with_list_parse_key("auth.admin_tokens")
                .try_parsing(true),
        );
        let mut settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .context("invalid configuration")?;
        settings.ignored_env = ignored_env;
        settings.validate()?;
        Ok(settings)
    }

    /// The HTTP API's address, `None` when it is off.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>> {
        let value = self.http_listen.trim();
        if value.is_empty() {
            return Ok(None);
        }
        value
            .parse()
            .map(Some)
            .with_context(|| format!("http_listen {value:?} is not an address like 127.0.0.1:8000"))
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        self.http_addr()?;
        if self.limits.http_read_timeout_ms == 0 {
            bail!("[limits]: http_read_timeout_ms must be positive");
        }
        let check = |b: &Batching, what: &str| -> Result<()> {
            if b.max_batch_size == 0 || b.max_batch_tokens == 0 || b.max_queue_inputs == 0 {
                bail!("{what}: batch and queue limits must be positive");
            }
            if b.max_queue_inputs < self.limits.max_inputs_per_request {
                bail!(
                    "{what}: max_queue_inputs ({}) is below limits.max_inputs_per_request ({})",
                    b.max_queue_inputs,
                    self.limits.max_inputs_per_request
                );
            }
            Ok(())
        };
        check(&self.batching, "[batching]")?;
        let check_generation = |g: &GenerationSettings, what: &str| -> Result<()> {
            if g.max_step_tokens == 0 {
                bail!("{what}: max_step_tokens must be positive");
            }
            Ok(())
        };
        check_generation(&self.generation, "[generation]")?;
        for (name, model) in &self.models {
            if let Some(b) = &model.batching {
                check(b, &format!("[models.{name}.batching]"))?;
            }
            if let Some(g) = &model.generation {
                check_generation(g, &format!("[models.{name}.generation]"))?;
            }
        }
        if self.limits.max_inputs_per_request == 0
            || self.limits.max_stream_in_flight == 0
            || self.limits.max_concurrent_requests == 0
            || self.limits.max_concurrent_streams == 0
            || self.limits.max_eval_queries == 0
            || self.limits.max_eval_bytes == 0
            || self.limits.max_image_bytes == 0
            || self.retrieval.max_k == 0
        {
            bail!("[limits]: limits must be positive");
        }
        if self.limits.max_request_memory_bytes < self.limits.max_message_bytes {
            bail!(
                "[limits]: max_request_memory_bytes ({}) must be at least max_message_bytes ({})",
                self.limits.max_request_memory_bytes,
                self.limits.max_message_bytes
            );
        }
        self.retrieval
            .device
            .parse::<DeviceRequest>()
            .map_err(|e| anyhow::anyhow!("retrieval.device: {e}"))?;
        self.retrieval
            .precision
            .parse::<Precision>()
            .map_err(|e| anyhow::anyhow!("retrieval.precision: {e}"))?;
        for (name, model) in &self.models {
            if let Some(device) = &model.device {
                device
                    .parse::<DeviceRequest>()
                    .map_err(|e| anyhow::anyhow!("models.{name}.device: {e}"))?;
            }
        }
        for (name, pipeline) in &self.pipelines {
            if self.models.contains_key(name) {
                bail!("pipelines.{name}: a model has the same name");
            }
            if pipeline.text.is_empty() || pipeline.image.is_empty() || pipeline.fusion.is_empty() {
                bail!("pipelines.{name}: text, image and fusion models are all required");
            }
        }
        let tls = &self.tls;
        if tls.enabled() == tls.key.as_os_str().is_empty() {
            bail!("[tls]: cert and key go together");
        }
        if !tls.enabled() && !tls.client_ca.as_os_str().is_empty() {
            bail!("[tls]: client_ca needs cert and key");
        }
        Ok(())
    }

    /// The plugin directory, resolved.
    pub fn plugin_dir(&self) -> Result<PathBuf> {
        if !self.plugin_dir.as_os_str().is_empty() {
            return Ok(self.plugin_dir.clone());
        }
        let exe = std::env::current_exe().context("locating the server executable")?;
        Ok(exe
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")))
    }

    /// A model path resolved against the data directory.
    pub fn model_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.data_dir.join(path)
        }
    }

    /// Adds or replaces a model from a `NAME=DIR` or `NAME=PLUGIN:DIR` flag.
    pub fn add_model_flag(&mut self, flag: &str) -> Result<()> {
        let (name, rest) = flag
            .split_once('=')
            .filter(|(n, r)| !n.is_empty() && !r.is_empty())
            .with_context(|| format!("--model {flag:?}: expected NAME=DIR or NAME=PLUGIN:DIR"))?;
        let (plugin, dir) = match rest.split_once(':') {
            Some((plugin, dir)) if !plugin.contains('/') && !dir.is_empty() => (plugin, dir),
            _ => ("", rest),
        };
        let dir = PathBuf::from(dir);
        let path = if dir.is_relative() {
            std::env::current_dir()?.join(dir)
        } else {
            dir
        };
        self.models.insert(
            name.to_string(),
            ModelConfig {
                path,
                plugin: plugin.to_string(),
                options: Default::default(),
                batching: None,
                generation: None,
                device: None,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_load() {
        let s = Settings::load(None).unwrap();
        assert_eq!(s.listen.port(), 50051);
        assert_eq!(s.default_model, "all-MiniLM-L6-v2");
        assert!(s.models.contains_key("all-MiniLM-L6-v2"));
    }

    #[test]
    fn example_config_is_valid_and_documents_every_default_key() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/marquee.example.toml");
        let s = Settings::load(Some(&example)).unwrap();
        assert_eq!(s.batching.max_batch_size, 64);
        let text = std::fs::read_to_string(example).unwrap();
        for key in DEFAULTS_TOML
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim()))
            .filter(|k| !k.starts_with('#'))
        {
            assert!(text.contains(key), "example config lacks {key}");
        }
    }

    #[test]
    fn top_level_keys_of_the_defaults() {
        let keys = top_level_keys();
        for key in [
            "listen",
            "shutdown_grace_secs",
            "limits",
            "auth",
            "tls",
            "models",
        ] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        assert!(!keys.contains(&"max_batch_size"));
    }

    #[test]
    fn model_flag_with_and_without_plugin() {
        let mut s = Settings::load(None).unwrap();
        s.add_model_flag("a=/m/a").unwrap();
        s.add_model_flag("b=bert-text:/m/b").unwrap();
        assert_eq!(s.models["a"].plugin, "");
        assert_eq!(s.models["a"].path, PathBuf::from("/m/a"));
        assert_eq!(s.models["b"].plugin, "bert-text");
        assert!(s.add_model_flag("noequals").is_err());
    }

    #[test]
    fn pipelines_parse_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[pipelines.fused]\ntext = \"t\"\nimage = \"i\"\nfusion = \"f\"\n\
             store = { poster = \"posters\" }\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f)).unwrap();
        let p = &s.pipelines["fused"];
        assert_eq!((p.text.as_str(), p.image.as_str()), ("t", "i"));
        assert_eq!(p.store.poster, "posters");
        assert_eq!(p.store.text, "");
        std::fs::write(
            &f,
            "[pipelines.fused]\ntext = \"t\"\nimage = \"\"\nfusion = \"f\"\n",
        )
        .unwrap();
        assert!(Settings::load(Some(&f)).is_err());
        std::fs::write(
            &f,
            "[pipelines.all-MiniLM-L6-v2]\ntext = \"t\"\nimage = \"i\"\nfusion = \"f\"\n",
        )
        .unwrap();
        assert!(Settings::load(Some(&f)).is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[batching]\nmax_batch_size = 0\n").unwrap();
        assert!(Settings::load(Some(&f)).is_err());
        std::fs::write(&f, "no_such_key = 1\n").unwrap();
        assert!(Settings::load(Some(&f)).is_err());
    }
}
