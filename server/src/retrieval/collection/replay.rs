//! Reading a collection's files back in log order: the newest snapshot, then every
//! log segment after it. The files must form one unbroken history: a bad record before
//! the end of the log, a damaged snapshot or a missing segment is [`Damage`], reported
//! with the file and byte where the readable history ends; only the torn tail of the
//! last segment (an append a crash interrupted, never acknowledged) is cut silently.

use super::config::Config;
use crate::retrieval::wal::{self, Ending};
use marquee_proto::storage::v1::{record::Op, Record};
use std::path::{Path, PathBuf};

/// Where appends continue after an intact replay.
#[derive(Debug, PartialEq)]
pub(super) struct Active {
    /// The last segment (created if there is none).
    pub segment: u64,
    /// The length to cut it to, when it ends in a torn tail.
    pub cut_to: Option<u64>,
}

/// Where a collection's readable history ends before its files do.
#[derive(Debug, PartialEq)]
pub(super) struct Damage {
    /// The file at fault (for a missing segment, the path it should have).
    pub file: PathBuf,
    /// The byte where its readable part ends.
    pub offset: u64,
    /// What is wrong there.
    pub problem: String,
    /// What cutting the history at that point drops.
    pub lost: Lost,
    /// What to do to the files to keep the history before the damage.
    pub cut: Cut,
}

/// The records and bytes beyond a damage point.
#[derive(Debug, Default, PartialEq)]
pub struct Lost {
    /// Records still readable past the damage (they would be dropped).
    pub records: u64,
    /// Items those records store.
    pub items_upserted: u64,
    /// Ids those records delete.
    pub ids_deleted: u64,
    /// Ratings those records append.
    pub ratings: u64,
    /// Bytes dropped, readable or not.
    pub bytes: u64,
}

impl Lost {
    fn add(&mut self, record: &Record) {
        self.records += 1;
        match &record.op {
            Some(Op::Upsert(u)) => self.items_upserted += u.items.len() as u64,
            Some(Op::Delete(d)) => self.ids_deleted += d.ids.len() as u64,
            Some(Op::Ratings(r)) => self.ratings += r.ratings.len() as u64,
            Some(Op::SnapshotHeader(_)) | None => {}
        }
    }
}

/// How the files are changed to keep the history before a damage point.
#[derive(Debug, PartialEq)]
pub(super) struct Cut {
    /// A file cut to a length.
    pub truncate: Option<(PathBuf, u64)>,
    /// Files removed whole.
    pub remove: Vec<PathBuf>,
    /// The empty segment appends continue in, when no segment would remain after the
    /// snapshot.
    pub create: Option<PathBuf>,
}

/// What reading the files found.
#[derive(Debug, PartialEq)]
pub(super) enum Scan {
    /// One unbroken history.
    Intact(Active),
    /// A history that ends before the files do.
    Damaged(Damage),
}

/// Reads the files in log order, passing every record of the readable history to
/// `apply`. Only I/O failures are errors; damage is a [`Scan::Damaged`].
pub(super) fn scan(
    dir: &Path,
    config: &Config,
    mut apply: impl FnMut(Record),
) -> std::io::Result<Scan> {
    let accept = |record: &Record| check_record(config, record);
    let segments = wal::numbered_files(dir, "wal-", ".log")?;
    let mut covered = 0;
    if let Some(&n) = wal::numbered_files(dir, "snapshot-", ".bin")?.last() {
        let path = wal::snapshot_path(dir, n);
        let frames = wal::read_frames(&path, accept)?;
        let later: Vec<PathBuf> = segments
            .iter()
            .filter(|&&s| s > n)
            .map(|&s| wal::segment_path(dir, s))
            .collect();
        let header_ok = matches!(
            frames.records.first().and_then(|r| r.op.as_ref()),
            Some(Op::SnapshotHeader(h)) if h.covers_segment == n
        );
        if !header_ok {
            // Nothing of the snapshot can be trusted: the history restarts empty.
            let mut lost = lost_in(&later, config)?;
            frames.records.iter().for_each(|r| lost.add(r));
            lost.bytes += std::fs::metadata(&path)?.len();
            let mut remove = vec![path.clone()];
            remove.extend(later);
            return Ok(Scan::Damaged(Damage {
                file: path,
                offset: 0,
                problem: "the snapshot has no valid header".into(),
                lost,
                cut: Cut {
                    truncate: None,
                    remove,
                    create: None,
                },
            }));
        }
        let (valid_len, ending) = (frames.valid_len, frames.ending);
        frames.records.into_iter().for_each(&mut apply);
        if ending != Ending::Clean {
            let mut lost = lost_in(&later, config)?;
            let (problem, after) = match ending {
                Ending::Damaged { problem, after, .. } => (problem, after),
                _ => (
                    "an incomplete record (a snapshot is written whole)".into(),
                    vec![],
                ),
            };
            after.iter().for_each(|r| lost.add(r));
            lost.bytes += std::fs::metadata(&path)?.len() - valid_len;
            return Ok(Scan::Damaged(Damage {
                file: path.clone(),
                offset: valid_len,
                problem,
                lost,
                cut: Cut {
                    truncate: Some((path, valid_len)),
                    remove: later,
                    create: Some(wal::segment_path(dir, n + 1)),
                },
            }));
        }
        covered = n;
    }
    let later: Vec<u64> = segments.into_iter().filter(|&s| s > covered).collect();
    if later.is_empty() && covered > 0 {
        return Ok(Scan::Damaged(missing(
            dir,
            covered,
            covered + 1,
            &[],
            config,
        )?));
    }
    for (i, &n) in later.iter().enumerate() {
        let expected = covered + 1 + i as u64;
        if n != expected {
            return Ok(Scan::Damaged(missing(
                dir,
                covered,
                expected,
                &later[i..],
                config,
            )?));
        }
        let path = wal::segment_path(dir, n);
        let frames = wal::read_frames(&path, accept)?;
        let valid_len = frames.valid_len;
        frames.records.into_iter().for_each(&mut apply);
        let last = i + 1 == later.len();
        let (problem, after) = match frames.ending {
            Ending::Clean => continue,
            Ending::Torn { offset } if last => {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    "cutting the torn tail of an interrupted append"
                );
                return Ok(Scan::Intact(Active {
                    segment: n,
                    cut_to: Some(offset),
                }));
            }
            Ending::Torn { .. } => (
                "an incomplete record before the end of the log".into(),
                vec![],
            ),
            Ending::Damaged { problem, after, .. } => (problem, after),
        };
        let following: Vec<PathBuf> = later[i + 1..]
            .iter()
            .map(|&s| wal::segment_path(dir, s))
            .collect();
        let mut lost = lost_in(&following, config)?;
        after.iter().for_each(|r| lost.add(r));
        lost.bytes += std::fs::metadata(&path)?.len() - valid_len;
        return Ok(Scan::Damaged(Damage {
            file: path.clone(),
            offset: valid_len,
            problem,
            lost,
            cut: Cut {
                truncate: Some((path, valid_len)),
                remove: following,
                create: None,
            },
        }));
    }
    Ok(Scan::Intact(Active {
        segment: later.last().copied().unwrap_or(covered + 1),
        cut_to: None,
    }))
}

/// Segment `expected` is missing; `following` are the segments after the gap.
fn missing(
    dir: &Path,
    covered: u64,
    expected: u64,
    following: &[u64],
    config: &Config,
) -> std::io::Result<Damage> {
    let remove: Vec<PathBuf> = following
        .iter()
        .map(|&s| wal::segment_path(dir, s))
        .collect();
    let lost = lost_in(&remove, config)?;
    Ok(Damage {
        file: wal::segment_path(dir, expected),
        offset: 0,
        problem: "the log segment is missing".into(),
        lost,
        cut: Cut {
            truncate: None,
            remove,
            create: (expected == covered + 1).then(|| wal::segment_path(dir, expected)),
        },
    })
}

/// Everything readable in `files`, and their bytes.
fn lost_in(files: &[PathBuf], config: &Config) -> std::io::Result<Lost> {
    let mut lost = Lost::default();
    for file in files {
        let frames = wal::read_frames(file, |r| check_record(config, r))?;
        frames.records.iter().for_each(|r| lost.add(r));
        if let Ending::Damaged { after, .. } = &frames.ending {
            after.iter().for_each(|r| lost.add(r));
        }
        lost.bytes += std::fs::metadata(file)?.len();
    }
    Ok(lost)
}

/// Refuses a record that could not have been written for this collection (a vector of
/// another dimension or with non-finite values), so replay never applies one.
pub fn check_record(config: &Config, record: &Record) -> Result<(), String> {
    if let Some(Op::Upsert(u)) = &record.op {
        for item in &u.items {
            if item.vector.len() != config.dimension {
                return Err(format!(
                    "item {:?} has {} dimensions, the collection {}",
                    item.id,
                    item.vector.len(),
                    config.dimension
                ));
            }
            if item.vector.iter().any(|v| !v.is_finite()) {
                return Err(format!("item {:?} has a non-finite component", item.id));
            }
        }
    }
    Ok(())
}
