//! Progress on stderr, drawn only when stderr is a terminal and output is not JSON: bars,
//! and streams of request messages that advance a bar as they are sent.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::fmt::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_stream::Stream;

/// A progress bar counting `unit`s (e.g. "items") up to `len`, with the rate per second.
/// Hidden when `hidden` (e.g. with `--json`) or when stderr is not a terminal.
pub fn bar(len: u64, unit: &'static str, hidden: bool) -> ProgressBar {
    let target = if hidden {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:32}] {pos}/{len} {unit} · {rate} · eta {eta}",
    )
    .expect("valid progress template")
    .progress_chars("=> ")
    .with_key("unit", move |_: &ProgressState, w: &mut dyn Write| {
        let _ = w.write_str(unit);
    })
    .with_key("rate", move |state: &ProgressState, w: &mut dyn Write| {
        let _ = write!(w, "{:.0} {unit}/s", state.per_sec());
    });
    ProgressBar::with_draw_target(Some(len), target).with_style(style)
}

/// A stream of request messages that advances `bar` by each message's weight (e.g. its
/// item count) as the transport takes it, and once all are taken turns the bar into a
/// spinner saying it waits for the server.
pub struct Sent<T> {
    messages: std::vec::IntoIter<T>,
    bar: ProgressBar,
    weight: fn(&T) -> u64,
    waiting: String,
}

impl<T> Sent<T> {
    /// Streams `messages`, counting `weight(message)` on `bar`; `waiting` is shown after.
    pub fn new(messages: Vec<T>, bar: ProgressBar, weight: fn(&T) -> u64, waiting: String) -> Self {
        Self {
            messages: messages.into_iter(),
            bar,
            weight,
            waiting,
        }
    }
}

impl<T: Unpin> Stream for Sent<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        match this.messages.next() {
            Some(message) => {
                this.bar.inc((this.weight)(&message));
                Poll::Ready(Some(message))
            }
            None => {
                if !this.waiting.is_empty() {
                    let style = ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}")
                        .expect("valid progress template");
                    this.bar.set_style(style);
                    this.bar.set_message(std::mem::take(&mut this.waiting));
                    if !this.bar.is_hidden() {
                        this.bar.enable_steady_tick(Duration::from_millis(120));
                    }
                }
                Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.messages.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn sent_counts_weights() {
        let bar = bar(6, "items", true);
        let sent = Sent::new(
            vec![vec![1, 2], vec![3, 4, 5, 6]],
            bar.clone(),
            |m| m.len() as u64,
            "waiting".into(),
        );
        let all: Vec<Vec<i32>> = sent.collect().await;
        assert_eq!(all.len(), 2);
        assert_eq!(bar.position(), 6);
        assert_eq!(bar.message(), "waiting");
    }
}
