//! Failure injection for tests: makes the storage layer's writes or fsyncs fail on
//! demand, to test what a failing disk does to the server. Inert unless the server is
//! built with the feature `fault-injection` (the test suite's build, never a release).
//!
//! With that feature and `MARQUEE_FAULT_DIR` set, a storage operation fails while a file named after it
//! exists in that directory (`wal-write`, `wal-sync`); the file holds the error to raise,
//! `ENOSPC` or `EIO` (the default).

use std::io;

/// A storage operation that can be made to fail.
#[derive(Clone, Copy, Debug)]
pub enum Point {
    /// Appending a record to the active log segment.
    WalWrite,
    /// Syncing the active log segment after an append.
    WalSync,
}

impl Point {
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    fn file_name(self) -> &'static str {
        match self {
            Point::WalWrite => "wal-write",
            Point::WalSync => "wal-sync",
        }
    }
}

/// Fails with the injected error when `point` is armed.
#[cfg(feature = "fault-injection")]
pub fn check(point: Point) -> io::Result<()> {
    let Some(dir) = std::env::var_os("MARQUEE_FAULT_DIR") else {
        return Ok(());
    };
    match std::fs::read_to_string(std::path::Path::new(&dir).join(point.file_name())) {
        Ok(errno) if errno.trim() == "ENOSPC" => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
        Ok(_) => Err(io::Error::from_raw_os_error(libc::EIO)),
        Err(_) => Ok(()),
    }
}

/// Without the `fault-injection` feature nothing is ever armed.
#[cfg(not(feature = "fault-injection"))]
pub fn check(_: Point) -> io::Result<()> {
    Ok(())
}
