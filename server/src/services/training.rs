//! `marquee.v1.TrainingService`: fine-tuning a served encoder on a query set against a
//! stored collection ([`crate::training`]), progress streamed back, the result served
//! under its new name. A query set holds at most `limits.max_eval_queries` queries and
//! `limits.max_eval_bytes` bytes; a job stops between steps once its client has gone.

use crate::config::{Batching, GenerationSettings, Training};
use crate::engine::deadline::Deadline;
use crate::engine::registry::Registry;
use crate::names::is_plain_name;
use crate::retrieval::store::Store;
use crate::services::deadline::{Bounded, DeadlineOf};
use crate::services::observed;
use crate::training::{self, FineTuneSpec, JobEvent, JobInputs, LabeledQuery, TrainingError};
use marquee_proto::v1::fine_tune_event::Event;
use marquee_proto::v1::training_service_server::TrainingService;
use marquee_proto::v1::{
    eval_query, EpochReport, EvalQuery, FineTuneEvent, FineTuneRequest, FineTuneResult, MetricSet,
    TrainingStep,
};
use marquee_training::ScheduleKind;
use prost::Message;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// The plugin whose models the trainer can read and write.
const TRAINABLE_PLUGIN: &str = "bert-text";

impl From<TrainingError> for Status {
    fn from(e: TrainingError) -> Self {
        match e {
            TrainingError::InvalidArgument(m) => Status::invalid_argument(m),
            TrainingError::FailedPrecondition(m) => Status::failed_precondition(m),
            TrainingError::AlreadyExists(m) => Status::already_exists(m),
            TrainingError::Cancelled => Status::cancelled("fine-tuning cancelled"),
            TrainingError::Failed(m) => Status::internal(m),
        }
    }
}

/// The training service.
#[derive(Clone)]
pub struct TrainingApi {
    registry: Arc<Registry>,
    store: Arc<Store>,
    data_dir: PathBuf,
    settings: Training,
    batching: Batching,
    generation: GenerationSettings,
    max_queries: usize,
    max_bytes: usize,
    /// Base models with a job running.
    busy: Arc<Mutex<HashSet<String>>>,
}

/// Holds a base model's place in [`TrainingApi::busy`] while its job runs.
struct BusyGuard {
    busy: Arc<Mutex<HashSet<String>>>,
    model: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.model);
    }
}

type Events = mpsc::Sender<Result<FineTuneEvent, Status>>;

fn metric_set(metrics: &training::Metrics) -> MetricSet {
    MetricSet {
        values: metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    }
}

fn labeled(what: &str, queries: Vec<EvalQuery>) -> Result<Vec<LabeledQuery>, Status> {
    queries
        .into_iter()
        .map(|q| match q.query {
            Some(eval_query::Query::Text(text)) => Ok(LabeledQuery {
                id: q.query_id,
                text,
                relevant: q.relevant,
            }),
            _ => Err(Status::invalid_argument(format!(
                "{what} query {:?} needs a text (vectors cannot be trained on)",
                q.query_id
            ))),
        })
        .collect()
}

/// The settings of the first message, defaults filled in (the queries come later).
fn spec_of(first: &FineTuneRequest, threads: usize) -> Result<FineTuneSpec, Status> {
    let schedule = match first.schedule.as_str() {
        "" | "linear" => ScheduleKind::Linear,
        "cosine" => ScheduleKind::Cosine,
        "constant" => ScheduleKind::Constant,
        other => {
            return Err(Status::invalid_argument(format!(
                "schedule {other:?} is not linear, cosine or constant"
            )))
        }
    };
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(Status::invalid_argument(format!("{name} must be positive")))
        }
    };
    let learning_rate = positive("learning_rate", first.learning_rate.unwrap_or(2e-5))?;
    let scale = positive("scale", first.scale.unwrap_or(20.0))?;
    let weight_decay = first.weight_decay.unwrap_or(0.01);
    let warmup_ratio = first.warmup_ratio.unwrap_or(0.1);
    let max_grad_norm = first.max_grad_norm.unwrap_or(1.0);
    let valid = weight_decay.is_finite()
        && weight_decay >= 0.0
        && (0.0..=1.0).contains(&warmup_ratio)
        && max_grad_norm.is_finite()
        && max_grad_norm >= 0.0;
    if !valid {
        return Err(Status::invalid_argument(
            "weight_decay and max_grad_norm must be ≥ 0, warmup_ratio within [0, 1]",
        ));
    }
    Ok(FineTuneSpec {
        collection: first.collection.clone(),
        base_model: first.base_model.clone(),
        output_model: first.output_model.clone(),
        train: Vec::new(),
        validation: Vec::new(),
        epochs: first.epochs.unwrap_or(1) as usize,
        batch_size: first.batch_size.unwrap_or(32) as usize,
        learning_rate,
        weight_decay,
        schedule,
        warmup_ratio,
        max_grad_norm: (max_grad_norm > 0.0).then_some(max_grad_norm),
        scale,
        hard_negatives: first.hard_negatives as usize,
        projection_dim: (first.projection_dim > 0).then_some(first.projection_dim as usize),
        seed: first.seed.unwrap_or(42),
        patience: first.patience as usize,
        threads,
    })
}

impl TrainingApi {
    /// A service training into `data_dir/finetuned/` and serving results with the
    /// default batching and generation settings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        registry: Arc<Registry>,
        store: Arc<Store>,
        data_dir: PathBuf,
        settings: Training,
        batching: Batching,
        generation: GenerationSettings,
        max_queries: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            registry,
            store,
            data_dir,
            settings,
            batching,
            generation,
            max_queries,
            max_bytes,
            busy: Arc::default(),
        }
    }

    /// Reads the rest of the request stream into the spec's query sets, within the limits.
    async fn read_queries(
        &self,
        stream: &mut Streaming<FineTuneRequest>,
        first: FineTuneRequest,
        spec: &mut FineTuneSpec,
    ) -> Result<(), Status> {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(message) = next {
            bytes += message.encoded_len();
            spec.train.extend(labeled("training", message.train)?);
            spec.validation
                .extend(labeled("validation", message.validation)?);
            if spec.train.len() + spec.validation.len() > self.max_queries {
                return Err(Status::invalid_argument(format!(
                    "more than {} queries (limits.max_eval_queries)",
                    self.max_queries
                )));
            }
            if bytes > self.max_bytes {
                return Err(Status::resource_exhausted(format!(
                    "the query sets are larger than {} bytes (limits.max_eval_bytes)",
                    self.max_bytes
                )));
            }
            next = stream.next().await.transpose()?;
        }
        Ok(())
    }

    /// Checks the names and gathers what the job reads: the base model's directory and
    /// the collection's texts.
    fn inputs(&self, spec: &FineTuneSpec) -> Result<JobInputs, Status> {
        if !is_plain_name(&spec.output_model) || spec.output_model.starts_with('.') {
            return Err(Status::invalid_argument(format!(
                "output_model {:?} must be letters, digits, '-', '_' or '.' (not starting with '.')",
                spec.output_model
            )));
        }
        if self.registry.get(&spec.output_model).is_ok()
            || self.registry.pipeline(&spec.output_model).is_some()
        {
            return Err(Status::already_exists(format!(
                "model {} is already served",
                spec.output_model
            )));
        }
        let base = self.registry.get(&spec.base_model)?;
        let plugin = base.instance.library().name().to_string();
        if plugin != TRAINABLE_PLUGIN {
            return Err(Status::failed_precondition(format!(
                "model {} is served by the {plugin} plugin; fine-tuning supports {TRAINABLE_PLUGIN} encoders",
                spec.base_model
            )));
        }
        let collection = self.store.get(&spec.collection)?;
        let items = collection.text_items();
        if items.ids.is_empty() {
            return Err(Status::failed_precondition(format!(
                "collection {} holds no item upserted as text",
                spec.collection
            )));
        }
        let base_vectors = (collection.config.model == spec.base_model)
            .then(|| (items.vectors, collection.config.dimension));
        Ok(JobInputs {
            base_dir: base.path.clone(),
            plugin: Arc::clone(base.instance.library()),
            data_dir: self.data_dir.clone(),
            ids: items.ids,
            texts: items.texts,
            metric: collection.config.metric,
            base_vectors,
        })
    }

    /// Runs the job on a blocking thread, streaming its events, then serves the result.
    async fn run(&self, spec: FineTuneSpec, inputs: JobInputs, events: Events) {
        let cancel = Arc::new(AtomicBool::new(false));
        let job_events = events.clone();
        let job_cancel = Arc::clone(&cancel);
        let job = tokio::task::spawn_blocking(move || {
            let send = |event: JobEvent| {
                let message = match event {
                    JobEvent::Step(p) => Event::Step(TrainingStep {
                        step: p.step as u64,
                        total_steps: p.total_steps as u64,
                        epoch: p.epoch as u32,
                        loss: p.loss,
                        learning_rate: p.lr,
                        examples_per_second: p.examples_per_sec,
                    }),
                    JobEvent::Epoch {
                        epoch,
                        mean_loss,
                        validation,
                        seconds,
                    } => Event::Epoch(EpochReport {
                        epoch: epoch as u32,
                        mean_loss,
                        validation: validation.as_ref().map(metric_set),
                        seconds,
                    }),
                };
                let sent = job_events.blocking_send(Ok(FineTuneEvent {
                    event: Some(message),
                }));
                if sent.is_err() {
                    job_cancel.store(true, Ordering::SeqCst);
                }
            };
            let outcome = training::run(&spec, &inputs, &send, &job_cancel);
            (spec, outcome)
        });
        let result = match job.await {
            Ok((spec, Ok(outcome))) => self.serve(spec, outcome).await,
            Ok((_, Err(e))) => Err(Status::from(e)),
            Err(e) => Err(Status::internal(format!(
                "the fine-tuning job crashed: {e}"
            ))),
        };
        let _ = events
            .send(result.map(|r| FineTuneEvent {
                event: Some(Event::Result(r)),
            }))
            .await;
    }

    /// Loads the published model under its name.
    async fn serve(
        &self,
        spec: FineTuneSpec,
        outcome: training::JobOutcome,
    ) -> Result<FineTuneResult, Status> {
        let registry = Arc::clone(&self.registry);
        let (batching, generation) = (self.batching.clone(), self.generation.clone());
        let (name, path) = (spec.output_model.clone(), outcome.path.clone());
        tokio::task::spawn_blocking(move || {
            registry.load_model(&name, TRAINABLE_PLUGIN, &path, "", batching, generation)
        })
        .await
        .map_err(|e| Status::internal(format!("loading the fine-tuned model: {e}")))??;
        Ok(FineTuneResult {
            model: spec.output_model,
            path: outcome.path.display().to_string(),
            dimension: outcome.dimension as u32,
            steps: outcome.steps as u64,
            best_epoch: outcome.best_epoch as u32,
            before: Some(metric_set(&outcome.before)),
            after: Some(metric_set(&outcome.after)),
            stopped_early: outcome.stopped_early,
            seconds: outcome.seconds,
            examples_per_second: outcome.examples_per_second,
        })
    }
}

/// The response stream.
type EventStream = Bounded<ReceiverStream<Result<FineTuneEvent, Status>>>;

#[tonic::async_trait]
impl TrainingService for TrainingApi {
    type FineTuneStream = EventStream;

    async fn fine_tune(
        &self,
        request: Request<Streaming<FineTuneRequest>>,
    ) -> Result<Response<Self::FineTuneStream>, Status> {
        let deadline = Deadline::of(&request);
        observed("FineTune", deadline, async {
            let mut stream = request.into_inner();
            let first = stream
                .next()
                .await
                .ok_or_else(|| Status::invalid_argument("the request stream is empty"))??;
            let mut spec = spec_of(&first, self.settings.threads(first.threads as usize))?;
            self.read_queries(&mut stream, first, &mut spec).await?;
            let inputs = self.inputs(&spec)?;
            let guard = {
                let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                if !busy.insert(spec.base_model.clone()) {
                    return Err(Status::aborted(format!(
                        "model {} is already being fine-tuned; one job per model at a time",
                        spec.base_model
                    )));
                }
                BusyGuard {
                    busy: Arc::clone(&self.busy),
                    model: spec.base_model.clone(),
                }
            };
            let (events, receiver) = mpsc::channel(64);
            let api = self.clone();
            tokio::spawn(async move {
                api.run(spec, inputs, events).await;
                drop(guard);
            });
            Ok(Bounded::new(ReceiverStream::new(receiver), deadline))
        })
        .await
    }
}
