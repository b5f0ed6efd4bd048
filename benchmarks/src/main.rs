//! `marquee-bench`: Marquee's benchmark clients.
//!
//! - `load` sweeps closed-loop concurrency or open-loop rates with a mix of Embed,
//!   Search and Recommend against a running server (see [`load`]).
//! - `inprocess-embed` embeds documents with the plugin loaded in-process: the ceiling
//!   the server's Embed throughput is compared with.
//! - `plot` draws the latency-against-throughput plot of one or more `load` reports.
//! - `embed` measures batched embedding throughput and single-document latency over
//!   gRPC, as `embed_throughput.py` uses it.
//! - `search` measures the server's collection search in-process on vectors written by
//!   `benchmarks/search_bench.py`.
//! - `generate` times prefill and batch-1 decode of the Qwen2.5-VL model crate
//!   in-process, as `benchmarks/generation_bench.py` uses it.
//!
//! `embed`, `search`, `generate` and `inprocess-embed` print one JSON object; `load`
//! prints tables.

mod embed;
mod generate;
mod inprocess;
mod inputs;
mod load;
mod search;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Load sweep (closed-loop concurrency or open-loop rate) with an RPC mix.
    Load(Box<load::Args>),
    /// Embedding docs/s with the plugin in-process: the ceiling for the server.
    InprocessEmbed(inprocess::Args),
    /// Latency against throughput, as SVG, from `load --json` reports.
    Plot {
        /// Reports written by `load --json`; one or more series each.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// The SVG to write.
        #[arg(long)]
        out: PathBuf,
        /// Plot title.
        #[arg(long, default_value = "Marquee: latency against throughput")]
        title: String,
    },
    /// Embedding throughput (batched) and single-document latency.
    Embed(embed::Args),
    /// In-process search over `corpus.f32` / `queries.f32` / `gt.i32` in a directory.
    Search(search::Args),
    /// Prefill and batch-1 decode of a Qwen2.5-VL directory, in-process.
    Generate(generate::Args),
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?)
}

fn plot(reports: &[PathBuf], out: &std::path::Path, title: &str) -> Result<()> {
    let mut series = Vec::new();
    for path in reports {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        series.extend(load::plot::series(&report)?);
    }
    load::plot::write_svg(out, title, &series)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Load(args) => runtime(args.client_threads)?.block_on(load::run(&cli.addr, args)),
        Command::Plot {
            reports,
            out,
            title,
        } => plot(reports, out, title),
        Command::InprocessEmbed(args) => {
            println!("{}", inprocess::run(args)?);
            Ok(())
        }
        Command::Embed(args) => {
            let report = runtime(2)?.block_on(embed::run(&cli.addr, args))?;
            println!("{report}");
            Ok(())
        }
        Command::Search(args) => {
            println!("{}", search::run(args)?);
            Ok(())
        }
        Command::Generate(args) => {
            println!("{}", generate::run(args)?);
            Ok(())
        }
    }
}
