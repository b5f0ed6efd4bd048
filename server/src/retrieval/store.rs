//! All collections of the data directory (`<data_dir>/collections/<name>/`).

use super::collection::{Collection, Config};
use super::gpu::Placement;
use dashmap::DashMap;
use marquee_proto::v1::CreateCollectionRequest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::Status;

/// The collections, opened at start-up.
pub struct Store {
    dir: PathBuf,
    placement: Placement,
    collections: DashMap<String, Arc<Collection>>,
}

impl Store {
    /// Opens every collection under `data_dir/collections`; one that cannot be read is
    /// logged and left out, untouched on disk.
    pub fn open(data_dir: &Path, placement: Placement) -> anyhow::Result<Self> {
        let dir = data_dir.join("collections");
        std::fs::create_dir_all(&dir)?;
        let collections = DashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if !path.is_dir() || name.starts_with('.') {
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
                    tracing::error!(collection = name, error = %format!("{e:#}"), "collection not opened")
                }
            }
        }
        Ok(Self {
            dir,
            placement,
            collections,
        })
    }

    /// A collection by name.
    pub fn get(&self, name: &str) -> Result<Arc<Collection>, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("a collection name is required"));
        }
        self.collections
            .get(name)
            .map(|c| Arc::clone(&c))
            .ok_or_else(|| Status::not_found(format!("collection {name:?} does not exist")))
    }

    /// Creates a collection. Blocking (fsyncs).
    pub fn create(&self, request: &CreateCollectionRequest) -> Result<Arc<Collection>, Status> {
        let config = Config::from_request(request)?;
        match self.collections.entry(config.name.clone()) {
            dashmap::Entry::Occupied(_) => Err(Status::already_exists(format!(
                "collection {} already exists",
                config.name
            ))),
            dashmap::Entry::Vacant(slot) => {
                let path = self.dir.join(&config.name);
                if path.exists() {
                    return Err(Status::already_exists(format!(
                        "{} exists on disk but could not be opened; remove it first",
                        path.display()
                    )));
                }
                let collection = Arc::new(Collection::create(&path, config, &self.placement)?);
                slot.insert(Arc::clone(&collection));
                Ok(collection)
            }
        }
    }

    /// Deletes a collection and its files. Blocking.
    pub fn delete(&self, name: &str) -> Result<(), Status> {
        let (_, collection) = self
            .collections
            .remove(name)
            .ok_or_else(|| Status::not_found(format!("collection {name:?} does not exist")))?;
        // Rename first so a crash mid-removal never leaves a half collection behind.
        let trash = self
            .dir
            .join(format!(".deleted-{name}-{}", std::process::id()));
        std::fs::rename(collection.dir(), &trash)
            .and_then(|_| super::wal::sync_dir(&self.dir))
            .and_then(|_| std::fs::remove_dir_all(&trash))
            .map_err(|e| Status::internal(format!("deleting {name}: {e}")))
    }

    /// Flushes every collection's log (at shutdown; every acknowledged write is already
    /// durable, this waits for writes still in progress). Blocking.
    pub fn flush(&self) -> anyhow::Result<()> {
        for collection in self.list() {
            collection.flush().map_err(|e| {
                anyhow::anyhow!("flushing collection {}: {e}", collection.config.name)
            })?;
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
}
