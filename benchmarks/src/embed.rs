//! `marquee-bench embed`: embedding throughput of a running server (batched requests
//! with some in flight), then single-document latency, as `embed_throughput.py` and
//! `http_overhead.py` use it: over gRPC `Embed`, or over the HTTP API's
//! `/v1/embeddings` (`--http ADDR`, HTTP/1.1 keep-alive connections, JSON floats).

use crate::inputs;
use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use marquee_client::Client;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where requests go: gRPC `Embed` or the HTTP API.
#[derive(Clone)]
enum Transport {
    Grpc(Box<Client>),
    Http {
        client: Box<hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>>,
        url: String,
    },
}

/// Server-side time of one request, when the transport reports it: queue, tokenize,
/// inference and total (gRPC only), in µs.
type ServerTimes = Option<[u64; 4]>;

/// The stages of the HTTP API's `Server-Timing` header (`queue;dur=0.012, ...`, ms).
fn server_timing(headers: &hyper::HeaderMap) -> ServerTimes {
    let value = headers.get("server-timing")?.to_str().ok()?;
    let mut times = [0u64; 4];
    for entry in value.split(',') {
        let (name, duration) = entry.trim().split_once(";dur=")?;
        let slot = ["queue", "tokenize", "inference"]
            .iter()
            .position(|s| *s == name)?;
        times[slot] = (duration.parse::<f64>().ok()? * 1e3).round() as u64;
    }
    Some(times)
}

impl Transport {
    /// Embeds `texts`; returns how many vectors came back.
    async fn embed(&mut self, model: &str, texts: &[String]) -> Result<(usize, ServerTimes)> {
        match self {
            Transport::Grpc(client) => {
                let response = client
                    .embed(Client::text_request(model, texts, Default::default()))
                    .await?;
                let t = response.timings.unwrap_or_default();
                Ok((
                    response.embeddings.len(),
                    Some([t.queue_us, t.tokenize_us, t.inference_us, t.total_us]),
                ))
            }
            Transport::Http { client, url } => {
                let body = json!({"model": model, "input": texts}).to_string();
                let request = hyper::Request::post(url.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))?;
                let response = client.request(request).await?;
                let status = response.status();
                let times = server_timing(response.headers());
                let bytes = response.into_body().collect().await?.to_bytes();
                if !status.is_success() {
                    bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
                }
                let parsed: Value = serde_json::from_slice(&bytes)?;
                let rows = parsed["data"].as_array().context("no data")?.len();
                Ok((rows, times))
            }
        }
    }
}

/// Options of `marquee-bench embed`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// movies.jsonl or movies.jsonl.gz.
    #[arg(long)]
    movies: PathBuf,
    /// Model name ("" for the default).
    #[arg(long, default_value = "")]
    model: String,
    /// Documents to embed for throughput.
    #[arg(long, default_value_t = 1024)]
    n: usize,
    /// Documents per request.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Requests in flight at once during the throughput run.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Documents embedded one at a time for latency.
    #[arg(long, default_value_t = 200)]
    single: usize,
    /// Send the throughput documents longest first (by characters, as
    /// sentence-transformers orders its own batches), so each request holds texts of
    /// about one length.
    #[arg(long)]
    sort_by_length: bool,
    /// Cut each single document to its first N characters (short queries, where the
    /// transport's own cost shows).
    #[arg(long, value_name = "N")]
    single_chars: Option<usize>,
    /// Send the requests to the HTTP API at this address (`127.0.0.1:8000`) instead
    /// of gRPC.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs the benchmark against the server at `addr`.
pub async fn run(addr: &str, args: &Args) -> Result<Value> {
    let (model, n, batch, single) = (args.model.as_str(), args.n, args.batch, args.single);
    let docs = inputs::read_texts(&args.movies, Some(n.max(single)))?;
    let client = match &args.http {
        None => Transport::Grpc(Box::new(Client::connect(addr).await?)),
        Some(http) => Transport::Http {
            client: {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Box::new(
                    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                        .build(connector),
                )
            },
            url: format!("http://{http}/v1/embeddings"),
        },
    };
    // Warm-up: one batch.
    client
        .clone()
        .embed(model, &docs[..batch.min(docs.len())])
        .await?;

    let start = Instant::now();
    let mut ordered = docs[..n.min(docs.len())].to_vec();
    if args.sort_by_length {
        ordered.sort_by_key(|d| std::cmp::Reverse(d.chars().count()));
    }
    let chunks: Vec<Vec<String>> = ordered.chunks(batch).map(<[String]>::to_vec).collect();
    let results: Vec<_> = stream::iter(chunks)
        .map(|chunk| {
            let mut client = client.clone();
            let model = model.to_string();
            async move { client.embed(&model, &chunk).await.map(|(n, _)| n) }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let embedded: usize = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    let elapsed = start.elapsed();

    let mut latencies = Vec::with_capacity(single);
    let mut server = [0u64; 4];
    let mut client = client.clone();
    for doc in &docs[..single] {
        let doc = match args.single_chars {
            Some(n) => doc.chars().take(n).collect(),
            None => doc.clone(),
        };
        let t = Instant::now();
        let (_, times) = client.embed(model, &[doc]).await?;
        latencies.push(t.elapsed());
        for (sum, v) in server.iter_mut().zip(times.unwrap_or_default()) {
            *sum += v;
        }
    }
    latencies.sort();
    let mean_ms = |us: u64| us as f64 / single.max(1) as f64 / 1e3;
    Ok(json!({
        "docs": embedded,
        "batch": batch,
        "concurrency": args.concurrency,
        "seconds": elapsed.as_secs_f64(),
        "docs_per_s": embedded as f64 / elapsed.as_secs_f64(),
        "single_docs": single,
        "single_p50_ms": percentile(&latencies, 0.50),
        "single_mean_ms": latencies.iter().sum::<Duration>().as_secs_f64() * 1e3 / single.max(1) as f64,
        "single_p99_ms": percentile(&latencies, 0.99),
        "transport": if args.http.is_some() { "http" } else { "grpc" },
        "single_server_mean_ms": {
            "queue": mean_ms(server[0]),
            "tokenize": mean_ms(server[1]),
            "inference": mean_ms(server[2]),
            "total": mean_ms(server[3]),
        },
    }))
}
