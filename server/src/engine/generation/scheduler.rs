//! A generator's scheduler: one thread per generator model that owns every call into
//! its plugin's generator (the ABI asks for one caller at a time) and runs continuous
//! batching. Between steps, sequences join (admitted against free KV-cache blocks,
//! refused with a retry hint when the blocks of prompt + `max_new_tokens` are not free)
//! and leave (finished, cancelled, their stream dropped, their deadline passed); each
//! step processes every decoding sequence's last token, then prompts a chunk at a time
//! within `max_step_tokens`, so a long prompt never stalls the others' decoding.

use super::request::GenerationParams;
use crate::engine::deadline::Deadline;
use crate::engine::error::EngineError;
use crate::metrics::GenerationMetrics;
use marquee_plugin_api::host::PluginInstance;
use marquee_plugin_api::{
    Finish, GeneratedToken, SamplingParams, SequenceStart, SequenceStarted, StepOutput,
};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc as async_mpsc, oneshot};

/// A sequence to start, owned.
#[derive(Debug)]
pub struct NewSequence {
    /// The rendered prompt's token ids.
    pub token_ids: Vec<u32>,
    /// Its images, in order.
    pub images: Vec<Vec<u8>>,
    /// The request's parameters.
    pub params: GenerationParams,
    /// When the caller stops waiting.
    pub deadline: Option<Deadline>,
}

/// What the scheduler tells a sequence's stream.
#[derive(Debug)]
pub enum SequenceEvent {
    /// The sequence took part in a step for the first time.
    Scheduled(Instant),
    /// A token was generated.
    Token {
        /// The token and its log-probabilities.
        token: GeneratedToken,
        /// The text it completes.
        text: String,
        /// Set when the sequence ended with it.
        finish: Option<Finish>,
        /// When the step that made it ended.
        at: Instant,
    },
    /// The deadline passed; the sequence was cancelled.
    DeadlinePassed,
    /// The plugin failed; the sequence was cancelled.
    Failed(EngineError),
}

/// A started sequence's handle on the scheduler.
#[derive(Debug)]
pub struct Admitted {
    /// What the plugin reported at admission.
    pub started: SequenceStarted,
    /// Its events.
    pub events: async_mpsc::UnboundedReceiver<SequenceEvent>,
}

enum Command {
    Start {
        sequence: NewSequence,
        reply: oneshot::Sender<Result<Admitted, EngineError>>,
    },
    Cancel(u64),
}

/// A live sequence, as the scheduler tracks it.
struct Live {
    id: u64,
    events: async_mpsc::UnboundedSender<SequenceEvent>,
    deadline: Option<Deadline>,
    max_new_tokens: u32,
    generated: u32,
    scheduled: bool,
    last_token_at: Option<Instant>,
    arrived: Instant,
}

/// How a generator is scheduled (the model's `generation` settings).
#[derive(Clone, Debug)]
pub struct SchedulerLimits {
    /// Most new tokens one step processes (prompt chunks and decodes together).
    pub max_step_tokens: u32,
}

/// The handle the engine holds on a generator's scheduler thread. The thread ends
/// when every handle is gone and its last sequence has ended.
#[derive(Clone)]
pub struct Scheduler {
    name: String,
    commands: mpsc::Sender<Command>,
}

impl Scheduler {
    /// Starts the scheduler thread of generator `name`.
    pub fn start(
        name: &str,
        instance: Arc<PluginInstance>,
        limits: SchedulerLimits,
    ) -> Result<Self, EngineError> {
        let (commands, inbox) = mpsc::channel();
        let worker = Worker {
            name: name.to_string(),
            metrics: GenerationMetrics::new(name),
            instance,
            limits,
            live: Vec::new(),
            step_time: None,
        };
        std::thread::Builder::new()
            .name(format!("generate-{name}"))
            .spawn(move || worker.run(inbox))
            .map_err(|e| EngineError::Internal(format!("starting the scheduler: {e}")))?;
        Ok(Self {
            name: name.to_string(),
            commands,
        })
    }

    /// Admits a sequence; its events follow on the returned receiver.
    pub async fn start_sequence(&self, sequence: NewSequence) -> Result<Admitted, EngineError> {
        let (reply, answer) = oneshot::channel();
        let gone = || EngineError::ShuttingDown(format!("generator {} has stopped", self.name));
        self.commands
            .send(Command::Start { sequence, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Cancels a live sequence (nothing when it already ended).
    pub fn cancel(&self, id: u64) {
        let _ = self.commands.send(Command::Cancel(id));
    }
}

/// The scheduler thread's state.
struct Worker {
    name: String,
    metrics: GenerationMetrics,
    instance: Arc<PluginInstance>,
    limits: SchedulerLimits,
    /// Live sequences, in admission order.
    live: Vec<Live>,
    /// Recent step duration (exponential average), for retry hints.
    step_time: Option<Duration>,
}

fn sampling(params: &GenerationParams) -> SamplingParams {
    SamplingParams {
        max_new_tokens: params.max_new_tokens,
        min_new_tokens: params.min_new_tokens,
        temperature: params.temperature,
        top_k: params.top_k,
        top_p: params.top_p,
        repetition_penalty: params.repetition_penalty,
        seed: params.seed,
        stop_token_ids: params.stop_token_ids.clone(),
        top_logprobs: params.top_logprobs,
    }
}

impl Worker {
    fn run(mut self, inbox: mpsc::Receiver<Command>) {
        loop {
            if self.live.is_empty() {
                self.publish_load();
                match inbox.recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => return,
                }
            }
            while let Ok(command) = inbox.try_recv() {
                self.handle(command);
            }
            self.evict();
            if !self.live.is_empty() {
                self.step();
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Start { sequence, reply } => {
                let admitted = self.admit(sequence);
                if let Err(Ok(admitted)) = reply.send(admitted) {
                    // The caller went away while it was admitted.
                    self.cancel(admitted.started.id);
                }
            }
            Command::Cancel(id) => self.cancel(id),
        }
    }

    fn admit(&mut self, sequence: NewSequence) -> Result<Admitted, EngineError> {
        let arrived = Instant::now();
        if sequence.deadline.is_some_and(|d| d.passed()) {
            return Err(sequence.deadline.expect("checked").exceeded());
        }
        let images: Vec<&[u8]> = sequence.images.iter().map(Vec::as_slice).collect();
        let start = SequenceStart {
            token_ids: &sequence.token_ids,
            images,
            adapter: sequence.params.adapter.as_deref(),
            params: sampling(&sequence.params),
        };
        let started = self.instance.start_sequence(&start).map_err(|e| {
            let error = EngineError::from(e);
            match error {
                EngineError::Exhausted(message) => EngineError::Overloaded {
                    message: format!("generator {}: {message}", self.name),
                    retry_after: self.retry_hint(),
                },
                other => other,
            }
        })?;
        let (events, receiver) = async_mpsc::unbounded_channel();
        self.metrics.count_tokens(started.prompt_tokens as usize, 0);
        self.live.push(Live {
            id: started.id,
            events,
            deadline: sequence.deadline,
            max_new_tokens: sequence.params.max_new_tokens,
            generated: 0,
            scheduled: false,
            last_token_at: None,
            arrived,
        });
        self.publish_load();
        Ok(Admitted {
            started,
            events: receiver,
        })
    }

    /// When blocks are likely free again: the steps until the nearest sequence can
    /// end, at the recent step time.
    fn retry_hint(&self) -> Duration {
        let steps = self
            .live
            .iter()
            .map(|l| l.max_new_tokens.saturating_sub(l.generated))
            .min()
            .unwrap_or(1)
            .max(1);
        let step = self.step_time.unwrap_or(Duration::from_millis(50));
        (step * steps).max(Duration::from_millis(10))
    }

    fn cancel(&mut self, id: u64) {
        if let Some(at) = self.live.iter().position(|l| l.id == id) {
            self.live.remove(at);
            if let Err(e) = self.instance.cancel_sequence(id) {
                tracing::warn!(model = %self.name, sequence = id, error = %e, "cancel failed");
            }
        }
    }

    /// Ends sequences nobody reads any more, or whose deadline passed.
    fn evict(&mut self) {
        let ended: Vec<(u64, bool)> = self
            .live
            .iter()
            .filter_map(|l| {
                if l.events.is_closed() {
                    Some((l.id, false))
                } else if l.deadline.is_some_and(|d| d.passed()) {
                    Some((l.id, true))
                } else {
                    None
                }
            })
            .collect();
        for (id, deadline) in ended {
            if deadline {
                if let Some(l) = self.live.iter().find(|l| l.id == id) {
                    let _ = l.events.send(SequenceEvent::DeadlinePassed);
                }
            }
            self.cancel(id);
        }
    }

    fn step(&mut self) {
        let ids: Vec<u64> = self.live.iter().map(|l| l.id).collect();
        let now = Instant::now();
        for l in self.live.iter_mut().filter(|l| !l.scheduled) {
            l.scheduled = true;
            let _ = l.events.send(SequenceEvent::Scheduled(now));
        }
        let began = Instant::now();
        let outputs = self.instance.step(&ids, self.limits.max_step_tokens);
        let at = Instant::now();
        let took = at - began;
        self.step_time = Some(match self.step_time {
            Some(t) => (t * 3 + took) / 4,
            None => took,
        });
        match outputs {
            Ok(outputs) => self.deliver(outputs, at),
            Err(e) => {
                let (status, message) = (e.status(), e.to_string());
                tracing::error!(model = %self.name, error = %message, "generation step failed");
                for l in std::mem::take(&mut self.live) {
                    let _ = self.instance.cancel_sequence(l.id);
                    let _ = l
                        .events
                        .send(SequenceEvent::Failed(EngineError::from_plugin(
                            status,
                            message.clone(),
                        )));
                }
            }
        }
        self.publish_load();
    }

    fn deliver(&mut self, outputs: Vec<StepOutput>, at: Instant) {
        let mut generated = 0;
        for output in outputs {
            let Some(index) = self.live.iter().position(|l| l.id == output.id) else {
                continue;
            };
            let Some(token) = output.token else {
                continue;
            };
            generated += 1;
            let l = &mut self.live[index];
            match l.last_token_at {
                None => self.metrics.record_first_token(at - l.arrived),
                Some(previous) => self.metrics.record_inter_token(at - previous),
            }
            l.last_token_at = Some(at);
            l.generated += 1;
            let _ = l.events.send(SequenceEvent::Token {
                token,
                text: output.text,
                finish: output.finish,
                at,
            });
            if output.finish.is_some() {
                // The plugin already freed its blocks.
                self.live.remove(index);
            }
        }
        self.metrics.count_tokens(0, generated);
    }

    fn publish_load(&self) {
        let running = self.live.iter().filter(|l| l.generated > 0).count();
        let waiting = self.live.len() - running;
        match self.instance.generator_state() {
            Ok(state) => {
                self.metrics
                    .set_load(state.kv_blocks, state.kv_blocks_free, waiting, running)
            }
            Err(e) => tracing::warn!(model = %self.name, error = %e, "generator state"),
        }
    }
}
