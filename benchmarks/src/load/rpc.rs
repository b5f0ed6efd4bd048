//! The requests a load run sends: inputs taken in file order (wrapping around), one
//! request built and timed at a time.

use super::mix::RpcKind;
use super::stats::{Outcome, Success};
use marquee_client::proto::{
    recommend_request, search_request, RecommendRequest, SearchRequest, Truncation, Vector,
};
use marquee_client::Client;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// A Search query.
#[derive(Clone, Debug)]
pub enum Query {
    /// A text, embedded by the server with the collection's model.
    Text(String),
    /// A ready vector.
    Vector(Vec<f32>),
}

/// Everything needed to build requests of every kind in a mix.
pub struct Workload {
    /// Embed model ("" for the server's default).
    pub model: String,
    /// Texts for Embed.
    pub texts: Vec<String>,
    /// Inputs per Embed request.
    pub embed_batch: usize,
    /// Collection for Search and Recommend.
    pub collection: String,
    /// Search queries.
    pub queries: Vec<Query>,
    /// Stored user ids for Recommend.
    pub users: Vec<String>,
    /// Results per Search or Recommend.
    pub k: u32,
    cursors: [AtomicUsize; 3],
}

/// `count` items starting at `start`, wrapping around `items`.
fn take_wrapping<T: Clone>(items: &[T], start: usize, count: usize) -> Vec<T> {
    (0..count)
        .map(|i| items[(start + i) % items.len()].clone())
        .collect()
}

impl Workload {
    /// A workload over these inputs; the kinds a mix sends must have inputs.
    pub fn new(
        model: String,
        texts: Vec<String>,
        embed_batch: usize,
        collection: String,
        queries: Vec<Query>,
        users: Vec<String>,
        k: u32,
    ) -> Workload {
        Workload {
            model,
            texts,
            embed_batch: embed_batch.max(1),
            collection,
            queries,
            users,
            k,
            cursors: Default::default(),
        }
    }

    /// Starts every kind's inputs from the top again (at the start of each step).
    pub fn rewind(&self) {
        for c in &self.cursors {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn next(&self, kind: RpcKind, count: usize) -> usize {
        self.cursors[kind as usize].fetch_add(count, Ordering::Relaxed)
    }

    /// Sends one request of `kind` and times it from send to response.
    pub async fn send(&self, kind: RpcKind, client: &mut Client) -> Outcome {
        match kind {
            RpcKind::Embed => {
                let start = self.next(kind, self.embed_batch);
                let texts = take_wrapping(&self.texts, start, self.embed_batch);
                let request = Client::text_request(&self.model, &texts, Truncation::Unspecified);
                let sent = Instant::now();
                let result = client.embed(request).await;
                let latency = sent.elapsed();
                Outcome {
                    kind,
                    latency,
                    result: result
                        .map(|r| Success {
                            inputs: r.embeddings.len() as u64,
                            tokens: r.usage.map_or(0, |u| u.input_tokens),
                            timings: r.timings,
                        })
                        .map_err(|s| s.code()),
                }
            }
            RpcKind::Search => {
                let i = self.next(kind, 1) % self.queries.len();
                let query = match &self.queries[i] {
                    Query::Text(t) => search_request::Query::Text(t.clone()),
                    Query::Vector(v) => search_request::Query::Vector(Vector { values: v.clone() }),
                };
                let request = SearchRequest {
                    collection: self.collection.clone(),
                    query: Some(query),
                    k: self.k,
                    ..Default::default()
                };
                let sent = Instant::now();
                let result = client.retrieval.search(request).await;
                Outcome {
                    kind,
                    latency: sent.elapsed(),
                    result: result.map(|_| Success::default()).map_err(|s| s.code()),
                }
            }
            RpcKind::Recommend => {
                let i = self.next(kind, 1) % self.users.len();
                let request = RecommendRequest {
                    collection: self.collection.clone(),
                    user: Some(recommend_request::User::UserId(self.users[i].clone())),
                    k: self.k,
                    ..Default::default()
                };
                let sent = Instant::now();
                let result = client.retrieval.recommend(request).await;
                Outcome {
                    kind,
                    latency: sent.elapsed(),
                    result: result.map(|_| Success::default()).map_err(|s| s.code()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_wrap_around_the_file() {
        let items = ["a", "b", "c"];
        assert_eq!(take_wrapping(&items, 0, 2), ["a", "b"]);
        assert_eq!(take_wrapping(&items, 2, 4), ["c", "a", "b", "c"]);
    }

    #[test]
    fn cursors_advance_per_kind_and_rewind() {
        let w = Workload::new(
            String::new(),
            vec!["t".into()],
            4,
            "c".into(),
            Vec::new(),
            vec!["u".into()],
            10,
        );
        assert_eq!(w.next(RpcKind::Embed, 4), 0);
        assert_eq!(w.next(RpcKind::Embed, 4), 4);
        assert_eq!(w.next(RpcKind::Recommend, 1), 0);
        w.rewind();
        assert_eq!(w.next(RpcKind::Embed, 4), 0);
    }
}
