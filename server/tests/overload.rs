//! Overload: a burst beyond a model's queue gets `RESOURCE_EXHAUSTED` with a retry hint
//! for the excess and correct answers for the rest; the server-wide call limit; and
//! cancelled calls leaving the queue unrun.

mod common;

use common::{eventually, Server};
use marquee_client::proto::{EmbedRequest, Truncation};
use marquee_client::Client;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

const CAPACITY: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_ten_times_the_queue_gets_resource_exhausted_for_the_excess() {
    // Batches of up to 16 inputs never fill from a queue of 8, so the first 8 inputs wait
    // the whole 3 s batching delay: every other request of the burst finds the queue full.
    let server = Server::minilm_with_env(
        &[],
        &[
            ("MARQUEE_LIMITS__MAX_INPUTS_PER_REQUEST", "8"),
            ("MARQUEE_BATCHING__MAX_QUEUE_INPUTS", "8"),
            ("MARQUEE_BATCHING__MAX_BATCH_SIZE", "16"),
            ("MARQUEE_BATCHING__MAX_QUEUE_DELAY_US", "3000000"),
        ],
    );
    let text = "a crew of thieves plans one last heist in a casino";
    let client = server.client().await;
    let burst = 10 * CAPACITY;
    let mut tasks = Vec::new();
    for _ in 0..burst {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .embed(Client::text_request("minilm", &[text], Truncation::End))
                .await
        }));
    }
    let (mut answers, mut refused) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(mut r) => answers.push(r.embeddings.remove(0).values),
            Err(s) => refused.push(s),
        }
    }
    assert_eq!(answers.len(), CAPACITY, "{refused:?}");
    assert_eq!(refused.len(), burst - CAPACITY);
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("overloaded")
                && status.message().contains("batching.max_queue_inputs = 8"),
            "{}",
            status.message()
        );
        // The retry hint, as the gRPC retry trailer and as google.rpc.RetryInfo: at
        // least the batching delay the queued inputs still have to wait.
        let pushback: u64 = status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .expect("grpc-retry-pushback-ms")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(pushback >= 3000, "{pushback}");
        let retry = status.get_details_retry_info().expect("RetryInfo detail");
        assert_eq!(
            retry.retry_delay.unwrap().as_millis() as u64,
            pushback,
            "{retry:?}"
        );
    }
    // The admitted requests got the right vectors.
    let mut client = server.client().await;
    let reference = client
        .embed_texts("minilm", &[text])
        .await
        .unwrap()
        .remove(0);
    for v in &answers {
        assert!(common::cosine(v, &reference) > 0.999_999);
    }
    assert_eq!(
        server.metric(r#"marquee_requests_total{rpc="Embed",code="ResourceExhausted"}"#),
        (burst - CAPACITY) as f64
    );
    assert_eq!(server.metric(r#"marquee_queue_depth{model="minilm"}"#), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_beyond_max_concurrent_requests_are_refused_and_probes_still_answer() {
    let server = Server::minilm_with_env(&[], &[("MARQUEE_LIMITS__MAX_CONCURRENT_REQUESTS", "2")]);
    let client = server.client().await;
    // Two open EmbedStreams hold both places until they end.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel::<EmbedRequest>(1);
        let mut c = client.clone();
        let response = c
            .embedding
            .embed_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        streams.push((tx, response));
    }
    let mut c = client.clone();
    let status = c.embed_texts("minilm", &["one more"]).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("limits.max_concurrent_requests = 2"),
        "{}",
        status.message()
    );
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());
    // Health checks are not counted.
    server
        .health()
        .await
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // Closing a stream frees its place.
    streams.pop();
    let mut freed = false;
    for _ in 0..500 {
        match c.embed_texts("minilm", &["one more"]).await {
            Ok(_) => {
                freed = true;
                break;
            }
            Err(s) => assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the closed stream's place was never freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_calls_leave_the_queue_unrun_and_free_their_places() {
    let server = Server::minilm_with_env(&[], &[("MARQUEE_BATCHING__MAX_BATCH_SIZE", "1")]);
    let client = server.client().await;
    let long = "an old film about a lighthouse keeper and a storm at sea ".repeat(25);
    let inputs = |s: &Server| s.metric(r#"marquee_inference_inputs_total{model="minilm"}"#);
    let depth = |s: &Server| s.metric(r#"marquee_queue_depth{model="minilm"}"#);
    let before = inputs(&server);
    // A long request keeps the model busy one input at a time.
    let mut c = client.clone();
    let texts = vec![long.clone(); 64];
    let blocker = tokio::spawn(async move { c.embed_texts("minilm", &texts).await });
    // Once its first input has run, it is at the head of the batcher's queue.
    assert!(eventually(|| inputs(&server) > before).await);
    // Five short requests queue behind it, then their clients give up.
    let mut abandoned = Vec::new();
    for i in 0..5 {
        let mut c = client.clone();
        abandoned.push(tokio::spawn(async move {
            c.embed_texts("minilm", &[format!("short {i}")]).await
        }));
    }
    assert!(eventually(|| depth(&server) == 69.0).await);
    // Let them get through tokenization into the batcher's queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for task in &abandoned {
        task.abort();
    }
    // Their places free up before the blocker is done, and they are never run.
    assert!(eventually(|| depth(&server) <= 64.0).await);
    let vectors = blocker.await.unwrap().unwrap();
    assert_eq!(vectors.len(), 64);
    assert_eq!(inputs(&server) - before, 64.0);
    assert!(eventually(|| depth(&server) == 0.0).await);
    assert_eq!(
        server.metric(r#"marquee_dropped_inputs_total{model="minilm",reason="cancelled"}"#),
        5.0
    );
    assert_eq!(
        server.metric(r#"marquee_requests_total{rpc="Embed",code="Cancelled"}"#),
        5.0
    );
}
