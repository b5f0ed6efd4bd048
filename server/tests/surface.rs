//! What a client sees besides Embed: health, reflection, metrics, EmbedStream, the CLI.

mod common;

use common::{cosine, Server};
use marquee_client::proto::{embed_stream_response::Result as StreamResult, EmbedRequest};
use marquee_client::Client;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_reflection_answer() {
    let server = Server::minilm(&[]);
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "marquee.v1.EmbeddingService", "marquee.v1.ModelService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "marquee.v1.EmbeddingService",
        "marquee.v1.ModelService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_by_rpc_and_code() {
    let server = Server::minilm(&[]);
    let mut client = server.client().await;
    client.embed_texts("minilm", &["one", "two"]).await.unwrap();
    assert!(client.embed_texts("nope", &["x"]).await.is_err());
    let metrics = server.scrape_metrics();
    for needle in [
        "marquee_requests_total{rpc=\"Embed\",code=\"Ok\"} 1",
        "marquee_requests_total{rpc=\"Embed\",code=\"NotFound\"} 1",
        "marquee_request_duration_seconds_bucket{rpc=\"Embed\"",
        "marquee_stage_duration_seconds_bucket{model=\"minilm\",stage=\"tokenize\"",
        "marquee_stage_duration_seconds_bucket{model=\"minilm\",stage=\"queue\"",
        "marquee_stage_duration_seconds_bucket{model=\"minilm\",stage=\"inference\"",
        "marquee_batch_tokens_bucket{model=\"minilm\"",
        "marquee_queue_depth{model=\"minilm\"}",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embed_stream_answers_every_request_by_id() {
    let server = Server::minilm(&[]);
    let mut client = server.client().await;
    let texts: Vec<String> = (0..20)
        .map(|i| format!("movie number {i} with a twist"))
        .collect();
    let reference = client.embed_texts("minilm", &texts).await.unwrap();
    let mut requests: Vec<EmbedRequest> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| EmbedRequest {
            request_id: format!("r{i}"),
            ..Client::text_request("minilm", &[t], Default::default())
        })
        .collect();
    requests.push(EmbedRequest {
        request_id: "bad".into(),
        ..Client::text_request("no-such-model", &["x"], Default::default())
    });
    let mut responses = client
        .embedding
        .embed_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while let Some(item) = responses.message().await.unwrap() {
        seen += 1;
        match (item.request_id.as_str(), item.result.unwrap()) {
            ("bad", StreamResult::Error(e)) => {
                assert_eq!(e.code, Code::NotFound as i32);
                assert!(e.message.contains("no-such-model"));
            }
            (id, StreamResult::Response(r)) => {
                let i: usize = id[1..].parse().unwrap();
                assert!(
                    cosine(&r.embeddings[0].values, &reference[i]) > 0.999999,
                    "{id}"
                );
            }
            (id, other) => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(seen, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_embeds_and_lists_models() {
    let server = Server::minilm(&[]);
    let cli = common::plugin_dir().join("marquee");
    assert!(
        cli.is_file(),
        "build the workspace first: {} is missing",
        cli.display()
    );
    let run = |args: &[&str]| server.cli(args);
    let (ok, stdout, _) = run(&[
        "--json",
        "embed",
        "--model",
        "minilm",
        "hello world",
        "a second text",
    ]);
    assert!(ok);
    let vectors: Vec<Vec<f32>> = serde_json::from_str(&stdout).unwrap();
    assert_eq!((vectors.len(), vectors[0].len()), (2, 384));
    let mut client = server.client().await;
    let direct = client
        .embed_texts("minilm", &["hello world"])
        .await
        .unwrap();
    assert!(cosine(&vectors[0], &direct[0]) > 0.999999);

    let (ok, stdout, _) = run(&["embed", "hello world"]);
    assert!(ok);
    assert_eq!(stdout.lines().count(), 1);
    assert_eq!(stdout.split_whitespace().count(), 384);

    let (ok, stdout, _) = run(&["models", "--json"]);
    assert!(ok);
    let models: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(models[0]["name"], "minilm");
    assert_eq!(models[0]["dimension"], 384);
    let (ok, stdout, _) = run(&["models"]);
    assert!(
        ok && stdout.contains("minilm") && stdout.contains("text-encoder"),
        "{stdout}"
    );

    let (ok, _, stderr) = run(&["embed", "--model", "nope", "x"]);
    assert!(!ok && stderr.contains("NotFound"), "{stderr}");
}
