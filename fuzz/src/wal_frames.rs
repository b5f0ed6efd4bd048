//! Target `wal_frames`: the write-ahead log's frame decoder ([`wal::decode_frames`]), the
//! snapshot and log replay of a collection directory ([`Collection::open`]) and its
//! [`repair`].
//!
//! The input is a 5-byte header, then file contents:
//!
//! - byte 0, bit 0: a snapshot is present; bits 1-2: how many log segments (0, 1, 2; 3
//!   counts as 2); bit 3: the snapshot is numbered 2 instead of 1; bit 4: the first
//!   segment's number skips one (a missing segment); bit 5: an HNSW index instead of
//!   exact; bits 6-7: the metric (cosine, inner product, L2, cosine).
//! - bytes 1-2 and 3-4: little-endian lengths of the snapshot and of the first segment
//!   (clamped to what is left); the rest is the last file (segment or snapshot).
//!
//! Every file's bytes, and the whole rest, are decoded with an accept-all predicate and
//! with the collection's own ([`check_record`]): the decoded prefix (`valid_len`) must
//! decode alone to the same records and end cleanly, the ending's offset must be
//! `valid_len` and inside the input, and the records, framed again with
//! [`wal::write_frame`], must decode back to themselves. The files are then written into
//! a collection directory (a valid `config.pb`, dimension 2) and opened: an opened
//! collection must take a write and reopen with it; a refused one must be
//! [`StorageError::Damaged`] or [`StorageError::Corrupt`], and after [`repair`] it must
//! open.

use marquee_kernels::{DeviceRequest, Precision};
use marquee_proto::storage::v1::Record;
use marquee_proto::v1::Metric;
use marquee_server::retrieval::collection::{check_record, repair, Collection, Config, IndexKind};
use marquee_server::retrieval::error::StorageError;
use marquee_server::retrieval::gpu::Placement;
use marquee_server::retrieval::graph::HnswParams;
use marquee_server::retrieval::wal::{self, Ending, Frames};
use prost::Message;
use std::path::Path;

/// The collections' vector length.
pub const DIMENSION: usize = 2;
/// Bytes before the files' contents.
pub const HEADER: usize = 5;

/// The collection configuration the input's flags select.
pub fn config(flags: u8) -> Config {
    Config {
        name: "c".into(),
        dimension: DIMENSION,
        metric: match flags >> 6 {
            1 => Metric::InnerProduct,
            2 => Metric::L2,
            _ => Metric::Cosine,
        },
        index: if flags & 0x20 != 0 {
            IndexKind::Hnsw(HnswParams {
                m: 4,
                ef_construction: 16,
                ef_search: 16,
            })
        } else {
            IndexKind::Exact
        },
        model: String::new(),
        device: String::new(),
    }
}

/// Search on the CPU.
pub fn cpu() -> Placement {
    Placement {
        default: DeviceRequest::Cpu,
        precision: Precision::F32,
        f16_shortlist: true,
    }
}

/// A record as bytes: records are compared encoded, since a NaN in an accept-all
/// decode would make equal records unequal.
fn encoded(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(Message::encode_to_vec).collect()
}

/// Checks the decoder's invariants on `bytes` with the predicate `accept`.
fn check_frames(bytes: &[u8], accept: &impl Fn(&Record) -> Result<(), String>) {
    let frames = wal::decode_frames(bytes, accept);
    let valid = usize::try_from(frames.valid_len).expect("a length");
    assert!(valid <= bytes.len(), "valid_len beyond the input");
    for record in &frames.records {
        assert!(accept(record).is_ok(), "a refused record decoded");
    }
    match &frames.ending {
        Ending::Clean => assert_eq!(valid, bytes.len(), "a clean ending before the end"),
        Ending::Torn { offset } => {
            assert_eq!(*offset, frames.valid_len, "a torn offset not at valid_len");
            assert!(valid < bytes.len(), "a torn ending at the end");
        }
        Ending::Damaged { offset, after, .. } => {
            assert_eq!(
                *offset, frames.valid_len,
                "a damage offset not at valid_len"
            );
            assert!(valid < bytes.len(), "a damaged ending at the end");
            for record in after {
                assert!(
                    accept(record).is_ok(),
                    "a refused record found after damage"
                );
            }
        }
    }
    // The readable prefix alone is the same records, ending cleanly.
    let prefix = wal::decode_frames(&bytes[..valid], accept);
    assert_eq!(
        prefix.ending,
        Ending::Clean,
        "the valid prefix does not end cleanly"
    );
    assert_eq!(prefix.valid_len, frames.valid_len);
    assert_eq!(encoded(&prefix.records), encoded(&frames.records));
    // Framed again, the records decode back to themselves. A record without an op
    // encodes to nothing, which no frame holds (a zero length is refused): the server
    // never writes one, so those are left out.
    let records: Vec<Record> = frames
        .records
        .into_iter()
        .filter(|r| r.op.is_some())
        .collect();
    let mut framed = Vec::new();
    for record in &records {
        wal::write_frame(&mut framed, record).expect("framing into memory");
    }
    let again: Frames = wal::decode_frames(&framed, accept);
    assert_eq!(
        again.ending,
        Ending::Clean,
        "re-framed records do not decode cleanly"
    );
    assert_eq!(again.valid_len, framed.len() as u64);
    assert_eq!(encoded(&again.records), encoded(&records));
}

/// The input split into its flags and files.
struct Layout<'a> {
    flags: u8,
    snapshot: Option<&'a [u8]>,
    segments: Vec<&'a [u8]>,
}

fn layout(data: &[u8]) -> Option<Layout<'_>> {
    if data.len() < HEADER {
        return None;
    }
    let flags = data[0];
    let mut rest = &data[HEADER..];
    let mut take = |len: usize| {
        let (head, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        head
    };
    let snapshot_len = u16::from_le_bytes([data[1], data[2]]) as usize;
    let first_len = u16::from_le_bytes([data[3], data[4]]) as usize;
    let n_segments = ((flags >> 1) & 3).min(2) as usize;
    let has_snapshot = flags & 1 != 0;
    let mut files = Vec::new();
    let count = n_segments + usize::from(has_snapshot);
    for i in 0..count {
        if i + 1 == count {
            files.push(take(usize::MAX));
        } else if i == 0 && has_snapshot {
            files.push(take(snapshot_len));
        } else {
            files.push(take(first_len));
        }
    }
    let snapshot = has_snapshot.then(|| files.remove(0));
    Some(Layout {
        flags,
        snapshot,
        segments: files,
    })
}

/// A temporary directory, in memory (`/dev/shm`) where there is one: storage fsyncs.
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// Writes the layout's files into `dir`, a collection directory.
fn write_files(dir: &Path, layout: &Layout, config: &Config) {
    std::fs::create_dir(dir).expect("the collection directory");
    std::fs::write(dir.join("config.pb"), config.to_request().encode_to_vec()).expect("config.pb");
    let mut covered = 0;
    if let Some(snapshot) = layout.snapshot {
        covered = if layout.flags & 0x08 != 0 { 2 } else { 1 };
        std::fs::write(wal::snapshot_path(dir, covered), snapshot).expect("the snapshot");
    }
    let first = covered + 1 + u64::from(layout.flags & 0x10 != 0);
    for (i, segment) in layout.segments.iter().enumerate() {
        std::fs::write(wal::segment_path(dir, first + i as u64), segment).expect("a segment");
    }
}

/// Opens the collection in `dir`; on damage, repairs it and opens it again.
fn open_or_repair(dir: &Path) {
    let placement = cpu();
    match Collection::open(dir, &placement) {
        Ok(collection) => {
            let before = collection.info();
            // A write after replay (after any torn tail is cut) is read back.
            collection
                .delete(vec!["fuzz-probe".to_string()])
                .expect("a write to an opened collection");
            drop(collection);
            let reopened = Collection::open(dir, &placement).expect("a written collection reopens");
            assert_eq!(reopened.info(), before, "reopening changed the collection");
        }
        Err(StorageError::Damaged { .. }) => {
            let report = repair(dir, true).expect("repairing a damaged collection");
            assert!(report.applied && report.file.is_some(), "{report:?}");
            if let Err(e) = Collection::open(dir, &placement) {
                panic!("a repaired collection does not open: {e}");
            }
        }
        Err(StorageError::Corrupt { .. }) => {}
        Err(other) => panic!("opening failed with neither damage nor corruption: {other}"),
    }
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let Some(layout) = layout(data) else {
        return;
    };
    let config = config(layout.flags);
    let real = |record: &Record| check_record(&config, record);
    let all = |_: &Record| Ok(());
    let rest = &data[HEADER..];
    for bytes in layout
        .snapshot
        .iter()
        .chain(&layout.segments)
        .chain([&rest])
    {
        check_frames(bytes, &all);
        check_frames(bytes, &real);
    }
    let root = temp_dir();
    let dir = root.path().join("c");
    write_files(&dir, &layout, &config);
    open_or_repair(&dir);
}

/// Seed inputs made by the server's own storage code: a collection written, compacted
/// into a snapshot and written again; its files in the input layout, intact and damaged.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use marquee_proto::v1::{Rating, StoredItem};
    let root = temp_dir();
    let dir = root.path().join("c");
    let c = Collection::create(&dir, config(0), &cpu()).expect("a new collection");
    let item = |i: usize| StoredItem {
        id: format!("i{i}"),
        vector: vec![1.0 + (i % 7) as f32, (i % 3) as f32 + 0.5],
        payload: Default::default(),
        text: format!("text {i}"),
    };
    let prepared = |i: usize| StoredItem {
        vector: c.prepare_vector("v", &item(i).vector).expect("a vector"),
        ..item(i)
    };
    let rating = |id: &str, r: f32| Rating {
        item_id: id.into(),
        rating: r,
        timestamp: 7,
    };
    c.upsert((0..3).map(prepared).collect()).expect("upsert");
    c.record_ratings("u".into(), vec![rating("i1", 4.0)])
        .expect("ratings");
    c.delete(vec!["i2".into()]).expect("delete");
    let segment1 = std::fs::read(wal::segment_path(&dir, 1)).expect("segment 1");
    // Compaction: more than 1024 tombstones, over a quarter of the rows.
    c.upsert((10..1200).map(prepared).collect())
        .expect("upsert");
    c.delete((10..1195).map(|i| format!("i{i}")).collect())
        .expect("delete");
    c.upsert((3..5).map(prepared).collect()).expect("upsert");
    c.record_ratings("v".into(), vec![rating("i3", 1.5)])
        .expect("ratings");
    drop(c);
    let snapshot = std::fs::read(wal::snapshot_path(&dir, 1)).expect("snapshot 1");
    let segment2 = std::fs::read(wal::segment_path(&dir, 2)).expect("segment 2");
    let header = |flags: u8, snapshot_len: usize, first_len: usize| {
        let s = (snapshot_len as u16).to_le_bytes();
        let f = (first_len as u16).to_le_bytes();
        vec![flags, s[0], s[1], f[0], f[1]]
    };
    let mut seeds = Vec::new();
    let mut add = |name: &str, parts: &[&[u8]]| seeds.push((name.to_string(), parts.concat()));
    // One segment; two segments (the second the first again: ratings and deletes repeat).
    add("segment", &[&header(0b010, 0, 0), &segment1]);
    add(
        "two_segments",
        &[&header(0b100, 0, segment1.len()), &segment1, &segment1],
    );
    // The compacted collection: snapshot 1, then segment 2.
    add(
        "snapshot_segment",
        &[&header(0b011, snapshot.len(), 0), &snapshot, &segment2],
    );
    add(
        "snapshot_l2_hnsw",
        &[
            &header(0b1010_0011, snapshot.len(), 0),
            &snapshot,
            &segment2,
        ],
    );
    // Damage: a torn tail, a flipped byte mid-log, a snapshot cut short, a missing
    // segment, a snapshot covering another segment than its number.
    let torn = [&segment1[..], &[64, 0, 0, 0, 1, 2, 3, 4, 7, 7][..]].concat();
    add("torn_tail", &[&header(0b010, 0, 0), &torn]);
    let mut flipped = segment1.clone();
    flipped[10] ^= 0x40;
    add(
        "flipped",
        &[&header(0b100, 0, flipped.len()), &flipped, &segment1],
    );
    let cut = &snapshot[..snapshot.len() - 3];
    add(
        "snapshot_cut",
        &[&header(0b011, cut.len(), 0), cut, &segment2],
    );
    add(
        "missing_segment",
        &[&header(0b1_0011, snapshot.len(), 0), &snapshot, &segment2],
    );
    add(
        "snapshot_misnumbered",
        &[&header(0b1011, snapshot.len(), 0), &snapshot, &segment2],
    );
    seeds
}
