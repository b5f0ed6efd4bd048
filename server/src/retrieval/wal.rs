//! Framed, checksummed record files: the write-ahead log and snapshots.
//!
//! A frame is `[len: u32 LE][crc32 of payload: u32 LE][payload: a storage Record]`, and
//! every append writes exactly one frame, fsynced before the write is acknowledged.
//! So after a crash only the last frame of the last segment can be incomplete, and
//! nothing valid can follow it: a bad frame with a valid frame after it, or a frame whose
//! checksum holds but whose record is unreadable, is damage ([`Ending::Damaged`]), never
//! cut silently; an incomplete or unreadable frame with nothing valid after it is the
//! torn tail of an interrupted append ([`Ending::Torn`]).

use marquee_proto::storage::v1::Record;
use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Largest frame accepted when reading (guards against a corrupt length).
const MAX_FRAME: usize = 1 << 30;
/// Bytes of a frame header.
const HEADER: usize = 8;

/// Writes one framed record.
pub fn write_frame(out: &mut impl Write, record: &Record) -> io::Result<()> {
    out.write_all(&frame(record))
}

/// One framed record, as bytes.
fn frame(record: &Record) -> Vec<u8> {
    let payload = record.encode_to_vec();
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

/// How a file of frames ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Every byte belongs to a valid frame.
    Clean,
    /// From `offset` on, an incomplete or unreadable frame with no valid frame after it:
    /// what an append interrupted by a crash leaves.
    Torn {
        /// Where the torn frame starts (the length of the valid prefix).
        offset: u64,
    },
    /// A bad frame at `offset` that no crash can explain.
    Damaged {
        /// Where the bad frame starts (the length of the valid prefix).
        offset: u64,
        /// What is wrong with it.
        problem: String,
        /// The records still readable after it (lost if the file is cut at `offset`).
        after: Vec<Record>,
    },
}

/// The valid records of a file of frames and how it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    /// The records of the valid prefix, in order.
    pub records: Vec<Record>,
    /// The byte length of the valid prefix.
    pub valid_len: u64,
    /// What follows the valid prefix.
    pub ending: Ending,
}

/// A frame that fails its checks, and whether it could be a torn append.
struct BadFrame {
    problem: String,
    /// The checksum holds, so the frame was written whole: not a torn append.
    whole: bool,
}

/// The frame at the start of `bytes`: its record and length, or what is wrong with it.
/// `accept` checks a decoded record's contents.
fn frame_at(
    bytes: &[u8],
    accept: &impl Fn(&Record) -> Result<(), String>,
) -> Result<(Record, usize), BadFrame> {
    let torn = |problem: String| BadFrame {
        problem,
        whole: false,
    };
    if bytes.len() < HEADER {
        return Err(torn(format!(
            "an incomplete record header ({} of {HEADER} bytes)",
            bytes.len()
        )));
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..HEADER].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_FRAME {
        return Err(torn(format!(
            "a record header with an impossible length {len}"
        )));
    }
    let Some(payload) = bytes.get(HEADER..HEADER + len) else {
        return Err(torn(format!(
            "an incomplete record ({} of {len} bytes)",
            bytes.len() - HEADER
        )));
    };
    if crc32fast::hash(payload) != crc {
        return Err(torn("a record whose checksum does not match".to_string()));
    }
    let whole = |problem: String| BadFrame {
        problem,
        whole: true,
    };
    let record = Record::decode(payload)
        .map_err(|e| whole(format!("a record that does not decode ({e})")))?;
    accept(&record).map_err(|e| whole(format!("an invalid record ({e})")))?;
    Ok((record, HEADER + len))
}

/// Decodes a file of frames, classifying what follows its valid prefix.
pub fn decode_frames(bytes: &[u8], accept: impl Fn(&Record) -> Result<(), String>) -> Frames {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match frame_at(&bytes[at..], &accept) {
            Ok((record, len)) => {
                records.push(record);
                at += len;
            }
            Err(bad) => {
                let after = readable_after(bytes, at + 1, &accept);
                let ending = if bad.whole || !after.is_empty() {
                    Ending::Damaged {
                        offset: at as u64,
                        problem: bad.problem,
                        after,
                    }
                } else {
                    Ending::Torn { offset: at as u64 }
                };
                return Frames {
                    records,
                    valid_len: at as u64,
                    ending,
                };
            }
        }
    }
    Frames {
        records,
        valid_len: at as u64,
        ending: Ending::Clean,
    }
}

/// The valid frames found from `from` on, resynchronising on any byte after a bad one.
fn readable_after(
    bytes: &[u8],
    mut from: usize,
    accept: &impl Fn(&Record) -> Result<(), String>,
) -> Vec<Record> {
    let mut found = Vec::new();
    while from + HEADER <= bytes.len() {
        match frame_at(&bytes[from..], accept) {
            Ok((record, len)) => {
                found.push(record);
                from += len;
            }
            Err(_) => from += 1,
        }
    }
    found
}

/// Reads and decodes a file of frames (see [`decode_frames`]).
pub fn read_frames(
    path: &Path,
    accept: impl Fn(&Record) -> Result<(), String>,
) -> io::Result<Frames> {
    Ok(decode_frames(&std::fs::read(path)?, accept))
}

/// Makes a directory entry change (create, rename, delete) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Path of WAL segment `n`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:010}.log"))
}

/// Path of the snapshot covering segments up to `n`.
pub fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n:010}.bin"))
}

/// Numbered files named `{prefix}{n:010}{suffix}` in `dir`, sorted by number.
pub fn numbered_files(dir: &Path, prefix: &str, suffix: &str) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .and_then(|n| n.parse().ok())
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// The active WAL segment, appended to and fsynced record by record.
pub struct Wal {
    dir: PathBuf,
    segment: u64,
    file: File,
    bytes: u64,
    /// The failure that closed the log to appends, if one did.
    closed_by: Option<String>,
}

/// A failed append.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The record could not be written.
    #[error("writing to the log failed: {0}")]
    Write(io::Error),
    /// The record was written but could not be made durable.
    #[error("syncing the log failed: {0}")]
    Sync(io::Error),
    /// An earlier append failed; the log takes no more until the server restarts.
    #[error("the log takes no writes since a failed append ({0}); restart the server once the disk is healthy")]
    Closed(String),
}

impl WalError {
    /// Whether the disk is full.
    pub fn no_space(&self) -> bool {
        matches!(self, Self::Write(e) | Self::Sync(e) if e.kind() == io::ErrorKind::StorageFull)
    }
}

use super::faults::{check as fault_check, Point as FaultPoint};

impl Wal {
    /// Opens segment `n` for appending, cutting a torn tail at `valid_len` if given.
    pub fn open(dir: &Path, segment: u64, valid_len: Option<u64>) -> io::Result<Self> {
        let path = segment_path(dir, segment);
        let created = !path.exists();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if let Some(len) = valid_len {
            if file.metadata()?.len() != len {
                file.set_len(len)?;
                file.sync_all()?;
            }
        }
        if created {
            sync_dir(dir)?;
        }
        let bytes = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            segment,
            file,
            bytes,
            closed_by: None,
        })
    }

    /// Appends one record and makes it durable before returning. After a failed append
    /// the log takes no more (the file's state is unknown until the next start-up, which
    /// cuts a torn tail): every later append fails with [`WalError::Closed`].
    pub fn append(&mut self, record: &Record) -> Result<(), WalError> {
        if let Some(cause) = &self.closed_by {
            return Err(WalError::Closed(cause.clone()));
        }
        let bytes = frame(record);
        let result = self.write_and_sync(&bytes);
        if let Err(e) = &result {
            self.closed_by = Some(e.to_string());
        }
        result?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn write_and_sync(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        fault_check(FaultPoint::WalWrite)
            .and_then(|_| self.file.write_all(bytes))
            .map_err(WalError::Write)?;
        fault_check(FaultPoint::WalSync)
            .and_then(|_| self.file.sync_data())
            .map_err(WalError::Sync)
    }

    /// Why the log takes no more appends, if it does not.
    pub fn closed_by(&self) -> Option<&str> {
        self.closed_by.as_deref()
    }

    /// Flushes the active segment's data and metadata to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Bytes in the active segment.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records that the log's directory was renamed to `dir` (the open segment stays
    /// open).
    pub fn relocate(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
    }

    /// Starts the next segment; returns the number of the one just closed.
    pub fn rotate(&mut self) -> io::Result<u64> {
        let closed = self.segment;
        *self = Wal::open(&self.dir, closed + 1, None)?;
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_proto::storage::v1::{record::Op, Delete};

    fn delete(id: &str) -> Record {
        Record {
            op: Some(Op::Delete(Delete {
                ids: vec![id.to_string()],
            })),
        }
    }

    fn any(_: &Record) -> Result<(), String> {
        Ok(())
    }

    /// Three framed deletes, and where each frame starts.
    fn three() -> (Vec<u8>, [usize; 3]) {
        let (a, b, c) = (
            frame(&delete("a")),
            frame(&delete("bb")),
            frame(&delete("c")),
        );
        let starts = [0, a.len(), a.len() + b.len()];
        ([a, b, c].concat(), starts)
    }

    #[test]
    fn a_clean_file_decodes_whole() {
        let (bytes, _) = three();
        let frames = decode_frames(&bytes, any);
        assert_eq!(frames.records, vec![delete("a"), delete("bb"), delete("c")]);
        assert_eq!(
            (frames.valid_len, frames.ending),
            (bytes.len() as u64, Ending::Clean)
        );
    }

    #[test]
    fn an_interrupted_append_is_a_torn_tail() {
        let (bytes, starts) = three();
        // Cut anywhere inside the last frame, or zeros where its bytes should be.
        let mut zeroed = bytes.clone();
        zeroed[starts[2] + 3..].fill(0);
        let mut cases: Vec<Vec<u8>> = (starts[2] + 1..bytes.len())
            .map(|end| bytes[..end].to_vec())
            .collect();
        cases.push(zeroed);
        cases.push([&bytes[..starts[2]], &[0u8; 4096][..]].concat());
        for case in cases {
            let frames = decode_frames(&case, any);
            assert_eq!(frames.records.len(), 2);
            assert_eq!(
                frames.ending,
                Ending::Torn {
                    offset: starts[2] as u64
                }
            );
        }
    }

    #[test]
    fn a_bad_record_before_valid_ones_is_damage_with_what_follows_it() {
        let (bytes, starts) = three();
        for flipped in [starts[1], starts[1] + 5, starts[2] - 1] {
            let mut bad = bytes.clone();
            bad[flipped] ^= 0x40;
            let frames = decode_frames(&bad, any);
            assert_eq!(frames.records, vec![delete("a")]);
            let Ending::Damaged {
                offset,
                problem,
                after,
            } = frames.ending
            else {
                panic!("flipping byte {flipped} is damage");
            };
            assert_eq!(offset, starts[1] as u64);
            assert_eq!(after, vec![delete("c")], "byte {flipped}: {problem}");
        }
    }

    #[test]
    fn a_whole_frame_that_does_not_decode_or_is_refused_is_damage() {
        let (bytes, starts) = three();
        let garbage = [0xffu8; 5];
        let undecodable = [
            &(garbage.len() as u32).to_le_bytes()[..],
            &crc32fast::hash(&garbage).to_le_bytes(),
            &garbage,
        ]
        .concat();
        let frames = decode_frames(&[&bytes[..], &undecodable].concat(), any);
        assert!(
            matches!(&frames.ending, Ending::Damaged { offset, after, .. } if *offset == bytes.len() as u64 && after.is_empty()),
            "{:?}",
            frames.ending
        );
        let refuse_c = |r: &Record| match &r.op {
            Some(Op::Delete(d)) if d.ids == ["c"] => Err("no c".to_string()),
            _ => Ok(()),
        };
        let frames = decode_frames(&bytes, refuse_c);
        assert_eq!(
            frames.ending,
            Ending::Damaged {
                offset: starts[2] as u64,
                problem: "an invalid record (no c)".into(),
                after: vec![]
            }
        );
    }

    #[test]
    fn reopening_cuts_a_torn_tail_and_appends_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1, None).unwrap();
        wal.append(&delete("a")).unwrap();
        wal.append(&delete("b")).unwrap();
        let path = segment_path(dir.path(), 1);
        let good = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2, 3, 4, 0xaa]).unwrap();
        let frames = read_frames(&path, any).unwrap();
        assert_eq!(
            (frames.records.len(), frames.valid_len, frames.ending),
            (2, good, Ending::Torn { offset: good })
        );
        let mut wal = Wal::open(dir.path(), 1, Some(good)).unwrap();
        wal.append(&delete("c")).unwrap();
        let frames = read_frames(&path, any).unwrap();
        assert_eq!((frames.records.len(), frames.ending), (3, Ending::Clean));
        assert_eq!(numbered_files(dir.path(), "wal-", ".log").unwrap(), vec![1]);
    }
}
