//! `marquee finetune`: fine-tunes a served encoder on a query set against a collection
//! (`TrainingService.FineTune`), with a progress bar over the steps, a line per epoch
//! and the before/after validation metrics.

use super::eval::{ordered, read_queries, QUERIES_PER_MESSAGE};
use super::{progress, records};
use anyhow::{bail, Context, Result};
use clap::Args;
use marquee_client::proto::fine_tune_event::Event;
use marquee_client::proto::{EvalQuery, FineTuneRequest, FineTuneResult, MetricSet};
use marquee_client::ConnectOptions;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Arguments of `marquee finetune`.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The collection whose item texts are the positives (and which validation ranks).
    pub collection: String,
    /// The served model to start from (a bert-text encoder).
    #[arg(long = "base")]
    pub base: String,
    /// The name to serve the result under.
    #[arg(long = "as")]
    pub output: String,
    /// Training queries: JSONL (optionally .gz) of {"query_id", "query", "relevant": [ids]}.
    #[arg(long)]
    pub queries: PathBuf,
    /// Validation queries, same format; ranked over the collection after every epoch.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// Passes over the training queries.
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    /// Pairs per step (in-batch negatives).
    #[arg(long, default_value_t = 32)]
    pub batch_size: u32,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Decay after the warm-up: linear, cosine or constant.
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// Share of the steps spent warming up.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// Hard negatives per query, mined before every epoch from the collection.
    #[arg(long, default_value_t = 0)]
    pub hard_negatives: u32,
    /// Add a Dense projection to this width.
    #[arg(long)]
    pub projection_dim: Option<u32>,
    /// Seed of shuffling, dropout and projection initialisation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop after this many epochs without a better validation MRR (0: never).
    #[arg(long, default_value_t = 0)]
    pub patience: u32,
    /// Worker threads (0: the server's `training.threads`).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
}

fn read(path: &Path) -> Result<Vec<EvalQuery>> {
    let queries = records::read_jsonl(records::open(path)?)
        .and_then(|r| read_queries(&r))
        .with_context(|| format!("reading {}", path.display()))?;
    if queries.is_empty() {
        bail!("{}: no queries", path.display());
    }
    Ok(queries)
}

/// The request stream: the settings, then the queries in messages of at most
/// `per_message` (training first, then validation).
pub fn messages(
    args: &FinetuneArgs,
    train: Vec<EvalQuery>,
    validation: Vec<EvalQuery>,
    per_message: usize,
) -> Vec<FineTuneRequest> {
    let mut messages = vec![FineTuneRequest {
        collection: args.collection.clone(),
        base_model: args.base.clone(),
        output_model: args.output.clone(),
        epochs: Some(args.epochs),
        batch_size: Some(args.batch_size),
        learning_rate: Some(args.lr),
        weight_decay: Some(args.weight_decay),
        schedule: args.schedule.clone(),
        warmup_ratio: Some(args.warmup_ratio),
        hard_negatives: args.hard_negatives,
        projection_dim: args.projection_dim.unwrap_or(0),
        seed: Some(args.seed),
        patience: args.patience,
        threads: args.threads,
        ..Default::default()
    }];
    for chunk in train.chunks(per_message.max(1)) {
        messages.push(FineTuneRequest {
            train: chunk.to_vec(),
            ..Default::default()
        });
    }
    for chunk in validation.chunks(per_message.max(1)) {
        messages.push(FineTuneRequest {
            validation: chunk.to_vec(),
            ..Default::default()
        });
    }
    messages
}

fn metrics_line(metrics: Option<&MetricSet>) -> String {
    ordered(metrics)
        .into_iter()
        .filter(|(name, _)| matches!(*name, "mrr" | "recall@1" | "recall@10"))
        .map(|(name, value)| format!("{name} {value:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result as one JSON object.
pub fn result_json(result: &FineTuneResult) -> Value {
    let metrics = |m: Option<&MetricSet>| {
        Value::Object(
            ordered(m)
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<Map<_, _>>(),
        )
    };
    json!({
        "model": result.model,
        "path": result.path,
        "dimension": result.dimension,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "seconds": result.seconds,
        "examples_per_second": result.examples_per_second,
        "before": metrics(result.before.as_ref()),
        "after": metrics(result.after.as_ref()),
    })
}

/// The result as a small table: validation metrics before and after.
pub fn result_table(result: &FineTuneResult) -> String {
    let mut out = format!(
        "model {} ({} dims) at {}\n{} steps in {:.0} s, {:.1} training examples/s, kept epoch {}{}\n",
        result.model,
        result.dimension,
        result.path,
        result.steps,
        result.seconds,
        result.examples_per_second,
        result.best_epoch,
        if result.stopped_early { " (stopped early)" } else { "" }
    );
    let before = ordered(result.before.as_ref());
    let after = ordered(result.after.as_ref());
    if !after.is_empty() {
        out += &format!("{:<12} {:>8} {:>8}\n", "", "before", "after");
        for (name, value) in after {
            let old = before
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("-".to_string(), |(_, v)| format!("{v:.4}"));
            out += &format!("{name:<12} {old:>8} {value:>8.4}\n");
        }
    }
    out
}

/// Runs `marquee finetune`.
pub async fn run(server: &ConnectOptions, args: FinetuneArgs, as_json: bool) -> Result<()> {
    let train = read(&args.queries)?;
    let validation = match &args.validation {
        Some(path) => read(path)?,
        None => Vec::new(),
    };
    let messages = messages(&args, train, validation, QUERIES_PER_MESSAGE);
    let mut client = super::connect(server).await?;
    let bar = progress::bar(0, "steps", as_json);
    let result = async {
        let mut events = client
            .training
            .fine_tune(tokio_stream::iter(messages))
            .await?
            .into_inner();
        while let Some(event) = events.message().await? {
            match event.event {
                Some(Event::Step(step)) => {
                    bar.set_length(step.total_steps);
                    bar.set_position(step.step);
                }
                Some(Event::Epoch(epoch)) if !as_json => {
                    let what = if epoch.epoch == 0 {
                        "before training:".to_string()
                    } else {
                        format!("epoch {}: loss {:.4},", epoch.epoch, epoch.mean_loss)
                    };
                    bar.println(format!(
                        "{what} {} ({:.0} s)",
                        metrics_line(epoch.validation.as_ref()),
                        epoch.seconds
                    ));
                }
                Some(Event::Result(result)) => return Ok(result),
                _ => {}
            }
        }
        bail!("the server ended the fine-tuning without a result")
    }
    .await;
    bar.finish_and_clear();
    let result = result?;
    if as_json {
        println!("{}", result_json(&result));
    } else {
        print!("{}", result_table(&result));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FinetuneArgs,
    }

    fn query(id: &str) -> EvalQuery {
        EvalQuery {
            query_id: id.into(),
            query: Some(marquee_client::proto::eval_query::Query::Text(format!(
                "text {id}"
            ))),
            relevant: vec!["tt1".into()],
        }
    }

    #[test]
    fn settings_first_then_training_then_validation_queries() {
        let cli = Cli::parse_from([
            "finetune",
            "movies",
            "--base",
            "minilm",
            "--as",
            "tuned",
            "--queries",
            "q.jsonl",
            "--epochs",
            "3",
            "--lr",
            "3e-5",
            "--hard-negatives",
            "2",
            "--projection-dim",
            "512",
        ]);
        let train: Vec<EvalQuery> = (0..5).map(|i| query(&format!("t{i}"))).collect();
        let validation = vec![query("v0")];
        let messages = messages(&cli.args, train, validation, 2);
        assert_eq!(messages.len(), 1 + 3 + 1);
        let first = &messages[0];
        assert_eq!(
            (
                first.collection.as_str(),
                first.base_model.as_str(),
                first.output_model.as_str()
            ),
            ("movies", "minilm", "tuned")
        );
        assert_eq!(
            (first.epochs, first.learning_rate, first.batch_size),
            (Some(3), Some(3e-5), Some(32))
        );
        assert_eq!((first.hard_negatives, first.projection_dim), (2, 512));
        assert!(first.train.is_empty() && first.validation.is_empty());
        assert_eq!(
            messages[1..4]
                .iter()
                .map(|m| m.train.len())
                .collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(messages[4].validation[0].query_id, "v0");
    }
}
