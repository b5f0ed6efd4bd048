//! Repairing a damaged collection: keep the longest readable history (everything before
//! the damage point [`replay`](super::replay) found), drop the rest, and say beforehand
//! exactly what that drops.

use super::persistence::read_config;
use super::replay::{self, Damage, Lost, Scan};
use crate::retrieval::error::StorageError;
use crate::retrieval::wal;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// What a repair finds, and does or would do.
#[derive(Debug, PartialEq)]
pub struct RepairReport {
    /// The file where the readable history ends; `None` when the collection is intact.
    pub file: Option<PathBuf>,
    /// The byte of `file` where it ends.
    pub offset: u64,
    /// What is wrong there.
    pub problem: String,
    /// What keeping the history before that point drops.
    pub lost: Lost,
    /// The file changes, in words ("cut … to N bytes", "remove …", "create …").
    pub actions: Vec<String>,
    /// Whether the changes were made.
    pub applied: bool,
}

impl RepairReport {
    /// The report on a collection with nothing to repair.
    pub fn intact() -> Self {
        Self {
            file: None,
            offset: 0,
            problem: String::new(),
            lost: Lost::default(),
            actions: Vec::new(),
            applied: false,
        }
    }
}

/// Inspects the collection in `dir` and, when `apply`, cuts its files back to the
/// longest readable history. The collection must not be open.
pub fn repair(dir: &Path, apply: bool) -> Result<RepairReport, StorageError> {
    let config = read_config(dir)?;
    let scanned = replay::scan(dir, &config, |_| {})
        .map_err(StorageError::io(format!("reading {}", dir.display())))?;
    let Scan::Damaged(damage) = scanned else {
        return Ok(RepairReport::intact());
    };
    let Damage {
        file,
        offset,
        problem,
        lost,
        cut,
    } = damage;
    let name = |p: &Path| {
        p.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    let mut actions = Vec::new();
    if let Some((path, len)) = &cut.truncate {
        actions.push(format!("cut {} to {len} bytes", name(path)));
    }
    actions.extend(cut.remove.iter().map(|p| format!("remove {}", name(p))));
    if let Some(path) = &cut.create {
        actions.push(format!("create an empty {}", name(path)));
    }
    if apply {
        let doing =
            |what: &str, path: &PathBuf| StorageError::io(format!("{what} {}", path.display()));
        if let Some((path, len)) = &cut.truncate {
            let cut_file = || -> std::io::Result<()> {
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(*len)?;
                file.sync_all()
            };
            cut_file().map_err(doing("cutting", path))?;
        }
        for path in &cut.remove {
            std::fs::remove_file(path).map_err(doing("removing", path))?;
        }
        if let Some(path) = &cut.create {
            File::create(path)
                .and_then(|f| f.sync_all())
                .map_err(doing("creating", path))?;
        }
        wal::sync_dir(dir).map_err(StorageError::io(format!("syncing {}", dir.display())))?;
        tracing::warn!(
            dir = %dir.display(),
            file = %file.display(),
            offset,
            records_dropped = lost.records,
            bytes_dropped = lost.bytes,
            "collection repaired: history kept up to the damage"
        );
    }
    Ok(RepairReport {
        file: Some(file),
        offset,
        problem,
        lost,
        actions,
        applied: apply,
    })
}
