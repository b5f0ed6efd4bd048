//! One collection: configuration, in-memory state, durability and search.
//!
//! Writes go to the write-ahead log (fsynced) before they touch memory, under one
//! lock, so the in-memory order is the log order. When the log grows past
//! [`COMPACT_WAL_BYTES`] or a quarter of the rows are tombstones, the state is rewritten
//! without them into a snapshot and the covered log segments are deleted. Start-up
//! loads the newest snapshot and replays the segments after it.

use super::gpu::{device_status, DeviceCopy, GpuSearch, Placement};
use super::graph::{Graph, HnswParams, MAX_M};
use super::payload::{CompiledFilter, Payload, Schema};
use super::wal::{self, Wal};
use anyhow::{bail, Context};
use marquee_kernels::{
    Backend, CpuBackend, DeviceRequest, HalfCopy, KernelError, Matrix, TopKOptions,
};
use marquee_proto::storage::v1::{record::Op, Delete, Ratings, Record, SnapshotHeader, Upsert};
use marquee_proto::v1::{
    index_config, CollectionInfo, CreateCollectionRequest, ExactIndex, HnswIndex, IndexConfig,
    Metric, Rating, StoredItem,
};
use prost::Message;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tonic::Status;

/// Log size past which the collection compacts into a snapshot.
pub const COMPACT_WAL_BYTES: u64 = 64 << 20;
/// Largest vector dimension accepted.
pub const MAX_DIMENSION: usize = 65_536;
/// Items per record when writing snapshots.
const SNAPSHOT_CHUNK: usize = 1024;
const CONFIG_FILE: &str = "config.pb";

/// How a collection is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    /// Every item scored.
    Exact,
    /// HNSW graph.
    Hnsw(HnswParams),
}

/// What a collection was created with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Name.
    pub name: String,
    /// Vector length.
    pub dimension: usize,
    /// Similarity.
    pub metric: Metric,
    /// Index kind.
    pub index: IndexKind,
    /// Bound embedding model ("" for none).
    pub model: String,
    /// Requested device for exact search ("" for the server's default).
    pub device: String,
}

impl Config {
    /// Validates a create request, filling defaults.
    pub fn from_request(r: &CreateCollectionRequest) -> Result<Self, Status> {
        if !crate::names::is_plain_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "collection name {:?} must be letters, digits, '-', '_' or '.'",
                r.name
            )));
        }
        let dimension = r.dimension as usize;
        if dimension == 0 || dimension > MAX_DIMENSION {
            return Err(Status::invalid_argument(format!(
                "dimension {dimension} outside 1..={MAX_DIMENSION}"
            )));
        }
        let metric = match Metric::try_from(r.metric) {
            Ok(Metric::Unspecified) | Ok(Metric::Cosine) => Metric::Cosine,
            Ok(m) => m,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown metric {}",
                    r.metric
                )))
            }
        };
        let index = match r.index.as_ref().and_then(|i| i.kind.as_ref()) {
            None | Some(index_config::Kind::Exact(_)) => IndexKind::Exact,
            Some(index_config::Kind::Hnsw(h)) => {
                let params = HnswParams {
                    m: if h.m == 0 { 16 } else { h.m as usize },
                    ef_construction: if h.ef_construction == 0 {
                        200
                    } else {
                        h.ef_construction as usize
                    },
                    ef_search: if h.ef_search == 0 {
                        64
                    } else {
                        h.ef_search as usize
                    },
                };
                if !(2..=MAX_M).contains(&params.m) {
                    return Err(Status::invalid_argument(format!(
                        "hnsw m {} outside 2..={MAX_M}",
                        params.m
                    )));
                }
                if params.ef_construction > 10_000 || params.ef_search > 10_000 {
                    return Err(Status::invalid_argument(
                        "hnsw ef values must be at most 10000",
                    ));
                }
                IndexKind::Hnsw(params)
            }
        };
        if !r.device.is_empty() {
            r.device
                .parse::<DeviceRequest>()
                .map_err(Status::invalid_argument)?;
        }
        Ok(Self {
            name: r.name.clone(),
            dimension,
            metric,
            index,
            model: r.model.clone(),
            device: r.device.clone(),
        })
    }

    /// The request that recreates this configuration.
    pub fn to_request(&self) -> CreateCollectionRequest {
        CreateCollectionRequest {
            name: self.name.clone(),
            dimension: self.dimension as u32,
            metric: self.metric as i32,
            index: Some(IndexConfig {
                kind: Some(match self.index {
                    IndexKind::Exact => index_config::Kind::Exact(ExactIndex {}),
                    IndexKind::Hnsw(p) => index_config::Kind::Hnsw(HnswIndex {
                        m: p.m as u32,
                        ef_construction: p.ef_construction as u32,
                        ef_search: p.ef_search as u32,
                    }),
                }),
            }),
            model: self.model.clone(),
            device: self.device.clone(),
        }
    }
}

/// One ranked result.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredRow {
    /// Item id.
    pub id: String,
    /// Score (higher is better).
    pub score: f32,
    /// Payload, when asked for.
    pub payload: Option<Payload>,
}

/// A search over the collection.
pub struct Query<'a> {
    /// The query vector, already prepared with [`Collection::prepare_vector`].
    pub vector: &'a [f32],
    /// How many results.
    pub k: usize,
    /// Payload filter.
    pub filter: Option<&'a CompiledFilter>,
    /// Item ids that must not be returned.
    pub exclude: &'a [String],
    /// When given, only these item ids may be returned (e.g. an evaluation's catalog).
    pub only: Option<&'a std::collections::HashSet<String>>,
    /// Whether results carry payloads.
    pub with_payload: bool,
}

/// In-memory contents.
struct State {
    ids: Vec<String>,
    live: Vec<bool>,
    rows: HashMap<String, u32>,
    /// One row per item ever stored since the last compaction (tombstones included).
    vectors: Matrix,
    /// `-|x|²/2` per row for L2 collections (the dot-product form of the distance).
    l2_bias: Vec<f32>,
    payloads: Vec<Payload>,
    schema: Schema,
    ratings: HashMap<String, Vec<Rating>>,
    rating_count: u64,
    dead: usize,
    graph: Option<Graph>,
    /// The rows in f16 for exact search on the CPU (`retrieval.f16_shortlist`); dropped
    /// when a value does not fit in f16.
    half: Option<HalfCopy>,
    /// Each row's rank by id, for deterministic tie-breaking; rebuilt lazily.
    tie_rank: Mutex<Option<Arc<Vec<u32>>>>,
    /// The rows in GPU memory when the collection searches there; re-uploaded lazily
    /// after the rows change.
    device_copy: Mutex<Option<Arc<DeviceCopy>>>,
}

impl State {
    /// An empty state; `shortlist`: keep an f16 copy of the rows for exact search.
    fn new(dimension: usize, shortlist: bool) -> Self {
        Self {
            half: shortlist.then(|| HalfCopy::new(dimension)),
            ids: Vec::new(),
            live: Vec::new(),
            rows: HashMap::new(),
            vectors: Matrix::zeros(0, dimension),
            l2_bias: Vec::new(),
            payloads: Vec::new(),
            schema: Schema::default(),
            ratings: HashMap::new(),
            rating_count: 0,
            dead: 0,
            graph: None,
            tie_rank: Mutex::new(None),
            device_copy: Mutex::new(None),
        }
    }

    fn row_count(&self) -> usize {
        self.ids.len()
    }

    fn vector(&self, row: usize, dim: usize) -> &[f32] {
        &self.vectors.data[row * dim..(row + 1) * dim]
    }

    fn tie_rank(&self) -> Arc<Vec<u32>> {
        let mut cached = self.tie_rank.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .get_or_insert_with(|| {
                let mut order: Vec<u32> = (0..self.ids.len() as u32).collect();
                order.sort_by(|&a, &b| {
                    self.ids[a as usize]
                        .cmp(&self.ids[b as usize])
                        .then(a.cmp(&b))
                });
                let mut rank = vec![0u32; order.len()];
                for (r, &row) in order.iter().enumerate() {
                    rank[row as usize] = r as u32;
                }
                Arc::new(rank)
            })
            .clone()
    }

    /// The rows on `gpu`, uploaded on first use after a change.
    fn device_copy(
        &self,
        gpu: &GpuSearch,
        config: &Config,
    ) -> Result<Arc<DeviceCopy>, KernelError> {
        let mut cached = self.device_copy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(copy) = cached.as_ref() {
            return Ok(copy.clone());
        }
        let bias = (config.metric == Metric::L2).then_some(self.l2_bias.as_slice());
        let copy = Arc::new(gpu.upload(&self.vectors, &self.tie_rank(), bias)?);
        *cached = Some(copy.clone());
        Ok(copy)
    }

    fn apply(&mut self, config: &Config, record: Record) {
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
    fn compacted(&self, config: &Config) -> State {
        let mut fresh = State {
            ratings: self.ratings.clone(),
            rating_count: self.rating_count,
            ..State::new(config.dimension, self.half.is_some())
        };
        let items = (0..self.row_count())
            .filter(|&r| self.live[r])
            .map(|r| StoredItem {
                id: self.ids[r].clone(),
                vector: self.vector(r, config.dimension).to_vec(),
                payload: self.payloads[r].clone(),
            });
        fresh.apply(config, upsert_record(items.collect()));
        fresh.build_graph(config);
        fresh
    }

    fn build_graph(&mut self, config: &Config) {
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

fn upsert_record(items: Vec<StoredItem>) -> Record {
    Record {
        op: Some(Op::Upsert(Upsert { items })),
    }
}

fn io_error(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("storage error: {e}"))
}

/// A stored collection.
pub struct Collection {
    /// Its configuration.
    pub config: Config,
    /// Where exact search runs: on this GPU, or on the CPU when `None`.
    gpu: Option<GpuSearch>,
    dir: PathBuf,
    wal: Mutex<Wal>,
    state: RwLock<State>,
}

impl Collection {
    /// Creates the collection's directory and empty log. An explicitly requested device
    /// that cannot be used is refused before anything is written.
    pub fn create(dir: &Path, config: Config, placement: &Placement) -> Result<Self, Status> {
        let gpu = placement
            .place(
                &config.name,
                &config.device,
                config.index == IndexKind::Exact,
            )
            .map_err(Status::invalid_argument)?;
        Self::create_files(dir, &config)
            .map_err(|e| Status::internal(format!("creating the collection: {e:#}")))?;
        let mut state = State::new(config.dimension, placement.shortlists(&gpu));
        state.build_graph(&config);
        Ok(Self {
            wal: Mutex::new(
                Wal::open(dir, 1, None).map_err(|e| Status::internal(format!("{e:#}")))?,
            ),
            state: RwLock::new(state),
            dir: dir.to_path_buf(),
            gpu,
            config,
        })
    }

    fn create_files(dir: &Path, config: &Config) -> anyhow::Result<()> {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join("config.pb.tmp");
        std::fs::write(&tmp, config.to_request().encode_to_vec())?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(CONFIG_FILE))?;
        wal::sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            wal::sync_dir(parent)?;
        }
        Ok(())
    }

    /// Opens an existing collection: newest snapshot, then the log after it. When its
    /// device cannot be used here, it searches on the CPU (with a warning): the data stays
    /// available.
    pub fn open(dir: &Path, placement: &Placement) -> anyhow::Result<Self> {
        let request =
            CreateCollectionRequest::decode(std::fs::read(dir.join(CONFIG_FILE))?.as_slice())?;
        let config =
            Config::from_request(&request).map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
        let exact = config.index == IndexKind::Exact;
        let gpu = placement
            .place(&config.name, &config.device, exact)
            .unwrap_or_else(|reason| {
                tracing::warn!(
                    collection = config.name,
                    reason,
                    "device unusable, searching on the CPU"
                );
                None
            });
        let mut state = State::new(config.dimension, placement.shortlists(&gpu));
        let mut covered = 0;
        if let Some(&n) = wal::numbered_files(dir, "snapshot-", ".bin")?.last() {
            let path = wal::snapshot_path(dir, n);
            let (records, valid) = wal::read_frames(&path)?;
            if valid != std::fs::metadata(&path)?.len() {
                bail!("snapshot {} is corrupt", path.display());
            }
            match records.first().and_then(|r| r.op.as_ref()) {
                Some(Op::SnapshotHeader(h)) if h.covers_segment == n => covered = n,
                _ => bail!("snapshot {} has no valid header", path.display()),
            }
            for r in records {
                state.apply(&config, r);
            }
        }
        let mut active = (covered + 1, None);
        for n in wal::numbered_files(dir, "wal-", ".log")?
            .into_iter()
            .filter(|&n| n > covered)
        {
            let (records, valid) = wal::read_frames(&wal::segment_path(dir, n))?;
            for r in records {
                state.apply(&config, r);
            }
            active = (n, Some(valid));
        }
        state.build_graph(&config);
        Ok(Self {
            wal: Mutex::new(Wal::open(dir, active.0, active.1)?),
            state: RwLock::new(state),
            dir: dir.to_path_buf(),
            gpu,
            config,
        })
    }

    /// The collection's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the write in progress, if any, and syncs the log to disk.
    pub fn flush(&self) -> std::io::Result<()> {
        self.wal().sync()
    }

    fn wal(&self) -> MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a vector's length and values, normalising it for cosine collections.
    pub fn prepare_vector(&self, what: &str, vector: &[f32]) -> Result<Vec<f32>, Status> {
        if vector.len() != self.config.dimension {
            return Err(Status::invalid_argument(format!(
                "{what} has {} dimensions, collection {} has {}",
                vector.len(),
                self.config.name,
                self.config.dimension
            )));
        }
        if vector.iter().any(|v| !v.is_finite()) {
            return Err(Status::invalid_argument(format!(
                "{what} has NaN or infinite components"
            )));
        }
        let mut v = vector.to_vec();
        if self.config.metric == Metric::Cosine {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm == 0.0 || !norm.is_finite() {
                return Err(Status::invalid_argument(format!(
                    "{what} is a zero vector, which has no cosine"
                )));
            }
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(v)
    }

    /// Logs then applies one record, compacting afterwards when due.
    fn write(&self, record: Record) -> Result<(), Status> {
        let mut wal = self.wal();
        wal.append(std::slice::from_ref(&record))
            .map_err(io_error)?;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.apply(&self.config, record);
        let due = wal.bytes() > COMPACT_WAL_BYTES
            || (state.dead > 1024 && state.dead * 4 > state.row_count());
        if due {
            self.compact(&mut wal, &mut state).map_err(io_error)?;
        }
        Ok(())
    }

    /// Stores items (prepared vectors) atomically: all of them or, on error, none.
    pub fn upsert(&self, items: Vec<StoredItem>) -> Result<usize, Status> {
        {
            let state = self.state();
            for item in &items {
                if item.id.is_empty() {
                    return Err(Status::invalid_argument("an item has an empty id"));
                }
                state.schema.check(&item.id, &item.payload)?;
            }
        }
        let n = items.len();
        if n > 0 {
            self.write(upsert_record(items))?;
        }
        Ok(n)
    }

    /// Deletes items; returns how many existed.
    pub fn delete(&self, ids: Vec<String>) -> Result<usize, Status> {
        let existing = {
            let state = self.state();
            ids.iter().filter(|id| state.rows.contains_key(*id)).count()
        };
        self.write(Record {
            op: Some(Op::Delete(Delete { ids })),
        })?;
        Ok(existing)
    }

    /// Appends ratings to a user's history.
    pub fn record_ratings(&self, user_id: String, ratings: Vec<Rating>) -> Result<usize, Status> {
        if user_id.is_empty() {
            return Err(Status::invalid_argument("ratings need a user_id"));
        }
        if let Some(r) = ratings
            .iter()
            .find(|r| r.item_id.is_empty() || !r.rating.is_finite())
        {
            return Err(Status::invalid_argument(format!(
                "user {user_id}: rating {:?} of item {:?} is invalid",
                r.rating, r.item_id
            )));
        }
        let n = ratings.len();
        self.write(Record {
            op: Some(Op::Ratings(Ratings { user_id, ratings })),
        })?;
        Ok(n)
    }

    /// Rewrites the state without tombstones into a snapshot covering the closed
    /// segment, then deletes older snapshots and covered segments.
    fn compact(&self, wal: &mut Wal, state: &mut State) -> std::io::Result<()> {
        let covered = wal.rotate()?;
        if state.dead > 0 {
            *state = state.compacted(&self.config);
        }
        let tmp = self.dir.join("snapshot.tmp");
        {
            let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
            wal::write_frame(
                &mut out,
                &Record {
                    op: Some(Op::SnapshotHeader(SnapshotHeader {
                        covers_segment: covered,
                    })),
                },
            )?;
            let dim = self.config.dimension;
            for rows in (0..state.row_count())
                .collect::<Vec<_>>()
                .chunks(SNAPSHOT_CHUNK)
            {
                let items = rows
                    .iter()
                    .map(|&r| StoredItem {
                        id: state.ids[r].clone(),
                        vector: state.vector(r, dim).to_vec(),
                        payload: state.payloads[r].clone(),
                    })
                    .collect();
                wal::write_frame(&mut out, &upsert_record(items))?;
            }
            for (user, ratings) in &state.ratings {
                wal::write_frame(
                    &mut out,
                    &Record {
                        op: Some(Op::Ratings(Ratings {
                            user_id: user.clone(),
                            ratings: ratings.clone(),
                        })),
                    },
                )?;
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, wal::snapshot_path(&self.dir, covered))?;
        wal::sync_dir(&self.dir)?;
        for n in wal::numbered_files(&self.dir, "snapshot-", ".bin")? {
            if n < covered {
                std::fs::remove_file(wal::snapshot_path(&self.dir, n))?;
            }
        }
        for n in wal::numbered_files(&self.dir, "wal-", ".log")? {
            if n <= covered {
                std::fs::remove_file(wal::segment_path(&self.dir, n))?;
            }
        }
        wal::sync_dir(&self.dir)?;
        tracing::info!(
            collection = self.config.name,
            items = state.row_count(),
            "compacted into a snapshot"
        );
        Ok(())
    }

    /// Counts for CollectionInfo.
    pub fn info(&self) -> CollectionInfo {
        let state = self.state();
        let mut info = CollectionInfo {
            items: state.rows.len() as u64,
            users: state.ratings.len() as u64,
            ratings: state.rating_count,
            ..Default::default()
        };
        let r = self.config.to_request();
        info.name = r.name;
        info.dimension = r.dimension;
        info.metric = r.metric;
        info.index = r.index;
        info.model = r.model;
        info.device = self
            .gpu
            .as_ref()
            .map_or_else(|| "cpu".to_string(), GpuSearch::device_name);
        info
    }

    /// Stored items by id, and the ids not found.
    pub fn get(&self, ids: &[String], with_vectors: bool) -> (Vec<StoredItem>, Vec<String>) {
        let state = self.state();
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match state.rows.get(id) {
                Some(&row) => found.push(StoredItem {
                    id: id.clone(),
                    vector: if with_vectors {
                        state.vector(row as usize, self.config.dimension).to_vec()
                    } else {
                        Vec::new()
                    },
                    payload: state.payloads[row as usize].clone(),
                }),
                None => missing.push(id.clone()),
            }
        }
        (found, missing)
    }

    /// The stored vector of an item.
    pub fn vector_of(&self, id: &str) -> Option<Vec<f32>> {
        let state = self.state();
        state
            .rows
            .get(id)
            .map(|&row| state.vector(row as usize, self.config.dimension).to_vec())
    }

    /// Whether an item exists.
    pub fn contains(&self, id: &str) -> bool {
        self.state().rows.contains_key(id)
    }

    /// A user's recorded ratings.
    pub fn user_ratings(&self, user: &str) -> Option<Vec<Rating>> {
        self.state().ratings.get(user).cloned()
    }

    /// Every user's ratings (for evaluation).
    pub fn all_ratings(&self) -> HashMap<String, Vec<Rating>> {
        self.state().ratings.clone()
    }

    /// The schema, to compile filters.
    pub fn compile_filter(
        &self,
        filter: Option<&marquee_proto::v1::Filter>,
    ) -> Result<Option<CompiledFilter>, Status> {
        self.state().schema.compile(filter)
    }

    /// Mean of the stored vectors of `ids` (those present), normalised for cosine;
    /// `None` when none is present.
    pub fn mean_vector(&self, ids: &[&str]) -> Option<Vec<f32>> {
        let state = self.state();
        let dim = self.config.dimension;
        let mut sum = vec![0f32; dim];
        let mut n = 0usize;
        for id in ids {
            if let Some(&row) = state.rows.get(*id) {
                sum.iter_mut()
                    .zip(state.vector(row as usize, dim))
                    .for_each(|(s, v)| *s += v);
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        sum.iter_mut().for_each(|s| *s /= n as f32);
        if self.config.metric == Metric::Cosine {
            let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                sum.iter_mut().for_each(|s| *s /= norm);
            }
        }
        Some(sum)
    }

    /// Runs several searches; each result is best first, ties by id.
    pub fn search_batch(&self, queries: &[Query<'_>]) -> Result<Vec<Vec<ScoredRow>>, Status> {
        let state = self.state();
        let dim = self.config.dimension;
        let tie_rank = state.tie_rank();
        let mut results = Vec::with_capacity(queries.len());
        let mut exact: Vec<usize> = Vec::new();
        for (qi, q) in queries.iter().enumerate() {
            let hits = match &state.graph {
                Some(graph) => self.graph_search(&state, graph, q, &tie_rank),
                None => None,
            };
            if hits.is_none() {
                exact.push(qi);
            }
            results.push(hits.unwrap_or_default());
        }
        if !exact.is_empty() {
            let k = exact.iter().map(|&qi| queries[qi].k).max().unwrap_or(0);
            let mut query_matrix = Vec::with_capacity(exact.len() * dim);
            let mut excluded = Vec::with_capacity(exact.len());
            for &qi in &exact {
                query_matrix.extend_from_slice(queries[qi].vector);
                let mut rows: Vec<u32> = queries[qi]
                    .exclude
                    .iter()
                    .filter_map(|id| state.rows.get(id).copied())
                    .collect();
                rows.sort_unstable();
                rows.dedup();
                excluded.push(rows);
            }
            // One filter and candidate set for the whole batch: a batch shares them.
            let (filter, only) = (queries[exact[0]].filter, queries[exact[0]].only);
            // Tombstones alone: the live mask is the allowed mask, no copy needed.
            let allowed: Option<Cow<'_, [bool]>> = if filter.is_some() || only.is_some() {
                Some(Cow::Owned(
                    (0..state.row_count())
                        .map(|r| {
                            state.live[r]
                                && filter.is_none_or(|f| f.matches(&state.payloads[r]))
                                && only.is_none_or(|o| o.contains(&state.ids[r]))
                        })
                        .collect(),
                ))
            } else {
                (state.dead > 0).then_some(Cow::Borrowed(state.live.as_slice()))
            };
            let on_gpu = self
                .gpu
                .as_ref()
                .filter(|_| k <= marquee_kernels::cuda::MAX_K);
            let hits = if let Some(gpu) = on_gpu {
                let copy = state
                    .device_copy(gpu, &self.config)
                    .map_err(device_status)?;
                gpu.search(&copy, &query_matrix, k, allowed.as_deref(), &excluded)
                    .map_err(device_status)?
            } else {
                CpuBackend
                    .top_k_dot(
                        &Matrix {
                            rows: exact.len(),
                            cols: dim,
                            data: query_matrix,
                        },
                        &state.vectors,
                        k,
                        &TopKOptions {
                            row_bias: (self.config.metric == Metric::L2)
                                .then_some(state.l2_bias.as_slice()),
                            allowed: allowed.as_deref(),
                            excluded: Some(&excluded),
                            tie_rank: Some(&tie_rank),
                            shortlist: state.half.as_ref(),
                        },
                    )
                    .map_err(|e| Status::internal(e.to_string()))?
            };
            for (&qi, hits) in exact.iter().zip(hits) {
                let q = &queries[qi];
                let q_norm2: f32 = q.vector.iter().map(|v| v * v).sum();
                results[qi] = hits
                    .into_iter()
                    .take(q.k)
                    .map(|h| {
                        let row = h.index as usize;
                        let score = match self.config.metric {
                            Metric::L2 => 2.0 * h.score - q_norm2,
                            _ => h.score,
                        };
                        self.scored(&state, row, score, q.with_payload)
                    })
                    .collect();
            }
        }
        Ok(results)
    }

    fn scored(&self, state: &State, row: usize, score: f32, with_payload: bool) -> ScoredRow {
        ScoredRow {
            id: state.ids[row].clone(),
            score,
            payload: with_payload.then(|| state.payloads[row].clone()),
        }
    }

    /// HNSW search; `None` asks for the exact path (selective filters, or fewer than k
    /// results where more eligible items exist).
    fn graph_search(
        &self,
        state: &State,
        graph: &Graph,
        q: &Query<'_>,
        tie_rank: &[u32],
    ) -> Option<Vec<ScoredRow>> {
        let excluded: std::collections::HashSet<u32> = q
            .exclude
            .iter()
            .filter_map(|id| state.rows.get(id).copied())
            .collect();
        let keep = |row: usize| {
            state.live[row]
                && !excluded.contains(&(row as u32))
                && q.filter.is_none_or(|f| f.matches(&state.payloads[row]))
                && q.only.is_none_or(|o| o.contains(&state.ids[row]))
        };
        let restricted = q.filter.is_some() || q.only.is_some();
        let eligible = if restricted {
            (0..state.row_count()).filter(|&r| keep(r)).count()
        } else {
            state.rows.len().saturating_sub(excluded.len())
        };
        // A selective filter walks most of the graph for little: score directly.
        if restricted && eligible * 10 < state.rows.len() {
            return None;
        }
        let unfiltered = !restricted && excluded.is_empty() && state.dead == 0;
        let mut scored = graph.search(
            q.vector,
            &state.vectors.data,
            state.half.as_ref(),
            q.k,
            if unfiltered { None } else { Some(&keep) },
        );
        if scored.len() < q.k.min(eligible) {
            return None;
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(tie_rank[a.0].cmp(&tie_rank[b.0])));
        Some(
            scored
                .into_iter()
                .map(|(row, score)| self.scored(state, row, score, q.with_payload))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(index: IndexKind) -> Config {
        Config {
            name: "c".into(),
            dimension: 4,
            metric: Metric::Cosine,
            index,
            model: String::new(),
            device: String::new(),
        }
    }

    fn cpu() -> Placement {
        Placement {
            default: DeviceRequest::Cpu,
            precision: marquee_kernels::Precision::F32,
            f16_shortlist: true,
        }
    }

    fn item(i: usize) -> StoredItem {
        let v = [1.0 + (i % 7) as f32, (i % 3) as f32, (i % 5) as f32, 1.0];
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        StoredItem {
            id: format!("i{i:05}"),
            vector: v.iter().map(|x| x / n).collect(),
            payload: Payload::new(),
        }
    }

    fn top(c: &Collection) -> Vec<ScoredRow> {
        let q = [0.5, 0.5, 0.5, 0.5];
        let query = Query {
            vector: &q,
            k: 10,
            filter: None,
            exclude: &[],
            only: None,
            with_payload: false,
        };
        c.search_batch(std::slice::from_ref(&query))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn tombstones_compact_into_a_snapshot_that_reopens_identically() {
        for index in [
            IndexKind::Exact,
            IndexKind::Hnsw(HnswParams {
                m: 8,
                ef_construction: 64,
                ef_search: 64,
            }),
        ] {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("c");
            let c = Collection::create(&dir, config(index), &cpu()).unwrap();
            c.upsert((0..3000).map(item).collect()).unwrap();
            c.record_ratings(
                "u".into(),
                vec![Rating {
                    item_id: "i00001".into(),
                    rating: 5.0,
                    timestamp: 1,
                }],
            )
            .unwrap();
            // Deleting 2000 of 3000 rows passes the tombstone threshold: compaction runs.
            c.delete((0..2000).map(|i| item(i).id).collect()).unwrap();
            assert_eq!(
                wal::numbered_files(&dir, "snapshot-", ".bin")
                    .unwrap()
                    .len(),
                1
            );
            assert_eq!(wal::numbered_files(&dir, "wal-", ".log").unwrap(), vec![2]);
            c.upsert((5000..5010).map(item).collect()).unwrap();
            let before = top(&c);
            let info = c.info();
            drop(c);
            let reopened = Collection::open(&dir, &cpu()).unwrap();
            let after = top(&reopened);
            if index == IndexKind::Exact {
                assert_eq!(after, before);
            } else {
                // A rebuilt graph may surface another member of a group of exact ties.
                let scores = |r: &[ScoredRow]| r.iter().map(|h| h.score).collect::<Vec<_>>();
                assert_eq!(scores(&after), scores(&before));
            }
            let again = reopened.info();
            assert_eq!(
                (again.items, again.users, again.ratings),
                (info.items, 1, 1)
            );
            assert_eq!(again.items, 1010);
            assert!(reopened.get(&["i00001".into()], false).1 == vec!["i00001".to_string()]);
        }
    }
}
