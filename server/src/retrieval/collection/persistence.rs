//! A collection on disk, on top of [`wal`](crate::retrieval::wal): its `config.pb`, the
//! write-ahead log and snapshots.
//!
//! Writes go to the write-ahead log (fsynced) before they touch memory, under one
//! lock, so the in-memory order is the log order. When the log grows past
//! [`COMPACT_WAL_BYTES`] or a quarter of the rows are tombstones, the state is rewritten
//! without them into a snapshot and the covered log segments are deleted. Start-up
//! loads the newest snapshot and replays the segments after it.

use super::config::Config;
use super::replay::{self, Scan};
use super::state::{ratings_record, upsert_record, State};
use super::Collection;
use crate::retrieval::error::StorageError;
use crate::retrieval::wal::{self, Wal};
use marquee_proto::storage::v1::{record::Op, Record, SnapshotHeader};
use marquee_proto::v1::CreateCollectionRequest;
use prost::Message;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::Ordering;

/// Log size past which the collection compacts into a snapshot.
pub const COMPACT_WAL_BYTES: u64 = 64 << 20;
/// Items per record when writing snapshots.
pub(super) const SNAPSHOT_CHUNK: usize = 1024;
const CONFIG_FILE: &str = "config.pb";
/// A snapshot being written (renamed into place once complete).
const SNAPSHOT_TMP: &str = "snapshot.tmp";

/// Creates the collection's directory and its `config.pb`, durably.
pub(super) fn create_files(dir: &Path, config: &Config) -> Result<(), StorageError> {
    const CREATING: &str = "creating the collection";
    std::fs::create_dir(dir).map_err(StorageError::io(format!(
        "{CREATING}: creating {}",
        dir.display()
    )))?;
    let write_config = || -> std::io::Result<()> {
        let tmp = dir.join("config.pb.tmp");
        std::fs::write(&tmp, config.to_request().encode_to_vec())?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(CONFIG_FILE))?;
        wal::sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            wal::sync_dir(parent)?;
        }
        Ok(())
    };
    write_config().map_err(StorageError::io(CREATING))
}

/// The I/O error of `doing` something to `path`, for `map_err`.
fn io_on(doing: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    StorageError::io(format!("{doing} {}", path.display()))
}

/// The configuration a collection was created with.
pub(super) fn read_config(dir: &Path) -> Result<Config, StorageError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(io_on("reading", &path))?;
    let request =
        CreateCollectionRequest::decode(bytes.as_slice()).map_err(|e| StorageError::Corrupt {
            file: path,
            problem: e.to_string(),
        })?;
    Config::from_request(&request)
}

/// Rebuilds `state` from the newest snapshot and the log segments after it, and
/// opens the last segment for appending, its torn tail (if any) cut. A damaged history
/// is [`StorageError::Damaged`].
pub(super) fn replay(dir: &Path, config: &Config, state: &mut State) -> Result<Wal, StorageError> {
    let scanned = replay::scan(dir, config, |record| state.apply(config, record))
        .map_err(io_on("reading", dir))?;
    match scanned {
        Scan::Intact(active) => {
            state.build_graph(config);
            Wal::open(dir, active.segment, active.cut_to)
                .map_err(io_on("opening", &wal::segment_path(dir, active.segment)))
        }
        Scan::Damaged(damage) => Err(StorageError::Damaged {
            file: damage.file,
            offset: damage.offset,
            problem: damage.problem,
        }),
    }
}

impl Collection {
    /// Logs then applies one record, compacting afterwards when due.
    ///
    /// A record that cannot be appended and synced is never applied nor acknowledged,
    /// and the collection takes no more writes until the server restarts (a failed fsync
    /// is not retried: the kernel may have dropped the unwritten pages). A failed
    /// compaction loses nothing (the log it would replace stays) and is retried once the
    /// log has grown by [`COMPACT_WAL_BYTES`] again.
    pub(super) fn write(&self, record: Record) -> Result<(), StorageError> {
        let mut wal = self.wal();
        if self.retired.load(Ordering::Acquire) {
            return Err(StorageError::Retired(self.config.name.clone()));
        }
        wal.append(&record).map_err(|error| StorageError::Write {
            collection: self.config.name.clone(),
            error,
        })?;
        self.journal_write(&record);
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.apply(&self.config, record);
        let due = wal.bytes() > COMPACT_WAL_BYTES
            || (state.dead > 1024 && state.dead * 4 > state.row_count());
        let retry_at = &self.compaction_retry_at;
        if due && wal.bytes() >= retry_at.load(Ordering::Relaxed) {
            match self.compact(&mut wal, &mut state) {
                Ok(()) => retry_at.store(0, Ordering::Relaxed),
                Err(error) => {
                    let _ = std::fs::remove_file(self.dir.join(SNAPSHOT_TMP));
                    retry_at.store(wal.bytes() + COMPACT_WAL_BYTES, Ordering::Relaxed);
                    tracing::warn!(
                        collection = self.config.name,
                        %error,
                        "compaction failed; the log is kept and compaction retried later"
                    );
                }
            }
        }
        Ok(())
    }

    /// Rewrites the state without tombstones into a snapshot covering the closed
    /// segment, then deletes older snapshots and covered segments.
    fn compact(&self, wal: &mut Wal, state: &mut State) -> std::io::Result<()> {
        let covered = wal.rotate()?;
        if state.dead > 0 {
            *state = state.compacted(&self.config);
        }
        let tmp = self.dir.join(SNAPSHOT_TMP);
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
                let items = rows.iter().map(|&r| state.item(r, dim)).collect();
                wal::write_frame(&mut out, &upsert_record(items))?;
            }
            for (user, ratings) in &state.ratings {
                wal::write_frame(&mut out, &ratings_record(user.clone(), ratings.clone()))?;
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
}

#[cfg(test)]
mod tests {
    use super::super::{Collection, Config, IndexKind, Query, ScoredRow};
    use crate::retrieval::error::StorageError;
    use crate::retrieval::gpu::Placement;
    use crate::retrieval::graph::HnswParams;
    use crate::retrieval::payload::Payload;
    use crate::retrieval::wal;
    use marquee_kernels::DeviceRequest;
    use marquee_proto::v1::{
        condition::Test, value::Kind, CollectionInfo, Condition, Filter, Metric, Rating,
        StoredItem, Value,
    };
    use std::collections::HashMap;
    use std::io::Write;
    use std::path::{Path, PathBuf};

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

    /// A new collection in a temporary directory (removed when the guard drops).
    fn created(index: IndexKind) -> (tempfile::TempDir, PathBuf, Collection) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        let c = Collection::create(&dir, config(index), &cpu()).unwrap();
        (root, dir, c)
    }

    fn item(i: usize) -> StoredItem {
        let v = [1.0 + (i % 7) as f32, (i % 3) as f32, (i % 5) as f32, 1.0];
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        StoredItem {
            id: format!("i{i:05}"),
            vector: v.iter().map(|x| x / n).collect(),
            payload: Payload::new(),
            text: format!("text {i}"),
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

    fn rating(item_id: &str, rating: f32, timestamp: i64) -> Rating {
        Rating {
            item_id: item_id.into(),
            rating,
            timestamp,
        }
    }

    fn shelf(name: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(name.into())),
        }
    }

    /// Item `i` on one of three shelves (a payload field); `version` tells overwrites
    /// apart by vector and shelf.
    fn shelved(i: usize, version: usize) -> StoredItem {
        StoredItem {
            id: format!("i{i:05}"),
            payload: HashMap::from([(
                "shelf".to_string(),
                shelf(&format!("s{}", (i + version) % 3)),
            )]),
            ..item(i + 100 * version)
        }
    }

    /// Everything a reader can observe: items (with vectors and payloads) and the ids
    /// missing among `ids`, every user's ratings, the counts, and an unfiltered and a
    /// filtered search with payloads.
    type Contents = (
        (Vec<StoredItem>, Vec<String>),
        HashMap<String, Vec<Rating>>,
        CollectionInfo,
        Vec<Vec<ScoredRow>>,
    );

    fn contents(c: &Collection, ids: &[String]) -> Contents {
        let on_shelf = Filter {
            must: vec![Condition {
                field: "shelf".into(),
                test: Some(Test::Equals(shelf("s1"))),
            }],
        };
        let filter = c.compile_filter(Some(&on_shelf)).unwrap();
        let q = [0.9, 0.1, 0.3, 0.2];
        let queries: Vec<Query> = [None, filter.as_ref()]
            .into_iter()
            .map(|filter| Query {
                vector: &q,
                k: 20,
                filter,
                exclude: &[],
                only: None,
                with_payload: true,
            })
            .collect();
        let searches = queries
            .iter()
            .map(|q| c.search_batch(std::slice::from_ref(q)).unwrap().remove(0))
            .collect();
        (c.get(ids, true, true), c.all_ratings(), c.info(), searches)
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("i{i:05}")).collect()
    }

    /// A new exact collection with 50 items written, 10 overwritten (new vectors and
    /// payloads), 10 deleted (one of them absent), and two users' ratings recorded in
    /// three writes.
    fn written() -> (tempfile::TempDir, PathBuf, Collection) {
        let (root, dir, c) = created(IndexKind::Exact);
        c.upsert((0..50).map(|i| shelved(i, 0)).collect()).unwrap();
        c.record_ratings("u1".into(), vec![rating("i00001", 5.0, 1)])
            .unwrap();
        c.upsert((20..30).map(|i| shelved(i, 1)).collect()).unwrap();
        c.delete(ids(40..49).into_iter().chain(ids(70..71)).collect())
            .unwrap();
        c.record_ratings(
            "u2".into(),
            vec![rating("i00002", 3.0, 2), rating("i00041", 4.5, 3)],
        )
        .unwrap();
        c.record_ratings("u1".into(), vec![rating("i00003", 4.0, 4)])
            .unwrap();
        (root, dir, c)
    }

    #[test]
    fn a_collection_reopens_equal_to_the_one_written() {
        let (_root, dir, c) = written();
        let all = ids(0..60);
        let before = contents(&c, &all);
        // What was written, as written: overwrites and deletes included.
        let ((items, missing), ratings, info, searches) = &before;
        assert_eq!((items.len(), missing.len()), (41, 19));
        assert_eq!(items[25], shelved(25, 1));
        assert_eq!(items[5], shelved(5, 0));
        assert_eq!(missing[0], "i00040");
        assert_eq!(
            ratings["u1"],
            vec![rating("i00001", 5.0, 1), rating("i00003", 4.0, 4)]
        );
        assert_eq!((info.items, info.users, info.ratings), (41, 2, 4));
        assert_eq!(searches[0].len(), 20);
        assert!(searches[1]
            .iter()
            .all(|hit| hit.payload.as_ref().unwrap()["shelf"] == shelf("s1")));
        drop(c);
        let reopened = Collection::open(&dir, &cpu()).unwrap();
        assert_eq!(reopened.config, config(IndexKind::Exact));
        assert_eq!(contents(&reopened, &all), before);
        // No compaction ran: everything came back from the one log segment.
        assert_eq!(wal::numbered_files(&dir, "wal-", ".log").unwrap(), vec![1]);
        assert!(wal::numbered_files(&dir, "snapshot-", ".bin")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn replay_reads_a_snapshot_then_the_segments_after_it() {
        let (_root, dir, c) = written();
        // 3000 rows, 2000 of them deleted: compaction into snapshot 1, log in segment 2.
        c.upsert((1000..4000).map(item).collect()).unwrap();
        c.delete(ids(1000..3000)).unwrap();
        assert_eq!(
            wal::numbered_files(&dir, "snapshot-", ".bin").unwrap(),
            vec![1]
        );
        // After the snapshot: overwrite and delete rows it holds, extend a history in it.
        c.upsert((0..5).map(|i| shelved(i, 2)).collect()).unwrap();
        c.delete(ids(5..8)).unwrap();
        c.record_ratings("u2".into(), vec![rating("i00004", 1.0, 5)])
            .unwrap();
        assert_eq!(wal::numbered_files(&dir, "wal-", ".log").unwrap(), vec![2]);
        let all: Vec<String> = ids(0..60).into_iter().chain(ids(2990..3010)).collect();
        let before = contents(&c, &all);
        assert_eq!(before.0 .0[0], shelved(0, 2));
        assert_eq!(before.0 .1[..3], ids(5..8));
        assert_eq!(before.1["u2"].len(), 3);
        drop(c);
        let reopened = Collection::open(&dir, &cpu()).unwrap();
        assert_eq!(contents(&reopened, &all), before);
        // Appends go on in segment 2, and a second reopen sees them too.
        reopened.delete(ids(0..1)).unwrap();
        let again = contents(&reopened, &all);
        drop(reopened);
        assert_eq!(wal::numbered_files(&dir, "wal-", ".log").unwrap(), vec![2]);
        let twice = Collection::open(&dir, &cpu()).unwrap();
        assert_eq!(contents(&twice, &all), again);
        assert!(twice.get(&ids(0..1), false, false).0.is_empty());
    }

    #[test]
    fn a_torn_final_record_is_cut_and_everything_before_it_survives() {
        let (_root, dir, c) = written();
        let all = ids(0..60);
        let before = contents(&c, &all);
        drop(c);
        // A crash mid-append: a frame header announcing 64 bytes, and 3 of them.
        let segment = wal::segment_path(&dir, 1);
        let intact = std::fs::metadata(&segment).unwrap().len();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap();
        file.write_all(&[64, 0, 0, 0, 1, 2, 3, 4, 7, 7, 7]).unwrap();
        drop(file);
        let reopened = Collection::open(&dir, &cpu()).unwrap();
        assert_eq!(contents(&reopened, &all), before);
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), intact);
        // A write after the cut is read back, not hidden behind the torn bytes.
        reopened
            .record_ratings("u3".into(), vec![rating("i00009", 2.0, 9)])
            .unwrap();
        drop(reopened);
        let again = Collection::open(&dir, &cpu()).unwrap();
        assert_eq!(
            again.user_ratings("u3"),
            Some(vec![rating("i00009", 2.0, 9)])
        );
        assert_eq!(again.info().ratings, 5);
    }

    #[test]
    fn a_damaged_snapshot_or_config_is_reported_not_replayed() {
        let (_root, dir, c) = created(IndexKind::Exact);
        c.upsert((0..3000).map(item).collect()).unwrap();
        c.delete(ids(0..2000)).unwrap();
        drop(c);
        let snapshot = wal::snapshot_path(&dir, 1);
        let mut bytes = std::fs::read(&snapshot).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&snapshot, bytes).unwrap();
        let open = |dir: &Path| Collection::open(dir, &cpu()).err().unwrap();
        match open(&dir) {
            StorageError::Damaged {
                file,
                offset,
                problem,
            } => assert_eq!(
                (file, offset, problem.as_str()),
                (
                    snapshot,
                    12,
                    "an incomplete record (a snapshot is written whole)"
                )
            ),
            other => panic!("expected a damaged snapshot, got {other}"),
        }
        std::fs::write(dir.join(super::CONFIG_FILE), b"\xff\xff").unwrap();
        assert!(matches!(open(&dir), StorageError::Corrupt { .. }));
        std::fs::remove_file(dir.join(super::CONFIG_FILE)).unwrap();
        assert!(open(&dir)
            .to_string()
            .starts_with(&format!("reading {}", dir.join("config.pb").display())));
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
            let (_root, dir, c) = created(index);
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
            assert!(reopened.get(&["i00001".into()], false, false).1 == vec!["i00001".to_string()]);
        }
    }
}
