//! `marquee-bench`: Marquee's benchmark clients; each prints one JSON object.
//!
//! - `embed` measures a running server over gRPC: it embeds the first N movie documents
//!   of a movies.jsonl(.gz) file (text `"{title} ({year}). {overview or plot}"`) in
//!   batches with requests in flight, then single documents for latency.
//! - `search` measures the server's collection search in-process on vectors written by
//!   `benchmarks/search_bench.py` (the peers, faiss and hnswlib, run in-process too).

mod search;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use futures::stream::{self, StreamExt};
use marquee_client::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Benchmark clients for Marquee.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Server address.
    #[arg(long, default_value = marquee_client::DEFAULT_ADDR)]
    addr: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Embedding throughput (batched) and single-document latency.
    Embed {
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
    },
    /// In-process search over `corpus.f32` / `queries.f32` / `gt.i32` in a directory.
    Search(search::Args),
}

/// The document text of one movie, as in the retrieval paper's setup.
fn doc_text(movie: &Value) -> String {
    let title = movie["title"].as_str().unwrap_or("");
    let body = [&movie["overview"], &movie["plot"]]
        .into_iter()
        .filter_map(|v| v.as_str())
        .find(|s| !s.is_empty())
        .unwrap_or("");
    match &movie["year"] {
        Value::Null => format!("{title}. {body}"),
        year => format!("{title} ({}). {body}", year.to_string().trim_matches('"')),
    }
}

/// The first `n` documents of a movies file.
fn load_docs(path: &Path, n: usize) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut docs = Vec::with_capacity(n);
    for line in reader.lines().take(n) {
        docs.push(doc_text(&serde_json::from_str(&line?)?));
    }
    Ok(docs)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn embed(
    cli: &Cli,
    movies: &Path,
    model: &str,
    n: usize,
    batch: usize,
    concurrency: usize,
    single: usize,
) -> Result<Value> {
    let docs = load_docs(movies, n.max(single))?;
    let client = Client::connect(&cli.addr).await?;
    // Warm-up: one batch.
    client
        .clone()
        .embed_texts(model, &docs[..batch.min(docs.len())])
        .await?;

    let start = Instant::now();
    let chunks: Vec<Vec<String>> = docs[..n].chunks(batch).map(<[String]>::to_vec).collect();
    let results: Vec<_> = stream::iter(chunks)
        .map(|chunk| {
            let mut client = client.clone();
            let model = model.to_string();
            async move { client.embed_texts(&model, &chunk).await.map(|v| v.len()) }
        })
        .buffer_unordered(concurrency)
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
        "concurrency": concurrency,
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

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let report = match &cli.command {
        Command::Embed {
            movies,
            model,
            n,
            batch,
            concurrency,
            single,
        } => embed(&cli, movies, model, *n, *batch, *concurrency, *single).await?,
        Command::Search(args) => search::run(args)?,
    };
    println!("{report}");
    Ok(())
}
