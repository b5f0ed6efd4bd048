//! Reproduces the reference retrieval figures of `shared/data/README.md`: the 7,290
//! movies embedded with all-MiniLM-L6-v2 as `"{title} ({year}). {overview or plot}"`
//! (max 256 tokens), exact inner-product search, the 288 Reddit tip-of-the-tongue
//! validation queries; then the same with the model at bf16 precision, whose figures
//! must stay within 0.005 of f32's. Needs the shared data (`MARQUEE_SHARED_DATA`, default
//! `../shared/data` beside the repository); skips with a message when it is absent.

mod common;

use common::Server;
use marquee_client::proto::evaluation_service_client::EvaluationServiceClient;
use marquee_client::proto::model_service_client::ModelServiceClient;
use marquee_client::proto::retrieval_service_client::RetrievalServiceClient;
use marquee_client::proto::{
    eval_query, evaluation_event::Event, item, CreateCollectionRequest, EvalQuery,
    EvaluateRetrievalRequest, Item, LoadModelRequest, Metric, UpsertRequest,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("MARQUEE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("../shared/data"));
    dir.join("movies.jsonl.gz").is_file().then_some(dir)
}

fn lines(path: PathBuf) -> Vec<Value> {
    let file = std::fs::File::open(&path).unwrap();
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    reader
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn doc_text(movie: &Value) -> String {
    let body = ["overview", "plot"]
        .iter()
        .filter_map(|k| movie[k].as_str())
        .find(|s| !s.is_empty())
        .unwrap_or("");
    format!(
        "{} ({}). {body}",
        movie["title"].as_str().unwrap_or(""),
        movie["year"]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tip_of_the_tongue_figures_match_the_reference() {
    let Some(data) = shared_data() else {
        eprintln!("SKIPPED: no shared data (set MARQUEE_SHARED_DATA to the folder holding movies.jsonl.gz)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::minilm(&["--data-dir", dir.path().to_str().unwrap()]);
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // The same model at bf16 precision, beside the f32 one.
    ModelServiceClient::new(channel.clone())
        .load_model(LoadModelRequest {
            name: "minilm-bf16".into(),
            path: common::minilm_dir().to_string_lossy().into_owned(),
            config_json: r#"{"precision": "bf16"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let movies = lines(data.join("movies.jsonl.gz"));
    assert_eq!(movies.len(), 7290);
    let queries: Vec<EvalQuery> = lines(data.join("tot/reddit_validation.jsonl"))
        .iter()
        .map(|q| EvalQuery {
            query_id: q["query_id"].as_str().unwrap().to_string(),
            query: Some(eval_query::Query::Text(
                q["query"].as_str().unwrap().to_string(),
            )),
            relevant: q["relevant"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect(),
        })
        .collect();
    assert_eq!(queries.len(), 288);
    let f32_figures = figures(&channel, "minilm", &movies, &queries).await;
    let bf16_figures = figures(&channel, "minilm-bf16", &movies, &queries).await;
    for (key, reference) in [
        ("recall@1", 0.0451),
        ("recall@5", 0.1146),
        ("recall@10", 0.1528),
        ("recall@25", 0.2188),
        ("mrr", 0.0838),
        ("mrr@10", 0.0752),
    ] {
        assert!(
            (f32_figures[key] - reference).abs() <= 0.005,
            "{key}: {} vs reference {reference}",
            f32_figures[key]
        );
        assert!(
            (bf16_figures[key] - f32_figures[key]).abs() <= 0.005,
            "{key}: bf16 {} vs f32 {}",
            bf16_figures[key],
            f32_figures[key]
        );
    }
}

/// The movies embedded by `model` into a collection of their own, then the queries'
/// retrieval figures.
async fn figures(
    channel: &tonic::transport::Channel,
    model: &str,
    movies: &[Value],
    queries: &[EvalQuery],
) -> std::collections::HashMap<String, f64> {
    let mut retrieval =
        RetrievalServiceClient::new(channel.clone()).max_encoding_message_size(64 << 20);
    let mut evaluation = EvaluationServiceClient::new(channel.clone());
    let collection = format!("movies-{model}");
    retrieval
        .create_collection(CreateCollectionRequest {
            name: collection.clone(),
            dimension: 384,
            metric: Metric::InnerProduct as i32,
            model: model.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let messages: Vec<UpsertRequest> = movies
        .chunks(256)
        .map(|chunk| UpsertRequest {
            collection: collection.clone(),
            items: chunk
                .iter()
                .map(|m| Item {
                    id: m["imdb_id"].as_str().unwrap().to_string(),
                    content: Some(item::Content::Text(doc_text(m))),
                    payload: Default::default(),
                })
                .collect(),
        })
        .collect();
    let start = std::time::Instant::now();
    let stored = retrieval
        .upsert(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner()
        .upserted;
    eprintln!(
        "{model}: ingested {stored} movies in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let request = EvaluateRetrievalRequest {
        collection,
        cutoffs: vec![1, 5, 10, 25],
        queries: queries.to_vec(),
        ..Default::default()
    };
    let mut events = evaluation
        .evaluate_retrieval(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let mut report = None;
    while let Some(e) = events.message().await.unwrap() {
        if let Some(Event::Report(r)) = e.event {
            report = Some(r);
        }
    }
    let values = report.unwrap().metrics.unwrap().values;
    eprintln!("{model}: {values:?}");
    values.into_iter().collect()
}
