//! `marquee.v1.RetrievalService`: collections, items, search, recommendations, ratings.

use crate::engine::deadline::Deadline;
use crate::engine::embedder::Embedder;
use crate::engine::pipeline::PipelineParts;
use crate::engine::request::{Input, Truncation};
use crate::retrieval::collection::RepairReport;
use crate::retrieval::collection::{Collection, Query, ScoredRow};
use crate::retrieval::error::{ErrorKind, StorageError};
use crate::retrieval::store::{Progress, Store};
use crate::services::deadline::Bounded;
use crate::services::deadline::DeadlineOf;
use crate::services::embedding::multimodal;
use crate::services::observed;
use marquee_plugin_api::PluginKind;
use marquee_proto::v1::retrieval_service_server::RetrievalService;
use marquee_proto::v1::{
    item, recommend_request, search_request, CollectionInfo, CreateCollectionRequest,
    DeleteCollectionRequest, DeleteCollectionResponse, DeleteRequest, DeleteResponse,
    GetCollectionRequest, GetRequest, GetResponse, ListCollectionsRequest, ListCollectionsResponse,
    Rating, RecommendRequest, RecordRatingsRequest, RecordRatingsResponse,
    ReembedCollectionRequest, ReembedCollectionResponse, RepairCollectionRequest,
    RepairCollectionResponse, ScoredItem, SearchRequest, SearchResponse, StoredItem,
    UnopenedCollection, UpsertRequest, UpsertResponse,
};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

/// Default `min_rating` of Recommend and EvaluateRecommendations.
pub const DEFAULT_MIN_RATING: f32 = 4.0;

/// The retrieval service.
#[derive(Clone)]
pub struct RetrievalApi {
    store: Arc<Store>,
    embedder: Embedder,
    max_k: usize,
    max_inputs_per_request: usize,
}

impl From<StorageError> for Status {
    fn from(e: StorageError) -> Self {
        let code = match e.kind() {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ErrorKind::DataLoss => Code::DataLoss,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::Internal => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Runs blocking collection work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
}

impl RetrievalApi {
    /// A service over the store, embedding text, images and multimodal items with the
    /// engine's embedder.
    pub fn new(
        store: Arc<Store>,
        embedder: Embedder,
        max_k: usize,
        max_inputs_per_request: usize,
    ) -> Self {
        Self {
            store,
            embedder,
            max_k,
            max_inputs_per_request,
        }
    }

    /// The largest `k` a request may ask for.
    pub fn max_k(&self) -> usize {
        self.max_k
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Checks `k` against the configured maximum.
    pub fn check_k(&self, k: u32) -> Result<usize, Status> {
        if k == 0 || k as usize > self.max_k {
            return Err(Status::invalid_argument(format!(
                "k must be in 1..={} (got {k})",
                self.max_k
            )));
        }
        Ok(k as usize)
    }

    /// Embeds inputs with the collection's model (or pipeline), as prepared vectors,
    /// within the calling RPC's deadline; for a pipeline also its intermediate
    /// embeddings, as the models returned them.
    pub async fn embed_inputs(
        &self,
        collection: &Collection,
        inputs: Vec<Input>,
        deadline: Option<Deadline>,
    ) -> Result<(Vec<Vec<f32>>, PipelineParts), Status> {
        let model = &collection.config.model;
        let mut parts = PipelineParts::default();
        if inputs.is_empty() {
            return Ok((Vec::new(), parts));
        }
        if model.is_empty() {
            return Err(Status::invalid_argument(format!(
                "collection {} has no model bound; send vectors or create it with a model",
                collection.config.name
            )));
        }
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut inputs = inputs.into_iter().peekable();
        while inputs.peek().is_some() {
            let chunk: Vec<Input> = inputs.by_ref().take(self.max_inputs_per_request).collect();
            let embedded = self
                .embedder
                .embed(model, chunk, Truncation::End, deadline)
                .await?;
            for values in embedded.stage.rows() {
                vectors.push(
                    collection
                        .prepare_vector("embedded input", values)
                        .map_err(|e| Status::failed_precondition(format!("model {model}: {e}")))?,
                );
            }
            if let Some(p) = embedded.parts {
                parts.text.extend(p.text);
                parts.poster.extend(p.poster);
                parts.thumbnail.extend(p.thumbnail);
            }
        }
        Ok((vectors, parts))
    }

    /// Embeds texts with the collection's model, as prepared vectors, within the
    /// calling RPC's deadline.
    pub async fn embed_texts(
        &self,
        collection: &Collection,
        texts: Vec<String>,
        deadline: Option<Deadline>,
    ) -> Result<Vec<Vec<f32>>, Status> {
        let inputs = texts.into_iter().map(Input::Text).collect();
        Ok(self.embed_inputs(collection, inputs, deadline).await?.0)
    }

    /// Embeds texts with the model `model` in requests of at most
    /// `max_inputs_per_request`, as the model returns them, within `deadline`.
    async fn embed_with(
        &self,
        model: &str,
        texts: Vec<String>,
        deadline: Option<Deadline>,
    ) -> Result<Vec<Vec<f32>>, Status> {
        let mut vectors = Vec::with_capacity(texts.len());
        let mut texts = texts.into_iter().peekable();
        while texts.peek().is_some() {
            let chunk: Vec<Input> = texts
                .by_ref()
                .take(self.max_inputs_per_request)
                .map(Input::Text)
                .collect();
            let embedded = self
                .embedder
                .embed(model, chunk, Truncation::End, deadline)
                .await?;
            vectors.extend(embedded.stage.rows().map(<[f32]>::to_vec));
        }
        Ok(vectors)
    }

    /// The collections a pipeline-bound collection's intermediate embeddings go to:
    /// text, poster, thumbnail (`None` where not stored).
    fn intermediate_collections(
        &self,
        collection: &Collection,
    ) -> Result<[Option<Arc<Collection>>; 3], Status> {
        let Some(pipeline) = self.embedder.registry().pipeline(&collection.config.model) else {
            return Ok([None, None, None]);
        };
        let store = &pipeline.config.store;
        let open = |name: &str| -> Result<Option<Arc<Collection>>, Status> {
            if name.is_empty() {
                return Ok(None);
            }
            self.store.get(name).map(Some).map_err(|_| {
                Status::failed_precondition(format!(
                    "pipeline {} stores intermediate embeddings in collection {name}, which does not exist",
                    pipeline.name
                ))
            })
        };
        Ok([
            open(&store.text)?,
            open(&store.poster)?,
            open(&store.thumbnail)?,
        ])
    }

    /// Turns a request's items into stored items (embedding texts, images and
    /// multimodal items in one call per chunk), and, for a pipeline with a `store`,
    /// the items of its intermediate collections.
    async fn stored_items(
        &self,
        collection: &Collection,
        items: Vec<marquee_proto::v1::Item>,
        deadline: Option<Deadline>,
    ) -> Result<(Vec<StoredItem>, Vec<(Arc<Collection>, Vec<StoredItem>)>), Status> {
        let mut inputs = Vec::new();
        let mut embedded_ids = Vec::new();
        // Per item: id, vector (once prepared), payload, text (kept for items upserted
        // as text, so the collection can be re-embedded).
        let mut contents = Vec::with_capacity(items.len());
        for item in items {
            let input = match item.content {
                Some(item::Content::Vector(v)) => {
                    let v = collection.prepare_vector(&format!("item {:?}", item.id), &v.values)?;
                    contents.push((item.id, Some(v), item.payload, String::new()));
                    continue;
                }
                Some(item::Content::Text(t)) => {
                    inputs.push(Input::Text(t.clone()));
                    embedded_ids.push(contents.len());
                    contents.push((item.id, None, item.payload, t));
                    continue;
                }
                Some(item::Content::Image(b)) => Input::Image(b),
                Some(item::Content::Multimodal(m)) => multimodal(m),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "item {:?} has no vector, text, image or multimodal content",
                        item.id
                    )))
                }
            };
            inputs.push(input);
            embedded_ids.push(contents.len());
            contents.push((item.id, None, item.payload, String::new()));
        }
        let intermediates = self.intermediate_collections(collection)?;
        let (vectors, parts) = self.embed_inputs(collection, inputs, deadline).await?;
        let mut side: Vec<(Arc<Collection>, Vec<StoredItem>)> = Vec::new();
        let columns = [
            parts.text.into_iter().map(Some).collect::<Vec<_>>(),
            parts.poster,
            parts.thumbnail,
        ];
        for (target, column) in intermediates.into_iter().zip(columns) {
            let Some(target) = target else { continue };
            let mut stored = Vec::new();
            for (&at, vector) in embedded_ids.iter().zip(column) {
                let Some(vector) = vector else { continue };
                let (id, _, payload, _) = &contents[at];
                stored.push(StoredItem {
                    id: id.clone(),
                    vector: target.prepare_vector(&format!("item {id:?}"), &vector)?,
                    payload: payload.clone(),
                    text: String::new(),
                });
            }
            side.push((target, stored));
        }
        for (&at, vector) in embedded_ids.iter().zip(vectors) {
            contents[at].1 = Some(vector);
        }
        let main = contents
            .into_iter()
            .filter_map(|(id, vector, payload, text)| {
                vector.map(|vector| StoredItem {
                    id,
                    vector,
                    payload,
                    text,
                })
            })
            .collect();
        Ok((main, side))
    }

    /// Resolves a search query to a prepared vector and the ids to leave out.
    async fn query_vector(
        &self,
        collection: &Collection,
        query: Option<search_request::Query>,
        deadline: Option<Deadline>,
    ) -> Result<(Vec<f32>, Vec<String>), Status> {
        let input =
            match query {
                Some(search_request::Query::Vector(v)) => {
                    return Ok((
                        collection.prepare_vector("query vector", &v.values)?,
                        vec![],
                    ))
                }
                Some(search_request::Query::ItemId(id)) => {
                    let v = collection.vector_of(&id).ok_or_else(|| {
                        Status::not_found(format!(
                            "item {id:?} is not in collection {}",
                            collection.config.name
                        ))
                    })?;
                    return Ok((v, vec![id]));
                }
                Some(search_request::Query::Text(t)) if !t.is_empty() => Input::Text(t),
                Some(search_request::Query::Image(b)) if !b.is_empty() => Input::Image(b),
                Some(search_request::Query::Multimodal(m)) => multimodal(m),
                _ => return Err(Status::invalid_argument(
                    "the query needs a vector, a text, an image, a multimodal input or an item_id",
                )),
            };
        let (mut vectors, _) = self.embed_inputs(collection, vec![input], deadline).await?;
        Ok((vectors.remove(0), vec![]))
    }

    /// The collection a streamed message writes: named in the first message; later
    /// messages may repeat that name or leave it empty, never name another.
    fn stream_target(
        &self,
        current: &Option<Arc<Collection>>,
        name: &str,
        rpc: &str,
    ) -> Result<Arc<Collection>, Status> {
        match current {
            Some(c) if name.is_empty() || name == c.config.name => Ok(Arc::clone(c)),
            Some(c) => Err(Status::invalid_argument(format!(
                "one {rpc} stream writes one collection ({}), not {name}",
                c.config.name
            ))),
            None => Ok(self.store.get(name)?),
        }
    }

    /// Runs one search off the runtime.
    pub async fn run_search(
        collection: Arc<Collection>,
        query: OwnedQuery,
    ) -> Result<Vec<ScoredRow>, Status> {
        blocking(move || {
            let filter = collection.compile_filter(query.filter.as_ref())?;
            let q = Query {
                vector: &query.vector,
                k: query.k,
                filter: filter.as_ref(),
                exclude: &query.exclude,
                only: None,
                with_payload: query.with_payload,
            };
            Ok(collection.search_batch(std::slice::from_ref(&q))?.remove(0))
        })
        .await
    }
}

/// A search with owned parts, to move into a blocking task.
pub struct OwnedQuery {
    /// Prepared query vector.
    pub vector: Vec<f32>,
    /// Results wanted.
    pub k: usize,
    /// Payload filter.
    pub filter: Option<marquee_proto::v1::Filter>,
    /// Ids to leave out.
    pub exclude: Vec<String>,
    /// Whether hits carry payloads.
    pub with_payload: bool,
}

fn hits(rows: Vec<ScoredRow>) -> SearchResponse {
    SearchResponse {
        hits: rows
            .into_iter()
            .map(|r| ScoredItem {
                id: r.id,
                score: r.score,
                payload: r.payload.unwrap_or_default(),
            })
            .collect(),
    }
}

/// A re-embedding's progress message; the last one carries the collection.
fn reembed_message(at: Progress, collection: Option<CollectionInfo>) -> ReembedCollectionResponse {
    ReembedCollectionResponse {
        done: at.done,
        total: at.total,
        collection,
    }
}

#[tonic::async_trait]
impl RetrievalService for RetrievalApi {
    type ReembedCollectionStream =
        Bounded<ReceiverStream<Result<ReembedCollectionResponse, Status>>>;

    async fn reembed_collection(
        &self,
        request: Request<ReembedCollectionRequest>,
    ) -> Result<Response<Self::ReembedCollectionStream>, Status> {
        let deadline = Deadline::of(&request);
        observed("ReembedCollection", deadline, async {
            let ReembedCollectionRequest { name, model } = request.into_inner();
            self.store.get(&name)?;
            if model.is_empty() {
                return Err(Status::invalid_argument(
                    "name the text encoder to re-embed the collection with",
                ));
            }
            let registry = self.embedder.registry();
            if registry.pipeline(&model).is_some() {
                return Err(Status::invalid_argument(format!(
                    "{model} is a pipeline; collections are re-embedded with a text encoder"
                )));
            }
            let dimension = registry
                .model_of_kind(&model, PluginKind::TextEncoder)?
                .dimension();
            let (events, receiver) = mpsc::channel(16);
            let api = self.clone();
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let last = std::cell::Cell::new(Progress::default());
                let embed = |texts| runtime.block_on(api.embed_with(&model, texts, deadline));
                // Progress never blocks the job (it may hold writes off): a message the
                // client is not ready for is skipped.
                let progress = |at: Progress| {
                    last.set(at);
                    match events.try_send(Ok(reembed_message(at, None))) {
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            Err(Status::cancelled("the client went away"))
                        }
                        _ => Ok(()),
                    }
                };
                let result = api.store.reembed(&name, &model, dimension, embed, progress);
                let end = result.map(|c| reembed_message(last.get(), Some(c.info())));
                let _ = events.blocking_send(end);
            });
            Ok(Bounded::new(ReceiverStream::new(receiver), deadline))
        })
        .await
    }

    async fn create_collection(
        &self,
        request: Request<CreateCollectionRequest>,
    ) -> Result<Response<CollectionInfo>, Status> {
        observed("CreateCollection", Deadline::of(&request), async {
            let r = request.into_inner();
            if !r.model.is_empty() {
                let dim = self.embedder.registry().dimension_of(&r.model)? as u32;
                if dim != r.dimension {
                    return Err(Status::invalid_argument(format!(
                        "model {} returns {dim}-dimensional vectors, the collection asks for {}",
                        r.model, r.dimension
                    )));
                }
            }
            let store = Arc::clone(&self.store);
            blocking(move || Ok(store.create(&r)?.info())).await
        })
        .await
    }

    async fn delete_collection(
        &self,
        request: Request<DeleteCollectionRequest>,
    ) -> Result<Response<DeleteCollectionResponse>, Status> {
        observed("DeleteCollection", Deadline::of(&request), async {
            let store = Arc::clone(&self.store);
            let name = request.into_inner().name;
            blocking(move || Ok(store.delete(&name)?)).await?;
            Ok(DeleteCollectionResponse {})
        })
        .await
    }

    async fn list_collections(
        &self,
        request: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        observed("ListCollections", Deadline::of(&request), async {
            Ok(ListCollectionsResponse {
                collections: self.store.list().iter().map(|c| c.info()).collect(),
                unopened: self
                    .store
                    .unopened()
                    .into_iter()
                    .map(|(name, reason)| UnopenedCollection { name, reason })
                    .collect(),
            })
        })
        .await
    }

    async fn repair_collection(
        &self,
        request: Request<RepairCollectionRequest>,
    ) -> Result<Response<RepairCollectionResponse>, Status> {
        observed("RepairCollection", Deadline::of(&request), async {
            let store = Arc::clone(&self.store);
            let RepairCollectionRequest { name, apply } = request.into_inner();
            let report = blocking(move || Ok(store.repair(&name, apply)?)).await?;
            Ok(repair_response(report))
        })
        .await
    }

    async fn get_collection(
        &self,
        request: Request<GetCollectionRequest>,
    ) -> Result<Response<CollectionInfo>, Status> {
        observed("GetCollection", Deadline::of(&request), async {
            Ok(self.store.get(&request.into_inner().name)?.info())
        })
        .await
    }

    async fn upsert(
        &self,
        request: Request<Streaming<UpsertRequest>>,
    ) -> Result<Response<UpsertResponse>, Status> {
        let deadline = Deadline::of(&request);
        observed("Upsert", deadline, async {
            let mut stream = request.into_inner();
            let mut collection: Option<Arc<Collection>> = None;
            let mut upserted = 0u64;
            while let Some(message) = stream.next().await {
                let message = message?;
                let target = self.stream_target(&collection, &message.collection, "Upsert")?;
                collection = Some(Arc::clone(&target));
                let stored = upserted;
                let with_progress = |s: Status| {
                    Status::new(
                        s.code(),
                        format!(
                            "{} ({stored} items of earlier messages were stored)",
                            s.message()
                        ),
                    )
                };
                let (items, intermediate) = self
                    .stored_items(&target, message.items, deadline)
                    .await
                    .map_err(with_progress)?;
                // A pipeline's intermediate collections first: should one fail, the
                // message's own collection is left untouched.
                for (side, side_items) in intermediate {
                    blocking(move || Ok(side.upsert(side_items)?))
                        .await
                        .map_err(with_progress)?;
                }
                let target_for_write = Arc::clone(&target);
                upserted += blocking(move || Ok(target_for_write.upsert(items)?))
                    .await
                    .map_err(with_progress)? as u64;
            }
            if collection.is_none() {
                return Err(Status::invalid_argument(
                    "the Upsert stream carried no message",
                ));
            }
            Ok(UpsertResponse { upserted })
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        observed("Delete", Deadline::of(&request), async {
            let r = request.into_inner();
            let collection = self.store.get(&r.collection)?;
            let deleted = blocking(move || Ok(collection.delete(r.ids)?)).await? as u64;
            Ok(DeleteResponse { deleted })
        })
        .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        observed("Get", Deadline::of(&request), async {
            let r = request.into_inner();
            let (items, missing) =
                self.store
                    .get(&r.collection)?
                    .get(&r.ids, r.with_vectors, r.with_texts);
            Ok(GetResponse { items, missing })
        })
        .await
    }

    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let deadline = Deadline::of(&request);
        observed("Search", deadline, async {
            let r = request.into_inner();
            let collection = self.store.get(&r.collection)?;
            let k = self.check_k(r.k)?;
            let (vector, exclude) = self.query_vector(&collection, r.query, deadline).await?;
            let query = OwnedQuery {
                vector,
                k,
                filter: r.filter,
                exclude,
                with_payload: r.with_payload,
            };
            Ok(hits(Self::run_search(collection, query).await?))
        })
        .await
    }

    async fn recommend(
        &self,
        request: Request<RecommendRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        observed("Recommend", Deadline::of(&request), async {
            let r = request.into_inner();
            let collection = self.store.get(&r.collection)?;
            let k = self.check_k(r.k)?;
            let ratings: Vec<Rating> = match r.user {
                Some(recommend_request::User::UserId(user)) => {
                    collection.user_ratings(&user).ok_or_else(|| {
                        Status::not_found(format!(
                            "user {user:?} has no ratings in collection {}",
                            collection.config.name
                        ))
                    })?
                }
                Some(recommend_request::User::Ratings(inline)) => inline.ratings,
                None => return Err(Status::invalid_argument("give a user_id or inline ratings")),
            };
            let min_rating = r.min_rating.unwrap_or(DEFAULT_MIN_RATING);
            let liked: Vec<&str> = ratings
                .iter()
                .filter(|x| x.rating >= min_rating)
                .map(|x| x.item_id.as_str())
                .collect();
            let vector = collection.mean_vector(&liked).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "the user has no rating >= {min_rating} on an item of collection {}",
                    collection.config.name
                ))
            })?;
            let exclude = if r.exclude_seen.unwrap_or(true) {
                ratings.iter().map(|x| x.item_id.clone()).collect()
            } else {
                Vec::new()
            };
            let query = OwnedQuery {
                vector,
                k,
                filter: r.filter,
                exclude,
                with_payload: r.with_payload,
            };
            Ok(hits(Self::run_search(collection, query).await?))
        })
        .await
    }

    async fn record_ratings(
        &self,
        request: Request<Streaming<RecordRatingsRequest>>,
    ) -> Result<Response<RecordRatingsResponse>, Status> {
        observed("RecordRatings", Deadline::of(&request), async {
            let mut stream = request.into_inner();
            let mut collection: Option<Arc<Collection>> = None;
            let mut recorded = 0u64;
            while let Some(message) = stream.next().await {
                let message = message?;
                let target =
                    self.stream_target(&collection, &message.collection, "RecordRatings")?;
                collection = Some(Arc::clone(&target));
                recorded +=
                    blocking(move || Ok(target.record_ratings(message.user_id, message.ratings)?))
                        .await? as u64;
            }
            Ok(RecordRatingsResponse { recorded })
        })
        .await
    }
}

/// A repair report as the RPC answers it.
fn repair_response(report: RepairReport) -> RepairCollectionResponse {
    let RepairReport {
        file,
        offset,
        problem,
        lost,
        actions,
        applied,
    } = report;
    RepairCollectionResponse {
        damaged: file.is_some(),
        file: file.map_or_else(String::new, |f| f.display().to_string()),
        offset,
        problem,
        records_dropped: lost.records,
        items_upserted_dropped: lost.items_upserted,
        ids_deleted_dropped: lost.ids_deleted,
        ratings_dropped: lost.ratings,
        bytes_dropped: lost.bytes,
        actions,
        applied,
    }
}
