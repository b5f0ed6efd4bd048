//! What re-embedding needs of a collection: its contents when the re-embedding starts
//! and a journal of the writes made after, a new version built from contents in one
//! go, and the retirement of the old version at the switch (see
//! [`Store::reembed`](crate::retrieval::store::Store::reembed)).

use super::persistence::SNAPSHOT_CHUNK;
use super::state::{ratings_record, upsert_record, State};
use super::{Collection, Config};
use crate::retrieval::error::StorageError;
use crate::retrieval::gpu::Placement;
use crate::retrieval::wal::{self, Wal};
use marquee_kernels::CudaBackend;
use marquee_proto::storage::v1::{record::Op, Record};
use marquee_proto::v1::{Rating, StoredItem};
use std::collections::HashMap;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

/// A collection's live items and rating histories.
#[derive(Default)]
pub struct Contents {
    /// Live items, with their texts and payloads (vectors left out when taken from a
    /// collection being re-embedded).
    pub items: Vec<StoredItem>,
    /// Every user's ratings.
    pub ratings: HashMap<String, Vec<Rating>>,
}

impl Collection {
    fn journal(&self) -> MutexGuard<'_, Option<Vec<Record>>> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `record` (just logged) in the journal when one is kept, without its
    /// vectors (the new version has its own).
    pub(super) fn journal_write(&self, record: &Record) {
        if let Some(journal) = self.journal().as_mut() {
            let mut record = record.clone();
            if let Some(Op::Upsert(u)) = &mut record.op {
                u.items.iter_mut().for_each(|i| i.vector = Vec::new());
            }
            journal.push(record);
        }
    }

    /// Starts keeping a journal of writes and returns the live items (without vectors)
    /// and ratings as of that moment: no write falls between the two.
    pub fn start_journal(&self) -> Contents {
        let _writes = self.wal();
        let state = self.state();
        let items = (0..state.row_count())
            .filter(|&r| state.live[r])
            .map(|r| StoredItem {
                id: state.ids[r].clone(),
                vector: Vec::new(),
                payload: state.payloads[r].clone(),
                text: state.texts[r].clone(),
            })
            .collect();
        *self.journal() = Some(Vec::new());
        Contents {
            items,
            ratings: state.ratings.clone(),
        }
    }

    /// The records written since the journal started or was last drained, in log order.
    pub fn drain_journal(&self) -> Vec<Record> {
        self.journal()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Stops keeping a journal.
    pub fn stop_journal(&self) {
        *self.journal() = None;
    }

    /// Holds off writes while `switch` runs with the journal's last records; when it
    /// succeeds, the collection is retired: every later write fails with
    /// [`StorageError::Retired`] (its replacement takes them).
    pub fn retire_with<T, E>(
        &self,
        switch: impl FnOnce(Vec<Record>) -> Result<T, E>,
    ) -> Result<T, E> {
        let _writes = self.wal();
        let rest = self.journal().take().unwrap_or_default();
        let done = switch(rest)?;
        self.retired.store(true, Ordering::Release);
        Ok(done)
    }

    /// Logs then applies one record written to the collection this one replaces.
    pub fn carry(&self, record: Record) -> Result<(), StorageError> {
        self.write(record)
    }

    /// Creates a collection in `dir` holding `contents` (items with vectors prepared for
    /// `config`), written to its first log segment and synced as a whole. Like
    /// [`Collection::open`], it searches on the CPU when its device cannot be used.
    pub fn build(
        dir: &Path,
        config: Config,
        placement: &Placement,
        contents: Contents,
    ) -> Result<Self, StorageError> {
        let gpu = lenient_placement(placement, &config);
        super::persistence::create_files(dir, &config)?;
        let mut state = State::new(config.dimension, placement.shortlists(&gpu));
        let segment = wal::segment_path(dir, 1);
        let write = || -> std::io::Result<()> {
            let mut out = BufWriter::new(std::fs::File::create(&segment)?);
            let mut items = contents.items.into_iter().peekable();
            while items.peek().is_some() {
                let record = upsert_record(items.by_ref().take(SNAPSHOT_CHUNK).collect());
                wal::write_frame(&mut out, &record)?;
                state.apply(&config, record);
            }
            for (user, ratings) in contents.ratings {
                let record = ratings_record(user, ratings);
                wal::write_frame(&mut out, &record)?;
                state.apply(&config, record);
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            wal::sync_dir(dir)
        };
        write().map_err(StorageError::io(format!("writing {}", segment.display())))?;
        state.build_graph(&config);
        let wal = Wal::open(dir, 1, None).map_err(StorageError::io(""))?;
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

    /// Records that the collection's directory was renamed to `dir`.
    pub fn relocate(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
        self.wal
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .relocate(dir);
    }
}

/// Where exact search of a collection opened with `config` runs: its device, or the CPU
/// (with a warning) when that device cannot be used here.
pub(super) fn lenient_placement(placement: &Placement, config: &Config) -> Option<CudaBackend> {
    let exact = config.index == super::IndexKind::Exact;
    placement
        .place(&config.name, &config.device, exact)
        .unwrap_or_else(|reason| {
            tracing::warn!(
                collection = config.name,
                reason,
                "device unusable, searching on the CPU"
            );
            None
        })
}
