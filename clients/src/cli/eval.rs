//! `marquee eval`: server-side retrieval and recommendation quality evaluation.

use super::{progress, records};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use marquee_client::proto::{
    eval_query::Query, evaluation_event::Event, EvalQuery, EvaluateRecommendationsRequest,
    EvaluateRetrievalRequest, EvaluationEvent, EvaluationReport, MetricSet,
};
use marquee_client::ConnectOptions;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use tonic::codec::Streaming;

/// Queries per streamed `EvaluateRetrieval` message.
pub const QUERIES_PER_MESSAGE: usize = 64;

/// `marquee eval` subcommands.
#[derive(Subcommand, Debug)]
pub enum EvalAction {
    /// Score text retrieval against judged queries (Recall@K, MRR, NDCG@K).
    Retrieval(RetrievalArgs),
    /// Leave-one-out recommendation quality over the collection's ratings, with a
    /// popularity baseline.
    Recommend(RecommendArgs),
    /// Score generated texts against references (BLEU, ROUGE, BERTScore).
    Generation(super::eval_generation::GenerationArgs),
}

/// Arguments of `marquee eval retrieval`.
#[derive(Args, Debug)]
pub struct RetrievalArgs {
    /// Collection name.
    pub collection: String,
    /// JSONL (optionally .gz) of {"query_id", "query", "relevant": [ids]}.
    pub queries: PathBuf,
    /// Comma-separated cutoffs K.
    #[arg(long = "k", value_delimiter = ',', default_value = "1,5,10,25",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub cutoffs: Vec<u32>,
    /// Also report each query's rank of its first relevant item.
    #[arg(long)]
    pub per_query: bool,
}

/// Arguments of `marquee eval recommend`.
#[derive(Args, Debug)]
pub struct RecommendArgs {
    /// Collection name.
    pub collection: String,
    /// Comma-separated cutoffs K.
    #[arg(long = "k", value_delimiter = ',', default_value = "5,10,20",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub cutoffs: Vec<u32>,
    /// Ratings at or above this count as high (liked).
    #[arg(long, default_value = "4.0")]
    pub min_rating: f32,
    /// Users with fewer high ratings are skipped.
    #[arg(long, default_value_t = 5)]
    pub min_high_ratings: u32,
}

/// Reads evaluation queries from JSONL records; errors name the line.
pub fn read_queries(records: &[records::Record]) -> Result<Vec<EvalQuery>> {
    records
        .iter()
        .map(|r| {
            let line = r.line;
            let id_text = |v: &Value| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            let query_id = r
                .fields
                .get("query_id")
                .and_then(id_text)
                .with_context(|| format!("line {line}: no query_id"))?;
            let text = match r.fields.get("query") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                _ => bail!("line {line}: no query text"),
            };
            let relevant = match r.fields.get("relevant") {
                Some(Value::Array(ids)) => ids
                    .iter()
                    .map(|v| {
                        id_text(v).with_context(|| format!("line {line}: bad relevant id {v}"))
                    })
                    .collect::<Result<Vec<_>>>()?,
                _ => bail!("line {line}: no \"relevant\" list"),
            };
            Ok(EvalQuery {
                query_id,
                query: Some(Query::Text(text)),
                relevant,
            })
        })
        .collect()
}

/// The request stream: a first message with the options, then the queries in messages of
/// at most `per_message`.
pub fn retrieval_messages(
    args: &RetrievalArgs,
    queries: Vec<EvalQuery>,
    per_message: usize,
) -> Vec<EvaluateRetrievalRequest> {
    let mut messages = vec![EvaluateRetrievalRequest {
        collection: args.collection.clone(),
        cutoffs: args.cutoffs.clone(),
        per_query: args.per_query,
        queries: vec![],
    }];
    let mut queries = queries.into_iter().peekable();
    while queries.peek().is_some() {
        messages.push(EvaluateRetrievalRequest {
            queries: queries.by_ref().take(per_message.max(1)).collect(),
            ..Default::default()
        });
    }
    messages
}

/// Metric names in reading order: recall, precision, MRR, NDCG, then the rest by name;
/// within a family the plain metric first, then by cutoff.
pub fn ordered(metrics: Option<&MetricSet>) -> Vec<(&str, f64)> {
    let mut all: Vec<(&str, f64)> = metrics
        .map(|m| m.values.iter().map(|(k, v)| (k.as_str(), *v)).collect())
        .unwrap_or_default();
    all.sort_by_key(|(name, _)| sort_key(name));
    all
}

fn sort_key(name: &str) -> (usize, String, u64, String) {
    const FAMILIES: [&str; 5] = ["recall", "precision", "mrr", "ndcg", "map"];
    let (family, cutoff) = match name.split_once('@') {
        Some((family, k)) => (family, k.parse::<u64>().map_or(u64::MAX, |k| k + 1)),
        None => (name, 0),
    };
    let rank = FAMILIES
        .iter()
        .position(|f| *f == family)
        .unwrap_or(FAMILIES.len());
    (rank, family.to_string(), cutoff, name.to_string())
}

/// Adds every metric of `metrics` to `object` at top level.
fn flatten(object: &mut Map<String, Value>, metrics: Option<&MetricSet>) {
    for (name, value) in ordered(metrics) {
        object.insert(name.to_string(), json!(value));
    }
}

/// The retrieval report as one flat JSON object: `queries`, every metric, and `per_query`
/// when the report has it.
pub fn retrieval_json(report: &EvaluationReport, per_query: bool) -> Value {
    let mut object = Map::new();
    object.insert("queries".into(), json!(report.queries));
    flatten(&mut object, report.metrics.as_ref());
    if per_query {
        let rows: Vec<Value> = report
            .per_query
            .iter()
            .map(
                |q| json!({ "query_id": q.query_id, "first_relevant_rank": q.first_relevant_rank }),
            )
            .collect();
        object.insert("per_query".into(), Value::Array(rows));
    }
    Value::Object(object)
}

/// The recommendation report as one flat JSON object: `users`, `skipped`, every metric,
/// and the baseline's metrics under `popularity`.
pub fn recommend_json(report: &EvaluationReport) -> Value {
    let mut object = Map::new();
    object.insert("users".into(), json!(report.queries));
    object.insert("skipped".into(), json!(report.skipped));
    flatten(&mut object, report.metrics.as_ref());
    let mut popularity = Map::new();
    flatten(&mut popularity, report.baseline.as_ref());
    object.insert("popularity".into(), Value::Object(popularity));
    Value::Object(object)
}

/// The retrieval report as a small table.
pub fn retrieval_table(report: &EvaluationReport, per_query: bool) -> String {
    let mut out = format!("{:<12} {:>8}\n", "queries", report.queries);
    for (name, value) in ordered(report.metrics.as_ref()) {
        out += &format!("{name:<12} {value:>8.4}\n");
    }
    if per_query && !report.per_query.is_empty() {
        out += &format!("\n{:<24} {:>6}\n", "QUERY_ID", "RANK");
        for q in &report.per_query {
            let rank = match q.first_relevant_rank {
                0 => "-".to_string(),
                r => r.to_string(),
            };
            out += &format!("{:<24} {rank:>6}\n", q.query_id);
        }
    }
    out
}

/// The recommendation report as a table with a model row and a popularity row.
pub fn recommend_table(report: &EvaluationReport) -> String {
    let model = ordered(report.metrics.as_ref());
    let baseline = ordered(report.baseline.as_ref());
    let mut names: Vec<&str> = model.iter().chain(&baseline).map(|(n, _)| *n).collect();
    names.sort_by_key(|n| sort_key(n));
    names.dedup();
    let width = |name: &str| name.len().max(7);
    let mut out = format!("users {} (skipped {})\n", report.queries, report.skipped);
    out += &format!("{:<12}", "");
    for name in &names {
        out += &format!(" {name:>w$}", w = width(name));
    }
    out += "\n";
    for (label, row) in [("model", &model), ("popularity", &baseline)] {
        out += &format!("{label:<12}");
        for name in &names {
            match row.iter().find(|(n, _)| n == name) {
                Some((_, v)) => out += &format!(" {v:>w$.4}", w = width(name)),
                None => out += &format!(" {:>w$}", "-", w = width(name)),
            }
        }
        out += "\n";
    }
    out
}

/// Reads events until the report `pick` takes, showing progress on `bar`.
pub async fn await_event<T>(
    mut events: Streaming<EvaluationEvent>,
    bar: &ProgressBar,
    pick: fn(Event) -> Option<T>,
) -> Result<T> {
    while let Some(event) = events.message().await? {
        match event.event {
            Some(Event::Progress(p)) => {
                bar.set_length(p.total);
                bar.set_position(p.done);
            }
            Some(other) => {
                if let Some(report) = pick(other) {
                    return Ok(report);
                }
            }
            None => {}
        }
    }
    bail!("the server ended the evaluation without a report")
}

/// Reads events until the retrieval or recommendation report.
async fn await_report(
    events: Streaming<EvaluationEvent>,
    bar: &ProgressBar,
) -> Result<EvaluationReport> {
    await_event(events, bar, |event| match event {
        Event::Report(report) => Some(report),
        _ => None,
    })
    .await
}

/// Runs `marquee eval ...`.
pub async fn run(server: &ConnectOptions, action: EvalAction, as_json: bool) -> Result<()> {
    match action {
        EvalAction::Retrieval(args) => {
            let records = records::read_jsonl(records::open(&args.queries)?)
                .and_then(|r| read_queries(&r))
                .with_context(|| format!("reading {}", args.queries.display()))?;
            if records.is_empty() {
                bail!("{}: no queries", args.queries.display());
            }
            let total = records.len() as u64;
            let messages = retrieval_messages(&args, records, QUERIES_PER_MESSAGE);
            let mut client = super::connect(server).await?;
            let bar = progress::bar(total, "queries", as_json);
            let result = async {
                let events = client
                    .evaluation
                    .evaluate_retrieval(tokio_stream::iter(messages))
                    .await?
                    .into_inner();
                await_report(events, &bar).await
            }
            .await;
            bar.finish_and_clear();
            let report = result?;
            if as_json {
                println!("{}", retrieval_json(&report, args.per_query));
            } else {
                print!("{}", retrieval_table(&report, args.per_query));
            }
        }
        EvalAction::Generation(args) => {
            super::eval_generation::run(server, args, as_json).await?;
        }
        EvalAction::Recommend(args) => {
            let request = EvaluateRecommendationsRequest {
                collection: args.collection,
                cutoffs: args.cutoffs,
                min_rating: Some(args.min_rating),
                min_high_ratings: Some(args.min_high_ratings),
            };
            let mut client = super::connect(server).await?;
            let bar = progress::bar(0, "users", as_json);
            let result = async {
                let events = client
                    .evaluation
                    .evaluate_recommendations(request)
                    .await?
                    .into_inner();
                await_report(events, &bar).await
            }
            .await;
            bar.finish_and_clear();
            let report = result?;
            if as_json {
                println!("{}", recommend_json(&report));
            } else {
                print!("{}", recommend_table(&report));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_client::proto::QueryResult;

    fn metrics(pairs: &[(&str, f64)]) -> Option<MetricSet> {
        Some(MetricSet {
            values: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        })
    }

    #[test]
    fn reads_tot_queries() {
        let text = r#"{"query_id": "reddit-1", "query": "a movie", "relevant": ["tt1", "tt2"]}
{"query_id": 7, "query": "another", "relevant": [42]}
"#;
        let queries = read_queries(&records::read_jsonl(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(queries.len(), 2);
        assert_eq!(queries[0].relevant, ["tt1", "tt2"]);
        assert_eq!(queries[1].query_id, "7");
        assert_eq!(queries[1].relevant, ["42"]);
        assert_eq!(queries[1].query, Some(Query::Text("another".into())));
        let bad = "{\"query_id\": \"q\", \"relevant\": []}\n";
        let err = read_queries(&records::read_jsonl(bad.as_bytes()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn first_message_has_options_then_batches() {
        let args = RetrievalArgs {
            collection: "movies".into(),
            queries: PathBuf::new(),
            cutoffs: vec![1, 10],
            per_query: true,
        };
        let queries: Vec<EvalQuery> = (0..130)
            .map(|i| EvalQuery {
                query_id: i.to_string(),
                ..Default::default()
            })
            .collect();
        let messages = retrieval_messages(&args, queries, 64);
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0].collection, "movies");
        assert_eq!(messages[0].cutoffs, [1, 10]);
        assert!(messages[0].per_query && messages[0].queries.is_empty());
        let sizes: Vec<usize> = messages[1..].iter().map(|m| m.queries.len()).collect();
        assert_eq!(sizes, [64, 64, 2]);
        assert!(messages[1..].iter().all(|m| m.collection.is_empty()));
    }

    #[test]
    fn metric_order() {
        let set = metrics(&[
            ("ndcg@10", 0.1),
            ("mrr", 0.08),
            ("recall@10", 0.15),
            ("mrr@10", 0.07),
            ("recall@5", 0.11),
            ("recall@1", 0.04),
            ("recall@25", 0.2),
        ]);
        let names: Vec<&str> = ordered(set.as_ref()).iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "recall@1",
                "recall@5",
                "recall@10",
                "recall@25",
                "mrr",
                "mrr@10",
                "ndcg@10"
            ]
        );
    }

    #[test]
    fn flat_json_reports() {
        let report = EvaluationReport {
            queries: 288,
            metrics: metrics(&[("recall@1", 0.045), ("mrr", 0.08)]),
            baseline: None,
            per_query: vec![QueryResult {
                query_id: "q1".into(),
                first_relevant_rank: 3,
            }],
            skipped: 0,
        };
        let j = retrieval_json(&report, true);
        assert_eq!(j["queries"], 288);
        assert_eq!(j["recall@1"], 0.045);
        assert_eq!(j["mrr"], 0.08);
        assert_eq!(j["per_query"][0]["first_relevant_rank"], 3);
        assert!(retrieval_json(&report, false).get("per_query").is_none());

        let report = EvaluationReport {
            queries: 600,
            metrics: metrics(&[("recall@10", 0.1), ("ndcg@10", 0.05)]),
            baseline: metrics(&[("recall@10", 0.2), ("ndcg@10", 0.09)]),
            per_query: vec![],
            skipped: 10,
        };
        let j = recommend_json(&report);
        assert_eq!(j["users"], 600);
        assert_eq!(j["skipped"], 10);
        assert_eq!(j["recall@10"], 0.1);
        assert_eq!(j["popularity"]["ndcg@10"], 0.09);
        let table = recommend_table(&report);
        assert!(
            table.contains("model") && table.contains("popularity"),
            "{table}"
        );
        assert!(table.contains("0.2000"), "{table}");
    }
}
