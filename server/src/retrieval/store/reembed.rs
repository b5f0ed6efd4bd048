//! Re-embedding a collection into a new version: its live items' stored texts are
//! embedded with another model while the current version keeps serving; the new
//! version is built in a staging directory (`.reembed-<name>`, never opened as a
//! collection), the writes made meanwhile are carried over, and the two directories
//! are exchanged atomically (Linux `renameat2(RENAME_EXCHANGE)`). A crash before the
//! exchange leaves the old version and a staging directory, after it the new version
//! and the old one under the staging name: start-up removes staging directories, so
//! either way one whole version remains, and the job can be run again.

use super::Store;
use crate::retrieval::collection::{Collection, Contents};
use crate::retrieval::error::StorageError;
use crate::retrieval::faults::{pause, Pause};
use crate::retrieval::wal;
use marquee_proto::storage::v1::{record::Op, Record};
use marquee_proto::v1::StoredItem;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Names of staging directories start with this (a name no collection can have).
pub(super) const STAGING_PREFIX: &str = ".reembed-";
/// Texts per call of the embedding function.
const EMBED_CHUNK: usize = 256;
/// Rounds of carrying writes over before the switch holds writes off for the last ones.
const CATCH_UP_ROUNDS: usize = 3;

/// How far a re-embedding is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Items embedded so far.
    pub done: u64,
    /// Items to embed: those at the start, plus those written since.
    pub total: u64,
}

/// Marks a collection as being re-embedded until dropped.
struct Claim<'a> {
    store: &'a Store,
    name: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.store
            .reembedding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

/// Stops the old version's journal and removes the staging directory when the job
/// ends, whichever way.
struct Cleanup<'a> {
    old: &'a Collection,
    staging: PathBuf,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.old.stop_journal();
        if self.staging.exists() {
            if let Err(error) = std::fs::remove_dir_all(&self.staging) {
                tracing::warn!(
                    dir = %self.staging.display(),
                    %error,
                    "could not remove the re-embedding's directory; start-up will"
                );
            }
        }
    }
}

impl Store {
    /// Re-embeds collection `name` with `model`, whose vectors have `dimension`
    /// components, into a new version that then replaces it; returns the new version.
    /// `embed` embeds texts (raw model output, any number); `progress` hears how far
    /// the job is and may stop it by failing. The new version keeps the metric, index,
    /// payloads and ratings. Every live item must have a stored text, and so must items
    /// written during the job. Blocking.
    pub fn reembed<E: From<StorageError>>(
        &self,
        name: &str,
        model: &str,
        dimension: usize,
        mut embed: impl FnMut(Vec<String>) -> Result<Vec<Vec<f32>>, E>,
        mut progress: impl FnMut(Progress) -> Result<(), E>,
    ) -> Result<Arc<Collection>, E> {
        let old = self.get(name)?;
        let _claim = self.claim(name)?;
        let mut config = old.config.clone();
        config.model = model.to_string();
        config.dimension = dimension;
        let staging = self.dir.join(format!("{STAGING_PREFIX}{name}"));
        remove_dir(&staging)?;
        let cleanup = Cleanup {
            old: &old,
            staging: staging.clone(),
        };
        let Contents { mut items, ratings } = old.start_journal();
        let without: Vec<&StoredItem> = items.iter().filter(|i| i.text.is_empty()).collect();
        if let Some(first) = without.first() {
            return Err(StorageError::WithoutText {
                collection: name.to_string(),
                count: without.len(),
                example: first.id.clone(),
            }
            .into());
        }
        let mut at = Progress {
            done: 0,
            total: items.len() as u64,
        };
        progress(at)?;
        let mut job = Job {
            config: &config,
            embed: &mut embed,
            progress: &mut progress,
            at: &mut at,
        };
        for chunk in items.chunks_mut(EMBED_CHUNK) {
            job.embed_into(chunk)?;
        }
        let mut new = Collection::build(
            &staging,
            config.clone(),
            &self.placement,
            Contents { items, ratings },
        )?;
        pause(Pause::ReembedBuilt);
        for _ in 0..CATCH_UP_ROUNDS {
            let records = old.drain_journal();
            if records.is_empty() {
                break;
            }
            job.carry_over(&new, records)?;
        }
        let _fixing = self.fixing_unopened.lock();
        let current = self.collections.get(name).map(|c| Arc::clone(&c));
        if !current.is_some_and(|c| Arc::ptr_eq(&c, &old)) {
            return Err(StorageError::Replaced(name.to_string()).into());
        }
        let live = self.dir.join(name);
        let new = old.retire_with(|rest| -> Result<Arc<Collection>, E> {
            job.carry_over(&new, rest)?;
            let switching = |e| StorageError::io(format!("switching {name} to its new version"))(e);
            new.flush()
                .and_then(|_| wal::sync_dir(&staging))
                .map_err(switching)?;
            exchange(&staging, &live).map_err(switching)?;
            if let Err(e) = wal::sync_dir(&self.dir) {
                // Not durable: put the old version back rather than serve a new one a
                // crash could undo.
                if let Err(back) = exchange(&staging, &live) {
                    tracing::error!(collection = name, error = %back, "could not undo the switch");
                }
                return Err(switching(e).into());
            }
            pause(Pause::ReembedExchanged);
            new.relocate(&live);
            let new = Arc::new(new);
            self.collections.insert(name.to_string(), Arc::clone(&new));
            Ok(new)
        })?;
        drop(cleanup);
        tracing::info!(
            collection = name,
            model,
            items = new.info().items,
            "collection re-embedded"
        );
        Ok(new)
    }

    /// Marks `name` as being re-embedded, unless it already is.
    fn claim(&self, name: &str) -> Result<Claim<'_>, StorageError> {
        let mut busy = self.reembedding.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(name.to_string()) {
            return Err(StorageError::ReembedInProgress(name.to_string()));
        }
        Ok(Claim {
            store: self,
            name: name.to_string(),
        })
    }
}

/// A job's embedding, with its progress.
struct Job<'a, F, P> {
    config: &'a crate::retrieval::collection::Config,
    embed: &'a mut F,
    progress: &'a mut P,
    at: &'a mut Progress,
}

impl<E, F, P> Job<'_, F, P>
where
    E: From<StorageError>,
    F: FnMut(Vec<String>) -> Result<Vec<Vec<f32>>, E>,
    P: FnMut(Progress) -> Result<(), E>,
{
    /// Embeds the items' texts into their vectors, prepared for the new version.
    fn embed_into(&mut self, items: &mut [StoredItem]) -> Result<(), E> {
        let texts = items.iter().map(|i| i.text.clone()).collect();
        let vectors = (self.embed)(texts)?;
        if vectors.len() != items.len() {
            return Err(StorageError::InvalidArgument(format!(
                "model {} returned {} vectors for {} texts",
                self.config.model,
                vectors.len(),
                items.len()
            ))
            .into());
        }
        for (item, vector) in items.iter_mut().zip(vectors) {
            item.vector = self
                .config
                .prepare_vector(&format!("the embedding of item {:?}", item.id), &vector)
                .map_err(|e| {
                    StorageError::InvalidArgument(format!("model {}: {e}", self.config.model))
                })?;
        }
        self.at.done += items.len() as u64;
        (self.progress)(*self.at)
    }

    /// Writes records logged by the old version to the new one, embedding the texts
    /// of the items they store.
    fn carry_over(&mut self, new: &Collection, records: Vec<Record>) -> Result<(), E> {
        for record in records {
            let record = match record.op {
                Some(Op::Upsert(mut u)) => {
                    if let Some(item) = u.items.iter().find(|i| i.text.is_empty()) {
                        return Err(StorageError::WithoutText {
                            collection: self.config.name.clone(),
                            count: u.items.iter().filter(|i| i.text.is_empty()).count(),
                            example: item.id.clone(),
                        }
                        .into());
                    }
                    self.at.total += u.items.len() as u64;
                    for chunk in u.items.chunks_mut(EMBED_CHUNK) {
                        self.embed_into(chunk)?;
                    }
                    Record {
                        op: Some(Op::Upsert(u)),
                    }
                }
                op => Record { op },
            };
            new.carry(record)?;
        }
        Ok(())
    }
}

/// Removes a leftover directory, if there is one.
pub(super) fn remove_dir(dir: &Path) -> Result<(), StorageError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::io(format!("removing {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Exchanges two directories atomically.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is no atomic exchange of directories: re-embedding is refused.
#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "re-embedding needs Linux (renameat2 with RENAME_EXCHANGE)",
    ))
}

#[cfg(test)]
mod tests {
    use super::exchange;

    #[test]
    #[cfg(target_os = "linux")]
    fn exchange_swaps_two_directories() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        for (dir, file) in [(&a, "from-a"), (&b, "from-b")] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join(file), "").unwrap();
        }
        exchange(&a, &b).unwrap();
        assert!(a.join("from-b").exists() && b.join("from-a").exists());
        assert!(!a.join("from-a").exists() && !b.join("from-b").exists());
        assert!(exchange(&a, &root.path().join("missing")).is_err());
    }
}
