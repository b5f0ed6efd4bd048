//! Rust client for Marquee's gRPC API.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut client = marquee_client::Client::connect("http://127.0.0.1:50051").await?;
//! let vectors = client.embed_texts("", &["a film about a heist"]).await?;
//! assert_eq!(vectors.len(), 1);
//! # Ok(()) }
//! ```
//!
//! With TLS and a token:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let options = marquee_client::ConnectOptions {
//!     tls_ca: Some("ca.pem".into()),
//!     token: Some("s3cret".into()),
//!     ..marquee_client::ConnectOptions::new("https://marquee.internal:50051")
//! };
//! let mut client = marquee_client::Client::connect_with(&options).await?;
//! # Ok(()) }
//! ```

pub use marquee_proto::v1 as proto;

/// The `marquee ingest --template` text templates (in the library so the fuzz targets
/// reach them; the CLI re-exports it as `cli::template`).
#[path = "cli/template.rs"]
pub mod template;

use anyhow::{bail, Context};
use proto::embedding_service_client::EmbeddingServiceClient;
use proto::evaluation_service_client::EvaluationServiceClient;
use proto::generation_service_client::GenerationServiceClient;
use proto::model_service_client::ModelServiceClient;
use proto::retrieval_service_client::RetrievalServiceClient;
use proto::training_service_client::TrainingServiceClient;
use proto::{embed_input::Input, EmbedInput, EmbedRequest, EmbedResponse, Truncation};
use std::path::PathBuf;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The default server address.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

/// The largest message the embedding, retrieval and evaluation clients send or accept (64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How to reach a server.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// `http://HOST:PORT`, or `https://HOST:PORT` for TLS.
    pub addr: String,
    /// PEM CA certificate(s) the server's certificate must chain to; without it an
    /// `https://` address is checked against the system's trusted roots.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers requiring mutual TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Bearer token sent with every call (`authorization: Bearer <token>`).
    pub token: Option<String>,
}

impl ConnectOptions {
    /// Plain options for `addr`: no client certificate, no token.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            ..Default::default()
        }
    }

    /// The endpoint, with TLS configured for `https://` addresses.
    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let endpoint = Endpoint::from_shared(self.addr.clone())
            .with_context(|| format!("invalid server address {:?}", self.addr))?;
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
        };
        if !self.addr.starts_with("https://") {
            if self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some() {
                bail!("TLS options need an https:// address, not {}", self.addr);
            }
            return Ok(endpoint);
        }
        let mut tls = match &self.tls_ca {
            Some(ca) => ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "client certificate")?,
                    read(key, "client key")?,
                ))
            }
            (None, None) => {}
            _ => bail!("a client certificate needs its key, and a key its certificate"),
        }
        Ok(endpoint.tls_config(tls)?)
    }
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone, Default)]
pub struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// Credentials sending `token`; none for `None`.
    pub fn bearer(token: Option<&str>) -> anyhow::Result<Self> {
        let authorization = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .context("the token must be printable ASCII")
            })
            .transpose()?;
        Ok(Self { authorization })
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The transport of every service client: the channel, with credentials.
pub type Transport = InterceptedService<Channel, Credentials>;

/// A connection to one Marquee server.
#[derive(Clone)]
pub struct Client {
    /// Embedding RPCs.
    pub embedding: EmbeddingServiceClient<Transport>,
    /// Model-management RPCs.
    pub models: ModelServiceClient<Transport>,
    /// Collections, upserts, search, recommendations and ratings.
    pub retrieval: RetrievalServiceClient<Transport>,
    /// Server-side retrieval and recommendation quality evaluation.
    pub evaluation: EvaluationServiceClient<Transport>,
    /// Text generation (streamed or whole) and LoRA adapters.
    pub generation: GenerationServiceClient<Transport>,
    /// Fine-tuning served encoders.
    pub training: TrainingServiceClient<Transport>,
}

impl Client {
    /// Connects to `addr` (e.g. `http://127.0.0.1:50051`) without a token.
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        Self::connect_with(&ConnectOptions::new(addr)).await
    }

    /// Connects with TLS and a token as `options` say.
    pub async fn connect_with(options: &ConnectOptions) -> anyhow::Result<Self> {
        let credentials = Credentials::bearer(options.token.as_deref())?;
        let channel = options
            .endpoint()?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", options.addr))?;
        Ok(Self::from_channel(channel, credentials))
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel, credentials: Credentials) -> Self {
        let max = MAX_MESSAGE_BYTES;
        let transport = InterceptedService::new(channel, credentials);
        Self {
            embedding: EmbeddingServiceClient::new(transport.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            models: ModelServiceClient::new(transport.clone()),
            retrieval: RetrievalServiceClient::new(transport.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            evaluation: EvaluationServiceClient::new(transport.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            generation: GenerationServiceClient::new(transport.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            training: TrainingServiceClient::new(transport)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        }
    }

    /// A request embedding `texts` with `model` ("" for the server's default).
    pub fn text_request(
        model: &str,
        texts: &[impl AsRef<str>],
        truncation: Truncation,
    ) -> EmbedRequest {
        EmbedRequest {
            model: model.to_string(),
            inputs: texts
                .iter()
                .map(|t| EmbedInput {
                    input: Some(Input::Text(t.as_ref().to_string())),
                })
                .collect(),
            truncation: truncation as i32,
            request_id: String::new(),
        }
    }

    /// Embeds texts, returning the full response.
    pub async fn embed(&mut self, request: EmbedRequest) -> Result<EmbedResponse, tonic::Status> {
        Ok(self.embedding.embed(request).await?.into_inner())
    }

    /// Embeds texts with the default truncation, returning one vector per text.
    pub async fn embed_texts(
        &mut self,
        model: &str,
        texts: &[impl AsRef<str>],
    ) -> Result<Vec<Vec<f32>>, tonic::Status> {
        let response = self
            .embed(Self::text_request(model, texts, Truncation::Unspecified))
            .await?;
        Ok(response.embeddings.into_iter().map(|e| e.values).collect())
    }
}
