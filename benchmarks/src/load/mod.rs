//! `marquee-bench load`: a load tester in the manner of Triton's perf_analyzer. It
//! sweeps closed-loop concurrency levels or open-loop request rates with a weighted
//! mix of Embed, Search and Recommend built from input files, measures each step after
//! a warm-up, and reports per-RPC latency percentiles (HDR histograms), throughput,
//! errors by gRPC code and Embed's server-side stages, as a table, JSON, CSV and an
//! SVG plot of latency against throughput.

pub mod mix;
pub mod plot;
pub mod report;
pub mod rpc;
pub mod runner;
pub mod schedule;
pub mod stats;

use crate::inputs;
use anyhow::{bail, Context, Result};
use marquee_client::proto::GetCollectionRequest;
use marquee_client::Client;
use mix::{Mix, RpcKind};
use report::{RunReport, StepReport};
use rpc::{Query, Workload};
use runner::{Mode, Step};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `marquee-bench load`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// RPC weights, e.g. `embed=1,search=1,recommend=0` (left-out RPCs weigh 0).
    #[arg(long, default_value = "embed=1")]
    rpc_mix: String,
    /// Closed-loop sweep: requests in flight at each step, comma-separated
    /// (default 1,4,16,64,256 when no --rate is given).
    #[arg(long, value_delimiter = ',', conflicts_with = "rate")]
    concurrency: Vec<usize>,
    /// Open-loop sweep: requests per second offered at each step, comma-separated.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Open loop: Poisson arrivals (exponential gaps) instead of even spacing.
    #[arg(long, requires = "rate")]
    poisson: bool,
    /// Open loop: most requests in flight; due requests beyond it are not sent and are
    /// counted as dropped.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Seconds of unmeasured load before each step's window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured per step.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Embed: texts, one per line, or a .jsonl(.gz) of movies (document text),
    /// tip-of-the-tongue queries (`query`) or records with `text`.
    #[arg(long)]
    texts: Option<PathBuf>,
    /// Embed: model name ("" for the server's default).
    #[arg(long, default_value = "")]
    model: String,
    /// Embed: inputs per request.
    #[arg(long, default_value_t = 1)]
    embed_batch: usize,
    /// Search and Recommend: the collection.
    #[arg(long)]
    collection: Option<String>,
    /// Search: query texts, read as --texts is (default: the --texts file).
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Search: embed the query texts once before the run with the collection's model
    /// and search by vector (otherwise by text, embedded by the server per request).
    #[arg(long)]
    query_vectors: bool,
    /// Search and Recommend: results per request.
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// Recommend: a ratings CSV (`user_id` column) whose users are stored in the collection.
    #[arg(long)]
    users: Option<PathBuf>,
    /// Read at most this many texts and queries from their files.
    #[arg(long)]
    limit: Option<usize>,
    /// Seed of the mix draws and Poisson gaps.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The run's name in reports and plot legends (default: the mix).
    #[arg(long)]
    label: Option<String>,
    /// Client runtime threads (the client shares the machine with a local server).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one CSV row per step and RPC here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Draw latency (p50, p99) against throughput across the sweep into this SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Reads the inputs each kind of the mix needs and checks them against the server.
async fn workload(args: &Args, mix: &Mix, client: &mut Client) -> Result<Workload> {
    let kinds = mix.kinds();
    let texts = match (&args.texts, kinds.contains(&RpcKind::Embed)) {
        (Some(path), true) => inputs::read_texts(path, args.limit)?,
        (None, true) => bail!("Embed is in the mix: give --texts FILE"),
        _ => Vec::new(),
    };
    let needs_collection = kinds.contains(&RpcKind::Search) || kinds.contains(&RpcKind::Recommend);
    let collection = match (&args.collection, needs_collection) {
        (Some(name), true) => {
            let info = client
                .retrieval
                .get_collection(GetCollectionRequest { name: name.clone() })
                .await
                .with_context(|| format!("collection {name:?}"))?
                .into_inner();
            Some(info)
        }
        (None, true) => bail!("Search or Recommend is in the mix: give --collection NAME"),
        _ => None,
    };
    let mut queries = Vec::new();
    if kinds.contains(&RpcKind::Search) {
        let info = collection.as_ref().expect("checked above");
        let path = args
            .queries
            .as_ref()
            .or(args.texts.as_ref())
            .context("Search is in the mix: give --queries FILE (or --texts FILE)")?;
        let texts = inputs::read_texts(path, args.limit)?;
        if info.model.is_empty() {
            bail!(
                "collection {} has no bound model, so its queries cannot be texts",
                info.name
            );
        }
        queries = if args.query_vectors {
            let mut vectors = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(64) {
                vectors.extend(client.embed_texts(&info.model, chunk).await?);
            }
            vectors.into_iter().map(Query::Vector).collect()
        } else {
            texts.into_iter().map(Query::Text).collect()
        };
    }
    let users = match (&args.users, kinds.contains(&RpcKind::Recommend)) {
        (Some(path), true) => inputs::read_users(path)?,
        (None, true) => bail!("Recommend is in the mix: give --users RATINGS.csv"),
        _ => Vec::new(),
    };
    Ok(Workload::new(
        args.model.clone(),
        texts,
        args.embed_batch,
        args.collection.clone().unwrap_or_default(),
        queries,
        users,
        args.k,
    ))
}

/// The steps of the sweep, in order.
fn steps(args: &Args) -> Result<Vec<Step>> {
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).with_context(|| format!("--{what} {s} is not a duration"))
    };
    let (warmup, duration) = (
        secs(args.warmup, "warmup")?,
        secs(args.duration, "duration")?,
    );
    if duration.is_zero() {
        bail!("--duration must be positive");
    }
    let modes: Vec<Mode> = if args.rate.is_empty() {
        let levels = if args.concurrency.is_empty() {
            vec![1, 4, 16, 64, 256]
        } else {
            args.concurrency.clone()
        };
        if levels.contains(&0) {
            bail!("--concurrency levels must be at least 1");
        }
        levels
            .into_iter()
            .map(|concurrency| Mode::Closed { concurrency })
            .collect()
    } else {
        if args.rate.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            bail!("--rate values must be positive");
        }
        if args.max_in_flight == 0 {
            bail!("--max-in-flight must be at least 1");
        }
        args.rate
            .iter()
            .map(|&rate| Mode::Open {
                rate,
                poisson: args.poisson,
                max_in_flight: args.max_in_flight,
            })
            .collect()
    };
    Ok(modes
        .into_iter()
        .enumerate()
        .map(|(i, mode)| Step {
            mode,
            warmup,
            duration,
            seed: args.seed.wrapping_add(1000 * i as u64),
        })
        .collect())
}

/// Runs the sweep against `addr`, prints the table and writes the requested files.
pub async fn run(addr: &str, args: &Args) -> Result<()> {
    let mix = Mix::parse(&args.rpc_mix)?;
    let steps = steps(args)?;
    let mut clients = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        clients.push(
            Client::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    let workload = Arc::new(workload(args, &mix, &mut clients[0]).await?);
    let label = args.label.clone().unwrap_or_else(|| mix.spec());
    let mut reports = Vec::with_capacity(steps.len());
    for step in &steps {
        let stats = runner::run(Arc::clone(&workload), &clients, &mix, step).await;
        let report = StepReport {
            mode: step.mode,
            window: step.duration,
            stats,
        };
        let summary: Vec<String> = report
            .stats
            .rpcs
            .iter()
            .map(|(k, s)| {
                format!(
                    "{} {:.1} req/s, {} errors",
                    k.name(),
                    s.ok() as f64 / step.duration.as_secs_f64(),
                    s.failed()
                )
            })
            .collect();
        eprintln!("{label} {}: {}", report.name(), summary.join("; "));
        if report.stats.rpcs.values().any(|s| s.ok() + s.failed() == 0) {
            eprintln!(
                "warning: at {} an RPC had no answer inside the {:?} window; lengthen --duration",
                report.name(),
                step.duration
            );
        }
        reports.push(report);
    }
    let run = RunReport {
        label,
        config: json!({
            "addr": addr,
            "rpc_mix": mix.spec(),
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "connections": clients.len(),
            "client_threads": args.client_threads,
            "model": args.model,
            "texts": args.texts,
            "texts_read": workload.texts.len(),
            "embed_batch": workload.embed_batch,
            "collection": args.collection,
            "queries": args.queries.as_ref().or(args.texts.as_ref().filter(|_| !workload.queries.is_empty())),
            "queries_read": workload.queries.len(),
            "query_vectors": args.query_vectors,
            "users": args.users,
            "users_read": workload.users.len(),
            "k": args.k,
            "seed": args.seed,
        }),
        steps: reports,
    };
    print!("{}", report::to_table(&run));
    let document = report::to_json(&run);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report::to_csv(&run)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        plot::write_svg(
            path,
            "Marquee: latency against throughput",
            &plot::series(&document)?,
        )?;
    }
    Ok(())
}
