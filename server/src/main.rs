//! `marquee-server`: the Marquee gRPC server binary.

use anyhow::Result;
use clap::Parser;
use marquee_server::config::{LogFormat, Settings};
use marquee_server::shutdown::Signals;
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// Marquee: a gRPC model server for multimodal retrieval.
///
/// With no flags it starts on its embedded defaults: gRPC on 127.0.0.1:50051, metrics on
/// 127.0.0.1:9464, data in ./data, plugins next to this executable, and the model
/// all-MiniLM-L6-v2 from data/models/all-MiniLM-L6-v2.
#[derive(Parser, Debug)]
#[command(version, about, long_about, args_override_self = true)]
struct Args {
    /// TOML configuration file, applied over the embedded defaults (see deploy/marquee.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Prometheus metrics listen address, serving /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// OpenAI-compatible HTTP API listen address; an empty value turns it off.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Local data directory; relative model paths are resolved under it.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Directory plugin libraries are loaded from (default: this executable's directory).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Model to serve, as NAME=MODEL_DIR (plugin chosen from the directory's contents) or
    /// NAME=PLUGIN:MODEL_DIR. Repeatable; when given, replaces the configured [models].
    #[arg(long = "model", value_name = "NAME=[PLUGIN:]DIR")]
    models: Vec<String>,
}

fn settings(args: &Args) -> Result<Settings> {
    let mut settings = Settings::load(args.config.as_deref())?;
    if let Some(a) = args.listen {
        settings.listen = a;
    }
    if let Some(a) = args.metrics_listen {
        settings.metrics_listen = a;
    }
    if let Some(a) = &args.http_listen {
        settings.http_listen = a.clone();
    }
    if let Some(d) = &args.data_dir {
        settings.data_dir = d.clone();
    }
    if let Some(d) = &args.plugin_dir {
        settings.plugin_dir = d.clone();
    }
    if !args.models.is_empty() {
        settings.models.clear();
        for flag in &args.models {
            settings.add_model_flag(flag)?;
        }
    }
    settings.validate()?;
    Ok(settings)
}

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::new(&settings.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// candle's CPU element-wise operations run on its own pool of threads, which spin for
/// 25,000 rounds after each operation before sleeping; on a few cores that spinning
/// takes the CPU from the trainer's rayon threads and from serving (measured: 6% more
/// training pairs per second with 200 on 2 cores). Shortened unless the environment sets
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT`; candle reads it once, when the pool starts.
const CANDLE_SPIN_LIMIT: &str = "200";

fn main() -> Result<()> {
    marquee_server::heap::reuse_large_buffers();
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: no other thread exists yet (the runtime starts below).
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT) };
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> Result<()> {
    let args = Args::parse();
    let settings = settings(&args)?;
    init_logging(&settings);
    let signals = Signals::install()?;
    let result = marquee_server::server::run(settings, signals).await;
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "server failed");
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = std::io::Write::flush(&mut std::io::stderr());
    result
}
