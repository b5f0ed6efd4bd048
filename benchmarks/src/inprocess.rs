//! `marquee-bench inprocess-embed`: the ceiling a server is compared with. It loads the
//! text-encoder plugin in-process with the host loader and embeds the same documents
//! as the server would: each group of `batch` texts tokenized in parallel on a pool of
//! one thread per core (as the server's tokenizer pool), then run in ragged batches
//! bounded by the server's `max_batch_size` and `max_batch_tokens`, one at a time (as
//! its inference thread). No gRPC, no queue, no other work.

use crate::inputs;
use anyhow::{bail, Context, Result};
use marquee_plugin_api::host::{PluginInstance, PluginLibrary};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `marquee-bench inprocess-embed`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The plugin library (default: libmarquee_bert_text.so beside this executable).
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// The model directory.
    #[arg(long, default_value = "data/models/all-MiniLM-L6-v2")]
    model_dir: PathBuf,
    /// Plugin options as JSON, as the server's `models.<name>.options`.
    #[arg(long, default_value = "{}")]
    options: String,
    /// Texts, read as `load --texts` reads them.
    #[arg(long)]
    texts: PathBuf,
    /// Texts embedded per round (the first N of the file).
    #[arg(long, default_value_t = 1024)]
    n: usize,
    /// Inputs per batch (the server's `batching.max_batch_size`).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Tokens per batch (the server's `batching.max_batch_tokens`).
    #[arg(long, default_value_t = 16384)]
    max_batch_tokens: usize,
    /// Timed rounds over the same texts, after one untimed warm-up batch.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Splits inputs of these token lengths, in order, into batches of at most
/// `max_inputs` inputs and `max_tokens` tokens (an input longer than `max_tokens`
/// runs alone), as the server's batcher does.
fn batches(lens: &[usize], max_inputs: usize, max_tokens: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &len) in lens.iter().enumerate() {
        let count = i - start;
        if count > 0 && (count == max_inputs || tokens + len > max_tokens) {
            out.push(start..i);
            (start, tokens) = (i, 0);
        }
        tokens += len;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// Time spent in each stage of one round.
#[derive(Default)]
struct Round {
    tokenize: Duration,
    inference: Duration,
    tokens: usize,
}

fn embed_all(
    instance: &PluginInstance,
    pool: &rayon::ThreadPool,
    texts: &[String],
    args: &Args,
) -> Result<Round> {
    let limit = instance.info().max_input_tokens;
    let mut round = Round::default();
    for group in texts.chunks(args.batch.max(1)) {
        let start = Instant::now();
        let tokens = pool.install(|| {
            group
                .par_iter()
                .map(|t| instance.tokenize(t, limit))
                .collect::<Result<Vec<_>, _>>()
        })?;
        round.tokenize += start.elapsed();
        let lens: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
        round.tokens += lens.iter().sum::<usize>();
        let start = Instant::now();
        for range in batches(&lens, args.batch.max(1), args.max_batch_tokens) {
            let mut ids = Vec::new();
            let mut offsets = vec![0u32];
            for t in &tokens[range] {
                ids.extend_from_slice(&t.ids);
                offsets.push(ids.len() as u32);
            }
            instance.embed_tokens(&ids, &offsets)?;
        }
        round.inference += start.elapsed();
    }
    Ok(round)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Runs the benchmark and returns its report.
pub fn run(args: &Args) -> Result<Value> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let plugin = match &args.plugin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the executable has no directory")?
            .join(format!(
                "{}marquee_bert_text{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            )),
    };
    let library = PluginLibrary::open(&plugin)?;
    let instance = library.create(&args.model_dir, &args.options)?;
    let texts = inputs::read_texts(&args.texts, Some(args.n))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("tokenize-{i}"))
        .build()?;
    embed_all(
        &instance,
        &pool,
        &texts[..args.batch.min(texts.len())],
        args,
    )?;
    let mut rounds = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        let start = Instant::now();
        let r = embed_all(&instance, &pool, &texts, args)?;
        let seconds = start.elapsed().as_secs_f64();
        rounds.push(json!({
            "seconds": seconds,
            "docs_per_s": texts.len() as f64 / seconds,
            "tokens_per_s": r.tokens as f64 / seconds,
            "tokenize_s": r.tokenize.as_secs_f64(),
            "inference_s": r.inference.as_secs_f64(),
            "tokens": r.tokens,
        }));
    }
    let figure = |key: &str| {
        median(
            rounds
                .iter()
                .map(|r| r[key].as_f64().unwrap_or(0.0))
                .collect(),
        )
    };
    Ok(json!({
        "plugin": library.name(),
        "plugin_version": library.version(),
        "model_dir": args.model_dir,
        "docs": texts.len(),
        "batch": args.batch,
        "max_batch_tokens": args.max_batch_tokens,
        "tokenizer_threads": pool.current_num_threads(),
        "docs_per_s": figure("docs_per_s"),
        "tokens_per_s": figure("tokens_per_s"),
        "rounds": rounds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_close_on_input_count_and_on_tokens() {
        assert_eq!(batches(&[5; 5], 2, 100), [0..2, 2..4, 4..5]);
        assert_eq!(batches(&[40, 40, 40, 10], 64, 100), [0..2, 2..4]);
        // A single input over the token limit still runs, alone.
        assert_eq!(batches(&[10, 300, 10], 64, 100), [0..1, 1..2, 2..3]);
        assert!(batches(&[], 64, 100).is_empty());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
