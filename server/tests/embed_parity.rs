//! Embeddings through the real gRPC server against sentence-transformers' own output
//! (fixture made by plugins/bert-text/tests/fixtures/make_minilm_fixture.py).

mod common;

use common::{cosine, eventually, max_abs_diff, Server};
use marquee_client::proto::Truncation;
use marquee_client::Client;
use serde_json::Value;

struct Reference {
    text: String,
    tokens: u64,
    embedding: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let path = common::repo_root().join("plugins/bert-text/tests/fixtures/minilm_reference.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| Reference {
            text: item["text"].as_str().unwrap().to_string(),
            tokens: item["tokens"].as_u64().unwrap(),
            embedding: item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_embedding_matches_sentence_transformers() {
    let refs = reference();
    assert!(refs.len() >= 64);
    assert!(
        refs.iter().filter(|r| r.tokens == 256).count() >= 4,
        "fixture lacks long texts"
    );
    let server = Server::minilm(&[]);
    let mut client = server.client().await;
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let response = client
        .embed(Client::text_request(
            "minilm",
            &texts,
            Truncation::Unspecified,
        ))
        .await
        .unwrap();
    assert_eq!(response.dimension, 384);
    assert_eq!(response.embeddings.len(), refs.len());
    let usage = response.usage.unwrap();
    assert_eq!(
        usage.input_tokens,
        refs.iter().map(|r| r.tokens).sum::<u64>()
    );
    assert!(usage.truncated_inputs >= 4);
    let mut worst_cos = 1.0f64;
    let mut worst_diff = 0.0f32;
    for (r, got) in refs.iter().zip(&response.embeddings) {
        let (c, d) = (
            cosine(&got.values, &r.embedding),
            max_abs_diff(&got.values, &r.embedding),
        );
        assert!(c >= 0.99999, "cosine {c} for {:?}", r.text);
        assert!(d <= 1e-4, "max abs diff {d} for {:?}", r.text);
        worst_cos = worst_cos.min(c);
        worst_diff = worst_diff.max(d);
    }
    eprintln!(
        "parity over {} texts: min cosine {worst_cos:.9}, max abs diff {worst_diff:.2e}",
        refs.len()
    );
    let timings = response.timings.unwrap();
    assert!(timings.inference_us > 0 && timings.total_us >= timings.inference_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_model_answers_requests_without_a_model_name() {
    let server = Server::minilm(&[]);
    let mut client = server.client().await;
    let refs = reference();
    let got = client.embed_texts("", &[&refs[0].text]).await.unwrap();
    assert!(cosine(&got[0], &refs[0].embedding) >= 0.99999);
}

/// One by one, in one batch, and from 16 concurrent clients: identical vectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batching_is_invisible() {
    let refs = reference();
    let texts: Vec<String> = refs.iter().map(|r| r.text.clone()).collect();
    // Small batches force requests to be split and merged with others.
    let server = Server::minilm(&[]);
    let mut client = server.client().await;

    let batched = client.embed_texts("minilm", &texts).await.unwrap();
    let mut one_by_one = Vec::new();
    for t in &texts {
        one_by_one.push(client.embed_texts("minilm", &[t]).await.unwrap().remove(0));
    }
    let mut tasks = Vec::new();
    for c in 0..16 {
        let mut client = server.client().await;
        let mine: Vec<(usize, String)> = texts
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, _)| i % 16 == c)
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for (i, t) in mine {
                out.push((
                    i,
                    client.embed_texts("minilm", &[t]).await.unwrap().remove(0),
                ));
            }
            out
        }));
    }
    let mut concurrent = vec![Vec::new(); texts.len()];
    for task in tasks {
        for (i, v) in task.await.unwrap() {
            concurrent[i] = v;
        }
    }
    for i in 0..texts.len() {
        assert!(
            max_abs_diff(&batched[i], &one_by_one[i]) <= 1e-6,
            "batch vs single, text {i}"
        );
        assert!(
            max_abs_diff(&batched[i], &concurrent[i]) <= 1e-6,
            "batch vs concurrent, text {i}"
        );
    }
    let metrics = server.scrape_metrics();
    assert!(metrics.contains("marquee_batch_size"), "{metrics}");
}

/// Requests larger than one batch are split across batches and reassembled in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_larger_than_a_batch_are_split_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(&config, "[batching]\nmax_batch_size = 4\nmax_batch_tokens = 300\nmax_queue_delay_us = 500\nmax_queue_inputs = 8192\n").unwrap();
    let server = Server::minilm(&["--config", config.to_str().unwrap()]);
    let mut client = server.client().await;
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let got = client.embed_texts("minilm", &texts).await.unwrap();
    for (r, v) in refs.iter().zip(&got) {
        assert!(cosine(v, &r.embedding) >= 0.99999, "{:?}", r.text);
    }
}

/// A request to an idle model runs at once on its own thread (no queue time, same
/// vector); with a batching delay configured, it waits in the queue to be batched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_request_skips_the_queue_unless_batching_waits() {
    let refs = reference();
    let request = Client::text_request("minilm", &[&refs[0].text], Truncation::End);
    for (delay_us, queued) in [("0", false), ("20000", true)] {
        let server =
            Server::minilm_with_env(&[], &[("MARQUEE_BATCHING__MAX_QUEUE_DELAY_US", delay_us)]);
        let mut client = server.client().await;
        for _ in 0..3 {
            let response = client.embed(request.clone()).await.unwrap();
            let timings = response.timings.expect("timings");
            assert!(cosine(&response.embeddings[0].values, &refs[0].embedding) >= 0.99999);
            assert!(timings.inference_us > 0);
            if queued {
                // The batcher waits max_queue_delay_us for the batch to fill.
                assert!(timings.queue_us >= 15_000, "{timings:?}");
            } else {
                assert_eq!(timings.queue_us, 0, "{timings:?}");
            }
        }
        // The batch metric is recorded just after the caller is answered.
        let metric = "marquee_inference_batches_total{model=\"minilm\"}";
        eventually(|| server.metric(metric) >= 3.0).await;
        assert_eq!(server.metric(metric), 3.0, "every run counts as a batch");
    }
}
