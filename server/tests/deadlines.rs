//! Deadlines: a call past its `grpc-timeout` is answered `DEADLINE_EXCEEDED` by the
//! server and costs no inference, whether it expires before tokenization, in the queue,
//! or is refused because even the model's fastest recent rate could not finish it.

mod common;

use common::{eventually, Server};
use marquee_client::proto::Truncation;
use marquee_client::Client;
use std::time::Duration;
use tonic::Code;

fn inputs(server: &Server) -> f64 {
    server.metric(r#"marquee_inference_inputs_total{model="minilm"}"#)
}

fn batches(server: &Server) -> f64 {
    server.metric(r#"marquee_inference_batches_total{model="minilm"}"#)
}

fn with_timeout(
    texts: &[&str],
    timeout: Duration,
) -> tonic::Request<marquee_client::proto::EmbedRequest> {
    let mut request = tonic::Request::new(Client::text_request("minilm", texts, Truncation::End));
    request.set_timeout(timeout);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_millisecond_deadlines_are_exceeded_without_inference() {
    let server = Server::minilm(&[]);
    let text = "a detective story set in a rainy city, told backwards ".repeat(4);
    let mut client = server.client().await;
    // Warm up: the model's recent speed is known.
    for _ in 0..3 {
        client
            .embed_texts("minilm", &[text.as_str()])
            .await
            .unwrap();
    }
    let (inputs_before, batches_before) = (inputs(&server), batches(&server));
    let mut raw = server.deadline_client();
    for _ in 0..10 {
        let status = raw
            .embed(with_timeout(&[text.as_str()], Duration::from_millis(1)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    assert_eq!(inputs(&server), inputs_before);
    assert_eq!(batches(&server), batches_before);
    assert_eq!(
        server.metric(r#"marquee_requests_total{rpc="Embed",code="DeadlineExceeded"}"#),
        10.0
    );
    // A deadline long enough is met.
    let ok = raw
        .embed(with_timeout(&[text.as_str()], Duration::from_secs(60)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.embeddings.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_expiring_in_the_queue_leave_it_unrun() {
    let server = Server::minilm_with_env(&[], &[("MARQUEE_BATCHING__MAX_BATCH_SIZE", "1")]);
    let long = "an old film about a lighthouse keeper and a storm at sea ".repeat(25);
    let before = inputs(&server);
    // A long request without deadline keeps the model busy, one input per batch.
    let mut client = server.client().await;
    let texts = vec![long.clone(); 128];
    let blocker = tokio::spawn(async move { client.embed_texts("minilm", &texts).await });
    assert!(eventually(|| inputs(&server) > before).await);
    // Short requests with a 300 ms deadline queue behind it and expire there.
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut raw = server.deadline_client();
        tasks.push(tokio::spawn(async move {
            let text = format!("short request {i}");
            raw.embed(with_timeout(&[text.as_str()], Duration::from_millis(300)))
                .await
        }));
    }
    for task in tasks {
        let status = task.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    assert_eq!(blocker.await.unwrap().unwrap().len(), 128);
    // Only the blocker ran; the expired inputs left the queue and freed their places.
    // (A batch's metrics are recorded just after its callers have their answers.)
    eventually(|| inputs(&server) - before >= 128.0).await;
    assert_eq!(inputs(&server) - before, 128.0);
    assert_eq!(
        server.metric(r#"marquee_dropped_inputs_total{model="minilm",reason="deadline"}"#),
        3.0
    );
    assert!(eventually(|| server.metric(r#"marquee_queue_depth{model="minilm"}"#) == 0.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hopeless_requests_are_refused_before_inference() {
    let server = Server::minilm(&[]);
    let long = "a documentary about deep sea creatures and the people who film them ".repeat(20);
    let mut client = server.client().await;
    client
        .embed_texts("minilm", &[long.as_str()])
        .await
        .unwrap();
    let before = inputs(&server);
    // 1024 inputs of 256 tokens cannot be embedded in two seconds on a CPU.
    let texts = vec![long.as_str(); 1024];
    let status = server
        .deadline_client()
        .embed(with_timeout(&texts, Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("needs at least"),
        "{}",
        status.message()
    );
    assert_eq!(inputs(&server), before);
}
