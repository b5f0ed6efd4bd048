//! Prometheus metrics: names, buckets, recording helpers and the `/metrics` endpoint.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use prost::Message;
use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

/// Requests by RPC and gRPC status code.
pub const REQUESTS: &str = "marquee_requests_total";
/// End-to-end RPC latency by RPC.
pub const REQUEST_SECONDS: &str = "marquee_request_duration_seconds";
/// Per-stage latency (`stage` = queue, tokenize, inference) by model.
pub const STAGE_SECONDS: &str = "marquee_stage_duration_seconds";
/// Inputs per inference batch.
pub const BATCH_SIZE: &str = "marquee_batch_size";
/// Tokens per inference batch.
pub const BATCH_TOKENS: &str = "marquee_batch_tokens";
/// Inference batches run, by model.
pub const BATCHES: &str = "marquee_inference_batches_total";
/// Inputs run through inference, by model.
pub const INFERENCE_INPUTS: &str = "marquee_inference_inputs_total";
/// Inputs that left a model's queue without inference, by model and reason
/// (`cancelled`: the caller went away; `deadline`: its deadline passed or could not be met).
pub const DROPPED_INPUTS: &str = "marquee_dropped_inputs_total";
/// Inputs waiting in a model's queue.
pub const QUEUE_DEPTH: &str = "marquee_queue_depth";
/// RPCs in progress, by RPC.
pub const IN_FLIGHT: &str = "marquee_requests_in_flight";
/// Request messages (gRPC) and bodies (HTTP) refused because the request memory
/// budget was spent.
pub const REQUEST_MEMORY_REFUSALS: &str = "marquee_request_memory_refusals_total";

/// HTTP API requests by route and HTTP status.
pub const HTTP_REQUESTS: &str = "marquee_http_requests_total";
/// HTTP API latency by route, until the response body (a stream's last event
/// included) is finished or dropped.
pub const HTTP_REQUEST_SECONDS: &str = "marquee_http_request_duration_seconds";
/// HTTP API requests in progress, by route.
pub const HTTP_IN_FLIGHT: &str = "marquee_http_requests_in_flight";

/// Time from a generation request's arrival to its first token, by model.
pub const TIME_TO_FIRST_TOKEN: &str = "marquee_generation_time_to_first_token_seconds";
/// Time between consecutive tokens of a sequence, by model.
pub const INTER_TOKEN: &str = "marquee_generation_inter_token_seconds";
/// Tokens processed by generators, by model and kind (`prompt`, `completion`): its
/// rate is tokens per second.
pub const GENERATION_TOKENS: &str = "marquee_generation_tokens_total";
/// KV-cache blocks held by sequences, by model.
pub const KV_BLOCKS_IN_USE: &str = "marquee_generation_kv_blocks_in_use";
/// KV-cache blocks in all, by model.
pub const KV_BLOCKS: &str = "marquee_generation_kv_blocks";
/// Live sequences by model and state (`waiting`: no token yet; `running`).
pub const SEQUENCES: &str = "marquee_generation_sequences";

/// Installs the global recorder and returns the handle that renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let latency = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
    ];
    let sizes = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ];
    let tokens = [
        16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &sizes)?
        .set_buckets_for_metric(Matcher::Full(BATCH_TOKENS.into()), &tokens)?
        .install_recorder()?;
    Ok(handle)
}

/// Records one finished RPC.
pub fn record_request(rpc: &'static str, code: tonic::Code, elapsed: Duration) {
    counter!(REQUESTS, "rpc" => rpc, "code" => format!("{code:?}")).increment(1);
    histogram!(REQUEST_SECONDS, "rpc" => rpc).record(elapsed.as_secs_f64());
}

/// The `rpc` label of a request path: the method name for the RPCs this server serves,
/// `unknown` for any other path (paths come from clients, and must not make a series
/// each).
pub fn rpc_label(path: &str) -> String {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        [
            marquee_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .filter_map(|set| prost_types::FileDescriptorSet::decode(set).ok())
        .flat_map(|set| set.file)
        .flat_map(|file| {
            let package = file.package().to_string();
            file.service.into_iter().flat_map(move |service| {
                let prefix = format!("/{package}.{}/", service.name());
                service
                    .method
                    .into_iter()
                    .map(move |m| format!("{prefix}{}", m.name()))
            })
        })
        .collect()
    });
    match path.rsplit_once('/') {
        Some((_, method)) if known.contains(path) => method.to_string(),
        _ => "unknown".to_string(),
    }
}

/// Records a call refused before reaching its service (authentication, admission,
/// deadline), under the method name of its path.
pub fn record_rejected(path: &str, code: tonic::Code) {
    counter!(REQUESTS, "rpc" => rpc_label(path), "code" => format!("{code:?}")).increment(1);
}

/// Counts a request refused by the request memory budget.
pub fn record_request_memory_refusal() {
    counter!(REQUEST_MEMORY_REFUSALS).increment(1);
}

/// Records one finished HTTP API request.
pub fn record_http(route: &'static str, status: u16, elapsed: Duration) {
    counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    histogram!(HTTP_REQUEST_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

/// Counts an HTTP API request starting (`+1`) or ending (`-1`).
pub fn add_http_in_flight(route: &'static str, delta: f64) {
    gauge!(HTTP_IN_FLIGHT, "route" => route).increment(delta);
}

/// Counts an RPC starting (`+1`) or ending (`-1`).
pub fn add_in_flight(rpc: &'static str, delta: f64) {
    gauge!(IN_FLIGHT, "rpc" => rpc).increment(delta);
}

/// One model's series, registered once when it is loaded so that the request path
/// records into them without building label sets and looking them up each time.
pub struct ModelMetrics {
    tokenize: Histogram,
    queue: Histogram,
    inference: Histogram,
    batch: Histogram,
    batch_size: Histogram,
    batch_tokens: Histogram,
    batches: Counter,
    inference_inputs: Counter,
    queue_depth: Gauge,
}

impl ModelMetrics {
    /// The series of `model` (no-ops until the recorder is installed, see [`install`]).
    pub fn new(model: &str) -> Self {
        let stage = |stage: &'static str| histogram!(STAGE_SECONDS, "model" => model.to_string(), "stage" => stage);
        Self {
            tokenize: stage("tokenize"),
            queue: stage("queue"),
            inference: stage("inference"),
            batch: stage("batch"),
            batch_size: histogram!(BATCH_SIZE, "model" => model.to_string()),
            batch_tokens: histogram!(BATCH_TOKENS, "model" => model.to_string()),
            batches: counter!(BATCHES, "model" => model.to_string()),
            inference_inputs: counter!(INFERENCE_INPUTS, "model" => model.to_string()),
            queue_depth: gauge!(QUEUE_DEPTH, "model" => model.to_string()),
        }
    }

    /// Records a request's time tokenizing.
    pub fn record_tokenize(&self, elapsed: Duration) {
        self.tokenize.record(elapsed.as_secs_f64());
    }

    /// Records a job's time queued and in inference.
    pub fn record_job(&self, queue: Duration, inference: Duration) {
        self.queue.record(queue.as_secs_f64());
        self.inference.record(inference.as_secs_f64());
    }

    /// Records one inference batch.
    pub fn record_batch(&self, inputs: usize, tokens: usize, elapsed: Duration) {
        self.batch_size.record(inputs as f64);
        self.batch_tokens.record(tokens as f64);
        self.batches.increment(1);
        self.inference_inputs.increment(inputs as u64);
        self.batch.record(elapsed.as_secs_f64());
    }

    /// Sets the queue depth.
    pub fn set_queue_depth(&self, inputs: usize) {
        self.queue_depth.set(inputs as f64);
    }
}

/// One generator's series, registered when it is loaded.
pub struct GenerationMetrics {
    time_to_first_token: Histogram,
    inter_token: Histogram,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    kv_blocks_in_use: Gauge,
    kv_blocks: Gauge,
    waiting: Gauge,
    running: Gauge,
}

impl GenerationMetrics {
    /// The series of generator `model`.
    pub fn new(model: &str) -> Self {
        let m = || model.to_string();
        Self {
            time_to_first_token: histogram!(TIME_TO_FIRST_TOKEN, "model" => m()),
            inter_token: histogram!(INTER_TOKEN, "model" => m()),
            prompt_tokens: counter!(GENERATION_TOKENS, "model" => m(), "kind" => "prompt"),
            completion_tokens: counter!(GENERATION_TOKENS, "model" => m(), "kind" => "completion"),
            kv_blocks_in_use: gauge!(KV_BLOCKS_IN_USE, "model" => m()),
            kv_blocks: gauge!(KV_BLOCKS, "model" => m()),
            waiting: gauge!(SEQUENCES, "model" => m(), "state" => "waiting"),
            running: gauge!(SEQUENCES, "model" => m(), "state" => "running"),
        }
    }

    /// Records a sequence's first token, `elapsed` after its arrival.
    pub fn record_first_token(&self, elapsed: Duration) {
        self.time_to_first_token.record(elapsed.as_secs_f64());
    }

    /// Records the time between two tokens of a sequence.
    pub fn record_inter_token(&self, elapsed: Duration) {
        self.inter_token.record(elapsed.as_secs_f64());
    }

    /// Counts a sequence's prompt tokens (when admitted) and generated tokens.
    pub fn count_tokens(&self, prompt: usize, completion: usize) {
        self.prompt_tokens.increment(prompt as u64);
        self.completion_tokens.increment(completion as u64);
    }

    /// Sets the KV-cache and sequence gauges.
    pub fn set_load(&self, blocks: u32, blocks_free: u32, waiting: usize, running: usize) {
        self.kv_blocks.set(blocks as f64);
        self.kv_blocks_in_use
            .set(blocks.saturating_sub(blocks_free) as f64);
        self.waiting.set(waiting as f64);
        self.running.set(running as f64);
    }
}

/// Counts inputs dropped from a model's queue unrun.
pub fn record_dropped(model: &str, reason: &'static str, inputs: usize) {
    counter!(DROPPED_INPUTS, "model" => model.to_string(), "reason" => reason)
        .increment(inputs as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_labels_only_for_served_methods() {
        assert_eq!(rpc_label("/marquee.v1.EmbeddingService/Embed"), "Embed");
        assert_eq!(rpc_label("/marquee.v1.ModelService/LoadModel"), "LoadModel");
        assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(rpc_label("/marquee.v1.EmbeddingService/Nope123"), "unknown");
        assert_eq!(rpc_label("/random"), "unknown");
    }
}
