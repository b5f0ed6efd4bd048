//! Framed, checksummed record files: the write-ahead log and snapshots.
//!
//! A frame is `[len: u32 LE][crc32 of payload: u32 LE][payload: a storage Record]`.
//! Reading stops at the first torn or corrupt frame, which after a crash can only be the
//! tail of the last segment: everything before it was fsynced before being acknowledged.

use marquee_proto::storage::v1::Record;
use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Largest frame accepted when reading (guards against a corrupt length).
const MAX_FRAME: usize = 1 << 30;

/// Writes one framed record.
pub fn write_frame(out: &mut impl Write, record: &Record) -> io::Result<()> {
    let payload = record.encode_to_vec();
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(&crc32fast::hash(&payload).to_le_bytes())?;
    out.write_all(&payload)
}

/// The records of a file and the byte length of its valid prefix.
pub fn read_frames(path: &Path) -> io::Result<(Vec<Record>, u64)> {
    let mut input = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    let mut valid = 0u64;
    loop {
        let mut header = [0u8; 8];
        if read_exact_or_eof(&mut input, &mut header)?.is_none() {
            break;
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            break;
        }
        let mut payload = vec![0u8; len];
        if read_exact_or_eof(&mut input, &mut payload)?.is_none()
            || crc32fast::hash(&payload) != crc
        {
            break;
        }
        match Record::decode(payload.as_slice()) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        valid += 8 + len as u64;
    }
    Ok((records, valid))
}

/// Fills `buf`; `None` when the input ends first (a torn frame or the end).
fn read_exact_or_eof(input: &mut impl Read, buf: &mut [u8]) -> io::Result<Option<()>> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => return Ok(None),
            n => filled += n,
        }
    }
    Ok(Some(()))
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
}

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
        })
    }

    /// Appends records and makes them durable before returning.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        let mut buffer = BufWriter::new(Vec::new());
        for r in records {
            write_frame(&mut buffer, r)?;
        }
        let bytes = buffer.into_inner().map_err(|e| e.into_error())?;
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Flushes the active segment's data and metadata to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Bytes in the active segment.
    pub fn bytes(&self) -> u64 {
        self.bytes
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

    #[test]
    fn torn_and_corrupt_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1, None).unwrap();
        wal.append(&[delete("a"), delete("b")]).unwrap();
        let path = segment_path(dir.path(), 1);
        let good = std::fs::metadata(&path).unwrap().len();
        // A torn frame: header and half a payload.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2, 3, 4, 0xaa]).unwrap();
        let (records, valid) = read_frames(&path).unwrap();
        assert_eq!((records.len(), valid), (2, good));
        // Reopening cuts the tail; appends continue after it.
        let mut wal = Wal::open(dir.path(), 1, Some(valid)).unwrap();
        wal.append(&[delete("c")]).unwrap();
        assert_eq!(read_frames(&path).unwrap().0.len(), 3);
        // A flipped byte inside a payload ends the valid prefix there.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_frames(&path).unwrap().0.len(), 2);
        assert_eq!(numbered_files(dir.path(), "wal-", ".log").unwrap(), vec![1]);
    }
}
