//! The dynamic batcher: one inference thread per model that merges queued jobs into
//! ragged batches bounded by `max_batch_size` inputs and `max_batch_tokens` tokens,
//! waiting at most `max_queue_delay_us` for a batch to fill. A job larger than a batch
//! is spread over consecutive batches; jobs whose caller has gone are dropped unrun.

use crate::config::Batching;
use crate::metrics as m;
use marquee_plugin_api::host::PluginInstance;
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// Tokenized inputs of one request, waiting for inference.
pub struct EmbedJob {
    /// Token ids of every input, back to back.
    pub ids: Vec<u32>,
    /// Input boundaries in `ids` (`n + 1` entries, starting at 0).
    pub offsets: Vec<usize>,
    /// When the job entered the queue.
    pub enqueued: Instant,
    /// Where the result goes.
    pub reply: oneshot::Sender<Result<JobOutput, tonic::Status>>,
    /// The job's places in the model's queue, released when it leaves.
    pub permit: OwnedSemaphorePermit,
}

/// A finished job.
pub struct JobOutput {
    /// `n × dim` values in input order.
    pub vectors: Vec<f32>,
    /// Time from enqueue to the start of the job's first batch.
    pub queue: Duration,
    /// Time spent in the batches that carried the job.
    pub inference: Duration,
}

/// A job with the progress of its inputs through batches.
struct Active {
    job: EmbedJob,
    next_input: usize,
    vectors: Vec<f32>,
    queue: Option<Duration>,
    inference: Duration,
}

impl Active {
    fn inputs(&self) -> usize {
        self.job.offsets.len() - 1
    }
    fn input_len(&self, i: usize) -> usize {
        self.job.offsets[i + 1] - self.job.offsets[i]
    }
    fn remaining_tokens(&self) -> usize {
        self.job.ids.len() - self.job.offsets[self.next_input]
    }
}

/// Runs the batching loop until every job sender is gone and the queue is empty.
pub fn run(
    model: String,
    instance: Arc<PluginInstance>,
    limits: Batching,
    jobs: Receiver<EmbedJob>,
) {
    let dim = instance.info().output_dim as usize;
    let max_delay = Duration::from_micros(limits.max_queue_delay_us);
    let mut pending: VecDeque<Active> = VecDeque::new();
    let admit = |pending: &mut VecDeque<Active>, job: EmbedJob| {
        let n = job.offsets.len() - 1;
        pending.push_back(Active {
            vectors: vec![0.0; n * dim],
            job,
            next_input: 0,
            queue: None,
            inference: Duration::ZERO,
        });
    };
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match jobs.recv() {
                Ok(job) => admit(&mut pending, job),
                Err(_) => break,
            }
        }
        // Wait until a full batch is queued or the oldest job's delay has passed.
        let deadline = pending[0].job.enqueued + max_delay;
        loop {
            let (inputs, tokens) = pending.iter().fold((0, 0), |(n, t), a| {
                (n + a.inputs() - a.next_input, t + a.remaining_tokens())
            });
            if inputs >= limits.max_batch_size || tokens >= limits.max_batch_tokens || !open {
                break;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(wait) {
                Ok(job) => admit(&mut pending, job),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        pending.retain(|a| !a.job.reply.is_closed());
        if pending.is_empty() {
            continue;
        }
        run_one_batch(&model, &instance, &limits, dim, &mut pending);
        while pending.front().is_some_and(|a| a.next_input == a.inputs()) {
            let done = pending.pop_front().expect("front exists");
            let _ = done.job.reply.send(Ok(JobOutput {
                vectors: done.vectors,
                queue: done.queue.unwrap_or_default(),
                inference: done.inference,
            }));
        }
    }
}

/// Takes the next inputs in queue order that fit one batch, runs them, and scatters
/// the vectors back to their jobs. A failed batch fails every job it touched.
fn run_one_batch(
    model: &str,
    instance: &PluginInstance,
    limits: &Batching,
    dim: usize,
    pending: &mut VecDeque<Active>,
) {
    let start = Instant::now();
    let mut ids = Vec::new();
    let mut offsets = vec![0u32];
    // (job index, first input, input count) for every job in the batch.
    let mut parts: Vec<(usize, usize, usize)> = Vec::new();
    for (j, active) in pending.iter_mut().enumerate() {
        let first = active.next_input;
        let mut full = false;
        while active.next_input < active.inputs() {
            let len = active.input_len(active.next_input);
            let count = offsets.len() - 1;
            if count > 0
                && (count == limits.max_batch_size || ids.len() + len > limits.max_batch_tokens)
            {
                full = true;
                break;
            }
            let o = active.job.offsets[active.next_input];
            ids.extend_from_slice(&active.job.ids[o..o + len]);
            offsets.push(ids.len() as u32);
            active.next_input += 1;
        }
        if active.next_input > first {
            parts.push((j, first, active.next_input - first));
            active
                .queue
                .get_or_insert_with(|| start - active.job.enqueued);
        }
        if full {
            break;
        }
    }
    let result = instance.embed_tokens(&ids, &offsets);
    let elapsed = start.elapsed();
    m::record_batch(model, offsets.len() - 1, ids.len(), elapsed);
    match result {
        Ok(vectors) => {
            let mut row = 0;
            for &(j, first, count) in &parts {
                let active = &mut pending[j];
                active.vectors[first * dim..(first + count) * dim]
                    .copy_from_slice(&vectors[row * dim..(row + count) * dim]);
                active.inference += elapsed;
                row += count;
            }
        }
        Err(e) => {
            let status = crate::status::from_host(&e);
            tracing::error!(model, error = %e, "batch failed");
            // Fail and remove every job of the batch, last index first.
            for &(j, _, _) in parts.iter().rev() {
                if let Some(failed) = pending.remove(j) {
                    let _ = failed.job.reply.send(Err(status.clone()));
                }
            }
        }
    }
}
