//! Failure injection for tests: makes the storage layer's writes or fsyncs fail on
//! demand, to test what a failing disk does to the server. Inert unless the server is
//! built with the feature `fault-injection` (the test suite's build, never a release).
//!
//! With that feature and `MARQUEE_FAULT_DIR` set, a storage operation fails while a file named after it
//! exists in that directory (`wal-write`, `wal-sync`); the file holds the error to raise,
//! `ENOSPC` or `EIO` (the default). Likewise a re-embedding waits at a [`Pause`] point
//! while a file named after it exists (`reembed-built`, `reembed-exchanged`), so tests
//! can write, search or kill the server there.

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
        Ok(errno) if errno.trim() == "ENOSPC" => Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "No space left on device (injected)",
        )),
        Ok(_) => Err(io::Error::other("Input/output error (injected)")),
        Err(_) => Ok(()),
    }
}

/// Without the `fault-injection` feature nothing is ever armed.
#[cfg(not(feature = "fault-injection"))]
pub fn check(_: Point) -> io::Result<()> {
    Ok(())
}

/// A point where a re-embedding can be made to wait.
#[derive(Clone, Copy, Debug)]
pub enum Pause {
    /// The new version is built from the collection's contents at the start, before the
    /// writes made since are carried over and the versions switched.
    ReembedBuilt,
    /// The new version's directory has just taken the old one's place on disk (writes
    /// are held off; the old version still serves searches).
    ReembedExchanged,
}

impl Pause {
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    fn file_name(self) -> &'static str {
        match self {
            Pause::ReembedBuilt => "reembed-built",
            Pause::ReembedExchanged => "reembed-exchanged",
        }
    }
}

/// Waits while `point` is armed, logging `paused at <point>` once. Blocking.
#[cfg(feature = "fault-injection")]
pub fn pause(point: Pause) {
    let Some(dir) = std::env::var_os("MARQUEE_FAULT_DIR") else {
        return;
    };
    let file = std::path::Path::new(&dir).join(point.file_name());
    if file.exists() {
        tracing::warn!("paused at {} (fault injection)", point.file_name());
        while file.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Without the `fault-injection` feature nothing is ever armed.
#[cfg(not(feature = "fault-injection"))]
pub fn pause(_: Pause) {}
