//! `marquee.v1.RetrievalService`: collections, items, search, recommendations, ratings.

use crate::deadline::Deadline;
use crate::retrieval::collection::{Collection, Query, ScoredRow};
use crate::retrieval::store::Store;
use crate::services::embedding::EmbeddingApi;
use crate::services::observed;
use marquee_proto::v1::embed_input::Input;
use marquee_proto::v1::retrieval_service_server::RetrievalService;
use marquee_proto::v1::{
    item, recommend_request, search_request, CollectionInfo, CreateCollectionRequest,
    DeleteCollectionRequest, DeleteCollectionResponse, DeleteRequest, DeleteResponse, EmbedInput,
    EmbedRequest, GetCollectionRequest, GetRequest, GetResponse, ListCollectionsRequest,
    ListCollectionsResponse, Rating, RecommendRequest, RecordRatingsRequest, RecordRatingsResponse,
    ScoredItem, SearchRequest, SearchResponse, StoredItem, UpsertRequest, UpsertResponse,
};
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Default `min_rating` of Recommend and EvaluateRecommendations.
pub const DEFAULT_MIN_RATING: f32 = 4.0;

/// The retrieval service.
#[derive(Clone)]
pub struct RetrievalApi {
    store: Arc<Store>,
    embedder: EmbeddingApi,
    max_k: usize,
    max_inputs_per_request: usize,
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
    /// A service over the store, embedding text with the embedding service.
    pub fn new(
        store: Arc<Store>,
        embedder: EmbeddingApi,
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

    /// Embeds texts with the collection's model, as prepared vectors, within the
    /// calling RPC's deadline.
    pub async fn embed_texts(
        &self,
        collection: &Collection,
        texts: Vec<String>,
        deadline: Option<Deadline>,
    ) -> Result<Vec<Vec<f32>>, Status> {
        let model = &collection.config.model;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if model.is_empty() {
            return Err(Status::invalid_argument(format!(
                "collection {} has no model bound; send vectors or create it with a model",
                collection.config.name
            )));
        }
        let mut vectors = Vec::with_capacity(texts.len());
        let mut texts = texts.into_iter().peekable();
        while texts.peek().is_some() {
            let chunk: Vec<EmbedInput> = texts
                .by_ref()
                .take(self.max_inputs_per_request)
                .map(|t| EmbedInput {
                    input: Some(Input::Text(t)),
                })
                .collect();
            let response = self
                .embedder
                .embed_one(
                    EmbedRequest {
                        model: model.clone(),
                        inputs: chunk,
                        ..Default::default()
                    },
                    deadline,
                )
                .await?;
            for e in response.embeddings {
                vectors.push(
                    collection
                        .prepare_vector("embedded text", &e.values)
                        .map_err(|s| {
                            Status::failed_precondition(format!("model {model}: {}", s.message()))
                        })?,
                );
            }
        }
        Ok(vectors)
    }

    /// Turns a request's items into stored items (embedding texts in one call).
    async fn stored_items(
        &self,
        collection: &Collection,
        items: Vec<marquee_proto::v1::Item>,
        deadline: Option<Deadline>,
    ) -> Result<Vec<StoredItem>, Status> {
        let texts: Vec<String> = items
            .iter()
            .filter_map(|i| match &i.content {
                Some(item::Content::Text(t)) => Some(t.clone()),
                _ => None,
            })
            .collect();
        let mut embedded = if texts.is_empty() {
            Vec::new()
        } else {
            self.embed_texts(collection, texts, deadline).await?
        }
        .into_iter();
        items
            .into_iter()
            .map(|i| {
                let vector = match i.content {
                    Some(item::Content::Vector(v)) => {
                        collection.prepare_vector(&format!("item {:?}", i.id), &v.values)?
                    }
                    Some(item::Content::Text(_)) => embedded.next().expect("one vector per text"),
                    None => {
                        return Err(Status::invalid_argument(format!(
                            "item {:?} has neither vector nor text",
                            i.id
                        )))
                    }
                };
                Ok(StoredItem {
                    id: i.id,
                    vector,
                    payload: i.payload,
                })
            })
            .collect()
    }

    /// Resolves a search query to a prepared vector and the ids to leave out.
    async fn query_vector(
        &self,
        collection: &Collection,
        query: Option<search_request::Query>,
        deadline: Option<Deadline>,
    ) -> Result<(Vec<f32>, Vec<String>), Status> {
        match query {
            Some(search_request::Query::Vector(v)) => Ok((
                collection.prepare_vector("query vector", &v.values)?,
                vec![],
            )),
            Some(search_request::Query::Text(t)) if !t.is_empty() => Ok((
                self.embed_texts(collection, vec![t], deadline)
                    .await?
                    .remove(0),
                vec![],
            )),
            Some(search_request::Query::ItemId(id)) => {
                let v = collection.vector_of(&id).ok_or_else(|| {
                    Status::not_found(format!(
                        "item {id:?} is not in collection {}",
                        collection.config.name
                    ))
                })?;
                Ok((v, vec![id]))
            }
            _ => Err(Status::invalid_argument(
                "the query needs a vector, a text or an item_id",
            )),
        }
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
            None => self.store.get(name),
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

#[tonic::async_trait]
impl RetrievalService for RetrievalApi {
    async fn create_collection(
        &self,
        request: Request<CreateCollectionRequest>,
    ) -> Result<Response<CollectionInfo>, Status> {
        observed("CreateCollection", Deadline::of(&request), async {
            let r = request.into_inner();
            if !r.model.is_empty() {
                let model = self.embedder.registry().get(&r.model)?;
                let dim = model.instance.info().output_dim;
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
            blocking(move || store.delete(&name)).await?;
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
            })
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
                let items = self
                    .stored_items(&target, message.items, deadline)
                    .await
                    .map_err(with_progress)?;
                let target_for_write = Arc::clone(&target);
                upserted += blocking(move || target_for_write.upsert(items))
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
            let deleted = blocking(move || collection.delete(r.ids)).await? as u64;
            Ok(DeleteResponse { deleted })
        })
        .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        observed("Get", Deadline::of(&request), async {
            let r = request.into_inner();
            let (items, missing) = self.store.get(&r.collection)?.get(&r.ids, r.with_vectors);
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
                    blocking(move || target.record_ratings(message.user_id, message.ratings))
                        .await? as u64;
            }
            Ok(RecordRatingsResponse { recorded })
        })
        .await
    }
}
