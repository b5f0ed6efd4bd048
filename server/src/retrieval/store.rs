//! All collections of the data directory (`<data_dir>/collections/<name>/`).

mod reembed;

pub use reembed::Progress;

use super::collection::{Collection, Config, RepairReport};
use super::error::{ErrorKind, StorageError};
use super::gpu::Placement;
use dashmap::DashMap;
use marquee_proto::v1::CreateCollectionRequest;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The collections, opened at start-up.
pub struct Store {
    dir: PathBuf,
    placement: Placement,
    collections: DashMap<String, Arc<Collection>>,
    /// Collections on disk that could not be opened (damaged, unreadable): every call
    /// naming one answers why, until it is repaired or deleted.
    unopened: DashMap<String, Unopened>,
    /// Held while an unopened collection is repaired or deleted, so the two never
    /// work on its files at once.
    fixing_unopened: Mutex<()>,
    /// The collections being re-embedded.
    reembedding: Mutex<HashSet<String>>,
}

/// Why a collection on disk is closed.
#[derive(Clone)]
struct Unopened {
    kind: ErrorKind,
    reason: String,
}

impl Unopened {
    /// The error every call naming the collection answers.
    fn error(&self, name: &str) -> StorageError {
        StorageError::Unopened {
            name: name.to_string(),
            kind: self.kind,
            reason: self.reason.clone(),
        }
    }
}

impl Store {
    /// Opens every collection under `data_dir/collections`; one that cannot be read is
    /// logged and kept closed, untouched on disk, while the others serve. What a crash
    /// left of a deletion or a re-embedding (directories named `.deleted-*`,
    /// `.reembed-*`) is removed.
    pub fn open(data_dir: &Path, placement: Placement) -> Result<Self, StorageError> {
        let dir = data_dir.join("collections");
        let listing = || StorageError::io(format!("listing {}", dir.display()));
        std::fs::create_dir_all(&dir)
            .map_err(StorageError::io(format!("creating {}", dir.display())))?;
        let collections = DashMap::new();
        let unopened = DashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(listing())? {
            let path = entry.map_err(listing())?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if !path.is_dir() || name.starts_with('.') {
                if path.is_dir()
                    && (name.starts_with(reembed::STAGING_PREFIX) || name.starts_with(".deleted-"))
                {
                    tracing::info!(dir = %path.display(), "removing what an interrupted job left");
                    if let Err(error) = reembed::remove_dir(&path) {
                        tracing::warn!(%error, "could not remove it");
                    }
                }
                continue;
            }
            match Collection::open(&path, &placement) {
                Ok(c) => {
                    tracing::info!(
                        collection = name,
                        items = c.info().items,
                        "collection opened"
                    );
                    collections.insert(name, Arc::new(c));
                }
                Err(e) => {
                    tracing::error!(collection = name, error = %e, "collection not opened");
                    let (kind, reason) = (e.kind(), e.to_string());
                    unopened.insert(name, Unopened { kind, reason });
                }
            }
        }
        Ok(Self {
            dir,
            placement,
            collections,
            unopened,
            fixing_unopened: Mutex::new(()),
            reembedding: Mutex::new(HashSet::new()),
        })
    }

    /// A collection by name.
    pub fn get(&self, name: &str) -> Result<Arc<Collection>, StorageError> {
        if name.is_empty() {
            return Err(StorageError::InvalidArgument(
                "a collection name is required".to_string(),
            ));
        }
        if let Some(c) = self.collections.get(name) {
            return Ok(Arc::clone(&c));
        }
        Err(self.closed(name))
    }

    /// Why `name` is not an open collection.
    fn closed(&self, name: &str) -> StorageError {
        match self.unopened.get(name) {
            Some(u) => u.error(name),
            None => StorageError::CollectionNotFound(name.to_string()),
        }
    }

    /// Creates a collection. Blocking (fsyncs).
    pub fn create(
        &self,
        request: &CreateCollectionRequest,
    ) -> Result<Arc<Collection>, StorageError> {
        let config = Config::from_request(request)?;
        match self.collections.entry(config.name.clone()) {
            dashmap::Entry::Occupied(_) => Err(StorageError::CollectionExists(config.name)),
            dashmap::Entry::Vacant(_) if self.unopened.contains_key(&config.name) => {
                Err(self.closed(&config.name))
            }
            dashmap::Entry::Vacant(slot) => {
                let path = self.dir.join(&config.name);
                if path.exists() {
                    return Err(StorageError::DirectoryInTheWay(path));
                }
                let collection = Arc::new(Collection::create(&path, config, &self.placement)?);
                slot.insert(Arc::clone(&collection));
                Ok(collection)
            }
        }
    }

    /// Deletes a collection and its files (an unopened one too). Blocking.
    pub fn delete(&self, name: &str) -> Result<(), StorageError> {
        let _fixing = self.fixing_unopened.lock();
        let dir = match self.collections.remove(name) {
            Some((_, collection)) => collection.dir().to_path_buf(),
            None => match self.unopened.remove(name) {
                Some(_) => self.dir.join(name),
                None => return Err(StorageError::CollectionNotFound(name.to_string())),
            },
        };
        // Rename first so a crash mid-removal never leaves a half collection behind.
        let trash = self
            .dir
            .join(format!(".deleted-{name}-{}", std::process::id()));
        std::fs::rename(&dir, &trash)
            .and_then(|_| super::wal::sync_dir(&self.dir))
            .and_then(|_| std::fs::remove_dir_all(&trash))
            .map_err(StorageError::io(format!("deleting {name}")))
    }

    /// Inspects a collection that could not be opened and, when `apply`, keeps its
    /// longest readable history and opens it. An open collection is reported intact.
    /// Blocking.
    pub fn repair(&self, name: &str, apply: bool) -> Result<RepairReport, StorageError> {
        let _fixing = self.fixing_unopened.lock();
        if self.collections.contains_key(name) {
            return Ok(RepairReport::intact());
        }
        if !self.unopened.contains_key(name) {
            return Err(StorageError::CollectionNotFound(name.to_string()));
        }
        let dir = self.dir.join(name);
        let report = super::collection::repair(&dir, apply)?;
        if apply || report.file.is_none() {
            // Repaired, or intact on a second look (the first failure was not damage).
            match Collection::open(&dir, &self.placement) {
                Ok(c) => {
                    tracing::info!(
                        collection = name,
                        items = c.info().items,
                        "collection opened"
                    );
                    self.collections.insert(name.to_string(), Arc::new(c));
                    self.unopened.remove(name);
                }
                Err(e) if apply => return Err(e),
                Err(_) => return Err(self.closed(name)),
            }
        }
        Ok(report)
    }

    /// Flushes every collection's log (at shutdown; every acknowledged write is already
    /// durable, this waits for writes still in progress). Blocking.
    pub fn flush(&self) -> Result<(), StorageError> {
        for collection in self.list() {
            collection.flush().map_err(StorageError::io(format!(
                "flushing collection {}",
                collection.config.name
            )))?;
        }
        Ok(())
    }

    /// Every collection, sorted by name.
    pub fn list(&self) -> Vec<Arc<Collection>> {
        let mut all: Vec<_> = self
            .collections
            .iter()
            .map(|c| Arc::clone(c.value()))
            .collect();
        all.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        all
    }

    /// The collections on disk that could not be opened, by name, each with why.
    pub fn unopened(&self) -> Vec<(String, String)> {
        let mut all: Vec<_> = self
            .unopened
            .iter()
            .map(|u| (u.key().clone(), u.value().error(u.key()).to_string()))
            .collect();
        all.sort();
        all
    }
}
