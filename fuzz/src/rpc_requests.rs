//! Target `rpc_requests`: arbitrary bytes as the request messages of every RPC of
//! `marquee.v1`, decoded and served by the server's own gRPC services in process, as the
//! server wires them (minus the network, authentication, admission and deadline
//! layers): an engine with no models loaded (so requests needing one stop at "no such
//! model", after their conversion) and a store in a temporary directory holding a few
//! seeded collections (exact and HNSW, with payloads and ratings). Every call must end
//! in a response or a status, with no panic on any thread.
//!
//! A call to an RPC that may change the store is followed by a reset (every collection
//! deleted, the seeds created again), so each input meets the same state.

use bytes::{BufMut, BytesMut};
use http_body_util::{BodyExt, Full};
use marquee_proto::v1::{
    embedding_service_server::EmbeddingServiceServer,
    evaluation_service_server::EvaluationServiceServer,
    generation_service_server::GenerationServiceServer, model_service_server::ModelServiceServer,
    retrieval_service_server::RetrievalServiceServer,
    training_service_server::TrainingServiceServer,
};
use marquee_proto::v1::{
    index_config, item, value, CreateCollectionRequest, HnswIndex, IndexConfig, Item, Metric,
    Rating, RecordRatingsRequest, StringList, UpsertRequest, Value, Vector,
};
use marquee_server::config::Settings;
use marquee_server::engine::embedder::Embedder;
use marquee_server::engine::generation::Generation;
use marquee_server::engine::registry::Registry;
use marquee_server::engine::tokenizer_pool::TokenizerPool;
use marquee_server::retrieval::gpu::Placement;
use marquee_server::retrieval::store::Store;
use marquee_server::services::embedding::EmbeddingApi;
use marquee_server::services::evaluation::EvaluationApi;
use marquee_server::services::generation::GenerationApi;
use marquee_server::services::models::ModelApi;
use marquee_server::services::retrieval::RetrievalApi;
use marquee_server::services::training::TrainingApi;
use marquee_server::shutdown::Shutdown;
use prost::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tonic::codegen::Service;
use tonic::service::Routes;

/// An RPC of `marquee.v1`: its path, whether its client streams, and whether it may
/// change the store.
struct Rpc {
    path: &'static str,
    client_streams: bool,
    changes_store: bool,
}

const fn rpc(path: &'static str, client_streams: bool, changes_store: bool) -> Rpc {
    Rpc {
        path,
        client_streams,
        changes_store,
    }
}

/// Every RPC of `marquee.v1`, in the order the proto files declare them.
const RPCS: &[Rpc] = &[
    rpc("/marquee.v1.EmbeddingService/Embed", false, false),
    rpc("/marquee.v1.EmbeddingService/EmbedStream", true, false),
    rpc(
        "/marquee.v1.EvaluationService/EvaluateRetrieval",
        true,
        false,
    ),
    rpc(
        "/marquee.v1.EvaluationService/EvaluateRecommendations",
        false,
        false,
    ),
    rpc(
        "/marquee.v1.EvaluationService/EvaluateGeneration",
        true,
        false,
    ),
    rpc("/marquee.v1.GenerationService/Generate", false, false),
    rpc("/marquee.v1.GenerationService/GenerateStream", false, false),
    rpc("/marquee.v1.GenerationService/LoadAdapter", false, false),
    rpc("/marquee.v1.GenerationService/UnloadAdapter", false, false),
    rpc("/marquee.v1.GenerationService/ListAdapters", false, false),
    rpc("/marquee.v1.ModelService/ListModels", false, false),
    rpc("/marquee.v1.ModelService/GetModel", false, false),
    rpc("/marquee.v1.ModelService/LoadModel", false, false),
    rpc("/marquee.v1.ModelService/UnloadModel", false, false),
    rpc("/marquee.v1.RetrievalService/CreateCollection", false, true),
    rpc("/marquee.v1.RetrievalService/DeleteCollection", false, true),
    rpc("/marquee.v1.RetrievalService/ListCollections", false, false),
    rpc("/marquee.v1.RetrievalService/GetCollection", false, false),
    rpc("/marquee.v1.RetrievalService/Upsert", true, true),
    rpc("/marquee.v1.RetrievalService/Delete", false, true),
    rpc("/marquee.v1.RetrievalService/Get", false, false),
    rpc("/marquee.v1.RetrievalService/Search", false, false),
    rpc("/marquee.v1.RetrievalService/Recommend", false, false),
    rpc("/marquee.v1.RetrievalService/RecordRatings", true, true),
    rpc("/marquee.v1.RetrievalService/RepairCollection", false, true),
    rpc(
        "/marquee.v1.RetrievalService/ReembedCollection",
        false,
        true,
    ),
    rpc("/marquee.v1.TrainingService/FineTune", true, false),
];

/// Set by the panic hook: a panic on any thread (a spawned task's included, which the
/// services would otherwise turn into a status or a closed stream).
static PANICKED: AtomicBool = AtomicBool::new(false);

/// The services, their runtime and their directories.
struct Server {
    runtime: tokio::runtime::Runtime,
    routes: Routes,
    store: Arc<Store>,
    _data: tempfile::TempDir,
    _plugins: tempfile::TempDir,
    _shutdown: Shutdown,
}

/// A temporary directory, in memory (`/dev/shm`) where there is one: the store fsyncs.
fn temp_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

impl Server {
    fn start() -> Self {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let settings = Settings::load(None).expect("the default settings");
        let (data, plugins) = (temp_dir(), temp_dir());
        let placement = Placement::from_settings(&settings.retrieval).expect("default placement");
        let store = Arc::new(Store::open(data.path(), placement).expect("an empty store"));
        let registry = Arc::new(Registry::new(plugins.path().to_path_buf(), String::new()));
        let tokenizer = Arc::new(TokenizerPool::new(1).expect("a tokenizer pool"));
        let limits = settings.limits.clone();
        let shutdown = Shutdown::new();
        let embedder = Embedder::new(
            Arc::clone(&registry),
            tokenizer,
            Arc::clone(&store),
            limits.clone(),
        );
        let retrieval = RetrievalApi::new(
            Arc::clone(&store),
            embedder.clone(),
            settings.retrieval.max_k,
            limits.max_inputs_per_request,
        );
        let generation = Generation::new(Arc::clone(&registry), limits.clone());
        let training = TrainingApi::new(
            Arc::clone(&registry),
            Arc::clone(&store),
            data.path().to_path_buf(),
            settings.training.clone(),
            settings.batching.clone(),
            settings.generation.clone(),
            limits.max_eval_queries,
            limits.max_eval_bytes,
        );
        let routes = Routes::new(EmbeddingServiceServer::new(EmbeddingApi::new(
            embedder,
            limits.clone(),
            shutdown.drain(),
        )))
        .add_service(EvaluationServiceServer::new(EvaluationApi::new(
            retrieval.clone(),
            generation.clone(),
            limits.max_eval_queries,
            limits.max_eval_bytes,
        )))
        .add_service(GenerationServiceServer::new(GenerationApi::new(generation)))
        .add_service(ModelServiceServer::new(ModelApi::new(
            registry,
            settings.batching.clone(),
            settings.generation.clone(),
        )))
        .add_service(RetrievalServiceServer::new(retrieval))
        .add_service(TrainingServiceServer::new(training));
        let server = Self {
            runtime,
            routes,
            store,
            _data: data,
            _plugins: plugins,
            _shutdown: shutdown,
        };
        server.seed();
        server
    }

    /// Calls the RPC at `path` with `messages`, each framed as gRPC frames it, and reads
    /// the whole response (every streamed message and the trailers).
    fn call(&self, path: &str, messages: &[&[u8]]) {
        let mut body = BytesMut::new();
        for message in messages {
            body.put_u8(0); // not compressed
            body.put_u32(message.len() as u32);
            body.put_slice(message);
        }
        let request = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::new(Full::new(body.freeze())))
            .expect("a request");
        let mut routes = self.routes.clone();
        self.runtime.block_on(async move {
            let Ok(response) = routes.call(request).await;
            let _ = response.into_body().collect().await;
        });
    }

    /// The collections every input meets: `exact` and `hnsw` (dimension 4, one with an
    /// HNSW index), each with three items with payloads and one user's ratings.
    fn seed(&self) {
        for (name, index) in [
            ("exact", None),
            (
                "hnsw",
                Some(IndexConfig {
                    kind: Some(index_config::Kind::Hnsw(HnswIndex::default())),
                }),
            ),
        ] {
            let create = CreateCollectionRequest {
                name: name.into(),
                dimension: 4,
                metric: Metric::Cosine as i32,
                index,
                ..Default::default()
            };
            self.call(
                "/marquee.v1.RetrievalService/CreateCollection",
                &[&create.encode_to_vec()],
            );
            let upsert = UpsertRequest {
                collection: name.into(),
                items: (0..3).map(seed_item).collect(),
            };
            self.call(
                "/marquee.v1.RetrievalService/Upsert",
                &[&upsert.encode_to_vec()],
            );
            let ratings = RecordRatingsRequest {
                collection: name.into(),
                user_id: "viewer".into(),
                ratings: (0..3)
                    .map(|i| Rating {
                        item_id: format!("movie-{i}"),
                        rating: 3.0 + i as f32,
                        timestamp: i,
                    })
                    .collect(),
            };
            self.call(
                "/marquee.v1.RetrievalService/RecordRatings",
                &[&ratings.encode_to_vec()],
            );
        }
        assert_eq!(self.store.list().len(), 2, "the seed collections");
    }

    /// Deletes every collection and seeds them again.
    fn reset(&self) {
        for collection in self.store.list() {
            self.store
                .delete(&collection.config.name)
                .expect("deleting a collection");
        }
        self.seed();
    }
}

/// Seed item `i`: a vector, and a payload with a number, a string and a list field.
fn seed_item(i: i64) -> Item {
    let field = |kind| Value { kind: Some(kind) };
    Item {
        id: format!("movie-{i}"),
        content: Some(item::Content::Vector(Vector {
            values: vec![1.0, i as f32, 0.5, -1.0],
        })),
        payload: HashMap::from([
            ("year".into(), field(value::Kind::IntValue(1990 + i))),
            (
                "title".into(),
                field(value::Kind::StringValue(format!("Movie {i}"))),
            ),
            (
                "genres".into(),
                field(value::Kind::ListValue(StringList {
                    values: vec!["Drama".into()],
                })),
            ),
        ]),
    }
}

fn server() -> &'static Mutex<Server> {
    static SERVER: OnceLock<Mutex<Server>> = OnceLock::new();
    SERVER.get_or_init(|| Mutex::new(Server::start()))
}

/// The messages of a client stream: each a length byte, then that many bytes (the last
/// one cut short where the input ends).
fn stream_messages(data: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    let mut rest = data;
    while let Some((&length, tail)) = rest.split_first() {
        let (message, after) = tail.split_at(usize::from(length).min(tail.len()));
        messages.push(message);
        rest = after;
    }
    messages
}

/// Checks one input: a byte choosing the RPC (modulo their number), then its request:
/// one message for a unary or server-streaming RPC, the messages of
/// [`stream_messages`] for a client-streaming one.
pub fn check(data: &[u8]) {
    let Some((&choice, request)) = data.split_first() else {
        return;
    };
    let rpc = &RPCS[usize::from(choice) % RPCS.len()];
    let messages = if rpc.client_streams {
        stream_messages(request)
    } else {
        vec![request]
    };
    let server = server().lock().unwrap_or_else(|p| p.into_inner());
    server.call(rpc.path, &messages);
    if rpc.changes_store {
        server.reset();
    }
    assert!(
        !PANICKED.swap(false, Ordering::SeqCst),
        "a panic while serving {}",
        rpc.path
    );
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn every_rpc_of_the_protos_is_fuzzed() {
        let set = prost_types::FileDescriptorSet::decode(marquee_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut declared: Vec<String> = set
            .file
            .iter()
            .filter(|f| f.package() == "marquee.v1")
            .flat_map(|f| {
                f.service.iter().flat_map(|s| {
                    s.method
                        .iter()
                        .map(move |m| format!("/marquee.v1.{}/{}", s.name(), m.name()))
                })
            })
            .collect();
        let mut fuzzed: Vec<String> = super::RPCS.iter().map(|r| r.path.to_string()).collect();
        declared.sort();
        fuzzed.sort();
        assert_eq!(fuzzed, declared);
    }
}
