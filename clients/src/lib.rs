//! Rust client for Marquee's gRPC API.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut client = marquee_client::Client::connect("http://127.0.0.1:50051").await?;
//! let vectors = client.embed_texts("", &["a film about a heist"]).await?;
//! assert_eq!(vectors.len(), 1);
//! # Ok(()) }
//! ```

pub use marquee_proto::v1 as proto;

use proto::embedding_service_client::EmbeddingServiceClient;
use proto::evaluation_service_client::EvaluationServiceClient;
use proto::model_service_client::ModelServiceClient;
use proto::retrieval_service_client::RetrievalServiceClient;
use proto::{embed_input::Input, EmbedInput, EmbedRequest, EmbedResponse, Truncation};
use tonic::transport::{Channel, Endpoint};

/// The default server address.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

/// The largest message the embedding, retrieval and evaluation clients send or accept (64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A connection to one Marquee server.
#[derive(Clone)]
pub struct Client {
    /// Embedding RPCs.
    pub embedding: EmbeddingServiceClient<Channel>,
    /// Model-management RPCs.
    pub models: ModelServiceClient<Channel>,
    /// Collections, upserts, search, recommendations and ratings.
    pub retrieval: RetrievalServiceClient<Channel>,
    /// Server-side retrieval and recommendation quality evaluation.
    pub evaluation: EvaluationServiceClient<Channel>,
}

impl Client {
    /// Connects to `addr` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(addr: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(addr.to_string())?.connect().await?;
        Ok(Self::from_channel(channel))
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        let max = MAX_MESSAGE_BYTES;
        Self {
            embedding: EmbeddingServiceClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            models: ModelServiceClient::new(channel.clone()),
            retrieval: RetrievalServiceClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            evaluation: EvaluationServiceClient::new(channel)
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
