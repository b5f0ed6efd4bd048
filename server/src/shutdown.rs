//! Graceful shutdown: the operating-system signals that ask for it, and the drain state
//! that long-lived calls watch.
//!
//! The sequence (in [`crate::server::run`]): the first SIGTERM or SIGINT starts the
//! drain: health turns `NOT_SERVING`, the listener closes, every connection gets an
//! HTTP/2 GOAWAY, calls already received run to their answer, and calls that have no
//! natural end (health `Watch`, `EmbedStream`) stop taking new work and close. Once all
//! calls are answered, or when `shutdown_grace_secs` or a second signal cut the wait
//! short, the collections are flushed and the process exits 0.

use tokio::sync::watch;

/// Starts the drain; held by the server.
pub struct Shutdown {
    draining: watch::Sender<bool>,
}

/// The drain state, watched by calls that would otherwise never end.
#[derive(Clone)]
pub struct Drain {
    draining: watch::Receiver<bool>,
}

impl Shutdown {
    /// A server not draining yet.
    pub fn new() -> Self {
        Self {
            draining: watch::channel(false).0,
        }
    }

    /// A handle on the drain state.
    pub fn drain(&self) -> Drain {
        Drain {
            draining: self.draining.subscribe(),
        }
    }

    /// Starts the drain.
    pub fn begin(&self) {
        self.draining.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// Whether the drain has started.
    pub fn started(&self) -> bool {
        *self.draining.borrow()
    }

    /// Completes when the drain starts (at once if it has). Also completes if the
    /// [`Shutdown`] is gone, which only happens as the server stops.
    pub async fn wait(mut self) {
        let _ = self.draining.wait_for(|&draining| draining).await;
    }

    /// The current state, then every change.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.draining.clone()
    }
}

/// SIGTERM and SIGINT, as one sequence of signal names.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal received.
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_is_seen_by_every_handle() {
        let shutdown = Shutdown::new();
        let drain = shutdown.drain();
        assert!(!drain.started());
        let waiter = tokio::spawn(drain.clone().wait());
        shutdown.begin();
        waiter.await.unwrap();
        assert!(drain.started());
        // A handle taken after the start sees it at once.
        shutdown.drain().wait().await;
    }
}
