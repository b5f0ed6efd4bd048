//! `marquee.v1.EvaluationService`: retrieval and leave-one-out recommendation quality,
//! computed next to the data, with progress streamed before the report. A query set
//! holds at most `limits.max_eval_queries` queries; an evaluation stops between batches
//! once its client has gone, and its stream ends at the call's deadline.

use crate::engine::deadline::Deadline;
use crate::engine::generation::Generation;
use crate::evaluation::{mean, query_metrics, Judged};
use crate::retrieval::collection::{Collection, IndexKind, Query};
use crate::services::deadline::{Bounded, DeadlineOf};
use crate::services::generation_eval::evaluate_generation;
use crate::services::observed;
use crate::services::retrieval::{blocking, RetrievalApi, DEFAULT_MIN_RATING};
use marquee_proto::v1::evaluation_event::Event;
use marquee_proto::v1::evaluation_service_server::EvaluationService;
use marquee_proto::v1::{
    eval_query, EvalQuery, EvaluateGenerationRequest, EvaluateRecommendationsRequest,
    EvaluateRetrievalRequest, EvaluationEvent, EvaluationProgress, EvaluationReport, MetricSet,
    QueryResult,
};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Queries or users scored per batch (and per progress message).
const BATCH: usize = 64;

/// The evaluation service.
#[derive(Clone)]
pub struct EvaluationApi {
    retrieval: RetrievalApi,
    generation: Generation,
    max_queries: usize,
    max_bytes: usize,
}

/// The sending side of an evaluation's response stream.
pub(crate) type Events = mpsc::Sender<Result<EvaluationEvent, Status>>;

/// The response stream of both RPCs.
type EventStream = Bounded<ReceiverStream<Result<EvaluationEvent, Status>>>;

/// Fails once the client has gone, so that no more batches are scored for nobody.
fn client_present(events: &Events) -> Result<(), Status> {
    if events.is_closed() {
        return Err(Status::cancelled("the client went away"));
    }
    Ok(())
}

/// Sends a progress message (nothing when the client has gone).
pub(crate) async fn progress(events: &Events, done: usize, total: usize) {
    let _ = events
        .send(Ok(EvaluationEvent {
            event: Some(Event::Progress(EvaluationProgress {
                done: done as u64,
                total: total as u64,
            })),
        }))
        .await;
}

fn metric_set(values: BTreeMap<String, f64>) -> MetricSet {
    MetricSet {
        values: values.into_iter().collect(),
    }
}

fn cutoffs(given: &[u32], default: &[usize], max_k: usize) -> Result<Vec<usize>, Status> {
    let mut c: Vec<usize> = if given.is_empty() {
        default.to_vec()
    } else {
        given.iter().map(|&k| k as usize).collect()
    };
    c.sort_unstable();
    c.dedup();
    if c.first() == Some(&0) || c.last().is_some_and(|&k| k > max_k) {
        return Err(Status::invalid_argument(format!(
            "cut-offs must be in 1..={max_k}"
        )));
    }
    Ok(c)
}

impl EvaluationApi {
    /// A service scoring the retrieval service's collections and generated texts
    /// (generating candidates with `generation`), taking sets of at most `max_queries`
    /// queries or items and `max_bytes` encoded bytes.
    pub fn new(
        retrieval: RetrievalApi,
        generation: Generation,
        max_queries: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            retrieval,
            generation,
            max_queries,
            max_bytes,
        }
    }

    /// Reads the rest of a request stream, appending each message's entries (taken by
    /// `take`) to `entries`, within `limits.max_eval_queries` entries and
    /// `limits.max_eval_bytes` bytes (`bytes` already read).
    async fn read_rest<R: Message + Default, T>(
        &self,
        stream: &mut Streaming<R>,
        mut entries: Vec<T>,
        mut bytes: usize,
        take: impl Fn(R) -> Vec<T>,
        what: &str,
    ) -> Result<Vec<T>, Status> {
        loop {
            if entries.len() > self.max_queries {
                return Err(Status::invalid_argument(format!(
                    "the set has more than {} {what} (limits.max_eval_queries)",
                    self.max_queries
                )));
            }
            if bytes > self.max_bytes {
                return Err(Status::resource_exhausted(format!(
                    "the set is larger than {} bytes (limits.max_eval_bytes)",
                    self.max_bytes
                )));
            }
            match stream.next().await {
                Some(more) => {
                    let more = more?;
                    bytes += more.encoded_len();
                    entries.extend(take(more));
                }
                None => return Ok(entries),
            }
        }
    }

    /// Validates queries, embeds them, ranks, and sends progress then the report.
    async fn evaluate_retrieval(
        &self,
        collection: Arc<Collection>,
        cutoffs: Vec<usize>,
        per_query: bool,
        queries: Vec<EvalQuery>,
        deadline: Option<Deadline>,
        events: &Events,
    ) -> Result<EvaluationReport, Status> {
        if queries.is_empty() {
            return Err(Status::invalid_argument("the query set is empty"));
        }
        for q in &queries {
            if q.relevant.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "query {:?} has no relevant ids",
                    q.query_id
                )));
            }
            if let Some(missing) = q.relevant.iter().find(|id| !collection.contains(id)) {
                return Err(Status::invalid_argument(format!(
                    "query {:?}: relevant id {missing:?} is not in collection {}",
                    q.query_id, collection.config.name
                )));
            }
        }
        let items = collection.info().items as usize;
        // Exact collections rank everything, so MRR sees the full ranking; an HNSW
        // index ranks its top max(K).
        let depth = match collection.config.index {
            IndexKind::Exact => items.max(1),
            IndexKind::Hnsw(_) => *cutoffs.last().expect("non-empty"),
        };
        let total = queries.len();
        let mut all = Vec::with_capacity(total);
        let mut results = Vec::new();
        for (b, batch) in queries.chunks(BATCH).enumerate() {
            client_present(events)?;
            let mut vectors = Vec::with_capacity(batch.len());
            let mut texts = Vec::new();
            for q in batch {
                match &q.query {
                    Some(eval_query::Query::Vector(v)) => vectors.push(Some(
                        collection.prepare_vector(&format!("query {:?}", q.query_id), &v.values)?,
                    )),
                    Some(eval_query::Query::Text(t)) if !t.is_empty() => {
                        texts.push(t.clone());
                        vectors.push(None);
                    }
                    _ => {
                        return Err(Status::invalid_argument(format!(
                            "query {:?} has no text or vector",
                            q.query_id
                        )))
                    }
                }
            }
            let mut embedded = self
                .retrieval
                .embed_texts(&collection, texts, deadline)
                .await?
                .into_iter();
            let vectors: Vec<Vec<f32>> = vectors
                .into_iter()
                .map(|v| v.unwrap_or_else(|| embedded.next().expect("one vector per text")))
                .collect();
            let target = Arc::clone(&collection);
            let rankings = blocking(move || {
                let queries: Vec<Query> = vectors
                    .iter()
                    .map(|v| Query {
                        vector: v,
                        k: depth,
                        filter: None,
                        exclude: &[],
                        only: None,
                        with_payload: false,
                    })
                    .collect();
                Ok(target.search_batch(&queries)?)
            })
            .await?;
            for (q, ranking) in batch.iter().zip(rankings) {
                let relevant: Vec<&str> = q.relevant.iter().map(String::as_str).collect();
                let judged = Judged::of(ranking.iter().map(|r| r.id.as_str()), &relevant);
                if per_query {
                    results.push(QueryResult {
                        query_id: q.query_id.clone(),
                        first_relevant_rank: judged.first_rank().unwrap_or(0) as u32,
                    });
                }
                all.push(query_metrics(&judged, &cutoffs));
            }
            progress(events, (b * BATCH + batch.len()).min(total), total).await;
        }
        Ok(EvaluationReport {
            queries: total as u64,
            metrics: Some(metric_set(mean(&all))),
            per_query: results,
            ..Default::default()
        })
    }

    /// Leave-one-out over stored ratings, for the collection and for popularity.
    async fn evaluate_recommendations(
        &self,
        request: EvaluateRecommendationsRequest,
        events: &Events,
    ) -> Result<EvaluationReport, Status> {
        let collection = self.retrieval.store().get(&request.collection)?;
        let cutoffs = cutoffs(&request.cutoffs, &[5, 10, 20], self.retrieval.max_k())?;
        let depth = *cutoffs.last().expect("non-empty");
        let min_rating = request.min_rating.unwrap_or(DEFAULT_MIN_RATING);
        let min_high = request.min_high_ratings.unwrap_or(5) as usize;
        let ratings = collection.all_ratings();
        if ratings.is_empty() {
            return Err(Status::failed_precondition(format!(
                "collection {} has no recorded ratings",
                collection.config.name
            )));
        }
        // Per user: items rated (in the collection), high-rated items, the held-out one.
        struct Case {
            seen: Vec<String>,
            train: Vec<String>,
            held_out: String,
        }
        let mut users: Vec<&String> = ratings.keys().collect();
        users.sort();
        let mut cases = Vec::new();
        let mut skipped = 0u64;
        for user in users {
            let mut latest: HashMap<&str, (f32, i64)> = HashMap::new();
            for r in &ratings[user] {
                if collection.contains(&r.item_id) {
                    latest.insert(&r.item_id, (r.rating, r.timestamp));
                }
            }
            let mut high: Vec<(&str, i64)> = latest
                .iter()
                .filter(|(_, (rating, _))| *rating >= min_rating)
                .map(|(&id, &(_, ts))| (id, ts))
                .collect();
            if high.len() < min_high {
                skipped += 1;
                continue;
            }
            high.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
            let held_out = high.pop().expect("at least one").0.to_string();
            cases.push(Case {
                seen: latest
                    .keys()
                    .filter(|&&id| id != held_out)
                    .map(|id| id.to_string())
                    .collect(),
                train: high.iter().map(|(id, _)| id.to_string()).collect(),
                held_out,
            });
        }
        if cases.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no user has {min_high} or more ratings >= {min_rating} on items of the collection"
            )));
        }
        // The catalog ranked: items of the collection that appear in the stored ratings
        // (as a MovieLens evaluation ranks the data set's movies, not every stored item).
        let catalog: Arc<HashSet<String>> = Arc::new(
            ratings
                .values()
                .flatten()
                .filter(|r| collection.contains(&r.item_id))
                .map(|r| r.item_id.clone())
                .collect(),
        );
        // Popularity: high ratings in the training data, ranked by count then id.
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for case in &cases {
            for id in &case.train {
                *counts.entry(id.as_str()).or_default() += 1;
            }
        }
        let mut popular: Vec<(&str, usize)> = counts.into_iter().collect();
        popular.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));

        let total = cases.len();
        let (mut model_metrics, mut baseline_metrics) = (Vec::new(), Vec::new());
        for (b, batch) in cases.chunks(BATCH).enumerate() {
            client_present(events)?;
            let profiles: Vec<Vec<f32>> = batch
                .iter()
                .map(|c| {
                    let ids: Vec<&str> = c.train.iter().map(String::as_str).collect();
                    collection
                        .mean_vector(&ids)
                        .expect("training items are in the collection")
                })
                .collect();
            let excludes: Vec<Vec<String>> = batch.iter().map(|c| c.seen.clone()).collect();
            let target = Arc::clone(&collection);
            let candidates = Arc::clone(&catalog);
            let rankings = blocking(move || {
                let queries: Vec<Query> = profiles
                    .iter()
                    .zip(&excludes)
                    .map(|(v, ex)| Query {
                        vector: v,
                        k: depth,
                        filter: None,
                        exclude: ex,
                        only: Some(&candidates),
                        with_payload: false,
                    })
                    .collect();
                Ok(target.search_batch(&queries)?)
            })
            .await?;
            for (case, ranking) in batch.iter().zip(rankings) {
                let relevant = [case.held_out.as_str()];
                let judged = Judged::of(ranking.iter().map(|r| r.id.as_str()), &relevant);
                model_metrics.push(query_metrics(&judged, &cutoffs));
                let seen: HashSet<&str> = case.seen.iter().map(String::as_str).collect();
                let baseline = popular
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| !seen.contains(id))
                    .take(depth);
                baseline_metrics.push(query_metrics(&Judged::of(baseline, &relevant), &cutoffs));
            }
            progress(events, (b * BATCH + batch.len()).min(total), total).await;
        }
        Ok(EvaluationReport {
            queries: total as u64,
            metrics: Some(metric_set(mean(&model_metrics))),
            baseline: Some(metric_set(mean(&baseline_metrics))),
            skipped,
            ..Default::default()
        })
    }
}

/// Sends the report (or the error) as the stream's last item.
async fn finish(events: Events, result: Result<EvaluationReport, Status>) {
    let item = result.map(|report| EvaluationEvent {
        event: Some(Event::Report(report)),
    });
    let _ = events.send(item).await;
}

#[tonic::async_trait]
impl EvaluationService for EvaluationApi {
    type EvaluateRetrievalStream = EventStream;
    type EvaluateRecommendationsStream = EventStream;
    type EvaluateGenerationStream = EventStream;

    async fn evaluate_generation(
        &self,
        request: Request<Streaming<EvaluateGenerationRequest>>,
    ) -> Result<Response<Self::EvaluateGenerationStream>, Status> {
        let deadline = Deadline::of(&request);
        observed("EvaluateGeneration", deadline, async {
            let mut stream = request.into_inner();
            let mut first = stream
                .next()
                .await
                .ok_or_else(|| Status::invalid_argument("the request stream is empty"))??;
            let bytes = first.encoded_len();
            let items = self
                .read_rest(
                    &mut stream,
                    std::mem::take(&mut first.items),
                    bytes,
                    |m| m.items,
                    "items",
                )
                .await?;
            let options = first.options.unwrap_or_default();
            let (events, receiver) = mpsc::channel(16);
            let generation = self.generation.clone();
            tokio::spawn(async move {
                let result =
                    evaluate_generation(&generation, options, items, deadline, &events).await;
                let item = result.map(|report| EvaluationEvent {
                    event: Some(Event::Generation(report)),
                });
                let _ = events.send(item).await;
            });
            Ok(Bounded::new(ReceiverStream::new(receiver), deadline))
        })
        .await
    }

    async fn evaluate_retrieval(
        &self,
        request: Request<Streaming<EvaluateRetrievalRequest>>,
    ) -> Result<Response<Self::EvaluateRetrievalStream>, Status> {
        let deadline = Deadline::of(&request);
        observed("EvaluateRetrieval", deadline, async {
            let mut stream = request.into_inner();
            let mut first = stream
                .next()
                .await
                .ok_or_else(|| Status::invalid_argument("the request stream is empty"))??;
            let collection = self.retrieval.store().get(&first.collection)?;
            let cutoffs = cutoffs(&first.cutoffs, &[1, 5, 10, 25], self.retrieval.max_k())?;
            let bytes = first.encoded_len();
            let queries = self
                .read_rest(
                    &mut stream,
                    std::mem::take(&mut first.queries),
                    bytes,
                    |m| m.queries,
                    "queries",
                )
                .await?;
            let (events, receiver) = mpsc::channel(16);
            let api = self.clone();
            tokio::spawn(async move {
                let result = api
                    .evaluate_retrieval(
                        collection,
                        cutoffs,
                        first.per_query,
                        queries,
                        deadline,
                        &events,
                    )
                    .await;
                finish(events, result).await;
            });
            Ok(Bounded::new(ReceiverStream::new(receiver), deadline))
        })
        .await
    }

    async fn evaluate_recommendations(
        &self,
        request: Request<EvaluateRecommendationsRequest>,
    ) -> Result<Response<Self::EvaluateRecommendationsStream>, Status> {
        let deadline = Deadline::of(&request);
        observed("EvaluateRecommendations", deadline, async {
            let request = request.into_inner();
            self.retrieval.store().get(&request.collection)?;
            let (events, receiver) = mpsc::channel(16);
            let api = self.clone();
            tokio::spawn(async move {
                let result = api.evaluate_recommendations(request, &events).await;
                finish(events, result).await;
            });
            Ok(Bounded::new(ReceiverStream::new(receiver), deadline))
        })
        .await
    }
}
