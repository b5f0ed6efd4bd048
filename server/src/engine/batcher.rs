//! The dynamic batcher: one inference thread per model that merges queued jobs into
//! ragged batches bounded by `max_batch_size` inputs and `max_batch_tokens` of cost
//! (tokens for text; an image or a fusion row costs 1, see [`super::inputs`]), waiting
//! at most `max_queue_delay_us` for a batch to fill. A job larger than a batch is
//! spread over consecutive batches.
//!
//! A failed batch that carried several jobs is run again job by job, so that bad
//! input (a corrupt image, which fails the plugin's whole call) fails only the
//! request that sent it.
//!
//! Before each batch the queue is swept: a job whose caller has gone (cancelled, or cut
//! at its deadline) is dropped unrun, a job whose deadline has passed is answered
//! `DEADLINE_EXCEEDED` unrun, and so is a job not started yet that could not finish by
//! its deadline even at the model's fastest recent rate. Dropped jobs free their queue
//! places at once.

//!
//! A request running alone on an idle model skips the queue: [`Batcher::try_run_alone`]
//! runs it on the calling thread, under the same lock as the inference thread's batches.

use super::deadline::{cannot_finish, Deadline};
use super::error::EngineError;
use super::estimate::Estimate;
use super::executor::Executor;
use super::inputs::Inputs;
use super::queue::{Queue, QueueSlot};
use crate::config::Batching;
use crate::metrics::{self as m, ModelMetrics};
use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The inputs of one request (tokenized texts, encoded images or embeddings to
/// fuse), waiting for inference.
pub struct EmbedJob {
    /// The inputs, in the layout of the model's plugin.
    pub inputs: Inputs,
    /// When the job entered the queue.
    pub enqueued: Instant,
    /// When the caller stops waiting, if it set a deadline.
    pub deadline: Option<Deadline>,
    /// Where the result goes.
    pub reply: oneshot::Sender<Result<JobOutput, EngineError>>,
    /// The job's places in the model's queue, released when it leaves.
    pub slot: QueueSlot,
}

impl EmbedJob {
    /// Answers the caller, giving the job's queue places back first, so that a caller
    /// who sends its next request on hearing back finds them free.
    fn answer(self, result: Result<JobOutput, EngineError>) {
        let EmbedJob { reply, slot, .. } = self;
        drop(slot);
        let _ = reply.send(result);
    }
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
        self.job.inputs.count()
    }
    fn remaining_cost(&self) -> usize {
        self.job.inputs.cost_from(self.next_input)
    }
}

/// Why a queued job leaves without inference.
enum Eviction {
    /// Its caller went away.
    Cancelled,
    /// Its deadline passed, or cannot be met.
    Deadline(EngineError),
}

/// Whether `active` should leave the queue unrun, and why.
fn verdict(model: &str, estimate: &Estimate, active: &Active, now: Instant) -> Option<Eviction> {
    if let Some(deadline) = active.job.deadline {
        if now >= deadline.at {
            return Some(Eviction::Deadline(EngineError::DeadlineExceeded(format!(
                "the deadline of {} ms passed while queued for model {model}; not run",
                deadline.timeout.as_millis()
            ))));
        }
    }
    if active.job.reply.is_closed() {
        return Some(Eviction::Cancelled);
    }
    let deadline = active.job.deadline?;
    if active.next_input > 0 {
        return None;
    }
    let needed = estimate.fastest(active.job.inputs.cost_from(0))?;
    let remaining = deadline.at - now;
    (needed > remaining).then(|| Eviction::Deadline(cannot_finish(model, needed, remaining)))
}

/// Sweeps the queue (see the module documentation).
fn evict(model: &str, estimate: &Estimate, pending: &mut VecDeque<Active>) {
    let now = Instant::now();
    let mut kept = VecDeque::with_capacity(pending.len());
    for active in pending.drain(..) {
        match verdict(model, estimate, &active, now) {
            None => kept.push_back(active),
            Some(Eviction::Cancelled) => {
                m::record_dropped(model, "cancelled", active.inputs() - active.next_input)
            }
            Some(Eviction::Deadline(error)) => {
                m::record_dropped(model, "deadline", active.inputs() - active.next_input);
                active.job.answer(Err(error));
            }
        }
    }
    *pending = kept;
}

/// A model's batching: its queue, its inference thread, and the fast path for a lone
/// request. Dropping it closes the queue: the thread finishes the jobs already queued,
/// then exits and lets the executor go.
pub struct Batcher<E> {
    worker: Arc<Worker<E>>,
    queue: Arc<Queue>,
    jobs: mpsc::Sender<EmbedJob>,
}

/// What the inference thread and the fast path share.
struct Worker<E> {
    model: String,
    executor: Arc<E>,
    limits: Batching,
    estimate: Arc<Estimate>,
    metrics: Arc<ModelMetrics>,
    /// Held while the executor runs: by the inference thread for a batch, or by a
    /// request running alone on an idle model ([`Batcher::try_run_alone`]).
    engine: Mutex<()>,
}

impl<E: Executor> Batcher<E> {
    /// Starts the inference thread of `model` (named `infer-<model>`), batching within
    /// `limits`; batch times go to `estimate` and `metrics`.
    pub fn start(
        model: &str,
        executor: Arc<E>,
        limits: Batching,
        estimate: Arc<Estimate>,
        metrics: Arc<ModelMetrics>,
    ) -> Result<Self, EngineError> {
        let queue = Queue::new(model, &limits, Arc::clone(&estimate), Arc::clone(&metrics));
        // Unbounded as a channel, bounded by the queue places each job holds.
        let (jobs, receiver) = mpsc::channel();
        let worker = Arc::new(Worker {
            model: model.to_string(),
            executor,
            limits,
            estimate,
            metrics,
            engine: Mutex::new(()),
        });
        let thread_worker = Arc::clone(&worker);
        std::thread::Builder::new()
            .name(format!("infer-{model}"))
            .spawn(move || thread_worker.run(receiver))
            .map_err(|e| EngineError::Internal(format!("starting the inference thread: {e}")))?;
        Ok(Self {
            worker,
            queue,
            jobs,
        })
    }

    /// Reserves `inputs` places in the model's queue (see [`Queue::admit`]).
    pub fn admit(&self, inputs: usize) -> Result<QueueSlot, EngineError> {
        self.queue.admit(inputs)
    }

    /// Inputs waiting in the queue (including those being tokenized).
    pub fn queued_inputs(&self) -> usize {
        self.queue.taken()
    }

    /// Runs a request's inputs at once on the calling thread when the model is idle:
    /// nothing else queued or running, no batching delay configured, and the inputs fit
    /// one batch. This saves the two thread hand-offs of the queue (to the inference
    /// thread and back), the largest part of a lone request's overhead. `None`: the model
    /// is busy (or the runtime cannot block a worker); queue the job instead.
    pub fn try_run_alone(&self, inputs: &Inputs) -> Option<Result<JobOutput, EngineError>> {
        let worker = &self.worker;
        let limits = &worker.limits;
        let (count, cost) = (inputs.count(), inputs.cost_from(0));
        let fits = count <= limits.max_batch_size && cost <= limits.max_batch_tokens;
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !fits || !multi_thread || limits.max_queue_delay_us > 0 || self.queued_inputs() != count
        {
            return None;
        }
        let engine = worker.engine.try_lock().ok()?;
        let start = Instant::now();
        let result = tokio::task::block_in_place(|| worker.executor.execute(inputs));
        let elapsed = start.elapsed();
        drop(engine);
        Some(match result {
            Ok(vectors) => {
                worker.estimate.record(elapsed, cost);
                worker.metrics.record_batch(count, cost, elapsed);
                Ok(JobOutput {
                    vectors,
                    queue: Duration::ZERO,
                    inference: elapsed,
                })
            }
            Err(e) => {
                tracing::debug!(model = worker.model, error = %e, "request failed");
                Err(e)
            }
        })
    }

    /// Hands a job (tokenized, or ready as it came) to the inference thread.
    pub fn submit(&self, job: EmbedJob) -> Result<(), EngineError> {
        self.jobs.send(job).map_err(|_| {
            EngineError::ShuttingDown(format!("model {} is shutting down", self.worker.model))
        })
    }
}

impl<E: Executor> Worker<E> {
    /// Runs the batching loop until every job sender is gone and the queue is empty.
    fn run(&self, jobs: Receiver<EmbedJob>) {
        let (model, limits) = (self.model.as_str(), &self.limits);
        let dim = self.executor.output_dim();
        let max_delay = Duration::from_micros(limits.max_queue_delay_us);
        let mut pending: VecDeque<Active> = VecDeque::new();
        let admit = |pending: &mut VecDeque<Active>, job: EmbedJob| {
            let n = job.inputs.count();
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
            let fill_until = pending[0].job.enqueued + max_delay;
            loop {
                let (inputs, tokens) = pending.iter().fold((0, 0), |(n, t), a| {
                    (n + a.inputs() - a.next_input, t + a.remaining_cost())
                });
                if inputs >= limits.max_batch_size || tokens >= limits.max_batch_tokens || !open {
                    break;
                }
                let wait = fill_until.saturating_duration_since(Instant::now());
                match jobs.recv_timeout(wait) {
                    Ok(job) => admit(&mut pending, job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            }
            evict(model, &self.estimate, &mut pending);
            if pending.is_empty() {
                continue;
            }
            let batch = {
                // A request running alone on the idle model finishes first.
                let _engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
                self.run_one_batch(dim, &mut pending)
            };
            while pending.front().is_some_and(|a| a.next_input == a.inputs()) {
                let done = pending.pop_front().expect("front exists");
                done.job.answer(Ok(JobOutput {
                    vectors: done.vectors,
                    queue: done.queue.unwrap_or_default(),
                    inference: done.inference,
                }));
            }
            // Recorded once the callers have their answers, off their critical path.
            if let Some((inputs, cost, elapsed)) = batch {
                self.metrics.record_batch(inputs, cost, elapsed);
            }
        }
    }

    /// Takes the next inputs in queue order that fit one batch (of the kind of the first
    /// job's inputs), runs them, and scatters the vectors back to their jobs. A failed
    /// batch of one job fails that job; of several, each job's part runs again alone.
    /// Returns the batch's inputs, cost and time, for the metrics.
    fn run_one_batch(
        &self,
        dim: usize,
        pending: &mut VecDeque<Active>,
    ) -> Option<(usize, usize, Duration)> {
        let (model, limits) = (self.model.as_str(), &self.limits);
        let start = Instant::now();
        let first = pending.front()?;
        let mut batch = first.job.inputs.empty_like();
        let mut cost = 0;
        // (job index, first input, input count) for every job in the batch.
        let mut parts: Vec<(usize, usize, usize)> = Vec::new();
        for (j, active) in pending.iter_mut().enumerate() {
            let first = active.next_input;
            let mut full = false;
            while active.next_input < active.inputs() {
                let len = active.job.inputs.cost(active.next_input);
                let count = batch.count();
                if count > 0
                    && (count == limits.max_batch_size || cost + len > limits.max_batch_tokens)
                    || !batch.append(&active.job.inputs, active.next_input)
                {
                    full = true;
                    break;
                }
                cost += len;
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
        if parts.is_empty() {
            // Only an input too large for one plugin call (over 4 GiB) gets here.
            if let Some(stuck) = pending.pop_front() {
                stuck.job.answer(Err(EngineError::Invalid(
                    "an input is too large for one plugin call".into(),
                )));
            }
            return None;
        }
        let result = self.executor.execute(&batch);
        let elapsed = start.elapsed();
        match result {
            Ok(vectors) => {
                self.estimate.record(elapsed, cost);
                let mut row = 0;
                for &(j, first, count) in &parts {
                    let active = &mut pending[j];
                    active.vectors[first * dim..(first + count) * dim]
                        .copy_from_slice(&vectors[row * dim..(row + count) * dim]);
                    active.inference += elapsed;
                    row += count;
                }
            }
            Err(e) if parts.len() == 1 => {
                tracing::debug!(model, error = %e, "batch failed");
                let (j, first, _) = parts[0];
                if let Some(failed) = pending.remove(j) {
                    failed.job.answer(Err(job_error(e, first)));
                }
            }
            Err(e) => {
                tracing::debug!(model, error = %e, jobs = parts.len(), "batch failed; running its jobs one by one");
                let mut failed = Vec::new();
                for &(j, first, count) in &parts {
                    let active = &mut pending[j];
                    let mut alone = active.job.inputs.empty_like();
                    for i in first..first + count {
                        alone.append(&active.job.inputs, i);
                    }
                    let started = Instant::now();
                    match self.executor.execute(&alone) {
                        Ok(vectors) => {
                            active.vectors[first * dim..(first + count) * dim]
                                .copy_from_slice(&vectors);
                            active.inference += elapsed + started.elapsed();
                        }
                        Err(e) => failed.push((j, job_error(e, first))),
                    }
                }
                // Remove the failed jobs, last index first.
                for (j, error) in failed.into_iter().rev() {
                    if let Some(active) = pending.remove(j) {
                        active.job.answer(Err(error));
                    }
                }
            }
        }
        Some((batch.count(), cost, elapsed))
    }
}

/// The error of a job whose inputs from `first` on failed in an executor call: the
/// plugin's message numbers inputs within the call, so for a job spread over several
/// batches it says where the call started.
fn job_error(error: EngineError, first: usize) -> EngineError {
    if first == 0 {
        return error;
    }
    error.map_message(|m| format!("{m} (inputs numbered from input {first} of the request)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token id that fails any batch holding it, as a corrupt image fails the
    /// plugin's whole call.
    const BAD: u32 = 666;

    /// Embeds each input as `[its first token id, its token count]`, and logs every
    /// batch it runs as (inputs, cost).
    #[derive(Default)]
    struct FakeExecutor {
        batches: Mutex<Vec<(usize, usize)>>,
    }

    impl Executor for FakeExecutor {
        fn output_dim(&self) -> usize {
            2
        }

        fn execute(&self, batch: &Inputs) -> Result<Vec<f32>, EngineError> {
            let Inputs::Tokens { ids, offsets } = batch else {
                panic!("the fake executor takes tokens")
            };
            self.batches
                .lock()
                .unwrap()
                .push((batch.count(), batch.cost_from(0)));
            if let Some(bad) = offsets.windows(2).position(|w| ids[w[0]] == BAD) {
                return Err(EngineError::Invalid(format!("input {bad}: bad token")));
            }
            Ok(offsets
                .windows(2)
                .flat_map(|w| [ids[w[0]] as f32, (w[1] - w[0]) as f32])
                .collect())
        }
    }

    fn limits(max_batch_size: usize, max_batch_tokens: usize) -> Batching {
        Batching {
            max_batch_size,
            max_batch_tokens,
            // Long enough that only the limits (or the closed channel) end a batch.
            max_queue_delay_us: 10_000_000,
            max_queue_inputs: 100,
        }
    }

    /// A worker with a fake executor, and its model's queue.
    fn worker(limits: Batching) -> (Worker<FakeExecutor>, Arc<Queue>) {
        let estimate = Arc::new(Estimate::default());
        let metrics = Arc::new(ModelMetrics::new("m"));
        let queue = Queue::new("m", &limits, Arc::clone(&estimate), Arc::clone(&metrics));
        let worker = Worker {
            model: "m".into(),
            executor: Arc::new(FakeExecutor::default()),
            limits,
            estimate,
            metrics,
            engine: Mutex::new(()),
        };
        (worker, queue)
    }

    type Reply = oneshot::Receiver<Result<JobOutput, EngineError>>;

    /// A job of inputs given as (first token id, token count), holding its queue places.
    fn job(
        queue: &Arc<Queue>,
        inputs: &[(u32, usize)],
        deadline: Option<Deadline>,
    ) -> (EmbedJob, Reply) {
        let mut ids = Vec::new();
        let mut offsets = vec![0];
        for &(first, len) in inputs {
            ids.push(first);
            ids.resize(ids.len() + len - 1, 0);
            offsets.push(ids.len());
        }
        let (reply, result) = oneshot::channel();
        let job = EmbedJob {
            inputs: Inputs::Tokens { ids, offsets },
            enqueued: Instant::now(),
            deadline,
            reply,
            slot: queue.admit(inputs.len()).unwrap(),
        };
        (job, result)
    }

    /// Queues `jobs`, closes the queue, and runs the worker until it is empty.
    fn run_all(worker: &Worker<FakeExecutor>, jobs: Vec<EmbedJob>) {
        let (sender, receiver) = mpsc::channel();
        for job in jobs {
            sender.send(job).unwrap();
        }
        drop(sender);
        worker.run(receiver);
    }

    fn vectors(reply: Reply) -> Vec<f32> {
        reply.blocking_recv().unwrap().unwrap().vectors
    }

    fn error(reply: Reply) -> EngineError {
        match reply.blocking_recv().unwrap() {
            Ok(_) => panic!("the job succeeded"),
            Err(e) => e,
        }
    }

    #[test]
    fn batches_fill_up_to_the_token_and_size_limits_and_jobs_spread_over_batches() {
        let (worker, queue) = worker(limits(3, 10));
        let (a, a_reply) = job(&queue, &[(10, 4), (11, 4)], None);
        let (b, b_reply) = job(&queue, &[(20, 3), (21, 1), (22, 1), (23, 1)], None);
        assert_eq!(queue.taken(), 6);
        run_all(&worker, vec![a, b]);
        // 4 + 4 tokens, then B's first 3 tokens would pass 10: full by tokens. Then
        // three of B's inputs: full by size. Then B's last.
        assert_eq!(
            *worker.executor.batches.lock().unwrap(),
            [(2, 8), (3, 5), (1, 1)]
        );
        assert_eq!(vectors(a_reply), [10.0, 4.0, 11.0, 4.0]);
        assert_eq!(
            vectors(b_reply),
            [20.0, 3.0, 21.0, 1.0, 22.0, 1.0, 23.0, 1.0]
        );
        assert_eq!(queue.taken(), 0);
    }

    #[test]
    fn expired_cancelled_and_hopeless_jobs_leave_the_queue_unrun() {
        let (worker, queue) = worker(limits(8, 100));
        // One token took 1 s lately: a 5-token job cannot finish within 2 s.
        worker.estimate.record(Duration::from_secs(1), 1);
        let (expired, expired_reply) =
            job(&queue, &[(30, 2)], Some(Deadline::after(Duration::ZERO)));
        let (cancelled, cancelled_reply) = job(&queue, &[(31, 2)], None);
        drop(cancelled_reply);
        let (hopeless, hopeless_reply) = job(
            &queue,
            &[(32, 5)],
            Some(Deadline::after(Duration::from_secs(2))),
        );
        let (kept, kept_reply) = job(&queue, &[(33, 1)], None);
        assert_eq!(queue.taken(), 4);
        run_all(&worker, vec![expired, cancelled, hopeless, kept]);
        assert_eq!(*worker.executor.batches.lock().unwrap(), [(1, 1)]);
        assert_eq!(vectors(kept_reply), [33.0, 1.0]);
        let e = error(expired_reply);
        assert!(
            matches!(&e, EngineError::DeadlineExceeded(m)
                if m == "the deadline of 0 ms passed while queued for model m; not run"),
            "{e}"
        );
        let e = error(hopeless_reply);
        assert!(
            matches!(&e, EngineError::DeadlineExceeded(m)
                if m.starts_with("model m needs at least 5000 ms for this request")),
            "{e}"
        );
        assert_eq!(queue.taken(), 0);
    }

    #[test]
    fn a_failed_batch_of_several_jobs_runs_again_job_by_job() {
        let (worker, queue) = worker(limits(8, 100));
        let (good, good_reply) = job(&queue, &[(40, 2)], None);
        let (bad, bad_reply) = job(&queue, &[(41, 1), (BAD, 1)], None);
        let (also_good, also_good_reply) = job(&queue, &[(42, 3)], None);
        run_all(&worker, vec![good, bad, also_good]);
        // The shared batch, then each job's part alone.
        assert_eq!(
            *worker.executor.batches.lock().unwrap(),
            [(4, 7), (1, 2), (2, 2), (1, 3)]
        );
        assert_eq!(vectors(good_reply), [40.0, 2.0]);
        assert_eq!(vectors(also_good_reply), [42.0, 3.0]);
        let e = error(bad_reply);
        assert!(
            matches!(&e, EngineError::Invalid(m) if m == "input 1: bad token"),
            "{e}"
        );
        assert_eq!(queue.taken(), 0);
    }

    #[test]
    fn a_failure_in_a_later_batch_of_a_job_says_where_the_batch_started() {
        let (worker, queue) = worker(limits(2, 100));
        let (spread, reply) = job(&queue, &[(50, 1), (51, 1), (BAD, 1)], None);
        run_all(&worker, vec![spread]);
        assert_eq!(*worker.executor.batches.lock().unwrap(), [(2, 2), (1, 1)]);
        let e = error(reply);
        assert!(
            matches!(&e, EngineError::Invalid(m)
                if m == "input 0: bad token (inputs numbered from input 2 of the request)"),
            "{e}"
        );
        assert_eq!(queue.taken(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_request_runs_on_the_caller_and_others_queue() {
        let batching = Batching {
            max_queue_delay_us: 0,
            ..limits(4, 100)
        };
        let estimate = Arc::new(Estimate::default());
        let metrics = Arc::new(ModelMetrics::new("m"));
        let executor = Arc::new(FakeExecutor::default());
        let batcher =
            Batcher::start("m", Arc::clone(&executor), batching, estimate, metrics).unwrap();
        let (lone, _) = job(&batcher.queue, &[(60, 2)], None);
        let output = batcher.try_run_alone(&lone.inputs).unwrap().unwrap();
        assert_eq!(output.vectors, [60.0, 2.0]);
        assert_eq!(output.queue, Duration::ZERO);
        // Another request holds places: this one queues.
        let (queued, reply) = job(&batcher.queue, &[(61, 1)], None);
        assert!(batcher.try_run_alone(&queued.inputs).is_none());
        drop(lone);
        batcher.submit(queued).unwrap();
        assert_eq!(reply.await.unwrap().unwrap().vectors, [61.0, 1.0]);
        assert_eq!(*executor.batches.lock().unwrap(), [(1, 2), (1, 1)]);
        assert_eq!(batcher.queued_inputs(), 0);
    }
}
