//! `marquee-bench embed`: embedding throughput of a running server (batched requests
//! with some in flight), then single-document latency, as `embed_throughput.py` uses it.

use crate::inputs;
use anyhow::Result;
use futures::stream::{self, StreamExt};
use marquee_client::Client;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs the benchmark against the server at `addr`.
pub async fn run(addr: &str, args: &Args) -> Result<Value> {
    let (model, n, batch, single) = (args.model.as_str(), args.n, args.batch, args.single);
    let docs = inputs::read_texts(&args.movies, Some(n.max(single)))?;
    let client = Client::connect(addr).await?;
    // Warm-up: one batch.
    client
        .clone()
        .embed_texts(model, &docs[..batch.min(docs.len())])
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
            async move { client.embed_texts(&model, &chunk).await.map(|v| v.len()) }
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
        let t = Instant::now();
        let response = client
            .embed(Client::text_request(model, &[doc], Default::default()))
            .await?;
        latencies.push(t.elapsed());
        let timings = response.timings.unwrap_or_default();
        for (sum, v) in server.iter_mut().zip([
            timings.queue_us,
            timings.tokenize_us,
            timings.inference_us,
            timings.total_us,
        ]) {
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
        "single_p99_ms": percentile(&latencies, 0.99),
        "single_server_mean_ms": {
            "queue": mean_ms(server[0]),
            "tokenize": mean_ms(server[1]),
            "inference": mean_ms(server[2]),
            "total": mean_ms(server[3]),
        },
    }))
}
