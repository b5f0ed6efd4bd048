//! A collection's in-memory contents (rows, ids, tombstones, payloads, ratings, the HNSW
//! graph) and how one log record changes them: the same [`State::apply`] serves live
//! writes and replay at start-up, so a reopened collection equals the one written.

use super::config::{Config, IndexKind};
use crate::retrieval::graph::Graph;
use crate::retrieval::payload::{Payload, Schema};
use marquee_kernels::search::DeviceCorpus;
use marquee_kernels::{HalfCopy, Matrix};
use marquee_proto::storage::v1::{record::Op, Ratings, Record, Upsert};
use marquee_proto::v1::{Metric, Rating, StoredItem};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// In-memory contents.
pub(super) struct State {
    pub(super) ids: Vec<String>,
    pub(super) live: Vec<bool>,
    pub(super) rows: HashMap<String, u32>,
    /// One row per item ever stored since the last compaction (tombstones included).
    pub(super) vectors: Matrix,
    /// `-|x|²/2` per row for L2 collections (the dot-product form of the distance).
    pub(super) l2_bias: Vec<f32>,
    pub(super) payloads: Vec<Payload>,
    /// The text each row was embedded from (empty for items not upserted as text).
    pub(super) texts: Vec<String>,
    pub(super) schema: Schema,
    pub(super) ratings: HashMap<String, Vec<Rating>>,
    pub(super) rating_count: u64,
    pub(super) dead: usize,
    pub(super) graph: Option<Graph>,
    /// The rows in f16 for exact search on the CPU (`retrieval.f16_shortlist`); dropped
    /// when a value does not fit in f16.
    pub(super) half: Option<HalfCopy>,
    /// Each row's rank by id, for deterministic tie-breaking; rebuilt lazily.
    pub(super) tie_rank: Mutex<Option<Arc<Vec<u32>>>>,
    /// The rows in GPU memory when the collection searches there; re-uploaded lazily
    /// after the rows change.
    pub(super) device_copy: Mutex<Option<Arc<DeviceCorpus>>>,
}

impl State {
    /// An empty state; `shortlist`: keep an f16 copy of the rows for exact search.
    pub(super) fn new(dimension: usize, shortlist: bool) -> Self {
        Self {
            half: shortlist.then(|| HalfCopy::new(dimension)),
            ids: Vec::new(),
            live: Vec::new(),
            rows: HashMap::new(),
            vectors: Matrix::zeros(0, dimension),
            l2_bias: Vec::new(),
            payloads: Vec::new(),
            texts: Vec::new(),
            schema: Schema::default(),
            ratings: HashMap::new(),
            rating_count: 0,
            dead: 0,
            graph: None,
            tie_rank: Mutex::new(None),
            device_copy: Mutex::new(None),
        }
    }

    /// Rows stored since the last compaction, tombstones included.
    pub(super) fn row_count(&self) -> usize {
        self.ids.len()
    }

    /// The vector of `row`.
    pub(super) fn vector(&self, row: usize, dim: usize) -> &[f32] {
        &self.vectors.data[row * dim..(row + 1) * dim]
    }

    /// The stored item of `row`.
    pub(super) fn item(&self, row: usize, dim: usize) -> StoredItem {
        StoredItem {
            id: self.ids[row].clone(),
            vector: self.vector(row, dim).to_vec(),
            payload: self.payloads[row].clone(),
            text: self.texts[row].clone(),
        }
    }

    /// Applies one log record (a live write, or one replayed at start-up).
    pub(super) fn apply(&mut self, config: &Config, record: Record) {
        match record.op {
            Some(Op::Upsert(u)) => {
                let first_new = self.ids.len();
                for item in u.items {
                    if let Some(old) = self.rows.remove(&item.id) {
                        self.live[old as usize] = false;
                        self.dead += 1;
                    }
                    let row = self.ids.len();
                    if config.metric == Metric::L2 {
                        self.l2_bias
                            .push(-0.5 * item.vector.iter().map(|v| v * v).sum::<f32>());
                    }
                    self.vectors.data.extend_from_slice(&item.vector);
                    self.vectors.rows += 1;
                    if self
                        .half
                        .as_mut()
                        .is_some_and(|h| !h.try_extend(&item.vector))
                    {
                        tracing::info!(
                            collection = config.name,
                            "a vector is beyond f16's range: exact search reads f32 rows only"
                        );
                        self.half = None;
                    }
                    self.schema.learn(&item.payload);
                    self.payloads.push(item.payload);
                    self.texts.push(item.text);
                    self.rows.insert(item.id.clone(), row as u32);
                    self.ids.push(item.id);
                    self.live.push(true);
                }
                if let Some(graph) = &self.graph {
                    let dim = config.dimension;
                    let rows: Vec<(usize, &[f32])> = (first_new..self.ids.len())
                        .filter(|&r| self.live[r])
                        .map(|r| (r, &self.vectors.data[r * dim..(r + 1) * dim]))
                        .collect();
                    graph.insert(&rows);
                }
                *self.tie_rank.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
                *self
                    .device_copy
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner()) = None;
            }
            Some(Op::Delete(d)) => {
                for id in d.ids {
                    if let Some(row) = self.rows.remove(&id) {
                        self.live[row as usize] = false;
                        self.dead += 1;
                    }
                }
            }
            Some(Op::Ratings(r)) => {
                self.rating_count += r.ratings.len() as u64;
                self.ratings.entry(r.user_id).or_default().extend(r.ratings);
            }
            Some(Op::SnapshotHeader(_)) | None => {}
        }
    }

    /// A copy without tombstoned rows, its graph rebuilt.
    pub(super) fn compacted(&self, config: &Config) -> State {
        let mut fresh = State {
            ratings: self.ratings.clone(),
            rating_count: self.rating_count,
            ..State::new(config.dimension, self.half.is_some())
        };
        let items = (0..self.row_count())
            .filter(|&r| self.live[r])
            .map(|r| self.item(r, config.dimension));
        fresh.apply(config, upsert_record(items.collect()));
        fresh.build_graph(config);
        fresh
    }

    /// Builds the HNSW graph over the live rows, for HNSW collections.
    pub(super) fn build_graph(&mut self, config: &Config) {
        if let IndexKind::Hnsw(params) = config.index {
            let dim = config.dimension;
            let rows: Vec<(usize, &[f32])> = (0..self.row_count())
                .filter(|&r| self.live[r])
                .map(|r| (r, self.vector(r, dim)))
                .collect();
            self.graph = Some(Graph::build(
                params,
                config.metric,
                &rows,
                self.row_count() * 2,
            ));
        }
    }
}

/// The record that stores `items`.
pub(super) fn upsert_record(items: Vec<StoredItem>) -> Record {
    Record {
        op: Some(Op::Upsert(Upsert { items })),
    }
}

/// The record that appends `ratings` to `user_id`'s history.
pub(super) fn ratings_record(user_id: String, ratings: Vec<Rating>) -> Record {
    Record {
        op: Some(Op::Ratings(Ratings { user_id, ratings })),
    }
}
