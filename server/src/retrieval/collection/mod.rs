//! One collection: its configuration ([`config`]), in-memory state and the replay of
//! log records ([`state`]), durability on the write-ahead log ([`persistence`]), search
//! ([`search`]) and rating histories ([`ratings`]). This module holds the
//! [`Collection`] type and its item API.

mod config;
mod persistence;
mod ratings;
mod reembed;
mod repair;
mod replay;
mod search;
mod state;

pub use config::{Config, IndexKind, MAX_DIMENSION};
pub use persistence::COMPACT_WAL_BYTES;
pub use reembed::Contents;
pub use repair::{repair, RepairReport};
pub use replay::{check_record, Lost};
pub use search::{Query, ScoredRow};

use super::error::StorageError;
use super::gpu::Placement;
use super::payload::CompiledFilter;
use super::wal::Wal;
use marquee_kernels::{Backend, CudaBackend};
use marquee_proto::storage::v1::{record::Op, Delete, Record};
use marquee_proto::v1::{CollectionInfo, StoredItem};
use state::{upsert_record, State};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

/// Items with their texts ([`Collection::text_items`]).
#[derive(Debug, Default)]
pub struct TextItems {
    /// Item ids.
    pub ids: Vec<String>,
    /// The text of each.
    pub texts: Vec<String>,
    /// The stored vector of each, one row after the other.
    pub vectors: Vec<f32>,
}

/// A stored collection.
pub struct Collection {
    /// Its configuration.
    pub config: Config,
    /// Where exact search runs: on this GPU, or on the CPU when `None`.
    gpu: Option<CudaBackend>,
    dir: PathBuf,
    wal: Mutex<Wal>,
    state: RwLock<State>,
    /// The log size (bytes of the active segment) before which a failed compaction is
    /// not retried; 0 when none failed.
    compaction_retry_at: AtomicU64,
    /// While the collection is re-embedded: the records written since it started, to
    /// carry over to the new version.
    journal: Mutex<Option<Vec<Record>>>,
    /// Set once a re-embedded version replaced this one: it takes no more writes.
    retired: AtomicBool,
}

impl Collection {
    /// Creates the collection's directory and empty log. An explicitly requested device
    /// that cannot be used is refused before anything is written.
    pub fn create(dir: &Path, config: Config, placement: &Placement) -> Result<Self, StorageError> {
        let gpu = placement
            .place(
                &config.name,
                &config.device,
                config.index == IndexKind::Exact,
            )
            .map_err(StorageError::InvalidArgument)?;
        persistence::create_files(dir, &config)?;
        let mut state = State::new(config.dimension, placement.shortlists(&gpu));
        state.build_graph(&config);
        Ok(Self {
            wal: Mutex::new(Wal::open(dir, 1, None).map_err(StorageError::io(""))?),
            state: RwLock::new(state),
            compaction_retry_at: AtomicU64::new(0),
            journal: Mutex::new(None),
            retired: AtomicBool::new(false),
            dir: dir.to_path_buf(),
            gpu,
            config,
        })
    }

    /// Opens an existing collection: newest snapshot, then the log after it. When its
    /// device cannot be used here, it searches on the CPU (with a warning): the data stays
    /// available.
    pub fn open(dir: &Path, placement: &Placement) -> Result<Self, StorageError> {
        let config = persistence::read_config(dir)?;
        let gpu = reembed::lenient_placement(placement, &config);
        let mut state = State::new(config.dimension, placement.shortlists(&gpu));
        let wal = persistence::replay(dir, &config, &mut state)?;
        Ok(Self {
            wal: Mutex::new(wal),
            state: RwLock::new(state),
            compaction_retry_at: AtomicU64::new(0),
            journal: Mutex::new(None),
            retired: AtomicBool::new(false),
            dir: dir.to_path_buf(),
            gpu,
            config,
        })
    }

    /// The collection's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state(&self) -> RwLockReadGuard<'_, State> {
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
    pub fn prepare_vector(&self, what: &str, vector: &[f32]) -> Result<Vec<f32>, StorageError> {
        self.config.prepare_vector(what, vector)
    }

    /// Stores items (prepared vectors) atomically: all of them or, on error, none.
    pub fn upsert(&self, items: Vec<StoredItem>) -> Result<usize, StorageError> {
        {
            let state = self.state();
            for item in &items {
                if item.id.is_empty() {
                    return Err(StorageError::InvalidArgument(
                        "an item has an empty id".to_string(),
                    ));
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
    pub fn delete(&self, ids: Vec<String>) -> Result<usize, StorageError> {
        let existing = {
            let state = self.state();
            ids.iter().filter(|id| state.rows.contains_key(*id)).count()
        };
        self.write(Record {
            op: Some(Op::Delete(Delete { ids })),
        })?;
        Ok(existing)
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
            .map_or_else(|| "cpu".to_string(), CudaBackend::device_name);
        info
    }

    /// Stored items by id (with their vectors and texts when asked for), and the ids
    /// not found.
    pub fn get(
        &self,
        ids: &[String],
        with_vectors: bool,
        with_texts: bool,
    ) -> (Vec<StoredItem>, Vec<String>) {
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
                    text: if with_texts {
                        state.texts[row as usize].clone()
                    } else {
                        String::new()
                    },
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

    /// The live items that were upserted as text: ids, texts and stored vectors, in
    /// storage order.
    pub fn text_items(&self) -> TextItems {
        let state = self.state();
        let dim = self.config.dimension;
        let mut items = TextItems::default();
        for row in 0..state.row_count() {
            if state.live[row] && !state.texts[row].is_empty() {
                items.ids.push(state.ids[row].clone());
                items.texts.push(state.texts[row].clone());
                items.vectors.extend_from_slice(state.vector(row, dim));
            }
        }
        items
    }

    /// Whether an item exists.
    pub fn contains(&self, id: &str) -> bool {
        self.state().rows.contains_key(id)
    }

    /// The schema, to compile filters.
    pub fn compile_filter(
        &self,
        filter: Option<&marquee_proto::v1::Filter>,
    ) -> Result<Option<CompiledFilter>, StorageError> {
        self.state().schema.compile(filter)
    }
}
